//! Linear warm-up (PyTorch `LinearLR`): over the first W optimizer steps the factor rises linearly from
//! `start_factor` to 1, then stays 1: factor(t) = s + (1 − s)·min(t, W)/W. W is `steps`, or `epochs` × steps
//! per epoch (warm-up is per step either way). Schedulers multiply, so `[warmup, cosine]` is a warmed-up
//! cosine.
use crate::params::{Param, Params};
use crate::plugin::{Progress, Scheduler};
use crate::registry::{Built, Kind};
use anyhow::{bail, Result};

const PARAMS: &[Param] = &[
    Param::int("steps", 1, "warm-up length in optimizer steps (set this or `epochs`)").optional().min(1.0),
    Param::int("epochs", 1, "warm-up length in epochs (set this or `steps`)").optional().min(1.0),
    Param::float("start_factor", 1.0 / 3.0, "factor at the first step (PyTorch LinearLR's default 1/3)").range(0.0, 1.0),
];

crate::register_plugin! {
    name: "warmup",
    kind: Kind::Scheduler,
    doc: "linear warm-up from start_factor to 1 over `steps` or `epochs`, then 1",
    params: PARAMS,
    example: "{steps: 100, start_factor: 0.1}",
    build: build,
}

enum Length {
    Steps(usize),
    Epochs(usize),
}

fn build(p: &Params) -> Result<Built> {
    let length = match (p.opt_int("steps")?, p.opt_int("epochs")?) {
        (Some(s), None) => Length::Steps(s as usize),
        (None, Some(e)) => Length::Epochs(e as usize),
        _ => bail!("{}: set exactly one of `steps` and `epochs`", p.origin),
    };
    Ok(Built::Scheduler(Box::new(Warmup { length, start: p.float("start_factor")? })))
}

struct Warmup {
    length: Length,
    start: f64,
}

impl Scheduler for Warmup {
    fn factor(&self, p: &Progress) -> f64 {
        let steps = match self.length {
            Length::Steps(s) => s,
            Length::Epochs(e) => e * p.steps_per_epoch,
        };
        // A zero-step warm-up (an empty epoch) is no warm-up.
        if steps == 0 {
            return 1.0;
        }
        self.start + (1.0 - self.start) * p.step.min(steps) as f64 / steps as f64
    }
}
