//! Step decay (PyTorch `StepLR`): factor(t) = gamma^⌊t / step_size⌋, t in epochs or optimizer steps.
use crate::params::{Param, Params};
use crate::plugin::{Progress, Scheduler};
use crate::plugins::timeline::{Unit, UNITS};
use crate::registry::{Built, Kind};
use anyhow::Result;

const PARAMS: &[Param] = &[
    Param::int("step_size", 1, "decay every this many units").required().min(1.0),
    Param::float("gamma", 0.1, "multiplier per decay").min(0.0),
    Param::choice("unit", "epoch", UNITS, "count epochs or optimizer steps"),
];

crate::register_plugin! {
    name: "step",
    kind: Kind::Scheduler,
    doc: "multiply by gamma every step_size epochs (or steps)",
    params: PARAMS,
    example: "{step_size: 10, gamma: 0.1}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Scheduler(Box::new(Step { size: p.usize("step_size")?, gamma: p.float("gamma")?, unit: Unit::param(p)? })))
}

struct Step {
    size: usize,
    gamma: f64,
    unit: Unit,
}

impl Scheduler for Step {
    fn factor(&self, p: &Progress) -> f64 {
        let (t, _) = self.unit.position(p);
        self.gamma.powi((t / self.size) as i32)
    }
}
