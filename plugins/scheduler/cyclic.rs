//! Cosine annealing with warm restarts over N equal cycles (the CyclicLR baseline of the paper's Table 1,
//! after Smith 2017 / SGDR): the run is split into `cycles` periods (boundaries ⌊i·T/N⌋, see
//! `plugins/timeline.rs`) and within each, factor = m + (1 − m)·½(1 + cos(π τ / P)), τ the position in the
//! cycle and P its length. Every cycle restarts at the full base rate.
use crate::params::{Param, Params};
use crate::plugin::{Progress, Scheduler};
use crate::plugins::scheduler::cosine::half_cosine;
use crate::plugins::timeline::{Periods, Unit, UNITS};
use crate::registry::{Built, Kind};
use anyhow::Result;

const PARAMS: &[Param] = &[
    Param::int("cycles", 3, "number of equal cycles N (the paper tries 2, 3, 4)").min(1.0),
    Param::float("min_factor", 0.0, "rate at the end of each cycle, as a fraction of the base rate").range(0.0, 1.0),
    Param::choice("unit", "step", UNITS, "anneal per optimizer step or per epoch"),
];

crate::register_plugin! {
    name: "cyclic",
    kind: Kind::Scheduler,
    doc: "cosine annealing with warm restarts in N equal cycles (Table 1's CyclicLR)",
    params: PARAMS,
    example: "{cycles: 3}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Scheduler(Box::new(Cyclic { cycles: p.usize("cycles")?, min: p.float("min_factor")?, unit: Unit::param(p)? })))
}

struct Cyclic {
    cycles: usize,
    min: f64,
    unit: Unit,
}

impl Scheduler for Cyclic {
    fn factor(&self, p: &Progress) -> f64 {
        let (t, total) = self.unit.position(p);
        let (_, start, len) = Periods::new(total, self.cycles).locate(t);
        self.min + (1.0 - self.min) * half_cosine((t - start) as f64, len as f64)
    }
}
