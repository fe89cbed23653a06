//! The tasks of the paper's MLP-oracle study (§4.6.2). Two oracles share their first layer:
//! h1(X) = W2ᵀ ReLU(W1ᵀ X) (source) and h2(X) = W3ᵀ ReLU(W1ᵀ X) (target), X ∈ R^100 ~ N(0, I), 50 hidden
//! units. (The paper also mentions 200-dimensional samples, which contradicts its 100-dimensional input; we
//! use 100.) Scales, chosen so pre-activations and outputs are O(1): W1 ~ N(0, 1/inputs), W2, W3 ~ N(0,
//! 1/hidden). Training labels carry N(0, 0.01) noise, read as variance 0.01 (std 0.1); test labels are
//! noise-free, so test MSE measures how well the function was learned.
use crate::data::{check_index, rng_for, Input, Sample, Target, Task};
use crate::params::{Param, Params};
use crate::plugin::{Dataset, Samples, Split};
use crate::registry::{Built, Kind};
use anyhow::Result;
use rand::Rng;
use rand_distr::StandardNormal;
use std::sync::Arc;

const PARAMS: &[Param] = &[
    Param::choice("task", "source", &["source", "target"], "source: labels from h1 (W2); target: from h2 (W3)"),
    Param::int("train", 1000, "training samples").min(1.0),
    Param::int("test", 1000, "held-out test samples").min(1.0),
    Param::int("inputs", 100, "input dimension").min(1.0),
    Param::int("hidden", 50, "oracle hidden units").min(1.0),
    Param::float("noise_std", 0.1, "std of the training-label noise (0.1: the paper's N(0, 0.01))").min(0.0),
    Param::int("seed", 0, "draws the oracles and the samples"),
];

crate::register_plugin! {
    name: "mlp_oracle",
    kind: Kind::Dataset,
    doc: "source/target regression tasks from two MLP oracles sharing their first layer (paper §4.6.2)",
    params: PARAMS,
    example: "{task: target, train: 100, test: 50, seed: 1}",
    build: build,
}

/// The oracles' weights: w1 is inputs × hidden (columns are hidden units), w2 and w3 hidden × 1.
pub struct Oracle {
    pub w1: Vec<Vec<f32>>,
    pub w2: Vec<f32>,
    pub w3: Vec<f32>,
}

impl Oracle {
    pub fn new(seed: u64, inputs: usize, hidden: usize) -> Oracle {
        let mut rng = rng_for(seed, 0x4f52_4143, 0);
        let mut gauss = |std: f64, n: usize| -> Vec<f32> { (0..n).map(|_| (rng.sample::<f64, _>(StandardNormal) * std) as f32).collect() };
        let w1 = (0..inputs).map(|_| gauss(1.0 / (inputs as f64).sqrt(), hidden)).collect();
        let w2 = gauss(1.0 / (hidden as f64).sqrt(), hidden);
        let w3 = gauss(1.0 / (hidden as f64).sqrt(), hidden);
        Oracle { w1, w2, w3 }
    }

    /// The oracle's hidden units as vectors (columns of W1).
    pub fn units(&self) -> Vec<Vec<f32>> {
        let hidden = self.w2.len();
        (0..hidden).map(|j| self.w1.iter().map(|row| row[j]).collect()).collect()
    }

    /// h(x) = wᵀ ReLU(W1ᵀ x).
    pub fn eval(&self, x: &[f32], head: &[f32]) -> f32 {
        head.iter().enumerate().map(|(j, w)| w * x.iter().zip(&self.w1).map(|(xi, row)| xi * row[j]).sum::<f32>().max(0.0)).sum()
    }
}

struct OracleTask {
    oracle: Arc<Oracle>,
    target: bool,
    train: usize,
    test: usize,
    noise: f64,
    seed: u64,
}

fn build(p: &Params) -> Result<Built> {
    let seed = p.int("seed")? as u64;
    Ok(Built::Dataset(Box::new(OracleTask {
        oracle: Arc::new(Oracle::new(seed, p.usize("inputs")?, p.usize("hidden")?)),
        target: p.str("task")? == "target",
        train: p.usize("train")?,
        test: p.usize("test")?,
        noise: p.float("noise_std")?,
        seed,
    })))
}

impl Dataset for OracleTask {
    fn task(&self) -> Task {
        Task::Regress { outputs: 1 }
    }
    fn split(&self, split: Split) -> Result<Arc<dyn Samples>> {
        // Source and target, train and test: four disjoint sample streams.
        let stream = 1 + u64::from(self.target) * 2 + u64::from(split == Split::Test);
        let (len, noise) = match split {
            Split::Train => (self.train, self.noise),
            Split::Test => (self.test, 0.0),
        };
        Ok(Arc::new(OracleSamples { oracle: self.oracle.clone(), target: self.target, len, noise, seed: self.seed, stream }))
    }
}

struct OracleSamples {
    oracle: Arc<Oracle>,
    target: bool,
    len: usize,
    noise: f64,
    seed: u64,
    stream: u64,
}

impl Samples for OracleSamples {
    fn len(&self) -> usize {
        self.len
    }
    fn load(&self, index: usize) -> Result<Sample> {
        check_index(index, self.len, "mlp_oracle")?;
        let mut rng = rng_for(self.seed, self.stream, index as u64);
        let x: Vec<f32> = (0..self.oracle.w1.len()).map(|_| rng.sample::<f64, _>(StandardNormal) as f32).collect();
        let head = if self.target { &self.oracle.w3 } else { &self.oracle.w2 };
        let y = self.oracle.eval(&x, head) + (rng.sample::<f64, _>(StandardNormal) * self.noise) as f32;
        Ok(Sample { input: Input::Vector(x), target: Target::Values(vec![y]) })
    }
    fn describe(&self, index: usize) -> String {
        format!("mlp_oracle[{index}]")
    }
}
