//! Dropout on the pooled features entering the head (the "Dropout" column of the paper's Table 1):
//! inverted dropout (kept units scaled by 1/(1 − p)) in training, the identity in evaluation.
use crate::params::{Param, Params};
use crate::plugin::{Hooks, Perturb};
use crate::registry::{Built, Kind};
use anyhow::{ensure, Result};
use tch::Tensor;

/// The `p` parameter of the dropout family: a drop probability in [0, 1).
pub const P: Param = Param::float("p", 0.5, "drop probability in [0, 1) (the paper tries 0.1, 0.2, 0.5)").range(0.0, 1.0);

/// Reads `p`, refusing 1: every unit dropped leaves nothing to scale up.
pub fn drop_probability(p: &Params) -> Result<f64> {
    let value = p.float("p")?;
    ensure!(value < 1.0, "{}: `p` must be below 1 (p = 1 drops everything), found {value}", p.origin);
    Ok(value)
}

crate::register_plugin! {
    name: "dropout",
    kind: Kind::Strategy,
    doc: "inverted dropout on the features before the head (identity in eval)",
    params: &[P],
    example: "{p: 0.5}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(Dropout(drop_probability(p)?))))
}

struct Dropout(f64);

impl Hooks for Dropout {}

impl Perturb for Dropout {
    fn features(&self, x: Tensor, train: bool) -> Tensor {
        x.dropout(self.0, train)
    }
}
