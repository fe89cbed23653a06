//! Where a run stands, in the unit a plugin counts in (epochs or optimizer steps), and the split of a run
//! into equal periods. Shared by the schedulers and RIFLE so that "period" means the same thing everywhere.
use crate::params::Params;
use crate::plugin::Progress;
use anyhow::{bail, Result};

/// The choices of a `unit` parameter.
pub const UNITS: &[&str] = &["epoch", "step"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Epoch,
    Step,
}

impl Unit {
    /// Reads the `unit` parameter.
    pub fn param(p: &Params) -> Result<Unit> {
        match p.str("unit")? {
            "epoch" => Ok(Unit::Epoch),
            "step" => Ok(Unit::Step),
            other => bail!("{}: unknown unit `{other}`", p.origin),
        }
    }

    /// (t, total): the 0-based position in the run and the run's length, in this unit.
    pub fn position(self, p: &Progress) -> (usize, usize) {
        match self {
            Unit::Epoch => (p.epoch, p.epochs),
            Unit::Step => (p.step, p.total_steps()),
        }
    }

    /// Whether this step is the first of its unit (every step is the first of itself).
    pub fn at_unit_start(self, p: &Progress) -> bool {
        self == Unit::Step || p.step_in_epoch == 0
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Epoch => "epoch",
            Unit::Step => "step",
        }
    }
}

/// `n` consecutive periods covering `0..total`. Period i is `bounds[i]..bounds[i + 1]` with
/// bounds[i] = ⌊i·total/n⌋: exact integer arithmetic, lengths differ by at most one, and when `n` divides
/// `total` every period has `total/n` units.
#[derive(Clone, Debug, PartialEq)]
pub struct Periods {
    bounds: Vec<usize>,
}

impl Periods {
    pub fn new(total: usize, n: usize) -> Periods {
        let n = n.max(1);
        Periods { bounds: (0..=n).map(|i| i * total / n).collect() }
    }

    /// The first unit of every period but the first (where RIFLE re-initialises).
    pub fn restarts(&self) -> &[usize] {
        &self.bounds[1..self.bounds.len() - 1]
    }

    /// The period holding `t`, as (index, its first unit, its length); past the end, the last period.
    pub fn locate(&self, t: usize) -> (usize, usize, usize) {
        let last = self.bounds.len() - 2;
        // The last period starting at or before t is the one holding it: an empty period (total < n)
        // shares its start with the next one.
        let i = (0..=last).rev().find(|&i| self.bounds[i] <= t).unwrap_or(0);
        (i, self.bounds[i], self.bounds[i + 1] - self.bounds[i])
    }
}
