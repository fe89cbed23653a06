//! The loader: worker threads decode, augment and collate whole batches ahead of the trainer through
//! bounded queues. Batch k of an epoch is built by worker k mod W and taken in order, so the data order and
//! every augmentation are functions of (seed, epoch, sample) alone: the same in any run and after a resume.
use super::{rng_for, Input, Normalize, OnBadImage, Target};
use crate::plugin::{Augment, Samples};
use anyhow::{anyhow, bail, Result};
use crossbeam_channel::{bounded, Receiver};
use rand::seq::SliceRandom;
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::{Kind, Tensor};

/// Collated inputs and targets on the CPU.
pub struct HostBatch {
    pub inputs: Tensor,
    pub targets: Tensor,
    /// Samples of this batch left out as unreadable (`on_bad_image: skip`). Counted per batch, not by the
    /// workers, so that the count does not depend on how far they have read ahead when a run stops.
    pub skipped: usize,
}

#[derive(Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub workers: usize,
    /// Batches queued per worker.
    pub prefetch: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub seed: u64,
    pub on_bad_image: OnBadImage,
    pub normalize: Normalize,
    /// The head's class count: a class label outside `0..classes` is an error naming the sample.
    pub classes: Option<usize>,
}

pub struct Loader {
    samples: Arc<dyn Samples>,
    augments: Arc<Vec<Box<dyn Augment>>>,
    config: LoaderConfig,
}

impl Loader {
    pub fn new(samples: Arc<dyn Samples>, augments: Vec<Box<dyn Augment>>, config: LoaderConfig) -> Loader {
        Loader { samples, augments: Arc::new(augments), config }
    }

    /// Checks every label the split knows without decoding against the head's class count.
    pub fn check_classes(&self) -> Result<()> {
        let Some(classes) = self.config.classes else { return Ok(()) };
        for index in 0..self.samples.len() {
            if let Some(class) = self.samples.class_of(index) {
                check_class(class, classes, || self.samples.describe(index))?;
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn samples(&self) -> &Arc<dyn Samples> {
        &self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn steps_per_epoch(&self) -> usize {
        let (n, b) = (self.samples.len(), self.config.batch_size.max(1));
        if self.config.drop_last && n >= b {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of an epoch.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut rng_for(self.config.seed, 0x5348_5546, epoch as u64));
        }
        order
    }

    /// The batches of `epoch`, starting at batch `first` (for resuming mid-epoch).
    pub fn epoch(&self, epoch: usize, first: usize) -> Batches {
        let order = Arc::new(self.order(epoch));
        let steps = self.steps_per_epoch();
        let workers = self.config.workers.max(1).min(steps.saturating_sub(first).max(1));
        let mut queues = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx) = bounded(self.config.prefetch.max(1));
            let job = Job {
                samples: self.samples.clone(),
                augments: self.augments.clone(),
                config: self.config.clone(),
                order: order.clone(),
                epoch,
            };
            handles.push(std::thread::spawn(move || {
                for step in (first + w..steps).step_by(workers) {
                    if tx.send(job.batch(step)).is_err() {
                        return; // the trainer stopped early
                    }
                }
            }));
            queues.push(rx);
        }
        Batches { queues, handles, next: first, first, steps }
    }
}

struct Job {
    samples: Arc<dyn Samples>,
    augments: Arc<Vec<Box<dyn Augment>>>,
    config: LoaderConfig,
    order: Arc<Vec<usize>>,
    epoch: usize,
}

impl Job {
    fn batch(&self, step: usize) -> Result<HostBatch> {
        let b = self.config.batch_size.max(1);
        let indices = &self.order[step * b..((step + 1) * b).min(self.order.len())];
        let mut inputs: Vec<f32> = Vec::new();
        let mut shape: Option<Vec<i64>> = None;
        let mut classes: Vec<i64> = Vec::new();
        let mut values: Vec<f32> = Vec::new();
        let mut count = 0i64;
        let mut skipped = 0;
        for &index in indices {
            let sample = match self.samples.load(index) {
                Ok(s) => s,
                Err(e) if self.config.on_bad_image == OnBadImage::Skip => {
                    tracing::warn!("skipping unreadable sample: {e:#}");
                    skipped += 1;
                    continue;
                }
                Err(e) => return Err(e.context("set `data.on_bad_image: skip` to leave unreadable images out")),
            };
            let this_shape = match sample.input {
                Input::Image(mut image) => {
                    let mut rng = rng_for(self.config.seed, self.epoch as u64 + 1, index as u64);
                    for augment in self.augments.iter() {
                        image = augment.apply(image, &mut rng)?;
                    }
                    let start = inputs.len();
                    inputs.resize(start + 3 * (image.width() * image.height()) as usize, 0.0);
                    self.config.normalize.write_chw(&image, &mut inputs[start..]);
                    vec![3, i64::from(image.height()), i64::from(image.width())]
                }
                Input::Vector(v) => {
                    inputs.extend_from_slice(&v);
                    vec![v.len() as i64]
                }
            };
            match &shape {
                None => shape = Some(this_shape),
                Some(s) if *s != this_shape => bail!(
                    "samples of one batch differ in shape ({s:?} and {this_shape:?} for {}); end the augment list with a fixed-size crop or resize",
                    self.samples.describe(index)
                ),
                _ => {}
            }
            match sample.target {
                Target::Class(c) => {
                    if let Some(n) = self.config.classes {
                        check_class(c, n, || self.samples.describe(index))?;
                    }
                    classes.push(c as i64)
                }
                Target::Values(v) => values.extend_from_slice(&v),
            }
            count += 1;
        }
        let Some(mut shape) = shape else {
            // every sample of this batch was unreadable and skipped
            return Ok(HostBatch {
                inputs: Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)),
                targets: Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)),
                skipped,
            });
        };
        shape.insert(0, count);
        let inputs = Tensor::from_slice(&inputs).view(shape.as_slice());
        let targets = if values.is_empty() {
            Tensor::from_slice(&classes)
        } else {
            Tensor::from_slice(&values).view([count, -1])
        };
        Ok(HostBatch { inputs, targets, skipped })
    }
}

/// A class label must index one of the head's outputs; cross-entropy would otherwise fail deep in libtorch.
fn check_class(class: usize, classes: usize, sample: impl FnOnce() -> String) -> Result<()> {
    if class >= classes {
        bail!("{}: label {class} is out of range: the head has {classes} classes (labels 0..={})", sample(), classes.saturating_sub(1));
    }
    Ok(())
}

/// The batches of one epoch, in order.
pub struct Batches {
    queues: Vec<Receiver<Result<HostBatch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    first: usize,
    steps: usize,
}

impl Iterator for Batches {
    type Item = Result<HostBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.steps {
            return None;
        }
        let queue = &self.queues[(self.next - self.first) % self.queues.len()];
        self.next += 1;
        Some(queue.recv().map_err(|_| anyhow!("a data loader worker stopped unexpectedly")).and_then(|r| r))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.queues.clear(); // workers see a closed queue and return
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}
