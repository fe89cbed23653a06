//! Dynamic plugins: shared libraries built against rifle-core, loaded with libloading into the registry.
//!
//! Rust has no stable ABI: trait objects, `String`s and `Tensor`s cross this boundary as the compiler laid
//! them out. A library is therefore loaded only when its build stamp equals the host's: same rustc, same
//! rifle-core version, same profile, and the same layout fingerprint (a hash of the source of the files
//! that define what crosses the boundary plus the sizes of those types). The stamp is read through a C
//! function, which is safe to call whatever built the library; only then is the Rust entry point called.
//! Libraries are never unloaded, so the objects and `&'static` specs they hand over stay valid.
use crate::registry::{add_loaded, guard, Registrar, Source};
use anyhow::{anyhow, Context, Result};
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};

pub const STAMP_SYMBOL: &str = "rifle_plugin_stamp";
pub const REGISTER_SYMBOL: &str = "rifle_plugin_register";

/// This build's stamp, `key=value` pairs separated by `;`.
pub fn stamp() -> String {
    format!(
        "abi=1;core={};rustc={};profile={};layout={:016x}",
        env!("CARGO_PKG_VERSION"),
        env!("RIFLE_RUSTC_VERSION"),
        env!("RIFLE_BUILD_PROFILE"),
        layout_fingerprint()
    )
}

fn layout_fingerprint() -> u64 {
    use crate::plugin::*;
    use crate::registry::*;
    use std::mem::{align_of, size_of};
    let sizes = [
        size_of::<Registrar>(),
        size_of::<PluginSpec>(),
        size_of::<Built>(),
        size_of::<crate::params::Params>(),
        size_of::<crate::params::Value>(),
        size_of::<Progress>(),
        size_of::<Batch>(),
        size_of::<Ctx>(),
        size_of::<Record>(),
        size_of::<tch::Tensor>(),
        size_of::<crate::data::Sample>(),
        size_of::<crate::model::Net>(),
        size_of::<crate::optim::Optimizer>(),
        align_of::<PluginSpec>(),
        align_of::<Ctx>(),
    ];
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{}{sizes:?}", env!("RIFLE_ABI_SOURCE_HASH"));
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Compares a library's stamp with the host's; the error says which fields differ.
pub fn check_stamp(library: &str, host: &str) -> Result<(), String> {
    let fields = |s: &str| -> Vec<(String, String)> {
        s.split(';').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (lib, ours) = (fields(library), fields(host));
    let mut diffs = Vec::new();
    for (key, want) in &ours {
        match lib.iter().find(|(k, _)| k == key) {
            Some((_, got)) if got == want => {}
            Some((_, got)) => diffs.push(format!("{key}: library has `{got}`, this rifle has `{want}`")),
            None => diffs.push(format!("{key}: missing from the library's stamp (this rifle has `{want}`)")),
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

/// Loads a plugin library and registers its plugins; returns their names.
pub fn load(path: &Path) -> Result<Vec<&'static str>> {
    let shown = path.display();
    let canonical = path.canonicalize().with_context(|| format!("plugin library {shown}: cannot open"))?;
    // SAFETY: loading runs the library's initialisers; a library that is not a rifle plugin is refused
    // before any of its Rust code is called.
    let lib = unsafe { libloading::Library::new(&canonical) }
        .map_err(|e| anyhow!("plugin library {shown}: cannot load: {e}"))?;
    let host = stamp();
    let theirs = {
        // SAFETY: the stamp function is `extern "C" fn() -> *const c_char` by contract of export_plugins!.
        let f = unsafe { lib.get::<extern "C" fn() -> *const c_char>(STAMP_SYMBOL.as_bytes()) }.map_err(|_| {
            anyhow!("plugin library {shown}: not a rifle plugin (no `{STAMP_SYMBOL}` symbol); export its plugins with `rifle_core::export_plugins!();`")
        })?;
        let ptr = f();
        if ptr.is_null() {
            anyhow::bail!("plugin library {shown}: its stamp is empty");
        }
        // SAFETY: non-null, NUL-terminated by contract, and the library stays loaded.
        unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
    };
    check_stamp(&theirs, &host).map_err(|why| {
        anyhow!(
            "plugin library {shown} was built by another toolchain or against another rifle-core, refusing to load it ({why}). \
             Rebuild it against this rifle with the same toolchain and profile, e.g. `cargo build -p <its crate>` in this workspace \
             (this rifle: {host})"
        )
    })?;
    // SAFETY: the stamp matched, so the entry point has the signature this build gives it.
    let register = unsafe { lib.get::<fn(&mut Registrar)>(REGISTER_SYMBOL.as_bytes()) }
        .map_err(|_| anyhow!("plugin library {shown}: no `{REGISTER_SYMBOL}` entry point"))?;
    let mut registrar = Registrar::default();
    guard(&shown.to_string(), "registration", || register(&mut registrar))?;
    std::mem::forget(lib); // never unloaded: see the module doc
    add_loaded(registrar.into_specs(), Source::Library(canonical)).with_context(|| format!("plugin library {shown}"))
}

/// Libraries named by `RIFLE_PLUGIN_PATH` (a `:`-separated list of directories): every `*.so` in them.
pub fn from_env() -> Result<Vec<PathBuf>> {
    let Some(dirs) = std::env::var_os("RIFLE_PLUGIN_PATH") else { return Ok(vec![]) };
    let mut libs = Vec::new();
    for dir in std::env::split_paths(&dirs).filter(|d| !d.as_os_str().is_empty()) {
        let entries = std::fs::read_dir(&dir).with_context(|| format!("RIFLE_PLUGIN_PATH: cannot read {}", dir.display()))?;
        let mut found: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "so")).collect();
        found.sort();
        libs.extend(found);
    }
    Ok(libs)
}

/// Hands a library's own plugins (those its crate registered, not the built-ins of its rifle-core copy) to
/// the host. Called by `export_plugins!`.
pub fn register_own(registrar: &mut Registrar, crate_name: &str) {
    for spec in inventory::iter::<crate::registry::PluginSpec> {
        if spec.origin == crate_name {
            registrar.add(*spec);
        }
    }
}

/// Makes a `cdylib` crate a rifle plugin library: exports the build stamp and the entry point that hands the
/// crate's `register_plugin!` registrations to the host.
#[macro_export]
macro_rules! export_plugins {
    () => {
        #[no_mangle]
        pub extern "C" fn rifle_plugin_stamp() -> *const ::std::ffi::c_char {
            static STAMP: ::std::sync::OnceLock<::std::ffi::CString> = ::std::sync::OnceLock::new();
            STAMP.get_or_init(|| ::std::ffi::CString::new($crate::dynamic::stamp()).unwrap_or_default()).as_ptr()
        }
        #[no_mangle]
        pub fn rifle_plugin_register(registrar: &mut $crate::registry::Registrar) {
            $crate::dynamic::register_own(registrar, env!("CARGO_CRATE_NAME"))
        }
    };
}
