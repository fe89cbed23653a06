//! The training engine: builds a run from a checked pipeline and runs the loop. The loop (`Trainer::fit`)
//! calls plugins only through their hooks; everything a method changes, it changes there.
use crate::amp::LossScale;
use crate::checkpoint::{self, Checkpoint, Meters};
use crate::config::{Amp, Loaded, OnNonFinite, PluginUse};
use crate::data::loader::{HostBatch, Loader, LoaderConfig};
use crate::data::Task;
use crate::metrics::{EpochLine, MetricsLog};
use crate::model::Net;
use crate::optim::{Algorithm, Group, Optimizer};
use crate::plugin::{Batch, Ctx, Hooks, InputKind, Perturb, Progress, Record, Regularizer, Scheduler, Split, Strategy};
use crate::registry::{guard, Built};
use anyhow::{anyhow, bail, Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub struct RunOptions {
    /// The run directory; default `<output.dir>/<name>-<timestamp>`.
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its `last` checkpoint.
    pub resume: bool,
    /// Set by SIGINT/SIGTERM: stop at the next step boundary with a resumable checkpoint.
    pub stop: Arc<AtomicBool>,
    pub progress_bar: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub dir: PathBuf,
    pub final_top1: Option<f64>,
    pub best_top1: Option<f64>,
    pub best_epoch: Option<usize>,
    pub final_loss: f64,
    pub interrupted: bool,
    pub seconds: f64,
}

/// Picks the device a pipeline asks for.
pub fn device(spec: &str) -> Result<Device> {
    Ok(match spec {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        _ => match spec.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if (n as i64) < tch::Cuda::device_count() => Device::Cuda(n),
            _ => bail!("device `{spec}` is not available (CUDA devices: {})", tch::Cuda::device_count()),
        },
    })
}

/// The strategies, as one forward perturbation. A panic inside a strategy is caught, remembered with its
/// name, and reported by the trainer after the forward pass.
struct Chain<'a> {
    strategies: &'a [(String, Box<dyn Strategy>)],
    failure: RefCell<Option<anyhow::Error>>,
}

impl Chain<'_> {
    fn each(&self, hook: &str, x: Tensor, f: impl Fn(&dyn Strategy, Tensor) -> Tensor) -> Tensor {
        self.strategies.iter().fold(x, |x, (name, s)| match guard(name, hook, || f(s.as_ref(), x.shallow_clone())) {
            Ok(y) => y,
            Err(e) => {
                self.failure.borrow_mut().get_or_insert(e);
                x
            }
        })
    }
}

impl Perturb for Chain<'_> {
    fn residual(&self, block: usize, blocks: usize, residual: Tensor, train: bool) -> Tensor {
        self.each("residual", residual, |s, r| s.residual(block, blocks, r, train))
    }
    fn stage_output(&self, stage: usize, x: Tensor, train: bool) -> Tensor {
        self.each("stage_output", x, |s, x| s.stage_output(stage, x, train))
    }
    fn features(&self, x: Tensor, train: bool) -> Tensor {
        self.each("features", x, |s, x| s.features(x, train))
    }
    fn head_weight(&self, w: &Tensor, train: bool) -> Tensor {
        self.each("head_weight", w.shallow_clone(), |s, w| s.head_weight(&w, train))
    }
}

/// A run, built and ready to train.
pub struct Trainer {
    pub net: Net,
    pub optimizer: Optimizer,
    pub task: Task,
    pub train: Loader,
    pub test: Loader,
    schedulers: Vec<(String, Box<dyn Scheduler>, Vec<usize>)>,
    regularizers: Vec<(String, Box<dyn Regularizer>)>,
    strategies: Vec<(String, Box<dyn Strategy>)>,
    probes: Vec<(String, Box<dyn Hooks>)>,
    pub epochs: usize,
    pub seed: u64,
    amp: Amp,
    on_nonfinite: OnNonFinite,
    checkpoint_every: usize,
    checkpoint_steps: usize,
    pub dir: PathBuf,
    pub metrics: MetricsLog,
    pub state: Checkpoint,
    /// Epoch and step of the last `last.safetensors` this run wrote or resumed from.
    saved: Option<(usize, usize)>,
}

