//! Pipelines: YAML files (with `extends`, anchors and merge keys) plus `--set` overrides, checked against
//! the pipeline schema and every plugin's parameter schema. Every error names `file:line:column` and the
//! path inside the pipeline. The resolved pipeline (merged, overridden, defaults filled in, paths absolute)
//! is what a run records and what re-running reproduces.
pub mod spans;

use crate::data::decode::ExifPolicy;
use crate::data::{Normalize, OnBadImage};
use crate::params::{describe, suggestion, Params};
use crate::registry::{self, Entry as PluginEntry, Kind};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use spans::{child, index, Span, SpanIndex};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The whole pipeline schema. Plugin sections stay raw YAML here and are checked against the plugins'
/// own schemas by `resolve_plugins`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Another pipeline file (or a list of them) this one starts from; its keys are deep-merged under ours.
    #[serde(default, skip_serializing)]
    pub extends: Option<Value>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// libtorch intra-op threads; 0 keeps libtorch's default (one per core).
    #[serde(default)]
    pub threads: usize,
    pub epochs: usize,
    pub batch_size: usize,
    /// Evaluation batch size; 0 means `batch_size`.
    #[serde(default)]
    pub eval_batch_size: usize,
    /// Mixed precision on CUDA: `off`, `fp16` (autocast with dynamic loss scaling) or `bf16` (autocast, no
    /// scaling); ignored on the CPU (see `amp.rs`).
    #[serde(default)]
    pub amp: Amp,
    pub backbone: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    pub dataset: Value,
    #[serde(default)]
    pub data: Data,
    #[serde(default)]
    pub augment: Augments,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedulers: Vec<Value>,
    #[serde(default)]
    pub regularizers: Vec<Value>,
    #[serde(default)]
    pub strategies: Vec<Value>,
    #[serde(default)]
    pub probes: Vec<Value>,
    /// Dynamic plugin libraries to load before the plugins above are resolved.
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(default)]
    pub output: Output,
    #[serde(default)]
    pub numerics: Numerics,
}

