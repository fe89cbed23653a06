//! An example dynamic plugin: label smoothing (Szegedy et al., 2016) as a strategy. It replaces each
//! training batch's hard labels with soft targets (1 − ε)·onehot + ε/C; evaluation is untouched.
//! Build it with `cargo build -p rifle-label-smoothing` and load it with `plugins: [path/to/lib.so]`.
use anyhow::Result;
use rifle_core::plugin::{Batch, Ctx, Hooks, Perturb};
use rifle_core::tch::Kind;
use rifle_core::{register_plugin, Built, Kind as PluginKind, Param, Params};

const PARAMS: &[Param] = &[Param::float("epsilon", 0.1, "probability mass spread uniformly over all classes").range(0.0, 1.0)];

register_plugin! {
    name: "label_smoothing",
    kind: PluginKind::Strategy,
    doc: "soft targets (1 − ε)·onehot + ε/C for training batches (example dynamic plugin)",
    params: PARAMS,
    example: "{epsilon: 0.1}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(LabelSmoothing { epsilon: p.float("epsilon")? })))
}

struct LabelSmoothing {
    epsilon: f64,
}

impl Hooks for LabelSmoothing {
    fn before_step(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> Result<()> {
        let classes = ctx.net.head_weight.size()[0];
        let onehot = batch.labels.onehot(classes).to_kind(Kind::Float);
        batch.soft_targets = Some(onehot * (1.0 - self.epsilon) + self.epsilon / classes as f64);
        Ok(())
    }
}

impl Perturb for LabelSmoothing {}

rifle_core::export_plugins!();
