//! Dynamic plugins: shared libraries built against rifle-core, loaded with libloading into the registry.
//!
//! Rust has no stable ABI: trait objects, `String`s and `Tensor`s cross this boundary as the compiler laid
//! them out. A library is therefore loaded only when its build stamp equals the host's: same rustc, same
//! rifle-core version, same profile, and the same layout fingerprint (a hash of the source of the files
//! that define what crosses the boundary plus the sizes of those types). The stamp is read through a C
//! function, which is safe to call whatever built the library; only then is the Rust entry point called.
//! Libraries are never unloaded, so the objects and `&'static` specs they hand over stay valid; loading the
//! same library again registers nothing new.
//!
//! A library links its own copy of the Rust runtime, and a panic raised by one copy cannot be caught by the
//! other: the process aborts ("Rust cannot catch foreign exceptions"). So a library builds its plugins
//! itself (`build_contained`) and wraps every object it hands over in `Contained`, whose methods catch the
//! library's panics inside the library and raise them again as panics of the host (through the host's
//! `Registrar::raise`), where the engine's `guard` reports them with the plugin's name.
use crate::data::{Sample, Task};
use crate::model::Net;
use crate::params::Params;
use crate::plugin::*;
use crate::registry::{add_loaded, guard, panic_message, Built, PluginSpec, Registrar, Source};
use anyhow::{anyhow, Context, Result};
use rand_chacha::ChaCha8Rng;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tch::{nn, Tensor};

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
    use std::mem::{align_of, size_of};
    let sizes = [
        size_of::<Registrar>(),
        size_of::<PluginSpec>(),
        size_of::<crate::registry::BuildFn>(),
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
        .with_context(|| format!("plugin library {shown}: cannot load"))?;
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
    let mut registrar = Registrar::new();
    guard(&shown.to_string(), "registration", || register(&mut registrar))?;
    std::mem::forget(lib); // never unloaded: see the module doc
    let (specs, build) = registrar.into_specs();
    let build = build.ok_or_else(|| anyhow!("plugin library {shown}: its registration did not provide a builder"))?;
    add_loaded(specs, build, Source::Library(canonical)).with_context(|| format!("plugin library {shown}"))
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
/// the host, with the library's builder. Called by `export_plugins!`, inside the library.
pub fn register_own(registrar: &mut Registrar, crate_name: &str) {
    let _ = HOST_RAISE.set(registrar.raise);
    registrar.build = Some(build_contained);
    contain(|| {
        for spec in inventory::iter::<PluginSpec> {
            if spec.origin == crate_name {
                registrar.add(*spec);
            }
        }
    })
}

/// The host's `Registrar::raise`, as seen inside a library.
static HOST_RAISE: OnceLock<fn(String) -> !> = OnceLock::new();

/// Runs library code: a panic is caught by the library's own runtime and raised again in the host's.
fn contain<T>(f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => match HOST_RAISE.get() {
            Some(raise) => raise(panic_message(payload.as_ref())),
            None => std::panic::resume_unwind(payload),
        },
    }
}

/// Builds one of the library's plugins and wraps the object so that its panics are contained too.
fn build_contained(spec: &PluginSpec, params: &Params) -> Result<Built> {
    Ok(match contain(|| (spec.build)(params))? {
        Built::Backbone(b) => Built::Backbone(Box::new(Contained(b))),
        Built::Dataset(d) => Built::Dataset(Box::new(Contained(d))),
        Built::Augment(a) => Built::Augment(Box::new(Contained(a))),
        Built::Regularizer(r) => Built::Regularizer(Box::new(Contained(r))),
        Built::Scheduler(s) => Built::Scheduler(Box::new(Contained(s))),
        Built::Strategy(s) => Built::Strategy(Box::new(Contained(s))),
        Built::Probe(p) => Built::Probe(Box::new(Contained(p))),
    })
}

/// A library's object seen from the host: every method runs under `contain`.
struct Contained<P>(P);

