//! Cosine annealing from the base rate to `min_factor`·base over the run (PyTorch `CosineAnnealingLR` with
//! T_max = the run's length): factor(t) = m + (1 − m)·½(1 + cos(π t / T)), t and T in steps or epochs.
use crate::params::{Param, Params};
use crate::plugin::{Progress, Scheduler};
use crate::plugins::timeline::{Unit, UNITS};
use crate::registry::{Built, Kind};
use anyhow::Result;

const PARAMS: &[Param] = &[
    Param::choice("unit", "step", UNITS, "anneal per optimizer step or per epoch"),
    Param::float("min_factor", 0.0, "final rate as a fraction of the base rate").range(0.0, 1.0),
];

crate::register_plugin! {
    name: "cosine",
    kind: Kind::Scheduler,
    doc: "cosine annealing over the whole run",
    params: PARAMS,
    example: "{unit: step}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Scheduler(Box::new(Cosine { unit: Unit::param(p)?, min: p.float("min_factor")? })))
}

struct Cosine {
    unit: Unit,
    min: f64,
}

/// ½(1 + cos(π t / T)), the cosine from 1 down to 0.
pub fn half_cosine(t: f64, period: f64) -> f64 {
    0.5 * (1.0 + (std::f64::consts::PI * t / period.max(1e-12)).cos())
}

impl Scheduler for Cosine {
    fn factor(&self, p: &Progress) -> f64 {
        let (t, total) = self.unit.position(p);
        self.min + (1.0 - self.min) * half_cosine(t as f64, total as f64)
    }
}
