//! A deterministic synthetic dataset for tests: each class has its own colour tint and stripe orientation,
//! each sample a random phase, offset and pixel noise, all drawn from (seed, split, index). A small network
//! learns it in a few epochs; nothing is stored, samples are generated on demand.
use crate::data::{check_index, rng_for, Sample, Task};
use crate::params::{Param, Params};
use crate::plugin::{Dataset, Samples, Split};
use crate::registry::{Built, Kind};
use anyhow::Result;
use rand::Rng;
use std::sync::Arc;

const PARAMS: &[Param] = &[
    Param::int("classes", 4, "number of classes").range(2.0, 10_000.0),
    Param::int("train", 256, "training samples").min(1.0),
    Param::int("test", 128, "test samples").min(1.0),
    Param::int("size", 32, "image side in pixels").range(8.0, 4096.0),
    Param::float("noise", 0.5, "pixel noise amplitude in [0, 1] (harder with more)").range(0.0, 1.0),
    Param::int("seed", 0, "generator seed (independent of the run's seed)"),
];

crate::register_plugin! {
    name: "mock",
    kind: Kind::Dataset,
    doc: "deterministic synthetic images with class-dependent tint and stripes, for tests",
    params: PARAMS,
    example: "{classes: 4, train: 64, test: 32, size: 16}",
    build: build,
}

#[derive(Clone)]
struct Mock {
    classes: usize,
    train: usize,
    test: usize,
    size: u32,
    noise: f32,
    seed: u64,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Dataset(Box::new(Mock {
        classes: p.usize("classes")?,
        train: p.usize("train")?,
        test: p.usize("test")?,
        size: p.int("size")? as u32,
        noise: p.float("noise")? as f32,
        seed: p.int("seed")? as u64,
    })))
}

impl Dataset for Mock {
    fn task(&self) -> Task {
        Task::Classify { classes: (0..self.classes).map(|c| format!("class{c}")).collect() }
    }
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>> {
        let (len, stream) = match split {
            Split::Train => (self.train, 1),
            Split::Test => (self.test, 2),
        };
        Ok(Arc::new(MockSplit { mock: self.clone(), len, stream }))
    }
}

struct MockSplit {
    mock: Mock,
    len: usize,
    stream: u64,
}

impl MockSplit {
    /// Sample `index`: its class cycles through the classes, so every class is balanced.
    fn image(&self, index: usize) -> (image::RgbImage, usize) {
        let m = &self.mock;
        let class = index % m.classes;
        let mut rng = rng_for(m.seed, self.stream, index as u64);
        let angle = std::f32::consts::PI * class as f32 / m.classes as f32;
        let (dx, dy) = (angle.cos(), angle.sin());
        let freq = 2.0 * std::f32::consts::PI * (2.0 + (class % 3) as f32) / m.size as f32;
        let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let hue = class as f32 / m.classes as f32 * std::f32::consts::TAU;
        let tint = [0.5 + 0.1 * hue.cos(), 0.5 + 0.1 * (hue + 2.1).cos(), 0.5 + 0.1 * (hue + 4.2).cos()];
        let image = image::RgbImage::from_fn(m.size, m.size, |x, y| {
            let stripe = 0.5 + 0.5 * ((x as f32 * dx + y as f32 * dy) * freq + phase).sin();
            image::Rgb(std::array::from_fn(|c| {
                let noise: f32 = rng.random_range(-1.0..1.0) * m.noise;
                ((0.6 * tint[c] + 0.4 * stripe + noise).clamp(0.0, 1.0) * 255.0).round() as u8
            }))
        });
        (image, class)
    }
}

impl Samples for MockSplit {
    fn len(&self) -> usize {
        self.len
    }
    fn load(&self, index: usize) -> Result<Sample> {
        check_index(index, self.len, "mock")?;
        let (image, class) = self.image(index);
        Ok(Sample::image(image, class))
    }
    fn describe(&self, index: usize) -> String {
        format!("mock[{index}]")
    }
    fn class_of(&self, index: usize) -> Option<usize> {
        Some(index % self.mock.classes)
    }
}