fn default_device() -> String {
    "auto".into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amp {
    #[default]
    Off,
    Fp16,
    Bf16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub path: String,
    /// Key prefixes removed from the file's names before matching (wrapped models).
    #[serde(default = "default_prefixes")]
    pub strip_prefix: Vec<String>,
    /// Model tensors (by name prefix, e.g. `fc.`) never loaded from the file: they keep their
    /// initialisation (to replace a last layer of the same shape, as in transfer to a new task).
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_prefixes() -> Vec<String> {
    vec!["module.".into()]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Data {
    /// Loader threads.
    pub workers: usize,
    /// Batches queued per worker.
    pub prefetch: usize,
    pub on_bad_image: OnBadImage,
    /// RGB that transparent pixels are composited over.
    pub background: [u8; 3],
    pub exif: ExifPolicy,
    pub normalize: Normalize,
    /// Drop the last incomplete training batch (evaluation never drops).
    pub drop_last: bool,
}

impl Default for Data {
    fn default() -> Self {
        Data {
            workers: 2,
            prefetch: 2,
            on_bad_image: OnBadImage::Error,
            background: [255, 255, 255],
            exif: ExifPolicy::Apply,
            normalize: Normalize::default(),
            drop_last: true,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augments {
    pub train: Vec<Value>,
    pub eval: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    pub lr: f64,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub nesterov: bool,
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled for AdamW, added to the gradient for SGD. The paper's methods use the `l2`/`l2_sp`
    /// regularizers instead and keep this 0.
    #[serde(default)]
    pub weight_decay: f64,
    /// Per-group overrides for the groups `backbone` and `head`.
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, GroupConfig>,
}

fn default_algorithm() -> String {
    "sgd".into()
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    #[serde(default = "one")]
    pub lr_mult: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Output {
    /// Parent of run directories (relative to the current directory).
    pub dir: String,
    /// Write the resumable `last` checkpoint every this many epochs (and always at the end).
    pub checkpoint_every: usize,
    /// Also write a mid-epoch checkpoint every this many steps (0: never).
    pub checkpoint_steps: usize,
}

impl Default for Output {
    fn default() -> Self {
        Output { dir: "runs".into(), checkpoint_every: 1, checkpoint_steps: 0 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Numerics {
    pub on_nonfinite: OnNonFinite,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNonFinite {
    /// Stop with an error naming the step; the last good checkpoint stays.
    #[default]
    Stop,
    /// Skip the step (no update) and count it.
    Skip,
}

/// A plugin as a pipeline uses it: which one, its checked parameters, and where it was written.
#[derive(Clone)]
pub struct PluginUse {
    pub entry: PluginEntry,
    pub params: Params,
    /// Path in the pipeline, e.g. `strategies[0]`.
    pub at: String,
}

impl PluginUse {
    pub fn name(&self) -> &str {
        self.entry.spec.name
    }
    pub fn build(&self) -> anyhow::Result<registry::Built> {
        self.entry.build(&self.params).map_err(|e| anyhow::anyhow!("{} (`{}`): {e:#}", self.at, self.name()))
    }
}

/// The plugins of a pipeline, resolved.
#[derive(Clone)]
pub struct Plugins {
    pub backbone: PluginUse,
    pub dataset: PluginUse,
    pub augment_train: Vec<PluginUse>,
    pub augment_eval: Vec<PluginUse>,
    pub schedulers: Vec<(PluginUse, Vec<String>)>,
    pub regularizers: Vec<PluginUse>,
    pub strategies: Vec<PluginUse>,
    pub probes: Vec<PluginUse>,
}

/// A loaded, checked pipeline.
pub struct Loaded {
    pub pipeline: Pipeline,
    pub plugins: Plugins,
    /// The resolved pipeline as YAML.
    pub resolved: String,
    pub source: PathBuf,
    /// Where each value came from, for errors found after loading.
    pub spans: SpanIndex,
}

impl Loaded {
    /// Builds every plugin except the dataset (which would read data), so that checks a plugin makes when
    /// it is built (e.g. a probability of 1, milestones out of order) fail in `rifle validate` too.
    pub fn build_plugins(&self) -> anyhow::Result<()> {
        let p = &self.plugins;
        let uses = std::iter::once(&p.backbone)
            .chain(&p.augment_train)
            .chain(&p.augment_eval)
            .chain(p.schedulers.iter().map(|(u, _)| u))
            .chain(&p.regularizers)
            .chain(&p.strategies)
            .chain(&p.probes);
        for u in uses {
            if let Err(e) = u.entry.build(&u.params) {
                let at = child(&u.at, u.name());
                let diagnostic = Diagnostic { span: self.spans.value(&at).cloned(), path: at, message: format!("{e:#}") };
                return Err(PipelineError(vec![diagnostic]).into());
            }
        }
        Ok(())
    }
}

/// One problem in a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub span: Option<Span>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let Some(span) = &self.span {
            write!(f, "{span}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a pipeline, one per line.
#[derive(Debug)]
pub struct PipelineError(pub Vec<Diagnostic>);

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for PipelineError {}

type Checked<T> = Result<T, PipelineError>;

fn fail<T>(span: Option<Span>, path: &str, message: impl Into<String>) -> Checked<T> {
    Err(PipelineError(vec![Diagnostic { span, path: path.to_string(), message: message.into() }]))
}

/// Reads a pipeline file with its `extends` chain, applies `--set` overrides, loads the dynamic plugins it
/// names (plus `extra_plugins`), and checks everything.
pub fn load(path: &Path, overrides: &[String], extra_plugins: &[PathBuf]) -> Checked<Loaded> {
    let (mut tree, mut spans) = read_tree(path, &mut Vec::new())?;
    for arg in overrides {
        apply_override(&mut tree, &mut spans, arg)?;
    }
    spans.prune(&tree);
    let mut pipeline: Pipeline = typed(&tree, &spans)?;
    load_plugins(&mut pipeline, &spans, extra_plugins)?;
    // Plugin parameters and the pipeline's own paths are checked independently, so one report names every
    // unset variable or missing file, not the first.
    let plugins = resolve_plugins(&mut pipeline, &spans);
    let paths = expand_paths(&mut pipeline, &spans);
    let mut plugins = match (plugins, paths) {
        (Ok(plugins), Ok(())) => plugins,
        (plugins, paths) => return Err(PipelineError([plugins.err(), paths.err()].into_iter().flatten().flat_map(|e| e.0).collect())),
    };
    share_decode_rules(&mut pipeline, &mut plugins.dataset, &spans)?;
    check_pipeline(&pipeline, &plugins, &spans)?;
    let resolved = serde_yaml::to_string(&pipeline).map_err(|e| PipelineError(vec![Diagnostic { span: None, path: String::new(), message: e.to_string() }]))?;
    Ok(Loaded { pipeline, plugins, resolved, source: path.to_path_buf(), spans })
}

/// Parses one file (merge keys applied) and, recursively, the files it extends.
fn read_tree(path: &Path, chain: &mut Vec<PathBuf>) -> Checked<(Value, SpanIndex)> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return fail(None, "", format!("cannot read pipeline {shown}: {e}")),
    };
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let file = Arc::new(path.to_path_buf());
    let spans = SpanIndex::build(&text, file.clone());
    if !spans.duplicates.is_empty() {
        let diagnostics = spans
            .duplicates
            .iter()
            .map(|d| Diagnostic {
                span: Some(d.again.clone()),
                path: d.path.clone(),
                message: format!("duplicate key: already set at {} (a key may appear once per mapping)", d.first),
            })
            .collect();
        return Err(PipelineError(diagnostics));
    }
    let mut tree: Value = match serde_yaml::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let span = e.location().map(|l| Span::File { file: file.clone(), line: l.line(), column: l.column() });
            return fail(span, "", format!("invalid YAML: {}", strip_location(&e.to_string())));
        }
    };
    if tree.is_null() {
        return fail(Some(Span::File { file, line: 1, column: 1 }), "", "the pipeline is empty");
    }
    if !tree.is_mapping() {
        return fail(Some(Span::File { file, line: 1, column: 1 }), "", format!("a pipeline is a mapping of keys, found {}", describe(&tree)));
    }
    if let Err(e) = tree.apply_merge() {
        return fail(spans.value("").cloned(), "", format!("merge key `<<`: {e}"));
    }
    // Top-level `x-…` keys hold YAML anchors to reuse below (the docker-compose convention), not settings.
    if let Value::Mapping(m) = &mut tree {
        m.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("x-")));
    }
    let parents = match tree.get("extends") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![(s.clone(), "extends".to_string())],
        Some(Value::Sequence(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let at = index("extends", i);
                match item.as_str() {
                    Some(s) => out.push((s.to_string(), at)),
                    None => return fail(spans.value(&at).cloned(), &at, format!("expected a file name, found {}", describe(item))),
                }
            }
            out
        }
        Some(other) => return fail(spans.value("extends").cloned(), "extends", format!("expected a file name or a list of them, found {}", describe(other))),
    };
    if parents.is_empty() {
        return Ok((tree, spans));
    }
    chain.push(canonical);
    let (mut base, mut base_spans) = (Value::Mapping(Default::default()), SpanIndex::default());
    for (name, at) in parents {
        let parent = path.parent().unwrap_or(Path::new(".")).join(&name);
        if !parent.exists() {
            return fail(spans.value(&at).cloned(), &at, format!("extended file {} does not exist", parent.display()));
        }
        let canonical_parent = parent.canonicalize().unwrap_or_else(|_| parent.clone());
        if chain.contains(&canonical_parent) {
            let cycle: Vec<String> = chain.iter().chain([&canonical_parent]).map(|p| p.display().to_string()).collect();
            return fail(spans.value(&at).cloned(), &at, format!("`extends` forms a cycle: {}", cycle.join(" -> ")));
        }
        let (t, s) = read_tree(&parent, chain)?;
        deep_merge(&mut base, t);
        base_spans.overlay(s);
    }
    chain.pop();
    if let Value::Mapping(m) = &mut tree {
        m.remove("extends");
    }
    deep_merge(&mut base, tree);
    base_spans.overlay(spans);
    Ok((base, base_spans))
}

/// serde_yaml appends " at line L column C" to its messages; the location is printed in front instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// `over` wins; mappings merge key by key, everything else (lists included) is replaced.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_mapping() && v.is_mapping() => deep_merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Splits `a.b[0].c` into keys and indices.
fn parse_path(path: &str) -> Option<Vec<Result<String, usize>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_once('[').map(|(n, r)| (n, format!("[{r}"))).unwrap_or((part, String::new()));
        if name.is_empty() {
            return None;
        }
        out.push(Ok(name.to_string()));
        while let Some(r) = rest.strip_prefix('[') {
            let (i, tail) = r.split_once(']')?;
            out.push(Err(i.parse().ok()?));
            rest = tail.to_string();
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// `--set a.b[0].c=value`: the value is parsed as YAML, so it is typed exactly as in a file.
fn apply_override(tree: &mut Value, spans: &mut SpanIndex, arg: &str) -> Checked<()> {
    let span = Span::CommandLine(arg.to_string());
    let Some((path, text)) = arg.split_once('=') else {
        return fail(Some(span), "", "expected KEY.PATH=VALUE");
    };
    let Some(parts) = parse_path(path.trim()) else {
        return fail(Some(span), path, "not a key path (write it like `optimizer.lr` or `strategies[0].rifle.reinits`)");
    };
    let value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => return fail(Some(span), path, format!("the value is not valid YAML: {}", strip_location(&e.to_string()))),
    };
    let mut node = tree;
    let mut at = String::new();
    // Keys this override creates: errors about them point at the command line, not at the file.
    let mut created = Vec::new();
    for part in parts {
        node = match part {
            Ok(key) => {
                at = child(&at, &key);
                if node.is_null() {
                    *node = Value::Mapping(Default::default());
                }
                let Value::Mapping(m) = node else {
                    return fail(Some(span), &at, format!("cannot set a key inside {}", describe(node)));
                };
                if !m.contains_key(key.as_str()) {
                    created.push(at.clone());
                }
                m.entry(Value::String(key)).or_insert(Value::Null)
            }
            Err(i) => {
                at = index(&at, i);
                let len = match &*node {
                    Value::Sequence(items) => items.len(),
                    other => return fail(Some(span), &at, format!("cannot index into {}", describe(other))),
                };
                if i >= len {
                    return fail(Some(span), &at, format!("index {i} is past the end of a list of {len}"));
                }
                &mut node.as_sequence_mut().expect("checked above")[i]
            }
        };
    }
    *node = value;
    spans.remove_below(&at);
    for p in created.into_iter().chain([at]) {
        spans.insert(p, spans::Entry { key: Some(span.clone()), value: span.clone() });
    }
    Ok(())
}

/// Deserializes the top level, turning serde's error into a located one.
fn typed<T: serde::de::DeserializeOwned>(tree: &Value, spans: &SpanIndex) -> Checked<T> {
    serde_path_to_error::deserialize(tree.clone()).or_else(|e| {
        let path = format_path(e.path());
        let message = e.inner().to_string();
        let message = strip_location(&message);
        if let Some((field, expected)) = unknown_field(&message) {
            let at = if path.ends_with(&field) { path.clone() } else { child(&path, &field) };
            let hint = if at == "base" || at == "axes" {
                " (this looks like a sweep file: run it with `rifle sweep`, which checks every run before the first starts)".to_string()
            } else {
                suggestion(&field, expected.iter().map(String::as_str))
            };
            return fail(spans.key(&at).cloned(), &at, format!("unknown key `{field}`; valid keys: {}{hint}", expected.join(", ")));
        }
        if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            return fail(spans.value(&path).cloned(), &path, format!("missing required key `{field}`"));
        }
        let expected = message.rsplit("expected ").next().unwrap_or_default();
        // serde names Rust's types; a pipeline's author thinks in YAML's.
        let readable = match expected {
            "u8" | "u16" | "u32" | "u64" | "usize" => Some("a non-negative integer"),
            "i8" | "i16" | "i32" | "i64" | "isize" => Some("an integer"),
            "f32" | "f64" => Some("a number"),
            _ => None,
        };
        let numeric = readable.is_some();
        let quoted_number = message
            .strip_prefix("invalid type: string \"")
            .and_then(|rest| rest.split_once('"'))
            .is_some_and(|(text, _)| text.trim().parse::<f64>().is_ok());
        let hint = if message.contains("string \"") && message.contains("expected a boolean") {
            " (YAML 1.2 reads yes/no/on/off as strings: write true or false)"
        } else if quoted_number && numeric {
            " (numbers must not be quoted)"
        } else if message.contains("floating point") && readable.is_some_and(|r| r.ends_with("integer")) {
            " (this key takes an integer)"
        } else {
            ""
        };
        let message = match readable {
            Some(r) => format!("{}{r}", message.strip_suffix(expected).unwrap_or(&message)),
            None => message.to_string(),
        };
        fail(spans.value(&path).cloned(), &path, format!("{message}{hint}"))
    })
}

fn format_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index: i } => out = index(&out, *i),
            serde_path_to_error::Segment::Map { key } | serde_path_to_error::Segment::Enum { variant: key } => out = child(&out, key),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// `unknown field `x`, expected one of `a`, `b`` → ("x", ["a", "b"]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((field.to_string(), expected))
}

fn load_plugins(pipeline: &mut Pipeline, spans: &SpanIndex, extra: &[PathBuf]) -> Checked<()> {
    let mut errors = Vec::new();
    let from_env = crate::dynamic::from_env().map_err(|e| PipelineError(vec![Diagnostic { span: None, path: String::new(), message: format!("{e:#}") }]))?;
    // Libraries given with --plugin or found through RIFLE_PLUGIN_PATH join the pipeline's own list
    // (absolute), so the recorded pipeline names them: resuming the run or predicting with it loads them
    // again, with or without the flag and the variable.
    let own = pipeline.plugins.len();
    let mut origins = Vec::new();
    for (lib, origin) in extra.iter().cloned().map(|p| (p, "--plugin")).chain(from_env.into_iter().map(|p| (p, "RIFLE_PLUGIN_PATH"))) {
        let absolute = std::path::absolute(&lib).unwrap_or(lib).display().to_string();
        if !pipeline.plugins.contains(&absolute) {
            pipeline.plugins.push(absolute);
            origins.push(origin);
        }
    }
    let mut libraries = Vec::new();
    for (i, lib) in pipeline.plugins.iter_mut().enumerate() {
        let at = if i < own { index("plugins", i) } else { origins[i - own].to_string() };
        match file_path(lib, spans.value(&at)) {
            Ok(p) => {
                *lib = p.display().to_string();
                libraries.push((PathBuf::from(&*lib), at));
            }
            Err(e) => errors.push(Diagnostic { span: spans.value(&at).cloned(), path: at, message: e }),
        }
    }
    for (lib, at) in libraries {
        if let Err(e) = crate::dynamic::load(&lib) {
            let span = if at.starts_with("plugins") { spans.value(&at).cloned() } else { None };
            errors.push(Diagnostic { span, path: at, message: format!("{e:#}") });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PipelineError(errors))
    }
}

/// Common parameters every scheduler takes (handled by the engine, not the plugin).
pub const SCHEDULER_GROUPS: &str = "groups";

fn resolve_plugins(pipeline: &mut Pipeline, spans: &SpanIndex) -> Checked<Plugins> {
    let mut errors = Vec::new();
    let one = |kind: Kind, value: &mut Value, at: &str, errors: &mut Vec<Diagnostic>| -> Option<(PluginUse, Vec<String>)> {
        match resolve_one(kind, value, at, spans) {
            Ok(u) => Some(u),
            Err(PipelineError(d)) => {
                errors.extend(d);
                None
            }
        }
    };
    let backbone = one(Kind::Backbone, &mut pipeline.backbone, "backbone", &mut errors);
    let dataset = one(Kind::Dataset, &mut pipeline.dataset, "dataset", &mut errors);
    let list = |kind: Kind, values: &mut Vec<Value>, section: &str, errors: &mut Vec<Diagnostic>| -> Vec<(PluginUse, Vec<String>)> {
        values.iter_mut().enumerate().filter_map(|(i, v)| one(kind, v, &index(section, i), errors)).collect()
    };
    let augment_train = list(Kind::Augment, &mut pipeline.augment.train, "augment.train", &mut errors);
    let augment_eval = list(Kind::Augment, &mut pipeline.augment.eval, "augment.eval", &mut errors);
    let schedulers = list(Kind::Scheduler, &mut pipeline.schedulers, "schedulers", &mut errors);
    let regularizers = list(Kind::Regularizer, &mut pipeline.regularizers, "regularizers", &mut errors);
    let strategies = list(Kind::Strategy, &mut pipeline.strategies, "strategies", &mut errors);
    let probes = list(Kind::Probe, &mut pipeline.probes, "probes", &mut errors);
    match (backbone, dataset) {
        (Some(backbone), Some(dataset)) if errors.is_empty() => {
            let plain = |v: Vec<(PluginUse, Vec<String>)>| v.into_iter().map(|(u, _)| u).collect();
            Ok(Plugins {
                backbone: backbone.0,
                dataset: dataset.0,
                augment_train: plain(augment_train),
                augment_eval: plain(augment_eval),
                schedulers,
                regularizers: plain(regularizers),
                strategies: plain(strategies),
                probes: plain(probes),
            })
        }
        _ => Err(PipelineError(errors)),
    }
}

/// Resolves `name` or `{name: {params}}` to a plugin with checked parameters, and rewrites `value` with
/// the defaults filled in.
fn resolve_one(kind: Kind, value: &mut Value, at: &str, spans: &SpanIndex) -> Checked<(PluginUse, Vec<String>)> {
    let (name, raw) = match &*value {
        Value::String(name) => (name.clone(), Value::Null),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one entry");
            match k.as_str() {
                Some(name) => (name.to_string(), v.clone()),
                None => return fail(spans.value(at).cloned(), at, format!("expected a {kind} name, found {}", describe(k))),
            }
        }
        other => {
            return fail(
                spans.value(at).cloned(),
                at,
                format!("expected a {kind} as `name` or `{{name: {{params}}}}` (a mapping with exactly one key), found {}", describe(other)),
            )
        }
    };
    let entry = match registry::find(kind, &name) {
        Ok(e) => e,
        Err(message) => return fail(spans.key(&child(at, &name)).cloned(), at, message),
    };
    let at_params = child(at, &name);
    let schema: Vec<crate::params::Param> = entry.spec.params.to_vec();
    let extra = if kind == Kind::Scheduler {
        vec![crate::params::Param::strs(SCHEDULER_GROUPS, &[], "parameter groups this schedule applies to (empty: all)")]
    } else {
        vec![]
    };
    let mut errors = Vec::new();
    let map = match &raw {
        Value::Null => Default::default(),
        Value::Mapping(m) => m.clone(),
        other => return fail(spans.value(&at_params).cloned(), &at_params, format!("expected a mapping of parameters, found {}", describe(other))),
    };
    let all: Vec<&crate::params::Param> = schema.iter().chain(extra.iter()).collect();
    let valid: Vec<&str> = all.iter().map(|p| p.name).collect();
    for key in map.keys() {
        let k = key.as_str().unwrap_or("");
        if !valid.contains(&k) {
            let path = child(&at_params, k);
            let hint = suggestion(k, valid.iter().copied());
            let list = if valid.is_empty() { "it takes no parameters".to_string() } else { format!("valid keys: {}", valid.join(", ")) };
            errors.push(Diagnostic { span: spans.key(&path).cloned(), path, message: format!("unknown key `{k}` for {kind} `{name}`; {list}{hint}") });
        }
    }
    let mut params = Params { origin: format!("{kind} `{name}` at {at}"), values: Default::default() };
    let mut resolved = serde_yaml::Mapping::new();
    let mut groups = Vec::new();
    for p in all {
        let path = child(&at_params, p.name);
        let given = map.get(p.name).filter(|v| !v.is_null());
        let checked = match given {
            Some(v) => match p.check(v) {
                Ok(c) => Some(c),
                Err(message) => {
                    errors.push(Diagnostic { span: spans.value(&path).cloned(), path, message });
                    continue;
                }
            },
            None if p.default == crate::params::Default::Required => {
                errors.push(Diagnostic {
                    span: spans.value(&at_params).cloned(),
                    path,
                    message: format!("missing required parameter `{}` ({}: {})", p.name, p.type_name(), p.doc),
                });
                continue;
            }
            None => p.default_value(),
        };
        let Some(mut checked) = checked else { continue };
        if p.ty == crate::params::Ty::Path {
            if let crate::params::Value::Str(s) = &checked {
                match file_path(s, spans.value(&path)) {
                    Ok(expanded) if expanded.exists() => checked = crate::params::Value::Str(expanded.display().to_string()),
                    Ok(expanded) => {
                        errors.push(Diagnostic { span: spans.value(&path).cloned(), path, message: format!("{} does not exist", expanded.display()) });
                        continue;
                    }
                    Err(message) => {
                        errors.push(Diagnostic { span: spans.value(&path).cloned(), path, message });
                        continue;
                    }
                }
            }
        }
        if p.name == SCHEDULER_GROUPS && kind == Kind::Scheduler {
            if let crate::params::Value::List(items) = &checked {
                groups = items.iter().filter_map(|v| if let crate::params::Value::Str(s) = v { Some(s.clone()) } else { None }).collect();
            }
        }
        resolved.insert(Value::String(p.name.to_string()), checked.to_yaml());
        params.values.insert(p.name.to_string(), checked);
    }
    if !errors.is_empty() {
        return Err(PipelineError(errors));
    }
    let mut outer = serde_yaml::Mapping::new();
    outer.insert(Value::String(name), if resolved.is_empty() { Value::Null } else { Value::Mapping(resolved) });
    *value = Value::Mapping(outer);
    Ok((PluginUse { entry, params, at: at.to_string() }, groups))
}

/// The image decoding rules are set in two places: `data.background` / `data.exif` (what `rifle predict`
/// uses) and a file dataset's own `background` / `exif` parameters (what training uses). They must agree:
/// whichever was changed from its default is copied to the other; changed differently in both, an error.
fn share_decode_rules(pipeline: &mut Pipeline, dataset: &mut PluginUse, spans: &SpanIndex) -> Checked<()> {
    use crate::params::Value as P;
    let data_background = P::List(pipeline.data.background.iter().map(|&c| P::Int(c.into())).collect());
    let data_exif = P::Str(if pipeline.data.exif == ExifPolicy::Ignore { "ignore" } else { "apply" }.into());
    let defaults = Data::default();
    let mut errors = Vec::new();
    for (name, data_value, data_is_default) in
        [("background", data_background, pipeline.data.background == defaults.background), ("exif", data_exif, pipeline.data.exif == defaults.exif)]
    {
        let Some(param) = dataset.entry.spec.params.iter().find(|p| p.name == name) else { continue };
        let Some(own) = dataset.params.values.get(name).cloned() else { continue };
        if own == data_value {
            continue;
        }
        let at = child(&child("dataset", dataset.name()), name);
        if Some(&own) == param.default_value().as_ref() {
            dataset.params.values.insert(name.into(), data_value.clone());
            if let Some(slot) = pipeline.dataset.get_mut(dataset.name()).and_then(|m| m.get_mut(name)) {
                *slot = data_value.to_yaml();
            }
        } else if data_is_default {
            match name {
                "exif" => pipeline.data.exif = if own == P::Str("ignore".into()) { ExifPolicy::Ignore } else { ExifPolicy::Apply },
                _ => match &own {
                    P::List(items) if items.len() == 3 && items.iter().all(|v| v.as_f64().is_some_and(|x| (0.0..=255.0).contains(&x))) => {
                        for (slot, v) in pipeline.data.background.iter_mut().zip(items) {
                            *slot = v.as_f64().map_or(0, |x| x as u8);
                        }
                    }
                    _ => errors.push(Diagnostic { span: spans.value(&at).cloned(), path: at, message: "expected three values in 0..=255".into() }),
                },
            }
        } else {
            errors.push(Diagnostic {
                span: spans.value(&at).cloned(),
                path: at,
                message: format!("`{own}` contradicts data.{name} `{data_value}`; set it in one place"),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PipelineError(errors))
    }
}

/// Expands `~/` and `${VAR}` / `$VAR` in a path. `RIFLE_CACHE` defaults to `~/.cache/rifle`.
pub fn expand(text: &str) -> Result<PathBuf, String> {
    let home = || std::env::var("HOME").map_err(|_| "HOME is not set".to_string());
    let mut out = String::new();
    let mut rest = text;
    if let Some(r) = rest.strip_prefix("~/") {
        out.push_str(&home()?);
        out.push('/');
        rest = r;
    }
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, tail) = if let Some(r) = after.strip_prefix('{') {
            r.split_once('}').ok_or_else(|| format!("`{text}`: unclosed `${{`"))?
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let value = match std::env::var(name) {
            Ok(v) => v,
            Err(_) if name == "RIFLE_CACHE" => format!("{}/.cache/rifle", home()?),
            Err(_) => return Err(format!("`{text}`: environment variable `{name}` is not set")),
        };
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A path written in a pipeline, expanded and made absolute: a relative path is relative to the folder of
/// the file that wrote it (so a pipeline means the same files from any working directory), or to the
/// working directory when it came from `--set`.
fn file_path(text: &str, written: Option<&Span>) -> Result<PathBuf, String> {
    let path = expand(text)?;
    Ok(match written {
        Some(Span::File { file, .. }) if path.is_relative() => absolute(&file.parent().unwrap_or(Path::new(".")).join(path)),
        _ => absolute(&path),
    })
}

fn expand_paths(pipeline: &mut Pipeline, spans: &SpanIndex) -> Checked<()> {
    let mut errors = Vec::new();
    if let Some(w) = &mut pipeline.weights {
        match file_path(&w.path, spans.value("weights.path")) {
            Ok(p) if p.exists() => w.path = p.display().to_string(),
            Ok(p) => errors.push(Diagnostic { span: spans.value("weights.path").cloned(), path: "weights.path".into(), message: format!("{} does not exist", p.display()) }),
            Err(e) => errors.push(Diagnostic { span: spans.value("weights.path").cloned(), path: "weights.path".into(), message: e }),
        }
    }
    match expand(&pipeline.output.dir) {
        Ok(p) => pipeline.output.dir = absolute(&p).display().to_string(),
        Err(e) => errors.push(Diagnostic { span: spans.value("output.dir").cloned(), path: "output.dir".into(), message: e }),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PipelineError(errors))
    }
}

/// Checks that need the whole pipeline: values serde accepts but the engine cannot use.
fn check_pipeline(p: &Pipeline, plugins: &Plugins, spans: &SpanIndex) -> Checked<()> {
    let mut errors = Vec::new();
    let mut check = |ok: bool, path: &str, message: String| {
        if !ok {
            errors.push(Diagnostic { span: spans.value(path).cloned(), path: path.to_string(), message });
        }
    };
    check(p.epochs >= 1, "epochs", "must be at least 1".into());
    check(p.batch_size >= 1, "batch_size", "must be at least 1".into());
    check(p.optimizer.lr > 0.0 && p.optimizer.lr.is_finite(), "optimizer.lr", format!("must be a positive number, found {}", p.optimizer.lr));
    check(
        ["sgd", "adamw"].contains(&p.optimizer.algorithm.as_str()),
        "optimizer.algorithm",
        format!("unknown optimizer `{}`; choose sgd or adamw{}", p.optimizer.algorithm, suggestion(&p.optimizer.algorithm, ["sgd", "adamw"])),
    );
    check((0.0..1.0).contains(&p.optimizer.momentum), "optimizer.momentum", format!("must be in [0, 1), found {}", p.optimizer.momentum));
    check(!p.optimizer.nesterov || p.optimizer.momentum > 0.0, "optimizer.nesterov", "Nesterov momentum needs optimizer.momentum > 0".into());
    let non_negative = |v: f64| v >= 0.0 && v.is_finite();
    check(non_negative(p.optimizer.weight_decay), "optimizer.weight_decay", format!("must be a non-negative number, found {}", p.optimizer.weight_decay));
    check(p.optimizer.eps > 0.0 && p.optimizer.eps.is_finite(), "optimizer.eps", format!("must be a positive number, found {}", p.optimizer.eps));
    for (i, b) in p.optimizer.betas.iter().enumerate() {
        check((0.0..1.0).contains(b), &format!("optimizer.betas[{i}]"), format!("must be in [0, 1), found {b}"));
    }
    for (name, group) in &p.optimizer.groups {
        let at = child("optimizer.groups", name);
        check(
            ["backbone", "head"].contains(&name.as_str()),
            &at,
            format!("unknown parameter group `{name}`; groups are backbone and head{}", suggestion(name, ["backbone", "head"])),
        );
        // 0 freezes a group; a negative multiplier would climb the loss.
        check(non_negative(group.lr_mult), &child(&at, "lr_mult"), format!("must be a non-negative number (0 freezes the group), found {}", group.lr_mult));
        if let Some(wd) = group.weight_decay {
            check(non_negative(wd), &child(&at, "weight_decay"), format!("must be a non-negative number, found {wd}"));
        }
    }
    for (use_, groups) in &plugins.schedulers {
        for g in groups {
            check(
                ["backbone", "head"].contains(&g.as_str()),
                &child(&child(&use_.at, use_.name()), SCHEDULER_GROUPS),
                format!("unknown parameter group `{g}`; groups are backbone and head"),
            );
        }
    }
    let device_ok = p.device == "auto" || p.device == "cpu" || p.device == "cuda" || p.device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    check(device_ok, "device", format!("unknown device `{}`; use auto, cpu, cuda or cuda:N", p.device));
    check(p.data.workers >= 1, "data.workers", "must be at least 1".into());
    check(p.output.checkpoint_every >= 1, "output.checkpoint_every", "must be at least 1".into());
    for (i, s) in p.data.normalize.std.iter().enumerate() {
        check(*s > 0.0, &format!("data.normalize.std[{i}]"), format!("must be positive, found {s}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PipelineError(errors))
    }
}
