//! RIFLE-A, the paper's first ablation (Table 2): RIFLE's head re-initialisation without the cyclic head
//! rate (the head follows the schedulers). Same parameters and defaults as `rifle` otherwise.
use crate::params::{Param, Params};
use crate::plugins::strategy::rifle::{build_variant, INIT, REINITS, RESET, STD, UNIT};
use crate::registry::{Built, Kind};
use anyhow::Result;

const PARAMS: &[Param] = &[REINITS, UNIT, INIT, STD, RESET];

crate::register_plugin! {
    name: "rifle_a",
    kind: Kind::Strategy,
    doc: "RIFLE ablation A: head re-initialisation only (head rate follows the schedulers)",
    params: PARAMS,
    example: "{reinits: 3}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    build_variant("rifle_a", p, true, false)
}
