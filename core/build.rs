//! Build script of rifle-core: puts the libtorch library directory in the binaries' rpath (so `rifle` runs
//! from a fresh shell), compiles the few libtorch calls tch does not bind (`csrc/extras.cpp`, see
//! `extras.rs`), and stamps the plugin ABI (see `dynamic.rs`).
use std::{env, fs, path::Path};

include!("build_support.rs");

fn main() {
    link_libtorch();
    compile_extras();

    // The plugin ABI fingerprint: the text of the files that define what crosses the dynamic-plugin boundary.
    // Any edit to them changes the fingerprint, so a library built against another revision is refused even
    // when the version string is the same.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in ["src/plugin.rs", "src/registry.rs", "src/params.rs", "src/dynamic.rs"] {
        println!("cargo:rerun-if-changed={file}");
        let text = fs::read(Path::new(file)).unwrap_or_default();
        for byte in text {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=RIFLE_ABI_SOURCE_HASH={hash:016x}");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=RIFLE_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=RIFLE_BUILD_PROFILE={}", env::var("PROFILE").unwrap_or_default());
}

/// Compiles `csrc/extras.cpp` against the libtorch tree torch-sys links (its headers sit beside `lib/`),
/// with the same C++ standard and ABI flags as torch-sys's own shim.
fn compile_extras() {
    println!("cargo:rerun-if-changed=csrc/extras.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not say where libtorch is");
    let include = Path::new(&lib).parent().expect("libtorch's lib directory has a parent").join("include");
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("csrc/extras.cpp")
        .include(&include)
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("rifle_extras");
}
