//! The optimal-transport distance between a network's first-layer weights and the MLP oracle's W1 (paper
//! §4.6.2). Both are sets of hidden units (weight vectors into one hidden unit) with uniform mass, so exact
//! OT is an assignment problem, solved exactly (Hungarian algorithm). Ground cost: the Euclidean distance
//! between unit vectors: each hidden unit's weight vector is normalised to length 1 first, because a ReLU
//! unit is the same function up to a positive scale (absorbed by the next layer). The distance is the mean
//! matched cost, in [0, 2].
use crate::params::{Param, Params};
use crate::plugin::{Ctx, Hooks, Record};
use crate::plugins::dataset::mlp_oracle::Oracle;
use crate::registry::{Built, Kind};
use anyhow::{anyhow, ensure, Result};
use tch::Kind as DType;

const PARAMS: &[Param] = &[
    Param::int("seed", 0, "the oracle's seed (the `mlp_oracle` dataset's `seed`)"),
    Param::int("inputs", 100, "input dimension of the oracle").min(1.0),
    Param::int("hidden", 50, "hidden units of the oracle").min(1.0),
    Param::str("layer", "hidden.weight", "the learned first-layer weight ([hidden, inputs])"),
];

crate::register_plugin! {
    name: "oracle_distance",
    kind: Kind::Probe,
    doc: "exact OT distance between first-layer weights and the MLP oracle's W1, each epoch (paper §4.6.2)",
    params: PARAMS,
    example: "{seed: 0}",
    build: build,
}

struct OracleDistance {
    oracle_units: Vec<Vec<f32>>,
    layer: String,
}

fn build(p: &Params) -> Result<Built> {
    let oracle = Oracle::new(p.int("seed")? as u64, p.usize("inputs")?, p.usize("hidden")?);
    Ok(Built::Probe(Box::new(OracleDistance { oracle_units: oracle.units(), layer: p.str("layer")?.to_string() })))
}

fn unit(v: &[f32]) -> Vec<f64> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| f64::from(*x) / norm).collect()
}

/// Mean matched Euclidean distance between two equally sized sets of unit-normalised vectors.
pub fn ot_distance(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (a, b): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (a.iter().map(|v| unit(v)).collect(), b.iter().map(|v| unit(v)).collect());
    let cost: Vec<Vec<f64>> = a.iter().map(|x| b.iter().map(|y| x.iter().zip(y).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt()).collect()).collect();
    let assignment = hungarian(&cost);
    assignment.iter().enumerate().map(|(i, &j)| cost[i][j]).sum::<f64>() / a.len().max(1) as f64
}

/// Minimum-cost perfect matching of a square cost matrix: `result[row] = column`. O(n³), with potentials
/// (Kuhn–Munkres in the shortest-augmenting-path form).
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let mut owner = vec![0usize; n + 1]; // owner[column] = row (1-based; 0 = none)
    let mut way = vec![0usize; n + 1];
    for row in 1..=n {
        owner[0] = row;
        let mut col0 = 0;
        let mut min = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[col0] = true;
            let r = owner[col0];
            let (mut delta, mut col1) = (f64::INFINITY, 0);
            for c in 1..=n {
                if !used[c] {
                    let reduced = cost[r - 1][c - 1] - u[r] - v[c];
                    if reduced < min[c] {
                        min[c] = reduced;
                        way[c] = col0;
                    }
                    if min[c] < delta {
                        delta = min[c];
                        col1 = c;
                    }
                }
            }
            for c in 0..=n {
                if used[c] {
                    u[owner[c]] += delta;
                    v[c] -= delta;
                } else {
                    min[c] -= delta;
                }
            }
            col0 = col1;
            if owner[col0] == 0 {
                break;
            }
        }
        loop {
            let prev = way[col0];
            owner[col0] = owner[prev];
            col0 = prev;
            if col0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![0; n];
    for c in 1..=n {
        if owner[c] > 0 {
            result[owner[c] - 1] = c - 1;
        }
    }
    result
}

impl Hooks for OracleDistance {
    fn epoch_end(&mut self, ctx: &mut Ctx) -> Result<()> {
        let w = ctx.net.tensor(&self.layer).ok_or_else(|| anyhow!("oracle_distance: the model has no `{}`", self.layer))?;
        let w = w.to_device(tch::Device::Cpu).to_kind(DType::Float);
        let (rows, cols) = (w.size()[0] as usize, w.size()[1] as usize);
        ensure!(
            rows == self.oracle_units.len() && cols == self.oracle_units[0].len(),
            "oracle_distance: `{}` is {rows}x{cols}, the oracle's W1ᵀ is {}x{}",
            self.layer,
            self.oracle_units.len(),
            self.oracle_units[0].len()
        );
        let flat: Vec<f32> = Vec::try_from(w.flatten(0, -1))?;
        let learned: Vec<Vec<f32>> = flat.chunks(cols).map(<[f32]>::to_vec).collect();
        let distance = ot_distance(&learned, &self.oracle_units);
        ctx.records.push(Record {
            probe: "oracle_distance".into(),
            epoch: ctx.progress.epoch,
            step: ctx.progress.step,
            values: [("ot".to_string(), distance)].into(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Every assignment of a small matrix, the slow way.
    fn brute_force(cost: &[Vec<f64>]) -> f64 {
        fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == cost.len() {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..cost.len() {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row][c] + go(cost, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, 0, &mut vec![false; cost.len()])
    }

    #[test]
    fn hungarian_finds_the_minimum_of_every_assignment() {
        let mut rng = crate::data::rng_for(7, 0, 0);
        for n in 1..=6 {
            for _ in 0..20 {
                let cost: Vec<Vec<f64>> = (0..n).map(|_| (0..n).map(|_| rng.random_range(0.0..10.0)).collect()).collect();
                let a = hungarian(&cost);
                let mut cols = a.clone();
                cols.sort();
                assert_eq!(cols, (0..n).collect::<Vec<_>>(), "not a permutation");
                let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
                assert!((total - brute_force(&cost)).abs() < 1e-9, "n={n}: {total} vs {}", brute_force(&cost));
            }
        }
    }

    #[test]
    fn ot_distance_ignores_order_and_positive_scale_and_measures_mismatch() {
        let a = vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![3.0, 3.0]];
        // the same units, permuted and rescaled
        let b = vec![vec![0.0, 5.0], vec![1.0, 1.0], vec![0.5, 0.0]];
        assert!(ot_distance(&a, &b) < 1e-12);
        // one unit flipped in sign: its unit vector moves by 2, the others match: mean 2/3
        let c = vec![vec![-1.0, 0.0], vec![0.0, 2.0], vec![3.0, 3.0]];
        assert!((ot_distance(&a, &c) - 2.0 / 3.0).abs() < 1e-12);
    }
}
