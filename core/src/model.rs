//! The network the engine trains: a backbone body plus a linear head the engine owns, so that every
//! strategy (RIFLE above all) can find and re-initialise "the final fully-connected layer" of any backbone.
use crate::plugin::{Backbone, Network, Perturb, Stage};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use tch::{nn, Device, Kind, Tensor};

/// How a head is (re-)initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeadInit {
    /// PyTorch's `nn.Linear` default: weight and bias uniform in ±1/sqrt(fan_in).
    TorchDefault,
    /// Weight ~ N(0, std²) as the paper writes; bias zero.
    Normal { std: f64 },
}

pub struct Net {
    pub vs: nn::VarStore,
    pub body: Box<dyn Network>,
    /// `fc` for torchvision ResNets: parameters `fc.weight` and `fc.bias`.
    pub head_prefix: String,
    pub head_weight: Tensor,
    pub head_bias: Option<Tensor>,
    /// Names of the parameters and buffers that came from pretrained weights.
    pub pretrained: BTreeSet<String>,
}

impl Net {
    /// Builds the body and a head with `outputs` outputs, initialised like PyTorch's `nn.Linear`.
    pub fn build(backbone: &dyn Backbone, outputs: usize, device: Device) -> Result<Net> {
        let vs = nn::VarStore::new(device);
        let body = backbone.build(&vs.root()).context("building the backbone")?;
        let (prefix, bias) = backbone.head();
        let fan_in = body.feature_dim();
        let head = vs.root() / prefix;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let head_weight = head.var("weight", &[outputs as i64, fan_in], init);
        let head_bias = bias.then(|| head.var("bias", &[outputs as i64], init));
        Ok(Net { vs, body, head_prefix: prefix.to_string(), head_weight, head_bias, pretrained: BTreeSet::new() })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits (or regression outputs) for a batch.
    pub fn forward(&self, x: &Tensor, train: bool, perturb: &dyn Perturb) -> Tensor {
        let features = perturb.features(self.body.features(x, train, perturb), train);
        let weight = perturb.head_weight(&self.head_weight, train);
        features.linear(&weight, self.head_bias.as_ref())
    }

    /// `forward`, with libtorch's errors (an input too small for the network, a wrong shape) returned as
    /// errors naming the input's shape instead of panicking.
    pub fn try_forward(&self, x: &Tensor, train: bool, perturb: &dyn Perturb) -> Result<Tensor> {
        crate::registry::contain(|| self.forward(x, train, perturb)).map_err(|message| {
            // tch panics with `called Result::unwrap() on an Err value: Torch("<libtorch's message>\n<C++
            // backtrace>")`, newlines escaped: libtorch's first line says what went wrong.
            let libtorch = message.split_once("Torch(\"").map_or(message.as_str(), |(_, rest)| rest);
            let first = libtorch.split("\\n").next().unwrap_or(libtorch).lines().next().unwrap_or("").trim();
            anyhow::anyhow!("the network cannot take an input of shape {:?} (batch, channels, height, width): {first}", x.size())
        })
    }

    /// Re-initialises the head in place (under no_grad), drawing from torch's generator.
    pub fn reinit_head(&mut self, init: HeadInit) {
        let fan_in = self.head_weight.size()[1] as f64;
        tch::no_grad(|| match init {
            HeadInit::TorchDefault => {
                let bound = 1.0 / fan_in.sqrt();
                let _ = self.head_weight.uniform_(-bound, bound);
                if let Some(b) = &mut self.head_bias {
                    let _ = b.uniform_(-bound, bound);
                }
            }
            HeadInit::Normal { std } => {
                let _ = self.head_weight.normal_(0.0, std);
                if let Some(b) = &mut self.head_bias {
                    let _ = b.zero_();
                }
            }
        });
    }

    pub fn head_names(&self) -> Vec<String> {
        let mut names = vec![format!("{}.weight", self.head_prefix)];
        if self.head_bias.is_some() {
            names.push(format!("{}.bias", self.head_prefix));
        }
        names
    }

    pub fn is_head(&self, name: &str) -> bool {
        name.strip_prefix(self.head_prefix.as_str()).is_some_and(|rest| rest.starts_with('.'))
    }

    /// Trainable parameters sorted by name (a stable order for optimizer groups and checkpoints).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut params: Vec<(String, Tensor)> = self.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        params
    }

    /// Every tensor of the model, parameters and buffers (BatchNorm statistics), sorted by name.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut all: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        self.vs.variables().remove(name)
    }

    pub fn stages(&self) -> Vec<Stage> {
        self.body.stages()
    }

    /// Copies `value` into the named tensor, converting dtype and device (never the model's dtype).
    pub fn assign(&self, name: &str, value: &Tensor) -> Result<()> {
        let target = self.tensor(name).with_context(|| format!("the model has no tensor `{name}`"))?;
        anyhow::ensure!(
            target.size() == value.size(),
            "`{name}`: shape {:?} in the file, {:?} in the model",
            value.size(),
            target.size()
        );
        tch::no_grad(|| target.shallow_clone().copy_(&value.to_kind(target.kind()).to_device(target.device())));
        Ok(())
    }

    /// All parameters converted to f32 on the CPU, for checkpoints.
    pub fn cpu_state(&self) -> Vec<(String, Tensor)> {
        self.state().into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous())).collect()
    }
}
