//! SGD (momentum, Nesterov) and AdamW over named parameter groups, with per-parameter state the engine
//! can reset (RIFLE's `reset_optimizer_state`) and save (exact resume). Updates follow `torch.optim`:
//! SGD: g ← g + wd·w; b ← g (first step) or μ·b + g; w ← w − lr·(g + μ·b if Nesterov else b).
//! AdamW: w ← w·(1 − lr·wd); m, v moments with bias correction by the parameter's own step count.
//! SGD works in place (no allocation that grows with the model).
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::Tensor;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Algorithm {
    Sgd {
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
    },
    Adamw {
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        #[serde(default = "default_eps")]
        eps: f64,
    },
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}

pub struct Group {
    pub name: String,
    pub lr: f64,
    pub weight_decay: f64,
    pub params: Vec<(String, Tensor)>,
}

#[derive(Default)]
struct Slot {
    /// SGD momentum buffer, or Adam's first moment.
    first: Option<Tensor>,
    /// Adam's second moment.
    second: Option<Tensor>,
    steps: i64,
}

pub struct Optimizer {
    pub algorithm: Algorithm,
    pub groups: Vec<Group>,
    state: BTreeMap<String, Slot>,
}

impl Optimizer {
    pub fn new(algorithm: Algorithm, groups: Vec<Group>) -> Optimizer {
        Optimizer { algorithm, groups, state: BTreeMap::new() }
    }

    pub fn base_lrs(&self) -> Vec<f64> {
        self.groups.iter().map(|g| g.lr).collect()
    }

    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    pub fn zero_grad(&mut self) {
        for group in &mut self.groups {
            for (_, p) in &mut group.params {
                let mut grad = p.grad();
                if grad.defined() {
                    let _ = grad.detach_().zero_();
                }
            }
        }
    }

    /// Releases every gradient (PyTorch's `zero_grad(set_to_none=True)`): the forward pass then runs with
    /// no gradient memory held, and backward writes fresh gradients instead of adding into zeroed ones.
    /// A parameter that gets no gradient in the next backward is then skipped by `step`, as in PyTorch.
    pub fn release_grads(&mut self) {
        for group in &mut self.groups {
            for (_, p) in &mut group.params {
                crate::extras::release_grad(p);
            }
        }
    }

    /// One update with this step's learning rate per group.
    pub fn step(&mut self, lrs: &[f64]) {
        tch::no_grad(|| {
            for (group, &lr) in self.groups.iter().zip(lrs) {
                let (neg_lr, decay) = (scalar(-lr), scalar(group.weight_decay));
                for (name, param) in &group.params {
                    let mut grad = param.grad();
                    if !grad.defined() {
                        continue;
                    }
                    let slot = self.state.entry(name.clone()).or_default();
                    slot.steps += 1;
                    let mut param = param.shallow_clone();
                    match self.algorithm {
                        Algorithm::Sgd { momentum, nesterov } => {
                            if group.weight_decay != 0.0 {
                                let _ = grad.addcmul_(&param, &decay);
                            }
                            let direction = if momentum == 0.0 {
                                grad.shallow_clone()
                            } else {
                                let buf = match &mut slot.first {
                                    Some(buf) => {
                                        let _ = buf.g_mul_scalar_(momentum).g_add_(&grad);
                                        buf.shallow_clone()
                                    }
                                    None => slot.first.insert(grad.detach().copy()).shallow_clone(),
                                };
                                if nesterov {
                                    let _ = grad.addcmul_(&buf, &scalar(momentum));
                                    grad.shallow_clone()
                                } else {
                                    buf
                                }
                            };
                            let _ = param.addcmul_(&direction, &neg_lr);
                        }
                        Algorithm::Adamw { betas: [b1, b2], eps } => {
                            if group.weight_decay != 0.0 {
                                let _ = param.g_mul_scalar_(1.0 - lr * group.weight_decay);
                            }
                            let m = slot.first.get_or_insert_with(|| param.zeros_like());
                            let _ = m.g_mul_scalar_(b1).addcmul_(&grad, &scalar(1.0 - b1));
                            let v = slot.second.get_or_insert_with(|| param.zeros_like());
                            let _ = v.g_mul_scalar_(b2).addcmul_(&grad, &(&grad * (1.0 - b2)));
                            let t = slot.steps as i32;
                            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                            let denom = (v.sqrt() / c2.sqrt()).g_add_scalar_(eps);
                            let _ = param.addcdiv_(&(m.shallow_clone() * (-lr / c1)), &denom);
                        }
                    }
                }
            }
        });
    }

    /// Forgets the state (momentum, Adam moments and their step count) of these parameters: the next step
    /// treats them as new, which keeps Adam's bias correction consistent.
    pub fn reset_state(&mut self, names: &[String]) {
        for name in names {
            self.state.remove(name);
        }
    }

    /// Whether a parameter has optimizer state (tests and checks).
    pub fn has_state(&self, name: &str) -> bool {
        self.state.contains_key(name)
    }

    pub fn state_buffer(&self, name: &str) -> Option<&Tensor> {
        self.state.get(name).and_then(|s| s.first.as_ref())
    }

    /// The state as named CPU tensors and step counts, for checkpoints.
    pub fn export(&self) -> (Vec<(String, Tensor)>, BTreeMap<String, i64>) {
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for (name, slot) in &self.state {
            steps.insert(name.clone(), slot.steps);
            for (suffix, t) in [("first", &slot.first), ("second", &slot.second)] {
                if let Some(t) = t {
                    tensors.push((format!("{name}#{suffix}"), t.to_device(tch::Device::Cpu).contiguous()));
                }
            }
        }
        (tensors, steps)
    }

    /// Restores what `export` wrote.
    pub fn import(&mut self, tensors: &BTreeMap<String, Tensor>, steps: &BTreeMap<String, i64>) -> Result<()> {
        let known: BTreeMap<&str, &Tensor> =
            self.groups.iter().flat_map(|g| g.params.iter().map(|(n, t)| (n.as_str(), t))).collect();
        self.state.clear();
        for (name, &count) in steps {
            let Some(param) = known.get(name.as_str()) else { bail!("optimizer state for unknown parameter `{name}`") };
            let load = |suffix: &str| -> Result<Option<Tensor>> {
                tensors
                    .get(&format!("{name}#{suffix}"))
                    .map(|t| {
                        anyhow::ensure!(t.size() == param.size(), "optimizer state `{name}#{suffix}` has shape {:?}, the parameter {:?}", t.size(), param.size());
                        Ok(t.to_kind(param.kind()).to_device(param.device()))
                    })
                    .transpose()
                    .with_context(|| format!("optimizer state of `{name}`"))
            };
            self.state.insert(name.clone(), Slot { first: load("first")?, second: load("second")?, steps: count });
        }
        Ok(())
    }
}

/// A 0-dim CPU tensor used as the scale in `addcmul_` (tch has no `add_(other, alpha)`); libtorch treats
/// it as a scalar on any device, so the update allocates nothing the size of the parameter.
fn scalar(value: f64) -> Tensor {
    Tensor::from(value)
}
