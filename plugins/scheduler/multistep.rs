//! Decay at milestones (PyTorch `MultiStepLR`): factor(t) = gamma^(number of milestones ≤ t), t in epochs or
//! optimizer steps.
use crate::params::{Param, Params};
use crate::plugin::{Progress, Scheduler};
use crate::plugins::timeline::{Unit, UNITS};
use crate::registry::{Built, Kind};
use anyhow::{ensure, Result};

const PARAMS: &[Param] = &[
    Param::ints("milestones", &[], "units at which the rate is multiplied by gamma, increasing").required().min(1.0),
    Param::float("gamma", 0.1, "multiplier per milestone").min(0.0),
    Param::choice("unit", "epoch", UNITS, "count epochs or optimizer steps"),
];

crate::register_plugin! {
    name: "multistep",
    kind: Kind::Scheduler,
    doc: "multiply by gamma at each milestone epoch (or step)",
    params: PARAMS,
    example: "{milestones: [20, 30], gamma: 0.1}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    let milestones: Vec<usize> = p.ints("milestones")?.into_iter().map(|m| m as usize).collect();
    ensure!(!milestones.is_empty(), "{}: `milestones` is empty", p.origin);
    ensure!(milestones.windows(2).all(|w| w[0] < w[1]), "{}: `milestones` must be strictly increasing, found {milestones:?}", p.origin);
    Ok(Built::Scheduler(Box::new(MultiStep { milestones, gamma: p.float("gamma")?, unit: Unit::param(p)? })))
}

struct MultiStep {
    milestones: Vec<usize>,
    gamma: f64,
    unit: Unit,
}

impl Scheduler for MultiStep {
    fn factor(&self, p: &Progress) -> f64 {
        let (t, _) = self.unit.position(p);
        self.gamma.powi(self.milestones.iter().filter(|&&m| m <= t).count() as i32)
    }
}