impl<T: Hooks + ?Sized> Hooks for Contained<Box<T>> {
    fn run_start(&mut self, ctx: &mut Ctx) -> Result<()> {
        contain(|| self.0.run_start(ctx))
    }
    fn epoch_start(&mut self, ctx: &mut Ctx) -> Result<()> {
        contain(|| self.0.epoch_start(ctx))
    }
    fn before_step(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> Result<()> {
        contain(|| self.0.before_step(ctx, batch))
    }
    fn after_backward(&mut self, ctx: &mut Ctx) -> Result<()> {
        contain(|| self.0.after_backward(ctx))
    }
    fn epoch_end(&mut self, ctx: &mut Ctx) -> Result<()> {
        contain(|| self.0.epoch_end(ctx))
    }
    fn run_end(&mut self, ctx: &mut Ctx) -> Result<()> {
        contain(|| self.0.run_end(ctx))
    }
}

impl<T: Perturb + ?Sized> Perturb for Contained<Box<T>> {
    fn residual(&self, block: usize, blocks: usize, residual: Tensor, train: bool) -> Tensor {
        contain(|| self.0.residual(block, blocks, residual, train))
    }
    fn stage_output(&self, stage: usize, x: Tensor, train: bool) -> Tensor {
        contain(|| self.0.stage_output(stage, x, train))
    }
    fn features(&self, x: Tensor, train: bool) -> Tensor {
        contain(|| self.0.features(x, train))
    }
    fn head_weight(&self, w: &Tensor, train: bool) -> Tensor {
        contain(|| self.0.head_weight(w, train))
    }
}

impl Regularizer for Contained<Box<dyn Regularizer>> {
    fn setup(&mut self, net: &Net) -> Result<()> {
        contain(|| self.0.setup(net))
    }
    fn add_grad(&self, net: &Net) {
        contain(|| self.0.add_grad(net))
    }
    fn penalty(&self, net: &Net) -> f64 {
        contain(|| self.0.penalty(net))
    }
}

impl Scheduler for Contained<Box<dyn Scheduler>> {
    fn factor(&self, progress: &Progress) -> f64 {
        contain(|| self.0.factor(progress))
    }
}

impl Augment for Contained<Box<dyn Augment>> {
    fn apply(&self, image: image::RgbImage, rng: &mut ChaCha8Rng) -> Result<image::RgbImage> {
        contain(|| self.0.apply(image, rng))
    }
}

impl Dataset for Contained<Box<dyn Dataset>> {
    fn task(&self) -> Task {
        contain(|| self.0.task())
    }
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>> {
        contain(|| self.0.split(split)).map(|s| Arc::new(Contained(s)) as Arc<dyn Samples>)
    }
}

impl Samples for Contained<Arc<dyn Samples>> {
    fn len(&self) -> usize {
        contain(|| self.0.len())
    }
    fn load(&self, index: usize) -> Result<Sample> {
        contain(|| self.0.load(index))
    }
    fn describe(&self, index: usize) -> String {
        contain(|| self.0.describe(index))
    }
    fn class_of(&self, index: usize) -> Option<usize> {
        contain(|| self.0.class_of(index))
    }
}

impl Backbone for Contained<Box<dyn Backbone>> {
    fn build(&self, root: &nn::Path) -> Result<Box<dyn Network>> {
        contain(|| self.0.build(root)).map(|n| Box::new(Contained(n)) as Box<dyn Network>)
    }
    fn head(&self) -> (&str, bool) {
        contain(|| self.0.head())
    }
}

impl Network for Contained<Box<dyn Network>> {
    fn features(&self, x: &Tensor, train: bool, perturb: &dyn Perturb) -> Tensor {
        contain(|| self.0.features(x, train, perturb))
    }
    fn feature_dim(&self) -> i64 {
        contain(|| self.0.feature_dim())
    }
    fn stages(&self) -> Vec<Stage> {
        contain(|| self.0.stages())
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
