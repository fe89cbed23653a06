//! RIFLE and its ablations, driven hook by hook on a tiny model: when the head is re-initialised, what it
//! is re-initialised to, what the re-initialisation leaves alone, the optimizer state, and the cyclic head
//! rate. Expected values are worked out by hand in the comments.
use rifle_core::optim::Algorithm;
use rifle_core::plugin::Strategy;
use rifle_tests::{build_plugin, progress, strategy, values, Rig};
use rifle_core::registry::Kind;

/// Runs `rifle` with these parameters over a whole run of `epochs` × `steps` and returns the global steps
/// at which the head changed, checking that each change comes with its record.
fn reinit_steps(name: &str, yaml: &str, epochs: usize, steps: usize) -> Vec<usize> {
    let mut rig = Rig::sgd(3, 0.0);
    let mut s = strategy(name, yaml);
    rig.with_ctx(progress(0, epochs, steps), &[0.1, 0.1], |ctx| s.run_start(ctx)).0.unwrap();
    let mut changed = Vec::new();
    for step in 0..epochs * steps {
        let before = rig.net.head_weight.copy();
        rig.before_step(s.as_mut(), progress(step, epochs, steps), &[0.1, 0.1]).unwrap();
        if !rig.net.head_weight.equal(&before) {
            changed.push(step);
        }
    }
    let recorded: Vec<usize> = rig.records.iter().filter(|r| r.probe == name).map(|r| r.step).collect();
    assert_eq!(recorded, changed, "one record per re-initialisation");
    let numbers: Vec<f64> = rig.records.iter().map(|r| r.values["reinit"]).collect();
    assert_eq!(numbers, (1..=changed.len()).map(|i| i as f64).collect::<Vec<_>>());
    changed
}

#[test]
fn rifle_fires_k_times_at_the_start_of_periods_2_to_k_plus_1() {
    // 40 epochs, K = 3: periods of 10 epochs; re-init before epochs 10, 20, 30 (2 steps per epoch).
    assert_eq!(reinit_steps("rifle", "{reinits: 3}", 40, 2), [20, 40, 60]);
    // 10 epochs, K = 2: bounds ⌊10/3⌋ = 3, ⌊20/3⌋ = 6 (periods of 3, 3, 4 epochs); 3 steps per epoch.
    assert_eq!(reinit_steps("rifle", "{reinits: 2}", 10, 3), [9, 18]);
    // 7 epochs, K = 4: bounds ⌊7/5⌋ = 1, ⌊14/5⌋ = 2, ⌊21/5⌋ = 4, ⌊28/5⌋ = 5 (periods 1, 1, 2, 1, 2).
    assert_eq!(reinit_steps("rifle", "{reinits: 4}", 7, 1), [1, 2, 4, 5]);
    // As few epochs as periods: every epoch but the first starts a period.
    assert_eq!(reinit_steps("rifle", "{reinits: 2}", 3, 4), [4, 8]);
    // In steps: 5 epochs × 4 steps = 20 steps, K = 1: one re-init at step 10.
    assert_eq!(reinit_steps("rifle", "{reinits: 1, unit: step}", 5, 4), [10]);
    // 15 steps, K = 3: ⌊15/4⌋ = 3, ⌊30/4⌋ = 7, ⌊45/4⌋ = 11.
    assert_eq!(reinit_steps("rifle", "{reinits: 3, unit: step}", 3, 5), [3, 7, 11]);
    // The ablation with re-initialisation fires the same way; the one without never does.
    assert_eq!(reinit_steps("rifle_a", "{reinits: 2}", 10, 3), [9, 18]);
    assert_eq!(reinit_steps("rifle_b", "{reinits: 2}", 10, 3), Vec::<usize>::new());
}

#[test]
fn a_run_shorter_than_k_plus_1_periods_is_refused_before_training() {
    let mut rig = Rig::sgd(3, 0.0);
    let mut s = strategy("rifle", "{reinits: 3}");
    let err = rig.with_ctx(progress(0, 3, 10), &[0.1, 0.1], |ctx| s.run_start(ctx)).0.unwrap_err().to_string();
    assert!(err.contains("rifle") && err.contains("reinits: 3") && err.contains("3 epochs"), "{err}");
    // K = 0 is not RIFLE: refused by the schema.
    let err = build_plugin(Kind::Strategy, "rifle", "{reinits: 0}").err().expect("reinits 0 is refused").to_string();
    assert!(err.contains("reinits"), "{err}");
}

