//! Dropout on the output of every residual stage (the "CNN-DrO." column of the paper's Table 1): inverted
//! dropout of single activations (`element`, PyTorch `Dropout`) or of whole channels (`channel`, PyTorch
//! `Dropout2d`) in training; the identity in evaluation.
use crate::params::{Param, Params};
use crate::plugin::{Hooks, Perturb};
use crate::plugins::strategy::dropout::{drop_probability, P};
use crate::registry::{Built, Kind};
use anyhow::Result;
use tch::Tensor;

const PARAMS: &[Param] = &[P, Param::choice("mode", "element", &["element", "channel"], "drop single activations or whole feature maps")];

crate::register_plugin! {
    name: "cnn_dropout",
    kind: Kind::Strategy,
    doc: "inverted dropout on each residual stage's output (identity in eval)",
    params: PARAMS,
    example: "{p: 0.1, mode: element}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(CnnDropout { p: drop_probability(p)?, channels: p.str("mode")? == "channel" })))
}

struct CnnDropout {
    p: f64,
    channels: bool,
}

impl Hooks for CnnDropout {}

impl Perturb for CnnDropout {
    fn stage_output(&self, _stage: usize, x: Tensor, train: bool) -> Tensor {
        if self.channels {
            x.feature_dropout(self.p, train)
        } else {
            x.dropout(self.p, train)
        }
    }
}
