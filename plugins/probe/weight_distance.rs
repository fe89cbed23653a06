//! How far training moves each residual stage from where it started: ‖w − w0‖ (Frobenius norm over all of
//! the stage's parameters together) at the end of every epoch, plus `backbone` over every non-head
//! parameter. w0 is copied in `run_start`, when the model holds its pretrained weights (also on resume).
//! Records `{probe: weight_distance, values: {layer1: .., layer4: .., backbone: ..}}` to metrics.jsonl.
use crate::plugin::{Ctx, Hooks, Record};
use crate::registry::{Built, Kind};
use anyhow::Result;
use tch::{Kind as Dtype, Tensor};

crate::register_plugin! {
    name: "weight_distance",
    kind: Kind::Probe,
    doc: "‖w − w0‖ per residual stage and over the backbone, at each epoch end",
    params: &[],
    example: "{}",
    build: build,
}

fn build(_: &crate::params::Params) -> Result<Built> {
    Ok(Built::Probe(Box::new(WeightDistance { start: Vec::new(), stages: Vec::new() })))
}

struct WeightDistance {
    /// (name, w, w0) for every non-head parameter.
    start: Vec<(String, Tensor, Tensor)>,
    /// (stage name, its parameter-name prefix with a trailing dot).
    stages: Vec<(String, String)>,
}

impl Hooks for WeightDistance {
    fn run_start(&mut self, ctx: &mut Ctx) -> Result<()> {
        let net = &ctx.net;
        self.start = net.parameters().into_iter().filter(|(n, _)| !net.is_head(n)).map(|(n, w)| (n, w.shallow_clone(), w.detach().copy())).collect();
        self.stages = net.stages().into_iter().map(|s| (s.name, format!("{}.", s.prefix))).collect();
        Ok(())
    }

    fn epoch_end(&mut self, ctx: &mut Ctx) -> Result<()> {
        let squared: Vec<(&str, f64)> = tch::no_grad(|| {
            self.start.iter().map(|(n, w, w0)| (n.as_str(), (w - w0).to_kind(Dtype::Double).square().sum(Dtype::Double).double_value(&[]))).collect()
        });
        let sum_where = |keep: &dyn Fn(&str) -> bool| squared.iter().filter(|(n, _)| keep(n)).map(|(_, s)| s).sum::<f64>().sqrt();
        let mut values: std::collections::BTreeMap<String, f64> =
            self.stages.iter().map(|(stage, prefix)| (stage.clone(), sum_where(&|n: &str| n.starts_with(prefix.as_str())))).collect();
        values.insert("backbone".into(), sum_where(&|_| true));
        let p = ctx.progress;
        ctx.records.push(Record { probe: "weight_distance".into(), epoch: p.epoch, step: p.step, values });
        Ok(())
    }
}
