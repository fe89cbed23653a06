//! The one plugin registry. Built-in plugins register at link time with `register_plugin!` (inventory);
//! dynamic libraries hand theirs over through a `Registrar` (see `dynamic.rs`). Both end up here, looked up
//! by kind and name.
use crate::params::{closest, Param, Params};
use crate::plugin::{Augment, Backbone, Dataset, Probe, Regularizer, Scheduler, Strategy};
use anyhow::{anyhow, bail, Result};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Backbone,
    Dataset,
    Augment,
    Regularizer,
    Scheduler,
    Strategy,
    Probe,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Backbone, Kind::Dataset, Kind::Augment, Kind::Regularizer, Kind::Scheduler, Kind::Strategy, Kind::Probe];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Backbone => "backbone",
            Kind::Dataset => "dataset",
            Kind::Augment => "augment",
            Kind::Regularizer => "regularizer",
            Kind::Scheduler => "scheduler",
            Kind::Strategy => "strategy",
            Kind::Probe => "probe",
        }
    }

    /// "a backbone", "an augment".
    pub fn with_article(self) -> String {
        let article = if self == Kind::Augment { "an" } else { "a" };
        format!("{article} {}", self.name())
    }

    pub fn parse(name: &str) -> Result<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name || format!("{}s", k.name()) == name).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            anyhow!("unknown plugin kind `{name}`; kinds are: {}", names.join(", "))
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A built plugin object.
pub enum Built {
    Backbone(Box<dyn Backbone>),
    Dataset(Box<dyn Dataset>),
    Augment(Box<dyn Augment>),
    Regularizer(Box<dyn Regularizer>),
    Scheduler(Box<dyn Scheduler>),
    Strategy(Box<dyn Strategy>),
    Probe(Box<dyn Probe>),
}

impl Built {
    pub fn kind(&self) -> Kind {
        match self {
            Built::Backbone(_) => Kind::Backbone,
            Built::Dataset(_) => Kind::Dataset,
            Built::Augment(_) => Kind::Augment,
            Built::Regularizer(_) => Kind::Regularizer,
            Built::Scheduler(_) => Kind::Scheduler,
            Built::Strategy(_) => Kind::Strategy,
            Built::Probe(_) => Kind::Probe,
        }
    }
}

/// Everything the registry knows about a plugin: what `rifle plugins` prints and how to build it.
#[derive(Clone, Copy)]
pub struct PluginSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// One line.
    pub doc: &'static str,
    pub params: &'static [Param],
    /// The plugin's parameters as YAML, e.g. `{reinits: 3}`; a test builds every plugin from its example.
    pub example: &'static str,
    pub build: fn(&Params) -> Result<Built>,
    /// The crate that defines the plugin (filled in by `register_plugin!`).
    pub origin: &'static str,
}

inventory::collect!(PluginSpec);

/// Registers a built-in plugin (or, inside a dynamic library, one of the library's plugins):
/// `register_plugin! { name: "rifle", kind: Kind::Strategy, doc: "...", params: PARAMS, example: "{}", build }`
#[macro_export]
macro_rules! register_plugin {
    ($($field:ident : $value:expr),* $(,)?) => {
        $crate::inventory::submit! {
            $crate::registry::PluginSpec { $($field: $value,)* origin: env!("CARGO_CRATE_NAME") }
        }
    };
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    BuiltIn,
    Library(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built-in"),
            Source::Library(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How the host builds a plugin: a built-in calls its `build` directly; a library's plugins are built by
/// the library itself so that its objects contain their own panics (see `dynamic::build_contained`).
pub type BuildFn = fn(&PluginSpec, &Params) -> Result<Built>;

fn build_direct(spec: &PluginSpec, params: &Params) -> Result<Built> {
    (spec.build)(params)
}

#[derive(Clone)]
pub struct Entry {
    pub spec: PluginSpec,
    pub source: Source,
    pub(crate) build: BuildFn,
}

impl Entry {
    /// Builds the plugin from checked parameters; a panic inside the plugin becomes an error naming it.
    pub fn build(&self, params: &Params) -> Result<Built> {
        let built = guard(self.spec.name, "build", || (self.build)(&self.spec, params))??;
        if built.kind() != self.spec.kind {
            bail!("plugin `{}` ({}) is registered as a {} but built a {}", self.spec.name, self.source, self.spec.kind, built.kind());
        }
        Ok(built)
    }
}

/// Runs a plugin's code, turning a panic into an error that names the plugin and the hook.
pub fn guard<T>(plugin: &str, hook: &str, f: impl FnOnce() -> T) -> Result<T> {
    contain(f).map_err(|message| anyhow!("plugin `{plugin}` panicked in {hook}: {message}"))
}

thread_local! {
    /// Whether this thread is inside `contain`, where a panic becomes an error that says it all.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`; a panic in it (a plugin's, or tch's on a libtorch error) comes back as its message.
pub fn contain<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()));
    CONTAINED.with(|c| c.set(outer));
    result
}

/// The process's panic hook: silent for panics `contain` turns into errors (no stray "panicked at" and
/// backtrace above the error), the default report for every other one.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CONTAINED.with(|c| c.get()) {
            default(info)
        }
    }));
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// What a dynamic library registers its plugins into (see `export_plugins!`). The host fills in `raise`;
/// the library fills in `build` and its specs.
pub struct Registrar {
    specs: Vec<PluginSpec>,
    /// Raises a panic in the host's runtime with this message (see `dynamic::contain`).
    pub raise: fn(String) -> !,
    /// The library's own builder of its plugins.
    pub build: Option<BuildFn>,
}

