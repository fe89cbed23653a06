//! DisturbLabel (Xie et al. 2016; the "DisturbL." column of the paper's Table 1): in every training step,
//! each sample's label is replaced with probability α by a class drawn uniformly from all C classes (its
//! own included, so a label actually changes with probability α(C − 1)/C). Draws are new every step;
//! evaluation never sees them (the engine calls `before_step` in training only).
use crate::params::{Param, Params};
use crate::plugin::{Batch, Ctx, Hooks, Perturb};
use crate::registry::{Built, Kind};
use anyhow::{bail, Result};
use tch::{Kind as Dtype, Tensor};

const PARAMS: &[Param] =
    &[Param::float("alpha", 0.1, "probability of replacing a label by a uniform class (the paper tries 0.05, 0.1, 0.2)").range(0.0, 1.0)];

crate::register_plugin! {
    name: "disturb_label",
    kind: Kind::Strategy,
    doc: "replaces each training label with prob. alpha by a uniformly drawn class, every step",
    params: PARAMS,
    example: "{alpha: 0.1}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(DisturbLabel { alpha: p.float("alpha")? })))
}

struct DisturbLabel {
    alpha: f64,
}

impl Hooks for DisturbLabel {
    fn before_step(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> Result<()> {
        if batch.labels.kind() != Dtype::Int64 {
            bail!("disturb_label needs class labels (a classification dataset); the batch has {:?} targets", batch.labels.kind());
        }
        if batch.soft_targets.is_some() {
            bail!("disturb_label: an earlier strategy already set soft targets from the labels; list disturb_label before it");
        }
        let classes = ctx.net.head_weight.size()[0];
        let n = batch.labels.size()[0];
        let device = batch.labels.device();
        let replace = Tensor::rand([n], (Dtype::Float, device)).lt(self.alpha);
        let drawn = Tensor::randint(classes, [n], (Dtype::Int64, device));
        batch.labels = drawn.where_self(&replace, &batch.labels);
        Ok(())
    }
}

impl Perturb for DisturbLabel {}
