// Shared by the build scripts of every crate that links libtorch into an executable (`include!`d).

/// Adds an rpath to the libtorch library directory (torch-sys exports it to crates that depend on it
/// directly), resolving the repository's `.libtorch` link so binaries keep working from any directory. When
/// the tree holds libtorch_cuda.so (the CUDA route of `make setup CUDA=1`), forces it into DT_NEEDED: the
/// default --as-needed would drop it, as nothing references it by symbol, and CUDA would never be available.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| lib.into());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        // The GPU machine brings its own CUDA libraries; they need not exist here at link time.
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
