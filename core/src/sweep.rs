//! Sweeps: a base pipeline crossed with axes (methods × datasets × seeds, or any pipeline key), run by a
//! local executor. Every run is checked before the first one starts. A sweep is resumable: a finished run
//! is skipped, an interrupted one resumed from its checkpoint; a failed run is recorded and the sweep goes
//! on. Each run is a child `rifle run` process, so a crash or a plugin library stays inside its run.
//!
//! ```yaml
//! base: ../mock.yaml            # the pipeline every run extends (relative to this file)
//! out: runs/mock-sweep          # where run directories go (relative to the current directory)
//! jobs: 1                       # concurrent runs on the CPU; on CUDA, one run per device
//! axes:
//!   - name: method              # labelled overrides, deep-merged into the base
//!     values:
//!       l2:    {regularizers: [{l2: {alpha: 1.0e-4}}]}
//!       rifle: {regularizers: [{l2: {alpha: 1.0e-4}}], strategies: [{rifle: {reinits: 3}}]}
//!   - name: seed                # one key (or a list of keys, all set to the value), a list of values
//!     key: seed
//!     values: [0, 1, 2]
//! set:                          # overrides for every run
//!   output.checkpoint_every: 5
//! ```
//! Strings in values, in `set` and in `base` may name axes' labels as `{axis}` (e.g. a teacher checkpoint
//! per seed, or `base: "{regularizer}/{method}.yaml"` to pick one pipeline file per run). An axis without a
//! key may also list bare labels, for use in such placeholders.
use crate::config::{self, deep_merge};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    pub base: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub out: Option<String>,
    #[serde(default = "one")]
    pub jobs: usize,
    /// `key.path: value` overrides for every run (strings may use `{axis}` labels).
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    pub axes: Vec<Axis>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Keys {
    One(String),
    Many(Vec<String>),
}

impl Keys {
    fn list(&self) -> Vec<&str> {
        match self {
            Keys::One(k) => vec![k.as_str()],
            Keys::Many(ks) => ks.iter().map(String::as_str).collect(),
        }
    }
}

