//! RIFLE-B, the paper's second ablation (Table 2): RIFLE's cyclic head rate without re-initialisation.
//! `reinits: K` keeps RIFLE's meaning: K+1 periods, so `rifle_b` with K matches the `rifle` run it
//! ablates.
use crate::params::{Param, Params};
use crate::plugins::strategy::rifle::{build_variant, REINITS, UNIT};
use crate::registry::{Built, Kind};
use anyhow::Result;

const PARAMS: &[Param] = &[REINITS, UNIT];

crate::register_plugin! {
    name: "rifle_b",
    kind: Kind::Strategy,
    doc: "RIFLE ablation B: cyclic head rate over K+1 periods only (no re-initialisation)",
    params: PARAMS,
    example: "{reinits: 3}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    build_variant("rifle_b", p, false, true)
}
