//! Checkpoints. `checkpoints/last.safetensors` holds everything a resume needs in one atomically written
//! file: the model's tensors under their own names, the optimizer's state under `optimizer/`, and the
//! training position (epoch, step, the epoch's running meters, best accuracy, how many metrics lines were
//! written) as JSON metadata. `best.safetensors` and `final.safetensors` hold the weights alone. Data order,
//! augmentation and every random draw are functions of (seed, epoch, step), so this is all a resume needs to
//! continue exactly.
use crate::data::Task;
use crate::metrics::EpochLine;
use crate::model::Net;
use crate::optim::Optimizer;
use crate::tensorfile;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

pub const STATE_KEY: &str = "rifle.state";
pub const OPTIMIZER_PREFIX: &str = "optimizer/";

/// Running sums over an epoch's training batches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meters {
    pub loss_sum: f64,
    pub samples: usize,
    pub correct1: usize,
    pub correct5: usize,
    pub skipped_steps: usize,
    /// Unreadable images left out (`on_bad_image: skip`).
    pub skipped_images: usize,
    pub seconds: f64,
}

impl Meters {
    pub fn add(&mut self, task: &Task, outputs: &Tensor, targets: &Tensor, mean_loss: f64) {
        let n = outputs.size()[0] as usize;
        self.loss_sum += mean_loss * n as f64;
        self.samples += n;
        if let Task::Classify { classes } = task {
            let k = 5.min(classes.len() as i64);
            let (_, top) = outputs.topk(k, -1, true, true);
            let hits = top.eq_tensor(&targets.unsqueeze(-1));
            self.correct1 += hits.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]) as usize;
            self.correct5 += hits.sum(Kind::Int64).int64_value(&[]) as usize;
        }
    }

    pub fn top1(&self, task: &Task) -> Option<f64> {
        matches!(task, Task::Classify { .. }).then(|| self.correct1 as f64 / self.samples.max(1) as f64)
    }

    pub fn line(&self, epoch: usize, split: &str, task: &Task, lrs: &[f64], penalty: Option<f64>) -> EpochLine {
        let samples = self.samples.max(1) as f64;
        EpochLine {
            epoch,
            split: split.to_string(),
            loss: self.loss_sum / samples,
            top1: self.top1(task),
            top5: matches!(task, Task::Classify { .. }).then(|| self.correct5 as f64 / samples),
            lr: lrs.first().copied().unwrap_or(0.0),
            lr_head: lrs.get(1).copied().unwrap_or(0.0),
            penalty,
            skipped_images: self.skipped_images,
            skipped_steps: self.skipped_steps,
            samples: self.samples,
            seconds: self.seconds,
            images_per_s: self.samples as f64 / self.seconds.max(1e-9),
        }
    }
}

/// Where training stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The epoch being trained (or next to train) and the next batch within it.
    pub epoch: usize,
    pub step_in_epoch: usize,
    /// Optimizer steps taken (batches consumed) over the run.
    pub step: usize,
    pub meters: Meters,
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    pub last_top1: Option<f64>,
    /// Lines of metrics.jsonl this checkpoint accounts for; a resume drops any written after it.
    pub metrics_lines: usize,
    /// Optimizer step count per parameter (Adam bias correction).
    pub optimizer_steps: BTreeMap<String, i64>,
    /// Class names in label order (what `rifle predict` prints).
    pub classes: Vec<String>,
    /// Learning rates per group of the last step taken (what the epoch's metrics line reports, also when a
    /// resume starts at the end of an epoch).
    #[serde(default)]
    pub last_lrs: Vec<f64>,
    /// The fp16 loss scale (`amp: fp16` on CUDA), so that a resumed run scales as a straight one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<crate::amp::LossScale>,
}

pub const CLASSES_KEY: &str = "rifle.classes";

fn metadata(state: &Checkpoint) -> Result<BTreeMap<String, String>> {
    Ok(BTreeMap::from([
        (STATE_KEY.to_string(), serde_json::to_string(state)?),
        (CLASSES_KEY.to_string(), serde_json::to_string(&state.classes)?),
        ("format".to_string(), "pt".to_string()),
    ]))
}

/// Writes the resumable checkpoint `last.safetensors`.
pub fn write_last(dir: &Path, net: &Net, optimizer: &Optimizer, state: &Checkpoint) -> Result<()> {
    let (opt_tensors, steps) = optimizer.export();
    let mut state = state.clone();
    state.optimizer_steps = steps;
    let mut tensors = net.cpu_state();
    tensors.extend(opt_tensors.into_iter().map(|(n, t)| (format!("{OPTIMIZER_PREFIX}{n}"), t)));
    tensorfile::write(&dir.join("checkpoints/last.safetensors"), &tensors, &metadata(&state)?)
}

/// Writes the model's weights alone (best / final).
pub fn write_weights(path: &Path, net: &Net, state: &Checkpoint) -> Result<()> {
    tensorfile::write(path, &net.cpu_state(), &metadata(state)?)
}

/// Reads the training position from `last.safetensors`.
pub fn read_state(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join("checkpoints/last.safetensors");
    anyhow::ensure!(path.exists(), "{}: no checkpoint to resume from (a run writes one after its first epoch)", path.display());
    let (_, meta) = tensorfile::read_checked(&path)?;
    let json = meta.get(STATE_KEY).ok_or_else(|| anyhow!("{}: not a resumable checkpoint (no training state)", path.display()))?;
    serde_json::from_str(json).with_context(|| format!("{}: broken training state", path.display()))
}

/// Loads the model and optimizer tensors of `last.safetensors`.
pub fn restore(dir: &Path, state: &Checkpoint, net: &Net, optimizer: &mut Optimizer) -> Result<()> {
    let path = dir.join("checkpoints/last.safetensors");
    let (tensors, _) = tensorfile::read_checked(&path)?;
    let mut optim = BTreeMap::new();
    let mut model: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, t) in tensors {
        match name.strip_prefix(OPTIMIZER_PREFIX) {
            Some(rest) => {
                optim.insert(rest.to_string(), t);
            }
            None => {
                model.insert(name, t);
            }
        }
    }
    for (name, _) in net.state() {
        let t = model.get(&name).ok_or_else(|| anyhow!("{}: the model tensor `{name}` is missing", path.display()))?;
        net.assign(&name, t).with_context(|| format!("{}", path.display()))?;
    }
    optimizer.import(&optim, &state.optimizer_steps).with_context(|| format!("{}", path.display()))
}