/// `key=value` with the value as one-line YAML (JSON is valid YAML).
fn assignment(key: &str, value: &Value) -> Result<String> {
    Ok(format!("{key}={}", serde_json::to_string(&serde_json::to_value(value)?)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    pub name: String,
    /// With a key (or a list of keys set to the same value), `values` is a list of values; without, a
    /// mapping label → overrides.
    #[serde(default)]
    pub key: Option<Keys>,
    pub values: Value,
}

/// One run of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// `method=rifle,seed=0`: the run directory's name.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The pipeline this run extends (the sweep's `base` with `{axis}` labels filled in).
    pub base: PathBuf,
    /// Deep-merged into the base pipeline.
    pub merge: Value,
    /// `KEY=VALUE` overrides.
    pub set: Vec<String>,
}

/// A sweep file, expanded.
pub struct Sweep {
    pub file: PathBuf,
    pub out: PathBuf,
    pub jobs: usize,
    pub runs: Vec<RunSpec>,
}

fn label_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// Replaces `{axis}` in every string of `v` by that axis' label.
fn substitute(v: &mut Value, labels: &BTreeMap<String, String>) {
    match v {
        Value::String(s) => {
            for (axis, label) in labels {
                *s = s.replace(&format!("{{{axis}}}"), label);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|x| substitute(x, labels)),
        Value::Mapping(m) => m.values_mut().for_each(|x| substitute(x, labels)),
        _ => {}
    }
}

pub fn load(file: &Path) -> Result<Sweep> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read sweep {}", file.display()))?;
    let spec: SweepFile = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text)).map_err(|e| {
        let at = e.path().to_string();
        anyhow!("{}: {}: {}", file.display(), if at == "." { "sweep".into() } else { at }, e.inner())
    })?;
    anyhow::ensure!(spec.jobs >= 1, "{}: jobs must be at least 1", file.display());
    anyhow::ensure!(!spec.axes.is_empty(), "{}: a sweep needs at least one axis", file.display());
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = if spec.name.is_empty() { file.file_stem().map(|s| s.to_string_lossy().replace(".sweep", "")).unwrap_or_default() } else { spec.name.clone() };
    let out = PathBuf::from(spec.out.clone().unwrap_or_else(|| format!("runs/{name}")));

    // Each axis: its (label, merge, set) choices.
    let mut axes: Vec<(String, Vec<(String, Value, Vec<String>)>)> = Vec::new();
    for axis in &spec.axes {
        let choices = match (&axis.key, &axis.values) {
            (Some(keys), Value::Sequence(items)) => items
                .iter()
                .map(|v| Ok((label_of(v), Value::Null, keys.list().into_iter().map(|k| assignment(k, v)).collect::<Result<Vec<_>>>()?)))
                .collect::<Result<Vec<_>>>()?,
            // labels alone: the values only name runs (used in `base` or `set` as `{axis}`)
            (None, Value::Sequence(items)) => items.iter().map(|v| Ok((label_of(v), Value::Null, vec![]))).collect::<Result<Vec<_>>>()?,
            (None, Value::Mapping(m)) => m
                .iter()
                .map(|(label, overrides)| match overrides {
                    Value::Mapping(_) | Value::Null => Ok((label_of(label), overrides.clone(), vec![])),
                    other => bail!("axis `{}`, value `{}`: expected a mapping of overrides, found {other:?}", axis.name, label_of(label)),
                })
                .collect::<Result<Vec<_>>>()?,
            (Some(_), _) => bail!("{}: axis `{}` has a key, so its values must be a list", file.display(), axis.name),
            (None, _) => bail!("{}: axis `{}` has no key, so its values must map labels to overrides (or list labels)", file.display(), axis.name),
        };
        anyhow::ensure!(!choices.is_empty(), "{}: axis `{}` has no values", file.display(), axis.name);
        anyhow::ensure!(!axes.iter().any(|(name, _)| *name == axis.name), "{}: two axes are named `{}`", file.display(), axis.name);
        // Axis names and labels make run directory names (`axis=label,axis=label`): one path component each.
        let bad_part = |part: &str| part.is_empty() || part.contains(['/', '\\', ',', '=']) || part == "." || part == "..";
        anyhow::ensure!(
            !bad_part(&axis.name),
            "{}: axis `{}`: an axis name is part of run directory names, so it cannot be empty, `.`, `..` or hold `/`, `\\`, `,` or `=`",
            file.display(),
            axis.name
        );
        if let Some(keys) = &axis.key {
            for key in keys.list() {
                let other = spec.axes.iter().take_while(|a| a.name != axis.name).find(|a| a.key.as_ref().is_some_and(|k| k.list().contains(&key)));
                anyhow::ensure!(other.is_none(), "{}: axes `{}` and `{}` both set `{key}`; the second would silently win", file.display(), other.map_or("", |a| a.name.as_str()), axis.name);
            }
        }
        for (i, (label, _, _)) in choices.iter().enumerate() {
            // No two labels alike: they would share one run directory.
            anyhow::ensure!(
                !bad_part(label),
                "{}: axis `{}`, value `{label}`: a label names a run directory, so it cannot be empty, `.`, `..` or hold `/`, `\\`, `,` or `=`",
                file.display(),
                axis.name
            );
            anyhow::ensure!(!choices[..i].iter().any(|(l, _, _)| l == label), "{}: axis `{}` lists `{label}` twice", file.display(), axis.name);
        }
        axes.push((axis.name.clone(), choices));
    }
    let common = spec.set.iter().map(|(k, v)| assignment(k, v)).collect::<Result<Vec<_>>>()?;
    let mut runs = vec![RunSpec { name: String::new(), labels: BTreeMap::new(), base: PathBuf::new(), merge: Value::Mapping(Default::default()), set: common }];
    for (axis, choices) in &axes {
        runs = runs
            .into_iter()
            .flat_map(|run| {
                choices.iter().map(move |(label, merge, set)| {
                    let mut r = run.clone();
                    r.labels.insert(axis.clone(), label.clone());
                    r.name = if r.name.is_empty() { format!("{axis}={label}") } else { format!("{},{axis}={label}", r.name) };
                    if !merge.is_null() {
                        deep_merge(&mut r.merge, merge.clone());
                    }
                    r.set.extend(set.iter().cloned());
                    r
                })
            })
            .collect();
    }
    for run in &mut runs {
        let labels = run.labels.clone();
        let mut base = Value::String(spec.base.clone());
        substitute(&mut base, &labels);
        run.base = dir.join(label_of(&base));
        anyhow::ensure!(run.base.exists(), "{}: run `{}`: base pipeline {} does not exist", file.display(), run.name, run.base.display());
        substitute(&mut run.merge, &labels);
        for s in &mut run.set {
            let mut v = Value::String(s.clone());
            substitute(&mut v, &labels);
            *s = label_of(&v);
        }
    }
    Ok(Sweep { file: file.to_path_buf(), out, jobs: spec.jobs, runs })
}

