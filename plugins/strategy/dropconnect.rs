//! DropConnect on the head (Wan et al. 2013; the "DropConn." column of the paper's Table 1): each weight
//! of the final linear layer is dropped with probability p in training, one mask per batch, and the kept
//! weights are scaled by 1/(1 − p) so the expected weight is unchanged; in evaluation the weights are used
//! as they are (the mean of the training weights, not Wan et al.'s Gaussian moment matching). The bias is
//! not masked.
use crate::params::Params;
use crate::plugin::{Hooks, Perturb};
use crate::plugins::strategy::dropout::{drop_probability, P};
use crate::registry::{Built, Kind};
use anyhow::Result;
use tch::Tensor;

crate::register_plugin! {
    name: "dropconnect",
    kind: Kind::Strategy,
    doc: "masks the head's weights (not its inputs) with inverted scaling; identity in eval",
    params: &[P],
    example: "{p: 0.5}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(DropConnect(drop_probability(p)?))))
}

struct DropConnect(f64);

impl Hooks for DropConnect {}

impl Perturb for DropConnect {
    fn head_weight(&self, w: &Tensor, train: bool) -> Tensor {
        w.dropout(self.0, train)
    }
}
