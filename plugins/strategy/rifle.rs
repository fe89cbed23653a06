//! RIFLE (Li et al., ICML 2020): the run is split into K+1 equal periods (in epochs or optimizer steps;
//! boundaries ⌊i·T/(K+1)⌋, see `plugins/timeline.rs`) and the head is re-initialised at the first step of
//! periods 2..K+1 — K times, never at the end of training, so the saved model never has a random head
//! (the authors' code re-initialised once more after the final evaluation). Optionally (`head_lr: cyclic`)
//! the head's learning rate restarts every period:
//!
//!   lr_head = base_lr_head · ½(1 + cos(π τ / P)),
//!
//! τ the position in the current period and P its length, both in `unit`s (with `unit: epoch` the rate is
//! constant within an epoch, as in the authors' code), base_lr_head the head group's base rate
//! (`optimizer.lr` × its `lr_mult`). It replaces the schedulers' factor on the head: every period starts
//! at the full base rate, as η_max in the paper's Algorithm 1 and in the authors' code. Algorithm 1 also
//! writes cos(2π τ / P), which would climb back to η_max within a period; the code (and this plugin) anneal
//! down once per period.
//!
//! Where the paper and the authors' code differ, both are offered; the defaults follow the code:
//! `init: torch_default` (PyTorch `nn.Linear`: weight and bias uniform in ±1/sqrt(fan_in); `normal` is the
//! paper's N(0, std²) with a zero bias) and `reset_optimizer_state: false` (the head keeps its momentum or
//! Adam moments; `true` forgets them, and Adam's bias correction restarts with them).
//!
//! Re-initialisation happens in `before_step`, whose random draws the engine seeds with (seed, step), so a
//! resumed run re-initialises exactly as a straight one. Each re-initialisation writes a record
//! `{probe: <plugin name>, values: {reinit: i}}` to metrics.jsonl.
//!
//! `rifle_a` (re-initialisation only) and `rifle_b` (cyclic head rate only) are the paper's ablations
//! (Table 2); they share this implementation.
use crate::model::HeadInit;
use crate::params::{Param, Params};
use crate::plugin::{Batch, Ctx, Hooks, Perturb, Progress, Record};
use crate::plugins::scheduler::cosine::half_cosine;
use crate::plugins::timeline::{Periods, Unit, UNITS};
use crate::registry::{Built, Kind};
use anyhow::{bail, Context, Result};

pub const REINITS: Param = Param::int("reinits", 3, "K: the run is split into K+1 equal periods and the head re-initialised K times").min(1.0);
pub const UNIT: Param = Param::choice("unit", "epoch", UNITS, "periods counted in epochs (as the authors' code) or optimizer steps");
pub const INIT: Param =
    Param::choice("init", "torch_default", &["torch_default", "normal"], "torch_default: uniform ±1/sqrt(fan_in) (authors' code); normal: N(0, std²), zero bias (paper)");
pub const STD: Param = Param::float("std", 0.01, "standard deviation δ of `init: normal`").min(0.0);
pub const RESET: Param =
    Param::bool("reset_optimizer_state", false, "forget the head's momentum/Adam state at each re-initialisation (authors' code: false)");
const HEAD_LR: Param =
    Param::choice("head_lr", "cyclic", &["cyclic", "follow"], "cyclic: the head's rate restarts at its base each period (cosine to ~0); follow: the schedulers'");

const PARAMS: &[Param] = &[REINITS, UNIT, INIT, STD, RESET, HEAD_LR];

crate::register_plugin! {
    name: "rifle",
    kind: Kind::Strategy,
    doc: "re-initialise the head at the start of periods 2..K+1, cyclic head rate per period (defaults: authors' code)",
    params: PARAMS,
    example: "{reinits: 3, unit: epoch, init: torch_default, head_lr: cyclic}",
    build: build,
}

fn build(p: &Params) -> Result<Built> {
    let cyclic = p.str("head_lr")? == "cyclic";
    build_variant("rifle", p, true, cyclic)
}

/// Builds RIFLE or one of its ablations: with or without re-initialisation, with or without the cyclic
/// head rate. Parameters a variant does not take are not read.
pub fn build_variant(name: &'static str, p: &Params, reinit: bool, cyclic: bool) -> Result<Built> {
    let init = if reinit {
        Some(match p.str("init")? {
            "normal" => HeadInit::Normal { std: p.float("std")? },
            _ => HeadInit::TorchDefault,
        })
    } else {
        None
    };
    let reset = reinit && p.bool("reset_optimizer_state")?;
    Ok(Built::Strategy(Box::new(Rifle { name, reinits: p.usize("reinits")?, unit: Unit::param(p)?, init, reset, cyclic })))
}

struct Rifle {
    name: &'static str,
    reinits: usize,
    unit: Unit,
    /// None: no re-initialisation (rifle_b).
    init: Option<HeadInit>,
    reset: bool,
    cyclic: bool,
}

impl Rifle {
    /// The run's periods; an error when the run is too short to hold K+1 of them.
    fn periods(&self, progress: &Progress) -> Result<Periods> {
        let (_, total) = self.unit.position(progress);
        if total < self.reinits + 1 {
            bail!(
                "{}: `reinits: {}` needs K+1 = {} periods of at least one {} each, but the run has {total} {}s; lower `reinits` or train longer",
                self.name,
                self.reinits,
                self.reinits + 1,
                self.unit.name(),
                self.unit.name()
            );
        }
        Ok(Periods::new(total, self.reinits + 1))
    }
}

impl Hooks for Rifle {
    fn run_start(&mut self, ctx: &mut Ctx) -> Result<()> {
        self.periods(&ctx.progress).map(drop)
    }

    fn before_step(&mut self, ctx: &mut Ctx, _batch: &mut Batch) -> Result<()> {
        let progress = ctx.progress;
        let periods = self.periods(&progress)?;
        let (t, _) = self.unit.position(&progress);
        if let Some(init) = self.init {
            let restart = periods.restarts().iter().position(|&s| s == t);
            if let (Some(i), true) = (restart, self.unit.at_unit_start(&progress)) {
                ctx.net.reinit_head(init);
                if self.reset {
                    ctx.optimizer.reset_state(&ctx.net.head_names());
                }
                tracing::info!("{}: re-initialised the head ({} of {}) at epoch {}, step {}", self.name, i + 1, self.reinits, progress.epoch, progress.step);
                ctx.records.push(Record {
                    probe: self.name.to_string(),
                    epoch: progress.epoch,
                    step: progress.step,
                    values: [("reinit".to_string(), (i + 1) as f64)].into(),
                });
            }
        }
        if self.cyclic {
            let head = ctx.optimizer.group_index("head").context("the optimizer has no `head` parameter group")?;
            let (_, start, len) = periods.locate(t);
            ctx.lrs[head] = ctx.optimizer.groups[head].lr * half_cosine((t - start) as f64, len as f64);
        }
        Ok(())
    }
}

impl Perturb for Rifle {}
