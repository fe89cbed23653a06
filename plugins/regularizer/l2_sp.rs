//! L2-SP (Li et al. 2018; the "L2-SP" rows of the paper's Tables 1–2), as the authors' code has it:
//!
//!   Ω(w) = α/2·Σ‖w − w0‖² over the pretrained parameters except the head (BatchNorm affine included)
//!        + β/2·‖w_head‖² (weight and bias),
//!
//! with α = 0.01, β = 1e-4 and no weight decay on top. w0 is copied once, on the training device, after the
//! pretrained weights load ("pretrained" = the parameters the weights file provided). Without pretrained
//! weights every non-head parameter is anchored to its initial value, with a warning. Backbone parameters
//! the file did not provide are in neither term.
use crate::model::Net;
use crate::params::{Param, Params};
use crate::plugin::Regularizer;
use crate::plugins::regularizer::l2::{add_scaled, squared_norm};
use crate::registry::{Built, Kind};
use anyhow::Result;
use tch::Tensor;

const PARAMS: &[Param] = &[
    Param::float("alpha", 0.01, "coefficient α of α/2·‖w − w0‖² on the pretrained (non-head) parameters").min(0.0),
    Param::float("beta", 1e-4, "coefficient β of β/2·‖w‖² on the head").min(0.0),
];

crate::register_plugin! {
    name: "l2_sp",
    kind: Kind::Regularizer,
    doc: "α/2·‖w − w0‖² on pretrained non-head parameters + β/2·‖w_head‖²; α = 0.01, β = 1e-4 (authors' code)",
    params: PARAMS,
    example: "{alpha: 0.01, beta: 0.0001}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Regularizer(Box::new(L2Sp { alpha: p.float("alpha")?, beta: p.float("beta")?, anchored: Vec::new(), head: Vec::new() })))
}

struct L2Sp {
    alpha: f64,
    beta: f64,
    /// (w, w0) for the parameters in the SP term.
    anchored: Vec<(Tensor, Tensor)>,
    head: Vec<Tensor>,
}

impl Regularizer for L2Sp {
    fn setup(&mut self, net: &Net) -> Result<()> {
        if net.pretrained.is_empty() {
            tracing::warn!("l2_sp: no pretrained weights were loaded; every non-head parameter is anchored to its initial value");
        }
        let (head, body): (Vec<_>, Vec<_>) = net.parameters().into_iter().partition(|(name, _)| net.is_head(name));
        self.anchored = body
            .into_iter()
            .filter(|(name, _)| net.pretrained.is_empty() || net.pretrained.contains(name))
            .map(|(_, w)| {
                let w0 = w.detach().copy();
                (w, w0)
            })
            .collect();
        self.head = head.into_iter().map(|(_, w)| w).collect();
        Ok(())
    }

    fn add_grad(&self, _net: &Net) {
        // α·(w − w0) as α·w − α·w0: two in-place updates, no temporary per parameter.
        add_scaled(self.anchored.iter().map(|(w, _)| (w, w)), self.alpha);
        add_scaled(self.anchored.iter().map(|(w, w0)| (w, w0)), -self.alpha);
        add_scaled(self.head.iter().map(|w| (w, w)), self.beta);
    }

    fn penalty(&self, _net: &Net) -> f64 {
        let sp: f64 = tch::no_grad(|| self.anchored.iter().map(|(w, w0)| squared_norm(&(w - w0))).sum());
        let head: f64 = self.head.iter().map(squared_norm).sum();
        0.5 * self.alpha * sp + 0.5 * self.beta * head
    }
}