fn build_all<T>(uses: &[PluginUse], pick: impl Fn(Built) -> Option<T>) -> Result<Vec<(String, T)>> {
    uses.iter()
        .map(|u| {
            let built = u.build()?;
            pick(built).map(|b| (u.name().to_string(), b)).ok_or_else(|| anyhow!("{}: `{}` built the wrong kind of plugin", u.at, u.name()))
        })
        .collect()
}

impl Trainer {
    /// Builds everything a pipeline describes: data, model (with pretrained weights), optimizer, plugins,
    /// and the run directory; restores the last checkpoint when resuming.
    pub fn build(loaded: &Loaded, dir: &Path, resume: bool) -> Result<Trainer> {
        let p = &loaded.pipeline;
        let device = device(&p.device)?;
        let amp = if p.amp != Amp::Off && device == Device::Cpu {
            tracing::warn!("amp: {} applies on CUDA only; training in fp32 on the CPU", format!("{:?}", p.amp).to_lowercase());
            Amp::Off
        } else {
            p.amp
        };
        if p.threads > 0 {
            tch::set_num_threads(p.threads as i32);
        }
        tch::manual_seed(p.seed as i64);
        let plugins = &loaded.plugins;

        let Built::Dataset(dataset) = plugins.dataset.build()? else { bail!("dataset: not a dataset plugin") };
        let task = dataset.task();
        anyhow::ensure!(task.outputs() >= 1, "dataset: no classes or outputs");
        let loader = |split: Split, augments: &[PluginUse], batch: usize, train: bool| -> Result<Loader> {
            let samples = dataset.split(split).with_context(|| format!("dataset `{}`: {split:?} split", plugins.dataset.name()))?;
            let augments = build_all(augments, |b| if let Built::Augment(a) = b { Some(a) } else { None })?;
            let config = LoaderConfig {
                batch_size: batch,
                workers: p.data.workers,
                prefetch: p.data.prefetch,
                shuffle: train,
                drop_last: train && p.data.drop_last,
                seed: p.seed,
                on_bad_image: p.data.on_bad_image,
                normalize: p.data.normalize.clone(),
                classes: matches!(task, Task::Classify { .. }).then(|| task.outputs()),
            };
            Ok(Loader::new(samples, augments.into_iter().map(|(_, a)| a).collect(), config))
        };
        let train = loader(Split::Train, &plugins.augment_train, p.batch_size, true)?;
        let eval_batch = if p.eval_batch_size == 0 { p.batch_size } else { p.eval_batch_size };
        let test = loader(Split::Test, &plugins.augment_eval, eval_batch, false)?;
        anyhow::ensure!(!train.is_empty(), "dataset `{}`: the training split is empty", plugins.dataset.name());
        for (split, l) in [("training", &train), ("test", &test)] {
            l.check_classes().with_context(|| format!("dataset `{}`, {split} split", plugins.dataset.name()))?;
        }
        anyhow::ensure!(
            train.len() > 1 || p.batch_size == 1,
            "dataset `{}`: the training split has a single sample; BatchNorm cannot train on it",
            plugins.dataset.name()
        );

        let Built::Backbone(backbone) = plugins.backbone.build()? else { bail!("backbone: not a backbone plugin") };
        // The first training sample says what the dataset gives (an unreadable one is reported later).
        if let Ok(sample) = train.samples().load(0) {
            let given = match &sample.input {
                crate::data::Input::Image(_) => InputKind::Image,
                crate::data::Input::Vector(v) => InputKind::Vector(v.len() as i64),
            };
            anyhow::ensure!(
                given == backbone.input(),
                "dataset `{}` gives {given} but backbone `{}` takes {}",
                plugins.dataset.name(),
                plugins.backbone.name(),
                backbone.input()
            );
        }
        let mut net = Net::build(backbone.as_ref(), task.outputs(), device)?;
        if let Some(w) = &p.weights {
            crate::weights::load(&mut net, w)?;
        }

        let algorithm = match p.optimizer.algorithm.as_str() {
            "adamw" => Algorithm::Adamw { betas: p.optimizer.betas, eps: p.optimizer.eps },
            _ => Algorithm::Sgd { momentum: p.optimizer.momentum, nesterov: p.optimizer.nesterov },
        };
        let groups = ["backbone", "head"]
            .into_iter()
            .map(|name| {
                let cfg = p.optimizer.groups.get(name);
                let params = net.parameters().into_iter().filter(|(n, _)| net.is_head(n) == (name == "head")).collect();
                Group {
                    name: name.to_string(),
                    lr: p.optimizer.lr * cfg.map_or(1.0, |c| c.lr_mult),
                    weight_decay: cfg.and_then(|c| c.weight_decay).unwrap_or(p.optimizer.weight_decay),
                    params,
                }
            })
            .collect();
        let optimizer = Optimizer::new(algorithm, groups);

        let schedulers = plugins
            .schedulers
            .iter()
            .map(|(u, groups)| {
                let Built::Scheduler(s) = u.build()? else { bail!("{}: not a scheduler", u.at) };
                let idx = if groups.is_empty() { (0..optimizer.groups.len()).collect() } else { groups.iter().filter_map(|g| optimizer.group_index(g)).collect() };
                Ok((u.name().to_string(), s, idx))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut regularizers = build_all(&plugins.regularizers, |b| if let Built::Regularizer(r) = b { Some(r) } else { None })?;
        for (name, r) in &mut regularizers {
            guard(name, "setup", || r.setup(&net))?.with_context(|| format!("regularizer `{name}`"))?;
        }
        let strategies = build_all(&plugins.strategies, |b| if let Built::Strategy(s) = b { Some(s) } else { None })?;
        let probes = build_all(&plugins.probes, |b| if let Built::Probe(s) = b { Some(s as Box<dyn Hooks>) } else { None })?;

        std::fs::create_dir_all(dir.join("checkpoints")).with_context(|| format!("cannot create run directory {}", dir.display()))?;
        let mut state = if resume { checkpoint::read_state(dir)? } else { Checkpoint::default() };
        if let Task::Classify { classes } = &task {
            state.classes = classes.clone();
        }
        let metrics = MetricsLog::open(dir, state.metrics_lines)?;
        if !resume {
            crate::tensorfile::write_atomic(&dir.join("pipeline.yaml"), loaded.resolved.as_bytes())?;
        }
        let mut trainer = Trainer {
            net,
            optimizer,
            task,
            train,
            test,
            schedulers,
            regularizers,
            strategies,
            probes,
            epochs: p.epochs,
            seed: p.seed,
            amp,
            on_nonfinite: p.numerics.on_nonfinite,
            checkpoint_every: p.output.checkpoint_every,
            checkpoint_steps: p.output.checkpoint_steps,
            dir: dir.to_path_buf(),
            metrics,
            saved: resume.then_some((state.epoch, state.step)),
            state,
        };
        // Hooks see the freshly built model with its pretrained weights (to keep w0, say), also on resume.
        trainer.each_hook("run_start", |h, ctx| h.run_start(ctx))?;
        if resume {
            checkpoint::restore(&trainer.dir, &trainer.state, &trainer.net, &mut trainer.optimizer)?;
            tracing::info!("resuming {} at epoch {}, step {}", dir.display(), trainer.state.epoch, trainer.state.step);
        }
        Ok(trainer)
    }

    fn progress(&self) -> Progress {
        Progress {
            epoch: self.state.epoch,
            epochs: self.epochs,
            step: self.state.step,
            step_in_epoch: self.state.step_in_epoch,
            steps_per_epoch: self.train.steps_per_epoch(),
        }
    }

    /// Learning rates for this step: each group's base rate times every scheduler that applies to it.
    fn scheduled_lrs(&self, progress: &Progress) -> Result<Vec<f64>> {
        let mut lrs = self.optimizer.base_lrs();
        for (name, s, groups) in &self.schedulers {
            let factor = guard(name, "factor", || s.factor(progress))?;
            for &g in groups {
                lrs[g] *= factor;
            }
        }
        Ok(lrs)
    }

    /// Calls a hook on every strategy, then every probe, with the plugin's name on any error or panic. Like
    /// a step's, the hook's random draws (a re-initialisation at epoch start, say) come from a generator
    /// seeded by (seed, hook, step), so a resumed run draws what a straight one does.
    fn each_hook(&mut self, hook: &str, f: impl Fn(&mut dyn Hooks, &mut Ctx) -> Result<()>) -> Result<Vec<f64>> {
        let progress = self.progress();
        let stream = hook.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        tch::manual_seed(step_seed(self.seed ^ stream, self.state.step));
        let mut lrs = self.scheduled_lrs(&progress)?;
        let mut records = Vec::new();
        let mut ctx = Ctx { progress, net: &mut self.net, optimizer: &mut self.optimizer, lrs: &mut lrs, records: &mut records };
        let hooks = self.strategies.iter_mut().map(|(n, s)| (n, s.as_mut() as &mut dyn Hooks)).chain(self.probes.iter_mut().map(|(n, p)| (n, p.as_mut())));
        for (name, h) in hooks {
            guard(name, hook, || f(h, &mut ctx))?.with_context(|| format!("plugin `{name}` ({hook})"))?;
        }
        self.write_records(records)?;
        Ok(lrs)
    }

    fn write_records(&mut self, records: Vec<Record>) -> Result<()> {
        records.iter().try_for_each(|r| self.metrics.record(r))
    }

    /// Trains until the last epoch or a stop request. An error (a plugin's, a non-finite loss, an unreadable
    /// batch) stops the run at once; its message says which checkpoint a resume would continue from.
    pub fn fit(&mut self, stop: &AtomicBool, bar: Option<&indicatif::ProgressBar>) -> Result<Summary> {
        let started = Instant::now();
        let interrupted = self.train_epochs(stop, bar).map_err(|e| {
            let at = format!("the run stopped at step {} (epoch {}, batch {})", self.state.step, self.state.epoch, self.state.step_in_epoch);
            let checkpoint = match self.saved {
                Some((epoch, step)) => format!(
                    "its last checkpoint {} (epoch {epoch}, step {step}) is intact; continue with `rifle run --resume {}`",
                    self.dir.join("checkpoints/last.safetensors").display(),
                    self.dir.display()
                ),
                None => "no checkpoint had been written yet".into(),
            };
            e.context(format!("{at}; {checkpoint}"))
        })?;
        Ok(self.summary(started, interrupted))
    }

    /// The epoch loop; returns whether a stop request ended it early.
    fn train_epochs(&mut self, stop: &AtomicBool, bar: Option<&indicatif::ProgressBar>) -> Result<bool> {
        let steps = self.train.steps_per_epoch();
        // The first step of this process is logged with its timing: the start-up cost `make bench` reports.
        let mut first = Some(Instant::now());
        while self.state.epoch < self.epochs {
            let epoch = self.state.epoch;
            if self.state.step_in_epoch == 0 {
                self.each_hook("epoch_start", |h, ctx| h.epoch_start(ctx))?;
                self.state.meters = Meters::default();
            }
            let clock = Instant::now();
            for host in self.train.epoch(epoch, self.state.step_in_epoch) {
                let host = host.with_context(|| format!("epoch {epoch}: loading a training batch"))?;
                self.state.meters.skipped_images += host.skipped;
                if host.targets.numel() > 0 {
                    let waited = first.map(|t| t.elapsed());
                    self.step(host)?;
                    if let Some((started, waited)) = first.take().zip(waited) {
                        let took = started.elapsed() - waited;
                        tracing::info!("first step done: its batch was ready {:.2}s after training started, the step took {:.2}s", waited.as_secs_f64(), took.as_secs_f64());
                    }
                }
                self.state.step += 1;
                self.state.step_in_epoch += 1;
                if let Some(bar) = bar {
                    bar.set_position((epoch * steps + self.state.step_in_epoch) as u64);
                }
                if stop.load(Ordering::Relaxed) {
                    self.state.meters.seconds += clock.elapsed().as_secs_f64();
                    self.save_last()?;
                    return Ok(true);
                }
                if self.checkpoint_steps > 0 && self.state.step % self.checkpoint_steps == 0 && self.state.step_in_epoch < steps {
                    self.save_last()?;
                }
            }
            self.state.meters.seconds += clock.elapsed().as_secs_f64();
            self.finish_epoch()?;
            // The end of an epoch is a step boundary too: a stop requested during evaluation stops here.
            if stop.load(Ordering::Relaxed) && self.state.epoch < self.epochs {
                if self.saved != Some((self.state.epoch, self.state.step)) {
                    self.save_last()?;
                }
                return Ok(true);
            }
        }
        self.each_hook("run_end", |h, ctx| h.run_end(ctx))?;
        checkpoint::write_weights(&self.dir.join("checkpoints/final.safetensors"), &self.net, &self.state)?;
        Ok(false)
    }

    /// Trains `steps` optimizer steps on one batch, from the current position, as `fit` does on a stream of
    /// identical batches (epoch-start hooks included; no evaluation, checkpoint or epoch line): the training
    /// step alone, for `rifle bench`. Returns each step's seconds, the device synchronised before the clock
    /// stops.
    pub fn repeat_step(&mut self, host: &HostBatch, steps: usize) -> Result<Vec<f64>> {
        let per_epoch = self.train.steps_per_epoch();
        let left = (self.epochs * per_epoch).saturating_sub(self.state.step);
        anyhow::ensure!(steps <= left, "{steps} steps from step {} need more than the run's {} epochs of {per_epoch} steps; raise `epochs`", self.state.step, self.epochs);
        let device = self.net.device();
        let mut seconds = Vec::with_capacity(steps);
        for _ in 0..steps {
            if self.state.step_in_epoch == 0 {
                self.each_hook("epoch_start", |h, ctx| h.epoch_start(ctx))?;
            }
            let clock = Instant::now();
            self.step(HostBatch { inputs: host.inputs.shallow_clone(), targets: host.targets.shallow_clone(), skipped: 0 })?;
            if let Device::Cuda(index) = device {
                tch::Cuda::synchronize(index as i64);
            }
            seconds.push(clock.elapsed().as_secs_f64());
            self.state.step += 1;
            self.state.step_in_epoch += 1;
            if self.state.step_in_epoch == per_epoch {
                self.state.epoch += 1;
                self.state.step_in_epoch = 0;
            }
        }
        Ok(seconds)
    }

    /// One optimizer step on one batch, through the hooks; records the learning rates used.
    fn step(&mut self, host: HostBatch) -> Result<()> {
        let device = self.net.device();
        // Every random draw of this step (dropout masks, re-initialisations, label noise) comes from a
        // generator seeded by (seed, step): the same in a resumed run as in a straight one.
        tch::manual_seed(step_seed(self.seed, self.state.step));
        // No gradient memory is held through the forward pass; backward writes fresh gradients.
        self.optimizer.release_grads();
        let true_labels = host.targets.shallow_clone();
        let mut batch = Batch { images: host.inputs.to_device(device), labels: host.targets.to_device(device), soft_targets: None };
        let progress = self.progress();
        let mut lrs = self.scheduled_lrs(&progress)?;
        let mut records = Vec::new();
        let mut ctx = Ctx { progress, net: &mut self.net, optimizer: &mut self.optimizer, lrs: &mut lrs, records: &mut records };
        for (name, s) in &mut self.strategies {
            guard(name, "before_step", || s.before_step(&mut ctx, &mut batch))?.with_context(|| format!("strategy `{name}` (before_step)"))?;
        }
        for (name, p) in &mut self.probes {
            guard(name, "before_step", || p.before_step(&mut ctx, &mut batch))?.with_context(|| format!("probe `{name}` (before_step)"))?;
        }
        // A skipped step leaves no trace of its batch, but the forward pass moves BatchNorm's running
        // statistics (to NaN, for a NaN batch): keep a copy to put back.
        let buffers = (self.on_nonfinite == OnNonFinite::Skip).then(|| Buffers::copy(ctx.net));
        let chain = Chain { strategies: &self.strategies, failure: RefCell::new(None) };
        let logits = autocast(self.amp, || ctx.net.try_forward(&batch.images, true, &chain));
        if let Some(e) = chain.failure.into_inner() {
            return Err(e.context(format!("step {}: forward pass", self.state.step)));
        }
        let logits = logits.with_context(|| format!("step {}: forward pass", self.state.step))?;
        let loss = loss(&self.task, &logits.to_kind(Kind::Float), &batch);
        let loss_value = loss.double_value(&[]);
        self.state.last_lrs = ctx.lrs.to_vec();
        if !loss_value.is_finite() {
            return self.nonfinite("loss", buffers);
        }
        let scaler = (self.amp == Amp::Fp16).then(|| self.state.loss_scale.get_or_insert_with(LossScale::default));
        match &scaler {
            Some(s) => (&loss * s.scale).backward(),
            None => loss.backward(),
        }
        if let Some(scaler) = scaler {
            // Unscaled before anything reads the gradients; an overflow of the scaled ones skips the update
            // (the scale was too high, nothing is wrong with the run) and lowers the scale.
            let finite = scaler.unscale(&mut gradients(ctx.optimizer));
            scaler.update(finite);
            if !finite {
                tracing::debug!("step {}: fp16 gradients overflowed; step skipped, loss scale now {}", self.state.step, scaler.scale);
                ctx.optimizer.release_grads();
                self.write_records(records)?;
                self.state.meters.add(&self.task, &logits, &true_labels.to_device(device), loss_value);
                return Ok(());
            }
        }
        for (name, r) in &self.regularizers {
            guard(name, "add_grad", || r.add_grad(ctx.net))?;
        }
        for (name, s) in &mut self.strategies {
            guard(name, "after_backward", || s.after_backward(&mut ctx))?.with_context(|| format!("strategy `{name}` (after_backward)"))?;
        }
        for (name, p) in &mut self.probes {
            guard(name, "after_backward", || p.after_backward(&mut ctx))?.with_context(|| format!("probe `{name}` (after_backward)"))?;
        }
        // Checked last, on the gradients the optimizer is about to use (regularizers and hooks included).
        if !grads_finite(ctx.optimizer) {
            ctx.optimizer.release_grads();
            return self.nonfinite("gradient", buffers);
        }
        self.state.last_lrs = ctx.lrs.to_vec();
        ctx.optimizer.step(ctx.lrs);
        self.write_records(records)?;
        self.state.meters.add(&self.task, &logits, &true_labels.to_device(device), loss_value);
        Ok(())
    }

    /// A step whose loss or gradient is NaN or infinite: skipped and counted (its buffers put back), or
    /// the end of the run.
    fn nonfinite(&mut self, what: &str, buffers: Option<Buffers>) -> Result<()> {
        let (step, epoch, batch) = (self.state.step, self.state.epoch, self.state.step_in_epoch);
        match self.on_nonfinite {
            OnNonFinite::Skip => {
                tracing::warn!("step {step} (epoch {epoch}, batch {batch}): non-finite {what}; step skipped");
                if let Some(b) = buffers {
                    b.restore();
                }
                self.state.meters.skipped_steps += 1;
                Ok(())
            }
            OnNonFinite::Stop => {
                bail!("non-finite {what} at step {step} (epoch {epoch}, batch {batch}); set `numerics.on_nonfinite: skip` to skip such steps")
            }
        }
    }

    fn finish_epoch(&mut self) -> Result<()> {
        let epoch = self.state.epoch;
        let lrs = if self.state.last_lrs.is_empty() { self.optimizer.base_lrs() } else { self.state.last_lrs.clone() };
        let mut penalty = None;
        for (name, r) in &self.regularizers {
            *penalty.get_or_insert(0.0) += guard(name, "penalty", || r.penalty(&self.net))?;
        }
        let train_line = self.state.meters.line(epoch, "train", &self.task, &lrs, penalty);
        let test_line = self.evaluate(epoch, &lrs)?;
        let test_top1 = test_line.top1.unwrap_or(-test_line.loss);
        let pct = |t: Option<f64>| t.map(|t| format!(" top1 {:.2}%", 100.0 * t)).unwrap_or_default();
        tracing::info!(
            "epoch {}/{}: train loss {:.4}{}  test loss {:.4}{}",
            epoch + 1,
            self.epochs,
            train_line.loss,
            pct(train_line.top1),
            test_line.loss,
            pct(test_line.top1)
        );
        self.metrics.epoch(train_line)?;
        self.metrics.epoch(test_line)?;
        self.each_hook("epoch_end", |h, ctx| h.epoch_end(ctx))?;
        self.state.epoch += 1;
        self.state.step_in_epoch = 0;
        self.state.last_top1 = Some(test_top1);
        if self.state.best_top1.is_none_or(|b| test_top1 > b) {
            self.state.best_top1 = Some(test_top1);
            self.state.best_epoch = Some(epoch);
            checkpoint::write_weights(&self.dir.join("checkpoints/best.safetensors"), &self.net, &self.state)?;
        }
        if self.state.epoch % self.checkpoint_every == 0 || self.state.epoch == self.epochs {
            self.save_last()?;
        }
        Ok(())
    }

    fn save_last(&mut self) -> Result<()> {
        self.state.metrics_lines = self.metrics.lines();
        checkpoint::write_last(&self.dir, &self.net, &self.optimizer, &self.state)?;
        self.saved = Some((self.state.epoch, self.state.step));
        Ok(())
    }

    /// Loss, top-1 and top-5 on the test split, in eval mode with no perturbation.
    pub fn evaluate(&mut self, epoch: usize, lrs: &[f64]) -> Result<EpochLine> {
        let clock = Instant::now();
        let device = self.net.device();
        let mut meters = Meters::default();
        let chain = Chain { strategies: &self.strategies, failure: RefCell::new(None) };
        for host in self.test.epoch(epoch, 0) {
            let host = host.with_context(|| format!("epoch {epoch}: loading a test batch"))?;
            if host.targets.numel() == 0 {
                continue;
            }
            meters.skipped_images += host.skipped;
            let targets = host.targets.to_device(device);
            let (logits, loss_value) = tch::no_grad(|| -> Result<(Tensor, f64)> {
                let logits = autocast(self.amp, || self.net.try_forward(&host.inputs.to_device(device), false, &chain))
                    .with_context(|| format!("epoch {epoch}: evaluating the test split"))?
                    .to_kind(Kind::Float);
                let batch = Batch { images: Tensor::new(), labels: targets.shallow_clone(), soft_targets: None };
                let l = loss(&self.task, &logits, &batch).double_value(&[]);
                Ok((logits, l))
            })?;
            meters.add(&self.task, &logits, &targets, loss_value);
        }
        if let Some(e) = chain.failure.into_inner() {
            return Err(e.context("evaluation forward pass"));
        }
        meters.seconds = clock.elapsed().as_secs_f64();
        Ok(meters.line(epoch, "test", &self.task, lrs, None))
    }

    fn summary(&self, started: Instant, interrupted: bool) -> Summary {
        let last_test = self.metrics.epochs().iter().rev().find(|e| e.split == "test");
        Summary {
            dir: self.dir.clone(),
            final_top1: last_test.and_then(|e| e.top1),
            best_top1: self.state.best_top1.filter(|_| last_test.is_some_and(|e| e.top1.is_some())),
            best_epoch: self.state.best_epoch,
            final_loss: last_test.map_or(f64::NAN, |e| e.loss),
            interrupted,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// A copy of a model's buffers (tensors that are not trained: BatchNorm's running statistics).
struct Buffers(Vec<(Tensor, Tensor)>);

impl Buffers {
    fn copy(net: &Net) -> Buffers {
        Buffers(net.state().into_iter().filter(|(_, t)| !t.requires_grad()).map(|(_, t)| (t.copy(), t)).collect())
    }

    fn restore(self) {
        tch::no_grad(|| {
            for (saved, mut live) in self.0 {
                live.copy_(&saved);
            }
        });
    }
}

/// The seed of step `step`'s random draws.
pub fn step_seed(seed: u64, step: usize) -> i64 {
    let mut x = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> 1) as i64
}

/// Cross-entropy (hard or soft targets) for classification, mean squared error for regression.
pub fn loss(task: &Task, logits: &Tensor, batch: &Batch) -> Tensor {
    match (task, &batch.soft_targets) {
        (Task::Regress { .. }, _) => logits.mse_loss(&batch.labels, tch::Reduction::Mean),
        (Task::Classify { .. }, Some(soft)) => -(soft * logits.log_softmax(-1, Kind::Float)).sum_dim_intlist(-1, false, Kind::Float).mean(Kind::Float),
        (Task::Classify { .. }, None) => logits.cross_entropy_for_logits(&batch.labels),
    }
}

/// Whether every gradient is finite: one sum, in f64 so that large finite f32 gradients cannot overflow it
/// (a NaN or an infinity anywhere makes it non-finite).
fn grads_finite(optimizer: &Optimizer) -> bool {
    let sums: Vec<Tensor> = gradients(optimizer).iter().map(|g| g.sum(Kind::Double)).collect();
    sums.is_empty() || Tensor::stack(&sums, 0).sum(Kind::Double).double_value(&[]).is_finite()
}

/// The defined gradients of the optimizer's parameters (sharing their storage).
fn gradients(optimizer: &Optimizer) -> Vec<Tensor> {
    optimizer.groups.iter().flat_map(|g| g.params.iter()).map(|(_, p)| p.grad()).filter(|g| g.defined()).collect()
}

/// Runs a forward pass under CUDA autocast for `amp: fp16` or `bf16` (`amp` is `off` on the CPU). The dtype
/// is set on every call: libtorch keeps it per thread.
fn autocast<T>(amp: Amp, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match amp {
        Amp::Off => f(),
        Amp::Fp16 | Amp::Bf16 => {
            crate::extras::set_cuda_autocast_bf16(amp == Amp::Bf16)?;
            tch::autocast(true, f)
        }
    }
}