/// Re-initialises the head of a model with 100 classes × 64 features once and returns (weights, biases),
/// after checking that nothing but the head changed, bit for bit.
fn reinit_once(yaml: &str) -> (Vec<f64>, Vec<f64>) {
    let mut rig = Rig::sgd(100, 0.9);
    rig.backward();
    rig.optimizer.step(&[0.1, 0.1]);
    let _ = tch::no_grad(|| rig.net.head_weight.fill_(7.0));
    let body = rig.snapshot(|n| !n.starts_with("fc."));
    let mut s = strategy("rifle", yaml);
    // 4 epochs, K = 1: the re-init is at epoch 2.
    rig.before_step(s.as_mut(), progress(2, 4, 1), &[0.1, 0.1]).unwrap();
    for (name, before) in &body {
        assert!(rig.net.tensor(name).unwrap().equal(before), "`{name}` changed when the head was re-initialised");
    }
    let w = values(&rig.net.head_weight);
    assert!(w.iter().all(|&v| v != 7.0), "the head was not re-initialised");
    (w, values(rig.net.head_bias.as_ref().unwrap()))
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (mean, x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
}

#[test]
fn torch_default_init_is_uniform_within_one_over_sqrt_fan_in() {
    let (w, b) = reinit_once("{reinits: 1, init: torch_default}");
    // fan_in = 64: U(−1/8, 1/8), variance b²/3 = 1/192.
    let bound = 1.0 / 8.0;
    assert!(w.iter().chain(&b).all(|v| v.abs() <= bound), "a value outside ±1/sqrt(fan_in)");
    assert!(w.iter().any(|v| v.abs() > 0.9 * bound), "no value near the bound: not the full uniform range");
    let (mean, var) = mean_var(&w);
    // n = 6400 draws. The sample variance of U(−b, b) has relative standard deviation
    // sqrt(Var(X²))/E[X²]/sqrt(n) = sqrt(4/45)·3/80 ≈ 0.0112; 6% is more than 5 standard deviations.
    assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.06, "variance {var}, expected {}", bound * bound / 3.0);
    // The mean has standard deviation sqrt(1/192)/80 ≈ 0.0009; 0.0045 is 5 of them.
    assert!(mean.abs() < 0.0045, "mean {mean}");
    assert!(b.iter().any(|&v| v != 0.0), "torch_default draws the bias too");
}

#[test]
fn normal_init_has_the_given_std_and_a_zero_bias() {
    let (w, b) = reinit_once("{reinits: 1, init: normal, std: 0.02}");
    let (mean, var) = mean_var(&w);
    // The sample variance of 6400 normal draws has relative standard deviation sqrt(2/6400) ≈ 0.0177;
    // 9% is 5 of them. The mean's standard deviation is 0.02/80 = 0.00025.
    assert!((var / 0.0004 - 1.0).abs() < 0.09, "variance {var}, expected 0.0004");
    assert!(mean.abs() < 0.00125, "mean {mean}");
    assert!(b.iter().all(|&v| v == 0.0), "the paper's init leaves a zero bias");
}

#[test]
fn steps_that_start_no_period_leave_the_head_alone() {
    let mut rig = Rig::sgd(5, 0.0);
    let mut s = strategy("rifle", "{reinits: 1}");
    let head = rig.net.head_weight.copy();
    // 4 epochs × 3 steps, K = 1: only step 6 (epoch 2, first step) re-initialises; epoch 2's later steps do not.
    for step in [0, 1, 5, 7, 8, 11] {
        rig.before_step(s.as_mut(), progress(step, 4, 3), &[0.1, 0.1]).unwrap();
        assert!(rig.net.head_weight.equal(&head), "step {step} touched the head");
    }
}

/// A model after one real SGD-momentum step, then RIFLE's re-initialisation (with or without resetting
/// the optimizer state), then a step with a zero gradient. Returns (head moved in that step, backbone
/// momentum buffers unchanged by the re-initialisation, head still has optimizer state).
fn zero_gradient_step_after_reinit(reset: bool) -> (bool, bool, bool) {
    let mut rig = Rig::sgd(4, 0.9);
    rig.backward();
    rig.optimizer.step(&[0.1, 0.1]);
    let body: Vec<String> = rig.net.parameters().into_iter().map(|(n, _)| n).filter(|n| !rig.net.is_head(n)).collect();
    let buffers: Vec<_> = body.iter().map(|n| rig.optimizer.state_buffer(n).expect("momentum buffer").copy()).collect();
    let mut s = strategy("rifle", &format!("{{reinits: 1, reset_optimizer_state: {reset}}}"));
    rig.before_step(s.as_mut(), progress(2, 4, 1), &[0.1, 0.1]).unwrap();
    let kept = body.iter().zip(&buffers).all(|(n, b)| rig.optimizer.state_buffer(n).unwrap().equal(b));
    let has_state = rig.net.head_names().iter().any(|n| rig.optimizer.has_state(n));
    let head = rig.net.head_weight.copy();
    let bias = rig.net.head_bias.as_ref().unwrap().copy();
    rig.optimizer.zero_grad();
    rig.optimizer.step(&[0.1, 0.1]);
    let moved = !rig.net.head_weight.equal(&head) || !rig.net.head_bias.as_ref().unwrap().equal(&bias);
    (moved, kept, has_state)
}