impl Registrar {
    /// A registrar whose `raise` panics in the runtime of the code that creates it (the host's).
    pub fn new() -> Registrar {
        Registrar { specs: Vec::new(), raise: raise_here, build: None }
    }
    pub fn add(&mut self, spec: PluginSpec) {
        self.specs.push(spec);
    }
    pub fn into_specs(self) -> (Vec<PluginSpec>, Option<BuildFn>) {
        (self.specs, self.build)
    }
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar::new()
    }
}

/// `resume_unwind` rather than `panic!`: the message was printed once already, by the library's panic hook.
fn raise_here(message: String) -> ! {
    std::panic::resume_unwind(Box::new(message))
}

static LOADED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Every registered plugin, built-in first, sorted by kind and name within each source.
pub fn entries() -> Vec<Entry> {
    let mut out: Vec<Entry> = inventory::iter::<PluginSpec>
        .into_iter()
        .map(|s| Entry { spec: *s, source: Source::BuiltIn, build: build_direct })
        .collect();
    out.sort_by_key(|e| (e.spec.kind, e.spec.name));
    out.extend(LOADED.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
    out
}

/// Adds plugins from a dynamic library, built with the library's `build`; a name already taken for the same
/// kind is refused.
pub(crate) fn add_loaded(specs: Vec<PluginSpec>, build: BuildFn, source: Source) -> Result<Vec<&'static str>> {
    let existing = entries();
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let mut names = Vec::new();
    for spec in specs {
        if let Some(e) = existing.iter().chain(loaded.iter()).find(|e| e.spec.kind == spec.kind && e.spec.name == spec.name) {
            if e.source == source {
                continue; // the same library loaded twice (pipeline and --plugin): nothing new
            }
            bail!("{source}: {} plugin `{}` is already registered by {}", spec.kind, spec.name, e.source);
        }
        names.push(spec.name);
        loaded.push(Entry { spec, source: source.clone(), build });
    }
    Ok(names)
}

/// The plugin of this kind and name, or an error listing the ones that exist (with the closest first).
pub fn find(kind: Kind, name: &str) -> Result<Entry, String> {
    let all = entries();
    if let Some(e) = all.iter().find(|e| e.spec.kind == kind && e.spec.name == name) {
        return Ok(e.clone());
    }
    let names: Vec<&str> = all.iter().filter(|e| e.spec.kind == kind).map(|e| e.spec.name).collect();
    let hint = closest(name, names.iter().copied()).map(|c| format!("did you mean `{c}`? ")).unwrap_or_default();
    let elsewhere = all.iter().find(|e| e.spec.name == name).map(|e| format!(" (`{name}` is {} plugin)", e.spec.kind.with_article())).unwrap_or_default();
    let known = if names.is_empty() { format!("no {kind} plugins are registered") } else { format!("{kind} plugins are: {}", names.join(", ")) };
    Err(format!("unknown {kind} plugin `{name}`{elsewhere}; {hint}{known}"))
}
