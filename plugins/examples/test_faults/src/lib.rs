//! Test fixture, not for training: strategies that make the things the reliability tests need happen on
//! purpose, at a chosen step, in a real run of the real binary. Built by `make test` (`cargo build
//! --workspace`) as `librifle_test_faults.so` and loaded by the tests in `tests/tests/` through a pipeline's
//! `plugins:` list.
//! - `panic_at`: panics in a hook (`before_step`) or in the forward pass (`features`) at one step;
//! - `nonfinite_at`: makes the loss NaN (NaN inputs) or a gradient infinite at the listed steps;
//! - `signal_at`: sends the process SIGINT or SIGTERM, as Ctrl-C or `kill` would, during one step or at
//!   the end of one epoch;
//! - `reinit_head`: re-initialises the head at the start of the listed epochs (random draws in a hook, as
//!   RIFLE makes them);
//! - `feature_noise`: adds Gaussian noise to the pooled features in training (random draws every step).
use anyhow::Result;
use rifle_core::plugin::{Batch, Ctx, Hooks, Perturb};
use rifle_core::tch::Tensor;
use rifle_core::{model::HeadInit, register_plugin, Built, Kind as PluginKind, Param, Params};
use std::sync::atomic::{AtomicUsize, Ordering};

const PANIC_PARAMS: &[Param] = &[
    Param::int("step", 0, "the step (0-based, over the run) at which to panic").min(0.0),
    Param::choice("hook", "before_step", &["before_step", "features"], "where: a training hook, or the forward pass"),
];

register_plugin! {
    name: "panic_at",
    kind: PluginKind::Strategy,
    doc: "test fixture: panics at one step, in a hook or in the forward pass",
    params: PANIC_PARAMS,
    example: "{step: 1000000}",
    build: build_panic,
}

fn build_panic(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(PanicAt { step: p.usize("step")?, in_forward: p.str("hook")? == "features", current: AtomicUsize::new(0) })))
}

struct PanicAt {
    step: usize,
    in_forward: bool,
    /// The step being trained, for the forward pass (which is not told).
    current: AtomicUsize,
}

impl Hooks for PanicAt {
    fn before_step(&mut self, ctx: &mut Ctx, _batch: &mut Batch) -> Result<()> {
        self.current.store(ctx.progress.step, Ordering::Relaxed);
        if !self.in_forward && ctx.progress.step == self.step {
            panic!("injected panic at step {}", self.step);
        }
        Ok(())
    }
}

impl Perturb for PanicAt {
    fn features(&self, x: Tensor, train: bool) -> Tensor {
        if train && self.in_forward && self.current.load(Ordering::Relaxed) == self.step {
            panic!("injected panic in the forward pass at step {}", self.step);
        }
        x
    }
}

const NONFINITE_PARAMS: &[Param] = &[
    Param::ints("steps", &[], "the steps (0-based, over the run) to spoil"),
    Param::choice("what", "loss", &["loss", "gradient"], "NaN inputs (so a NaN loss) or an infinite head-weight gradient"),
];

register_plugin! {
    name: "nonfinite_at",
    kind: PluginKind::Strategy,
    doc: "test fixture: a NaN loss or an infinite gradient at the listed steps",
    params: NONFINITE_PARAMS,
    example: "{steps: [3], what: loss}",
    build: build_nonfinite,
}

fn build_nonfinite(p: &Params) -> Result<Built> {
    let steps = p.ints("steps")?.into_iter().map(|s| s as usize).collect();
    Ok(Built::Strategy(Box::new(NonFiniteAt { steps, gradient: p.str("what")? == "gradient" })))
}

struct NonFiniteAt {
    steps: Vec<usize>,
    gradient: bool,
}

impl Hooks for NonFiniteAt {
    fn before_step(&mut self, ctx: &mut Ctx, batch: &mut Batch) -> Result<()> {
        if !self.gradient && self.steps.contains(&ctx.progress.step) {
            batch.images = batch.images.full_like(f64::NAN);
        }
        Ok(())
    }
    fn after_backward(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.gradient && self.steps.contains(&ctx.progress.step) {
            let mut grad = ctx.net.head_weight.grad();
            let _ = grad.fill_(f64::INFINITY);
        }
        Ok(())
    }
}

