//! Every scheduler against its closed form at sampled points (restarts and the end of warm-up included),
//! and their composition by the engine in a short run.
use rifle_core::metrics;
use rifle_core::plugin::Scheduler;
use rifle_core::registry::Kind;
use rifle_tests::{build_plugin, progress, root, scheduler, train};
use std::f64::consts::PI;

/// ½(1 + cos(π·a/b)), written out.
fn half_cos(a: f64, b: f64) -> f64 {
    0.5 * (1.0 + (PI * a / b).cos())
}

/// Checks factor(step) for a run of `epochs` × `steps` against (step, expected) pairs.
fn check(s: &dyn Scheduler, epochs: usize, steps: usize, expected: &[(usize, f64)]) {
    for &(step, want) in expected {
        let got = s.factor(&progress(step, epochs, steps));
        assert!((got - want).abs() < 1e-12, "step {step}: factor {got}, expected {want}");
    }
}

#[test]
fn constant_step_and_multistep() {
    check(scheduler("constant", "{}").as_ref(), 3, 4, &[(0, 1.0), (11, 1.0)]);
    check(scheduler("constant", "{factor: 0.3}").as_ref(), 3, 4, &[(0, 0.3), (7, 0.3)]);
    // Every 3 epochs × 0.5, 2 steps per epoch: epochs 0–2 → 1, 3–5 → 0.5, 6–8 → 0.25, 9 → 0.125.
    check(scheduler("step", "{step_size: 3, gamma: 0.5}").as_ref(), 10, 2, &[(0, 1.0), (5, 1.0), (6, 0.5), (11, 0.5), (12, 0.25), (19, 0.125)]);
    check(scheduler("step", "{step_size: 4, gamma: 0.5, unit: step}").as_ref(), 2, 10, &[(3, 1.0), (4, 0.5), (8, 0.25), (15, 0.125), (19, 0.0625)]);
    // Milestones 2 and 5 (epochs), γ = 0.1; 3 steps per epoch.
    let s = scheduler("multistep", "{milestones: [2, 5], gamma: 0.1}");
    check(s.as_ref(), 8, 3, &[(0, 1.0), (5, 1.0), (6, 0.1), (14, 0.1), (15, 0.01), (23, 0.01)]);
    let s = scheduler("multistep", "{milestones: [3], gamma: 0.5, unit: step}");
    check(s.as_ref(), 1, 6, &[(2, 1.0), (3, 0.5), (5, 0.5)]);
    for bad in ["{milestones: [5, 2]}", "{milestones: [3, 3]}", "{milestones: []}"] {
        let err = build_plugin(Kind::Scheduler, "multistep", bad).err().expect("refused").to_string();
        assert!(err.contains("milestones"), "{bad}: {err}");
    }
    assert!(build_plugin(Kind::Scheduler, "step", "{gamma: 0.5}").is_err(), "step_size is required");
}

#[test]
fn cosine_anneals_over_the_run() {
    // 10 steps: factor(t) = ½(1 + cos(π t/10)).
    let s = scheduler("cosine", "{unit: step}");
    check(s.as_ref(), 2, 5, &[(0, 1.0), (3, half_cos(3.0, 10.0)), (5, 0.5), (9, half_cos(9.0, 10.0))]);
    // Per epoch, with a floor of 0.1: 4 epochs of 5 steps, constant within an epoch.
    let s = scheduler("cosine", "{unit: epoch, min_factor: 0.1}");
    check(s.as_ref(), 4, 5, &[(0, 1.0), (4, 1.0), (5, 0.1 + 0.9 * half_cos(1.0, 4.0)), (12, 0.55), (19, 0.1 + 0.9 * half_cos(3.0, 4.0))]);
}

