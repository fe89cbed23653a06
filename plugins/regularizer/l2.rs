//! L2 regularisation (weight decay; the "L2" rows of the paper's Tables 1–2): Ω(w) = α/2·Σ‖w‖², gradient
//! α·w, over every trainable parameter (head included). α = 1e-4 is the weight decay of the authors' L2
//! runs, which decayed every parameter; `exclude_1d: true` leaves out one-dimensional parameters (BatchNorm
//! affine and biases), a common alternative. Equivalent to SGD's `weight_decay` (keep that at 0 with this).
use crate::model::Net;
use crate::params::{Param, Params};
use crate::plugin::Regularizer;
use crate::registry::{Built, Kind};
use anyhow::Result;
use tch::{Kind as Dtype, Tensor};

const PARAMS: &[Param] = &[
    Param::float("alpha", 1e-4, "coefficient α of α/2·‖w‖² (authors' code: weight decay 1e-4)").min(0.0),
    Param::bool("exclude_1d", false, "leave out 1-D parameters: BatchNorm weights/biases and all biases"),
];

crate::register_plugin! {
    name: "l2",
    kind: Kind::Regularizer,
    doc: "weight decay α/2·‖w‖² on every parameter (optionally not BatchNorm and biases); α = 1e-4",
    params: PARAMS,
    example: "{alpha: 0.0001}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Regularizer(Box::new(L2 { alpha: p.float("alpha")?, exclude_1d: p.bool("exclude_1d")?, params: Vec::new() })))
}

struct L2 {
    alpha: f64,
    exclude_1d: bool,
    params: Vec<Tensor>,
}

/// grad += scale·x for every (parameter, x) pair, in place: the scale is a 0-dim CPU tensor, so nothing
/// the size of the model is allocated.
pub fn add_scaled<'a>(pairs: impl Iterator<Item = (&'a Tensor, &'a Tensor)>, scale: f64) {
    let scale = Tensor::from(scale);
    tch::no_grad(|| {
        for (param, x) in pairs {
            let mut grad = param.grad();
            if grad.defined() {
                let _ = grad.addcmul_(x, &scale);
            }
        }
    });
}

/// Σ‖x‖² in double precision.
pub fn squared_norm(x: &Tensor) -> f64 {
    x.detach().to_kind(Dtype::Double).square().sum(Dtype::Double).double_value(&[])
}

impl Regularizer for L2 {
    fn setup(&mut self, net: &Net) -> Result<()> {
        self.params = net.parameters().into_iter().filter(|(_, t)| !(self.exclude_1d && t.dim() == 1)).map(|(_, t)| t).collect();
        Ok(())
    }

    fn add_grad(&self, _net: &Net) {
        add_scaled(self.params.iter().map(|p| (p, p)), self.alpha);
    }

    fn penalty(&self, _net: &Net) -> f64 {
        0.5 * self.alpha * self.params.iter().map(squared_norm).sum::<f64>()
    }
}