impl Perturb for NonFiniteAt {}

const SIGNAL_PARAMS: &[Param] = &[
    Param::int("step", 0, "send the signal during this step (0-based, over the run)").optional().min(0.0),
    Param::int("epoch_end", 0, "or at the end of this epoch (0-based), after its evaluation").optional().min(0.0),
    Param::choice("signal", "INT", &["INT", "TERM"], "SIGINT (Ctrl-C) or SIGTERM"),
    Param::int("times", 1, "how many times to send it").range(1.0, 10.0),
];

register_plugin! {
    name: "signal_at",
    kind: PluginKind::Strategy,
    doc: "test fixture: the process receives SIGINT or SIGTERM during one step or at the end of one epoch",
    params: SIGNAL_PARAMS,
    example: "{step: 1000000, signal: INT}",
    build: build_signal,
}

fn build_signal(p: &Params) -> Result<Built> {
    let signal = if p.str("signal")? == "TERM" { signal_hook::consts::SIGTERM } else { signal_hook::consts::SIGINT };
    let opt = |name: &str| -> Result<Option<usize>> { Ok(p.opt_int(name)?.map(|v| v as usize)) };
    Ok(Built::Strategy(Box::new(SignalAt { step: opt("step")?, epoch_end: opt("epoch_end")?, signal, times: p.usize("times")? })))
}

/// Unset `step` and `epoch_end`: never sends anything (a run identical to one with a signal, minus it).
struct SignalAt {
    step: Option<usize>,
    epoch_end: Option<usize>,
    signal: i32,
    times: usize,
}

impl SignalAt {
    fn send(&self) -> Result<()> {
        for _ in 0..self.times {
            signal_hook::low_level::raise(self.signal)?;
        }
        Ok(())
    }
}

impl Hooks for SignalAt {
    fn before_step(&mut self, ctx: &mut Ctx, _batch: &mut Batch) -> Result<()> {
        if self.step == Some(ctx.progress.step) {
            self.send()?;
        }
        Ok(())
    }
    fn epoch_end(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.epoch_end == Some(ctx.progress.epoch) {
            self.send()?;
        }
        Ok(())
    }
}

impl Perturb for SignalAt {}

const REINIT_PARAMS: &[Param] = &[Param::ints("epochs", &[], "epochs (0-based) at whose start the head is re-initialised")];

register_plugin! {
    name: "reinit_head",
    kind: PluginKind::Strategy,
    doc: "test fixture: re-initialises the head at the start of the listed epochs (random draws in a hook)",
    params: REINIT_PARAMS,
    example: "{epochs: [2]}",
    build: build_reinit,
}

fn build_reinit(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(ReinitHead { epochs: p.ints("epochs")?.into_iter().map(|e| e as usize).collect() })))
}

struct ReinitHead {
    epochs: Vec<usize>,
}

impl Hooks for ReinitHead {
    fn epoch_start(&mut self, ctx: &mut Ctx) -> Result<()> {
        if self.epochs.contains(&ctx.progress.epoch) {
            ctx.net.reinit_head(HeadInit::TorchDefault);
        }
        Ok(())
    }
}

impl Perturb for ReinitHead {}

const NOISE_PARAMS: &[Param] = &[Param::float("std", 0.1, "standard deviation of the noise").min(0.0)];

register_plugin! {
    name: "feature_noise",
    kind: PluginKind::Strategy,
    doc: "test fixture: Gaussian noise on the pooled features in training (random draws every step)",
    params: NOISE_PARAMS,
    example: "{std: 0.1}",
    build: build_noise,
}

fn build_noise(p: &Params) -> Result<Built> {
    Ok(Built::Strategy(Box::new(FeatureNoise { std: p.float("std")? })))
}

struct FeatureNoise {
    std: f64,
}

impl Hooks for FeatureNoise {}

impl Perturb for FeatureNoise {
    fn features(&self, x: Tensor, train: bool) -> Tensor {
        if train {
            &x + x.randn_like() * self.std
        } else {
            x
        }
    }
}

rifle_core::export_plugins!();