/// What became of a run in this invocation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Finished,
    Skipped,
    Failed,
    Interrupted,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub run: String,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

impl Sweep {
    pub fn run_dir(&self, run: &RunSpec) -> PathBuf {
        self.out.join(&run.name)
    }

    /// Writes each run's pipeline (base + its overrides) and checks it; any error stops before training.
    pub fn prepare(&self) -> Result<()> {
        for run in &self.runs {
            let base = std::path::absolute(&run.base)?;
            let dir = self.run_dir(run);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let mut doc = serde_yaml::Mapping::new();
            doc.insert("extends".into(), Value::String(base.display().to_string()));
            let mut merged = Value::Mapping(doc);
            deep_merge(&mut merged, run.merge.clone());
            let file = dir.join("sweep-pipeline.yaml");
            crate::tensorfile::write_atomic(&file, serde_yaml::to_string(&merged)?.as_bytes())?;
            crate::tensorfile::write_atomic(&dir.join("labels.json"), serde_json::to_string_pretty(&run.labels)?.as_bytes())?;
            let loaded = config::load(&file, &run.set, &[]).map_err(|e| anyhow!("run `{}`:\n{e}", run.name))?;
            loaded.build_plugins().with_context(|| format!("run `{}`", run.name))?;
        }
        Ok(())
    }

