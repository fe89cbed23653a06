//! Stochastic depth (Huang et al. 2016; the "StochasticD." column of the paper's Table 1): residual block
//! l of L (0-based) survives with probability p_l = 1 − l/(L − 1)·(1 − p_last), so the first block is
//! always kept and the last survives with p_last (0.5, as the paper). In training a kept branch is scaled
//! by 1/p_l and a dropped one is zero (inverted scaling, so the expected block output is the full
//! network's); in evaluation every block is kept, unscaled. `batch` drops a block for the whole batch
//! (Huang et al.), `row` independently per sample (torchvision's `StochasticDepth(mode="row")`).
use crate::params::{Param, Params};
use crate::plugin::{Hooks, Perturb};
use crate::registry::{Built, Kind};
use anyhow::{ensure, Result};
use tch::{Device, Kind as Dtype, Tensor};

const PARAMS: &[Param] = &[
    Param::float("p_last", 0.5, "survival probability of the last block, in (0, 1]").range(0.0, 1.0),
    Param::choice("mode", "batch", &["batch", "row"], "drop a block for the whole batch or per sample"),
];

crate::register_plugin! {
    name: "stochastic_depth",
    kind: Kind::Strategy,
    doc: "drops residual branches with survival linear from 1 (first block) to p_last (last); full net in eval",
    params: PARAMS,
    example: "{p_last: 0.5}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    let p_last = p.float("p_last")?;
    ensure!(p_last > 0.0, "{}: `p_last` must be above 0 (a block that never survives cannot be scaled)", p.origin);
    Ok(Built::Strategy(Box::new(StochasticDepth { p_last, per_sample: p.str("mode")? == "row" })))
}

struct StochasticDepth {
    p_last: f64,
    per_sample: bool,
}

impl StochasticDepth {
    /// The survival probability of block `block` of `blocks`.
    fn survival(&self, block: usize, blocks: usize) -> f64 {
        if blocks <= 1 {
            return 1.0;
        }
        1.0 - block as f64 / (blocks - 1) as f64 * (1.0 - self.p_last)
    }
}

impl Hooks for StochasticDepth {}

impl Perturb for StochasticDepth {
    fn residual(&self, block: usize, blocks: usize, residual: Tensor, train: bool) -> Tensor {
        let survival = self.survival(block, blocks);
        if !train || survival >= 1.0 {
            return residual;
        }
        if self.per_sample {
            let mut shape = vec![1; residual.dim()];
            shape[0] = residual.size()[0];
            let keep = Tensor::rand(shape.as_slice(), (residual.kind(), residual.device())).lt(survival).to_kind(residual.kind());
            residual * keep / survival
        } else {
            // One draw on the CPU generator: no device round trip per block.
            let draw = Tensor::rand([1], (Dtype::Double, Device::Cpu)).double_value(&[0]);
            if draw < survival {
                residual / survival
            } else {
                // Zero through the graph (as torchvision's `stochastic_depth`): the dropped block's
                // parameters get zero gradients, so momentum and weight decay still move them.
                residual * 0.0
            }
        }
    }
}
