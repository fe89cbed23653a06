//! The plugin traits. Everything that varies between experiments is a plugin of one of these kinds; the
//! training loop (`engine.rs`) calls them only through these hooks.
use crate::data::{Sample, Task};
use crate::model::Net;
use crate::optim::Optimizer;
use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use tch::{nn, Tensor};

/// Where training stands. Steps and epochs are 0-based; `step` counts optimizer steps over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub step_in_epoch: usize,
    pub steps_per_epoch: usize,
}

impl Progress {
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }
}

/// One training batch as the hooks see it before the forward pass.
pub struct Batch {
    pub images: Tensor,
    /// Class indices (int64, [B]) for classification; targets ([B, outputs], f32) for regression.
    pub labels: Tensor,
    /// Soft targets ([B, classes], rows sum to 1); when set, the loss is cross-entropy against them.
    pub soft_targets: Option<Tensor>,
}

/// A measurement a hook hands to the engine, which writes it to `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub probe: String,
    pub epoch: usize,
    pub step: usize,
    #[serde(deserialize_with = "crate::metrics::numbers_or_null")]
    pub values: std::collections::BTreeMap<String, f64>,
}

/// What a training hook may read and change.
pub struct Ctx<'a> {
    pub progress: Progress,
    pub net: &'a mut Net,
    pub optimizer: &'a mut Optimizer,
    /// This step's learning rate per parameter group (after the schedulers); hooks may change it.
    pub lrs: &'a mut [f64],
    pub records: &'a mut Vec<Record>,
}

/// Training-time hooks shared by strategies, regularizers and probes. Every method defaults to doing nothing.
pub trait Hooks: Send {
    /// Before training (also when resuming): the model holds its pretrained weights.
    fn run_start(&mut self, _ctx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    fn epoch_start(&mut self, _ctx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// Before the forward pass: may change learning rates, re-initialise layers, or transform the batch.
    fn before_step(&mut self, _ctx: &mut Ctx, _batch: &mut Batch) -> Result<()> {
        Ok(())
    }
    /// After backward, before the optimizer step: gradients are populated.
    fn after_backward(&mut self, _ctx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    /// After the epoch's evaluation.
    fn epoch_end(&mut self, _ctx: &mut Ctx) -> Result<()> {
        Ok(())
    }
    fn run_end(&mut self, _ctx: &mut Ctx) -> Result<()> {
        Ok(())
    }
}

/// Forward-pass perturbations. `train` is explicit: in evaluation every method must be the identity or its
/// expectation. The defaults are the unperturbed network.
pub trait Perturb {
    /// A residual block's residual branch, before the shortcut is added; `block` counts blocks over the
    /// whole network (0-based) out of `blocks`.
    fn residual(&self, _block: usize, _blocks: usize, residual: Tensor, _train: bool) -> Tensor {
        residual
    }
    /// The output of residual stage `stage` (0-based).
    fn stage_output(&self, _stage: usize, x: Tensor, _train: bool) -> Tensor {
        x
    }
    /// The pooled features entering the head.
    fn features(&self, x: Tensor, _train: bool) -> Tensor {
        x
    }
    /// The head's weight matrix as used in this forward pass.
    fn head_weight(&self, w: &Tensor, _train: bool) -> Tensor {
        w.shallow_clone()
    }
}

/// A perturbation strategy (RIFLE, dropout variants, DisturbLabel, ...).
pub trait Strategy: Hooks + Perturb {}
impl<T: Hooks + Perturb> Strategy for T {}

/// An explicit regularizer Ω(w). Its gradient is added in place after backward (no per-step allocation that
/// grows with the model); its value is computed for logging once per epoch.
pub trait Regularizer: Send {
    /// Called once the pretrained weights are loaded, before any step (e.g. to keep w0).
    fn setup(&mut self, net: &Net) -> Result<()>;
    /// grad += ∂Ω/∂w for every parameter Ω depends on.
    fn add_grad(&self, net: &Net);
    /// Ω(w).
    fn penalty(&self, net: &Net) -> f64;
}

/// A learning-rate schedule, as a factor of the group's base learning rate.
pub trait Scheduler: Send {
    fn factor(&self, progress: &Progress) -> f64;
}

/// A measurement taken during training (gradient norms, weight distances, ...).
pub trait Probe: Hooks {}
impl<T: Hooks> Probe for T {}

/// A per-sample image transform, run on loader threads. The RNG is seeded from (seed, epoch, sample), so the
/// result does not depend on thread scheduling.
pub trait Augment: Send + Sync {
    fn apply(&self, image: image::RgbImage, rng: &mut ChaCha8Rng) -> Result<image::RgbImage>;
}

/// One split of a dataset: random access to samples and labels.
pub trait Samples: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Decodes sample `index`: its input and its class or regression target.
    fn load(&self, index: usize) -> Result<Sample>;
    /// A name for messages: the file path, or `mock[17]`.
    fn describe(&self, index: usize) -> String;
    /// The class of sample `index` when known without decoding it (file lists know it); the engine checks
    /// these against the head's class count before training starts. The loader checks every label anyway.
    fn class_of(&self, _index: usize) -> Option<usize> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

/// A dataset: its task (classes or regression outputs) and its splits.
pub trait Dataset: Send + Sync {
    fn task(&self) -> Task;
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>>;
}

/// A network body: everything up to the pooled features; the engine owns the head (a linear layer).
pub trait Network: Send {
    fn features(&self, x: &Tensor, train: bool, perturb: &dyn Perturb) -> Tensor;
    fn feature_dim(&self) -> i64;
    /// Residual stages as (name, parameter-name prefix, the parameter the gradient probe watches).
    fn stages(&self) -> Vec<Stage>;
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: String,
    pub prefix: String,
    pub probe_param: String,
}

/// What a network takes as input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// RGB images, 3×H×W, of any size the network can pool.
    Image,
    /// Feature vectors of this length.
    Vector(i64),
}

impl std::fmt::Display for InputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            InputKind::Image => f.write_str("images"),
            InputKind::Vector(n) => write!(f, "vectors of {n} values"),
        }
    }
}

/// Builds a network body under a VarStore path.
pub trait Backbone: Send {
    fn build(&self, root: &nn::Path) -> Result<Box<dyn Network>>;
    fn input(&self) -> InputKind {
        InputKind::Image
    }
    /// The head's parameter-name prefix (torchvision ResNet: `fc`) and whether it has a bias.
    fn head(&self) -> (&str, bool) {
        ("fc", true)
    }
}
