//! `rifle bench`: the two throughputs `make bench` compares with PyTorch. `train` times optimizer steps of
//! the real engine (`Trainer::repeat_step`: hooks, regularizers, finite check, optimizer, meters) on one
//! batch taken from the pipeline's training loader before the clock starts, so data loading is excluded;
//! `loader` times the training loader alone (decode, augment, normalise, collate). Both warm up first and
//! print one JSON line on stdout (bench/run.py reads it).
use crate::config::Loaded;
use crate::engine::Trainer;
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Train,
    Loader,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub what: &'static str,
    pub device: String,
    /// libtorch's intra-op threads during the timed part.
    pub threads: i32,
    pub batch_size: usize,
    /// Timed steps (train) or batches (loader), after the warm-up.
    pub steps: usize,
    /// Images over the timed seconds.
    pub images_per_s: f64,
    /// Seconds of each timed step (train) or of each timed batch's wait (loader).
    pub seconds: Vec<f64>,
}

/// Builds the pipeline's run in a temporary directory (removed afterwards) and times it.
pub fn run(loaded: &Loaded, what: What, warmup: usize, steps: usize) -> Result<Report> {
    anyhow::ensure!(steps > 0, "--steps must be at least 1");
    let dir = tempfile::Builder::new().prefix("rifle-bench-").tempdir().context("cannot create a temporary run directory")?;
    let mut trainer = Trainer::build(loaded, dir.path(), false)?;
    let batch_size = loaded.pipeline.batch_size;
    let (images, seconds) = match what {
        What::Train => {
            let batch = trainer.train.epoch(0, 0).next().context("the training split gives no batch")??;
            trainer.repeat_step(&batch, warmup)?;
            let seconds = trainer.repeat_step(&batch, steps)?;
            (steps * batch.targets.size()[0] as usize, seconds)
        }
        What::Loader => loader(&trainer, warmup, steps)?,
    };
    Ok(Report {
        what: match what {
            What::Train => "train",
            What::Loader => "loader",
        },
        device: format!("{:?}", trainer.net.device()),
        threads: tch::get_num_threads(),
        batch_size,
        steps,
        images_per_s: images as f64 / seconds.iter().sum::<f64>().max(1e-9),
        seconds,
    })
}

/// Reads training batches epoch after epoch (new workers each epoch, as in training) and times the last
/// `steps` of `warmup + steps` of them.
fn loader(trainer: &Trainer, warmup: usize, steps: usize) -> Result<(usize, Vec<f64>)> {
    let (mut images, mut seconds, mut read) = (0, Vec::with_capacity(steps), 0);
    let mut epoch = 0;
    loop {
        let mut clock = Instant::now();
        for batch in trainer.train.epoch(epoch, 0) {
            let batch = batch.with_context(|| format!("epoch {epoch}: loading a training batch"))?;
            if read >= warmup {
                seconds.push(clock.elapsed().as_secs_f64());
                images += batch.targets.size()[0] as usize;
            }
            read += 1;
            if read == warmup + steps {
                return Ok((images, seconds));
            }
            clock = Instant::now();
        }
        epoch += 1;
    }
}