#[test]
fn reset_optimizer_state_forgets_the_heads_momentum_only() {
    // Reset: the head has no momentum, so a zero gradient leaves it exactly at its re-initialised values.
    let (moved, kept, has_state) = zero_gradient_step_after_reinit(true);
    assert!(!moved, "the head moved on a zero gradient after its state was reset");
    assert!(!has_state);
    assert!(kept, "the backbone's momentum buffers changed");
    // Without the reset (the default, as the authors' code), the old momentum still moves the new head.
    let (moved, kept, has_state) = zero_gradient_step_after_reinit(false);
    assert!(moved && has_state && kept);
}

#[test]
fn adam_after_a_reset_takes_a_first_step_again() {
    // A fresh Adam step is −lr·m̂/(sqrt(v̂) + ε) with m̂ = g, v̂ = g²: −lr·g/(|g| + ε), whatever came before.
    let (lr, eps) = (0.01, 1e-8);
    for reset in [true, false] {
        let mut rig = Rig::new(4, Algorithm::Adamw { betas: [0.9, 0.999], eps });
        for _ in 0..3 {
            rig.backward();
            rig.optimizer.step(&[lr, lr]);
        }
        let mut s = strategy("rifle", &format!("{{reinits: 1, reset_optimizer_state: {reset}}}"));
        rig.before_step(s.as_mut(), progress(2, 4, 1), &[lr, lr]).unwrap();
        rig.backward();
        let w0 = values(&rig.net.head_weight);
        let g = values(&rig.net.head_weight.grad());
        rig.optimizer.step(&[lr, lr]);
        let w1 = values(&rig.net.head_weight);
        let fresh = w0.iter().zip(&g).zip(&w1).all(|((a, g), b)| ((b - a) - (-lr * g / (g.abs() + eps))).abs() < 1e-6);
        assert_eq!(fresh, reset, "reset {reset}: the step after re-initialisation is a first Adam step: {fresh}");
    }
}

/// The head and backbone rates a strategy leaves at each step when the schedulers gave 0.05 to both
/// groups (base rates 0.1).
fn rates(s: &mut dyn Strategy, epochs: usize, steps: usize) -> Vec<(f64, f64)> {
    let mut rig = Rig::sgd(3, 0.0);
    (0..epochs * steps)
        .map(|step| {
            let lrs = rig.before_step(s, progress(step, epochs, steps), &[0.05, 0.05]).unwrap();
            (lrs[0], lrs[1])
        })
        .collect()
}

#[test]
fn cyclic_head_rate_restarts_at_the_base_rate_each_period() {
    // Epochs: 4 epochs, K = 1: two periods of 2 epochs; per epoch τ = 0, 1 of P = 2:
    // ½(1 + cos 0) = 1 and ½(1 + cos(π/2)) = 0.5 times the head's base rate 0.1, constant within an epoch.
    // The backbone keeps the schedulers' 0.05.
    let mut s = strategy("rifle", "{reinits: 1}");
    let expected: Vec<(f64, f64)> = [0.1, 0.1, 0.05, 0.05, 0.1, 0.1, 0.05, 0.05].iter().map(|&h| (0.05, h)).collect();
    assert_close(&rates(s.as_mut(), 4, 2), &expected);
    // Steps: 6 steps, K = 1: periods of 3 steps; τ = 0, 1, 2: 1, ½(1 + cos(π/3)) = 0.75, ½(1 + cos(2π/3)) = 0.25.
    let mut s = strategy("rifle_b", "{reinits: 1, unit: step}");
    let expected: Vec<(f64, f64)> = [0.1, 0.075, 0.025, 0.1, 0.075, 0.025].iter().map(|&h| (0.05, h)).collect();
    assert_close(&rates(s.as_mut(), 2, 3), &expected);
    // head_lr: follow, and rifle_a: the schedulers' rates untouched.
    for (name, yaml) in [("rifle", "{reinits: 1, head_lr: follow}"), ("rifle_a", "{reinits: 1}")] {
        let mut s = strategy(name, yaml);
        assert_close(&rates(s.as_mut(), 4, 2), &[(0.05, 0.05); 8]);
    }
}

fn assert_close(got: &[(f64, f64)], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g.0 - w.0).abs() < 1e-12 && (g.1 - w.1).abs() < 1e-12, "step {i}: got {g:?}, expected {w:?}");
    }
}
