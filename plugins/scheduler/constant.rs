//! A constant learning rate: factor(t) = `factor` (1 keeps the base rate). With `groups` it scales one
//! parameter group, e.g. a frozen head with factor 0.
use crate::params::{Param, Params};
use crate::plugin::{Progress, Scheduler};
use crate::registry::{Built, Kind};
use anyhow::Result;

const PARAMS: &[Param] = &[Param::float("factor", 1.0, "the multiplier of the base rate").min(0.0)];

crate::register_plugin! {
    name: "constant",
    kind: Kind::Scheduler,
    doc: "constant factor of the base rate (default 1)",
    params: PARAMS,
    example: "{factor: 1.0}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Scheduler(Box::new(Constant(p.float("factor")?))))
}

struct Constant(f64);

impl Scheduler for Constant {
    fn factor(&self, _: &Progress) -> f64 {
        self.0
    }
}