#[test]
fn cyclic_restarts_at_the_full_rate_every_cycle() {
    // 10 steps in 2 cycles of 5: τ = t mod 5.
    let s = scheduler("cyclic", "{cycles: 2}");
    check(s.as_ref(), 2, 5, &[(0, 1.0), (1, half_cos(1.0, 5.0)), (4, half_cos(4.0, 5.0)), (5, 1.0), (7, half_cos(2.0, 5.0)), (9, half_cos(4.0, 5.0))]);
    // 10 steps in 3 cycles: bounds 0, 3, 6, 10 (lengths 3, 3, 4); floor 0.2.
    let s = scheduler("cyclic", "{cycles: 3, min_factor: 0.2}");
    let f = |a: f64, b: f64| 0.2 + 0.8 * half_cos(a, b);
    check(s.as_ref(), 1, 10, &[(0, 1.0), (2, f(2.0, 3.0)), (3, 1.0), (5, f(2.0, 3.0)), (6, 1.0), (9, f(3.0, 4.0))]);
    // In epochs: 6 epochs of 4 steps in 3 cycles of 2 epochs; constant within an epoch.
    let s = scheduler("cyclic", "{cycles: 3, unit: epoch}");
    check(s.as_ref(), 6, 4, &[(0, 1.0), (3, 1.0), (4, 0.5), (8, 1.0), (15, 0.5), (16, 1.0), (23, 0.5)]);
    // One cycle is the plain cosine.
    let (one, cosine) = (scheduler("cyclic", "{cycles: 1}"), scheduler("cosine", "{}"));
    for step in 0..12 {
        let p = progress(step, 3, 4);
        assert!((one.factor(&p) - cosine.factor(&p)).abs() < 1e-15);
    }
}

#[test]
fn warmup_rises_linearly_then_stays_at_one() {
    // 4 steps from 0.2: 0.2, 0.4, 0.6, 0.8, then 1.
    let s = scheduler("warmup", "{steps: 4, start_factor: 0.2}");
    check(s.as_ref(), 5, 10, &[(0, 0.2), (1, 0.4), (2, 0.6), (3, 0.8), (4, 1.0), (49, 1.0)]);
    // 2 epochs of 3 steps = 6 steps from 0: t/6.
    let s = scheduler("warmup", "{epochs: 2, start_factor: 0.0}");
    check(s.as_ref(), 4, 3, &[(0, 0.0), (3, 0.5), (5, 5.0 / 6.0), (6, 1.0), (11, 1.0)]);
    for bad in ["{}", "{steps: 3, epochs: 1}"] {
        let err = build_plugin(Kind::Scheduler, "warmup", bad).err().expect("refused").to_string();
        assert!(err.contains("exactly one"), "{bad}: {err}");
    }
}

#[test]
fn the_engine_multiplies_schedulers_per_parameter_group() {
    // 2 epochs of 128 / 32 = 4 steps, base rate 0.05; warm-up over 8 steps from 0, cosine over the 8
    // steps, and the head alone at half rate. An epoch line records the rates of its last step (t = 3, 7).
    let out = tempfile::tempdir().unwrap();
    let set = [
        "epochs=2",
        "dataset.mock.train=128",
        "dataset.mock.test=32",
        "schedulers=[{warmup: {steps: 8, start_factor: 0.0}}, {cosine: {unit: step}}, {constant: {factor: 0.5, groups: [head]}}]",
    ];
    train(&root().join("pipelines/mock.yaml"), &set, out.path()).unwrap();
    let (epochs, _) = metrics::read(out.path()).unwrap();
    let train_lines: Vec<_> = epochs.iter().filter(|e| e.split == "train").collect();
    for (line, t) in train_lines.iter().zip([3.0, 7.0]) {
        let lr = 0.05 * (t / 8.0) * half_cos(t, 8.0);
        assert!((line.lr - lr).abs() < 1e-12, "epoch {}: backbone lr {} expected {lr}", line.epoch, line.lr);
        assert!((line.lr_head - 0.5 * lr).abs() < 1e-12, "epoch {}: head lr {} expected {}", line.epoch, line.lr_head, 0.5 * lr);
    }
    assert_eq!(train_lines.len(), 2);
}