    /// Runs every run not finished yet, `jobs` at a time (one per CUDA device when the runs use CUDA).
    /// A stop request (SIGINT/SIGTERM) is passed on to the running children, which checkpoint; the sweep
    /// then returns, and running it again resumes.
    pub fn execute(&self, rifle: &Path, stop: &AtomicBool) -> Result<Vec<Status>> {
        self.prepare()?;
        let devices = cuda_devices(&self.runs.first().map(|r| self.run_dir(r).join("sweep-pipeline.yaml")).unwrap_or_default(), &self.runs[0].set);
        let slots = if devices.is_empty() { self.jobs } else { devices.len() };
        let mut pending: std::collections::VecDeque<&RunSpec> = self.runs.iter().collect();
        let mut running: Vec<(usize, &RunSpec, Child, Instant)> = Vec::new();
        let mut statuses = Vec::new();
        let mut free: Vec<usize> = (0..slots).rev().collect();
        let mut forwarded = false;
        loop {
            while !stop.load(Ordering::Relaxed) && !free.is_empty() {
                let Some(run) = pending.pop_front() else { break };
                let dir = self.run_dir(run);
                if is_finished(&dir) {
                    statuses.push(self.record(run, Outcome::Skipped, None, 0.0)?);
                    continue;
                }
                let slot = free.pop().expect("a free slot");
                let mut cmd = Command::new(rifle);
                if dir.join("checkpoints/last.safetensors").exists() {
                    // The run's recorded pipeline already holds the sweep's overrides.
                    cmd.arg("run").arg("--resume").arg(&dir);
                } else {
                    cmd.arg("run").arg(dir.join("sweep-pipeline.yaml")).arg("--out").arg(&dir);
                    for s in &run.set {
                        cmd.arg("--set").arg(s);
                    }
                }
                if let Some(device) = devices.get(slot) {
                    cmd.arg("--set").arg(format!("device={device}"));
                }
                let console = std::fs::File::create(dir.join("console.log"))?;
                cmd.stdin(Stdio::null()).stdout(console.try_clone()?).stderr(console);
                eprintln!("sweep: starting {}", run.name);
                running.push((slot, run, cmd.spawn().with_context(|| format!("cannot start {}", rifle.display()))?, Instant::now()));
            }
            if running.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            // Pass the stop on once: a second SIGINT would make the child exit without its checkpoint.
            if stop.load(Ordering::Relaxed) && !forwarded {
                forwarded = true;
                for (_, _, child, _) in &running {
                    // SAFETY: plain kill(2) on our own child's pid.
                    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                }
            }
            let mut still = Vec::new();
            for (slot, run, mut child, started) in running {
                match child.try_wait()? {
                    None => still.push((slot, run, child, started)),
                    Some(status) => {
                        free.push(slot);
                        let code = status.code();
                        let outcome = match code {
                            Some(0) if is_finished(&self.run_dir(run)) => Outcome::Finished,
                            Some(130) | None => Outcome::Interrupted,
                            _ => Outcome::Failed,
                        };
                        if outcome == Outcome::Failed {
                            eprintln!("sweep: {} failed (exit {code:?}); see {}", run.name, self.run_dir(run).join("console.log").display());
                        }
                        statuses.push(self.record(run, outcome, code, started.elapsed().as_secs_f64())?);
                    }
                }
            }
            running = still;
        }
        Ok(statuses)
    }

    fn record(&self, run: &RunSpec, outcome: Outcome, exit_code: Option<i32>, seconds: f64) -> Result<Status> {
        use std::io::Write;
        let status = Status { run: run.name.clone(), outcome, exit_code, seconds };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.out.join("status.jsonl"))?;
        writeln!(f, "{}", serde_json::to_string(&status)?)?;
        Ok(status)
    }
}

/// A run is finished when its final weights exist (written after the last epoch's evaluation).
pub fn is_finished(dir: &Path) -> bool {
    dir.join("checkpoints/final.safetensors").exists()
}

/// The CUDA devices a sweep spreads its runs over: none when its runs use the CPU.
fn cuda_devices(pipeline: &Path, set: &[String]) -> Vec<String> {
    let Ok(loaded) = config::load(pipeline, set, &[]) else { return vec![] };
    match crate::engine::device(&loaded.pipeline.device) {
        Ok(tch::Device::Cuda(_)) => (0..tch::Cuda::device_count()).map(|i| format!("cuda:{i}")).collect(),
        _ => vec![],
    }
}

