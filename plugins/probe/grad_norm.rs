//! Gradient norms, as in the paper's Fig. 2 (§4.6.1): the Frobenius norm of the gradient of the last 3x3
//! conv of each residual stage (the backbone's `probe_param`, e.g. `layer4.2.conv2.weight` for ResNet-50)
//! plus any `params` named, at the first step of each epoch (`every: 0`) or every N optimizer steps. The
//! gradient is the one the optimizer steps with: the loss's plus the explicit regularizers' (as the
//! authors' loss included its regularizer), before the optimizer's own weight decay. Records
//! `{probe: grad_norm, values: {<param>: norm}}` to metrics.jsonl.
use crate::params::{suggestion, Param, Params};
use crate::plugin::{Ctx, Hooks, Record};
use crate::registry::{Built, Kind};
use anyhow::{bail, Result};
use tch::{Kind as Dtype, Tensor};

const PARAMS: &[Param] = &[
    Param::int("every", 0, "record every N optimizer steps; 0: at the first step of each epoch (the paper)").min(0.0),
    Param::strs("params", &[], "more parameters to watch, by name (e.g. conv1.weight)"),
];

crate::register_plugin! {
    name: "grad_norm",
    kind: Kind::Probe,
    doc: "Frobenius norm of each stage's last 3x3 conv gradient (Fig. 2), per epoch start or every N steps",
    params: PARAMS,
    example: "{every: 0, params: [conv1.weight]}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Probe(Box::new(GradNorm { every: p.usize("every")?, extra: p.strs("params")?, watched: Vec::new() })))
}

struct GradNorm {
    every: usize,
    extra: Vec<String>,
    watched: Vec<(String, Tensor)>,
}

impl Hooks for GradNorm {
    fn run_start(&mut self, ctx: &mut Ctx) -> Result<()> {
        let params = ctx.net.parameters();
        let names = ctx.net.stages().into_iter().map(|s| s.probe_param).chain(self.extra.iter().cloned());
        self.watched.clear();
        for name in names {
            match params.iter().find(|(n, _)| *n == name) {
                Some((_, t)) => self.watched.push((name, t.shallow_clone())),
                None => bail!("grad_norm: the model has no parameter `{name}`{}", suggestion(&name, params.iter().map(|(n, _)| n.as_str()))),
            }
        }
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx) -> Result<()> {
        let p = ctx.progress;
        let due = if self.every == 0 { p.step_in_epoch == 0 } else { p.step % self.every == 0 };
        if !due {
            return Ok(());
        }
        let values = self
            .watched
            .iter()
            .filter_map(|(name, t)| {
                let grad = t.grad();
                grad.defined().then(|| (name.clone(), grad.to_kind(Dtype::Double).norm().double_value(&[])))
            })
            .collect();
        ctx.records.push(Record { probe: "grad_norm".into(), epoch: p.epoch, step: p.step, values });
        Ok(())
    }
}