/// `rifle sweep FILE`: runs it; returns the exit code (130 when interrupted, 1 when a run failed).
pub fn main(file: &Path) -> Result<i32> {
    let sweep = load(file)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    std::fs::create_dir_all(&sweep.out)?;
    let rifle = std::env::current_exe()?;
    eprintln!("sweep {}: {} runs into {}", file.display(), sweep.runs.len(), sweep.out.display());
    let statuses = sweep.execute(&rifle, &stop)?;
    let count = |o: Outcome| statuses.iter().filter(|s| s.outcome == o).count();
    eprintln!(
        "sweep: {} finished, {} already done, {} failed, {} interrupted",
        count(Outcome::Finished),
        count(Outcome::Skipped),
        count(Outcome::Failed),
        count(Outcome::Interrupted)
    );
    Ok(if stop.load(Ordering::Relaxed) || count(Outcome::Interrupted) > 0 {
        130
    } else if count(Outcome::Failed) > 0 {
        1
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_expand_to_their_product_with_labels_keys_and_substitution() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.yaml"), "epochs: 1\n").unwrap();
        let file = dir.path().join("x.sweep.yaml");
        std::fs::write(
            &file,
            "base: base.yaml\nset:\n  weights.path: teachers/seed={seed}/final.safetensors\naxes:\n  - name: method\n    values:\n      a: {optimizer: {lr: 0.1}}\n      b: {}\n  - name: seed\n    key: [seed, dataset.mock.seed]\n    values: [3, 4]\n",
        )
        .unwrap();
        let sweep = load(&file).unwrap();
        assert!(sweep.runs.iter().all(|r| r.base == dir.path().join("base.yaml")));
        let names: Vec<&str> = sweep.runs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["method=a,seed=3", "method=a,seed=4", "method=b,seed=3", "method=b,seed=4"]);
        assert_eq!(sweep.out, PathBuf::from("runs/x"));
        let run = &sweep.runs[1];
        // values travel as one-line YAML (JSON), so a string stays a string whatever it looks like
        assert_eq!(run.set, ["weights.path=\"teachers/seed=4/final.safetensors\"", "seed=4", "dataset.mock.seed=4"]);
        assert_eq!(run.merge["optimizer"]["lr"].as_f64(), Some(0.1));
        assert_eq!(run.labels, BTreeMap::from([("method".to_string(), "a".to_string()), ("seed".to_string(), "4".to_string())]));
        assert!(sweep.runs[2].merge.get("optimizer").is_none());
    }

    #[test]
    fn a_keyed_axis_needs_a_list_and_a_labelled_axis_a_mapping() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.yaml"), "epochs: 1\n").unwrap();
        let file = dir.path().join("bad.sweep.yaml");
        std::fs::write(&file, "base: base.yaml\naxes:\n  - name: seed\n    key: seed\n    values: {a: 1}\n").unwrap();
        let err = load(&file).err().unwrap().to_string();
        assert!(err.contains("axis `seed` has a key, so its values must be a list"), "{err}");
        std::fs::write(&file, "base: missing.yaml\naxes: []\n").unwrap();
        let err = load(&file).err().unwrap().to_string();
        assert!(err.contains("at least one axis"), "{err}");
    }

    #[test]
    fn labels_name_distinct_run_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.yaml"), "epochs: 1\n").unwrap();
        let file = dir.path().join("bad.sweep.yaml");
        let error = |axes: &str| {
            std::fs::write(&file, format!("base: base.yaml\naxes:\n{axes}")).unwrap();
            load(&file).err().expect("the sweep must be refused").to_string()
        };
        let e = error("  - {name: seed, key: seed, values: [0, 0]}\n");
        assert!(e.ends_with("axis `seed` lists `0` twice"), "{e}");
        let e = error("  - {name: seed, key: seed, values: [0]}\n  - {name: seed, key: dataset.mock.seed, values: [1]}\n");
        assert!(e.ends_with("two axes are named `seed`"), "{e}");
        let e = error("  - name: data\n    values: {../../evil: {}}\n");
        assert!(e.contains("axis `data`, value `../../evil`: a label names a run directory"), "{e}");
        let e = error("  - {name: ../n, key: seed, values: [0]}\n");
        assert!(e.contains("axis `../n`: an axis name is part of run directory names"), "{e}");
        let e = error("  - {name: s1, key: seed, values: [0]}\n  - {name: s2, key: [dataset.mock.seed, seed], values: [1]}\n");
        assert!(e.ends_with("axes `s1` and `s2` both set `seed`; the second would silently win"), "{e}");
    }
}
