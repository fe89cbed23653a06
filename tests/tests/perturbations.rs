//! The Table 1 baselines that perturb the forward pass or the labels: each is exactly the plain network in
//! evaluation, perturbs in training as specified, and (stochastic depth) averages to the evaluation output.
use rifle_core::plugin::Batch;
use rifle_core::registry::Kind;
use rifle_tests::{build_plugin, progress, root, strategy, values, AsPerturb, Plain, Rig};
use tch::{Device, Kind as Dtype, Tensor};

const PERTURBING: &[(&str, &str)] = &[
    ("dropout", "{p: 0.5}"),
    ("dropconnect", "{p: 0.5}"),
    ("cnn_dropout", "{p: 0.5}"),
    ("cnn_dropout", "{p: 0.5, mode: channel}"),
    ("stochastic_depth", "{p_last: 0.5}"),
    ("stochastic_depth", "{p_last: 0.5, mode: row}"),
];

#[test]
fn every_forward_perturbation_is_the_plain_network_in_eval_and_random_in_training() {
    let rig = Rig::sgd(5, 0.0);
    let x = Tensor::randn([8, 3, 16, 16], (Dtype::Float, Device::Cpu));
    for (name, yaml) in PERTURBING {
        // BatchNorm in eval mode, so the forward pass itself is deterministic (recomputed each time: the
        // training passes below update BatchNorm's running statistics).
        let plain = tch::no_grad(|| rig.net.forward(&x, false, &Plain));
        let s = strategy(name, yaml);
        let p = AsPerturb(s.as_ref());
        for _ in 0..3 {
            let eval = tch::no_grad(|| rig.net.forward(&x, false, &p));
            assert!(eval.equal(&plain), "{name} {yaml}: evaluation differs from the plain network");
        }
        // In training passes differ (they draw), where BatchNorm alone would give equal outputs. Stochastic
        // depth may draw the same blocks twice (about 4% for two passes), so compare several.
        let first = tch::no_grad(|| rig.net.forward(&x, true, &p));
        let differs = (0..6).any(|_| !tch::no_grad(|| rig.net.forward(&x, true, &p)).equal(&first));
        assert!(differs, "{name} {yaml}: training passes are identical");
    }
}

/// Fraction of exact zeros, and whether every non-zero equals `kept`.
fn zeros_and_scale(t: &Tensor, kept: f64) -> (f64, bool) {
    let v = values(t);
    let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
    (zeros, v.iter().filter(|&&x| x != 0.0).all(|&x| (x - kept).abs() < 1e-6))
}

#[test]
fn dropout_family_drops_with_probability_p_and_scales_the_rest_by_one_over_one_minus_p() {
    let ones = Tensor::ones([200, 64], (Dtype::Float, Device::Cpu));
    // 12800 Bernoulli(0.2) drops: standard deviation sqrt(0.2·0.8/12800) ≈ 0.0035; 0.018 is 5 of them.
    let (zeros, scaled) = zeros_and_scale(&strategy("dropout", "{p: 0.2}").features(ones.shallow_clone(), true), 1.25);
    assert!((zeros - 0.2).abs() < 0.018 && scaled, "dropout: {zeros} dropped");
    let (zeros, scaled) = zeros_and_scale(&strategy("dropconnect", "{p: 0.2}").head_weight(&ones, true), 1.25);
    assert!((zeros - 0.2).abs() < 0.018 && scaled, "dropconnect: {zeros} dropped");
    let maps = Tensor::ones([50, 16, 4, 4], (Dtype::Float, Device::Cpu));
    let (zeros, scaled) = zeros_and_scale(&strategy("cnn_dropout", "{p: 0.2}").stage_output(0, maps.shallow_clone(), true), 1.25);
    assert!((zeros - 0.2).abs() < 0.018 && scaled, "cnn_dropout: {zeros} dropped");
    // Channel mode drops whole 4x4 maps: every map is all zero or all kept.
    let out = strategy("cnn_dropout", "{p: 0.2, mode: channel}").stage_output(0, maps, true);
    let per_map = out.eq(0.0).to_kind(Dtype::Float).mean_dim(&[2i64, 3][..], false, Dtype::Float);
    assert!(values(&per_map).iter().all(|&f| f == 0.0 || f == 1.0), "a feature map partly dropped");
    // DropConnect masks weights, not inputs: the same masked weights serve the whole batch, so the
    // weights it returns are a fixed matrix (its zeros are weights, not activations).
    let w = Tensor::ones([10, 64], (Dtype::Float, Device::Cpu));
    assert_eq!(strategy("dropconnect", "{p: 0.5}").head_weight(&w, true).size(), [10, 64]);
}

#[test]
fn p_of_one_is_refused() {
    for name in ["dropout", "dropconnect", "cnn_dropout"] {
        let err = build_plugin(Kind::Strategy, name, "{p: 1.0}").err().expect("p = 1 is refused").to_string();
        assert!(err.contains(name) && err.contains("`p`"), "{err}");
        assert!(build_plugin(Kind::Strategy, name, "{p: 1.5}").is_err());
    }
    assert!(build_plugin(Kind::Strategy, "stochastic_depth", "{p_last: 0.0}").is_err());
}

#[test]
fn stochastic_depth_survival_falls_linearly_from_one_to_p_last() {
    // 6 blocks, p_last = 0.5: survival 1 − l/5·0.5 = 1, 0.9, 0.8, 0.7, 0.6, 0.5.
    let s = strategy("stochastic_depth", "{p_last: 0.5, mode: row}");
    let r = Tensor::ones([20000, 1, 1, 1], (Dtype::Float, Device::Cpu));
    for (block, survival) in [1.0, 0.9, 0.8, 0.7, 0.6, 0.5].into_iter().enumerate() {
        let out = values(&s.residual(block, 6, r.shallow_clone(), true));
        let kept = out.iter().filter(|&&v| v != 0.0).count() as f64 / out.len() as f64;
        // 20000 draws: standard deviation at most sqrt(0.25/20000) ≈ 0.0035; 0.018 is 5 of them.
        assert!((kept - survival).abs() < 0.018, "block {block}: kept {kept}, expected {survival}");
        assert!(out.iter().filter(|&&v| v != 0.0).all(|&v| (v - 1.0 / survival).abs() < 1e-6), "block {block}: kept branches not scaled by 1/p");
    }
}

#[test]
fn stochastic_depth_eval_output_is_the_expectation_of_its_training_outputs() {
    // A tiny block: y = x + residual(W·x), the block's sum before any activation, for the 4th of 5 blocks
    // (survival 1 − 3/4·0.5 = 0.625), whole-batch drops as Huang et al.
    let s = strategy("stochastic_depth", "{p_last: 0.5}");
    let x = Tensor::randn([2, 3], (Dtype::Float, Device::Cpu));
    let w = Tensor::randn([3, 3], (Dtype::Float, Device::Cpu));
    let block = |train: bool| &x + s.residual(3, 5, x.matmul(&w), train);
    let draws = 4000;
    let mean = (0..draws).map(|_| block(true)).fold(x.zeros_like(), |acc, y| acc + y) / draws as f64;
    let eval = block(false);
    // The mean is x + r·k/(0.625·N) with k ~ Binomial(N, 0.625): relative error of the residual part has
    // standard deviation sqrt(0.375/(0.625·4000)) ≈ 0.0122; 0.065 is more than 5 of them.
    let r = values(&x.matmul(&w));
    for ((m, e), r) in values(&mean).iter().zip(values(&eval)).zip(r) {
        assert!((m - e).abs() <= 0.065 * r.abs() + 1e-5, "mean {m}, eval {e}");
    }
    assert!(eval.equal(&(&x + x.matmul(&w))), "eval is the full block, unscaled");
}

/// Applies `disturb_label` once to `n` labels over 5 classes.
fn disturb(alpha: f64, labels: &Tensor) -> Tensor {
    let mut rig = Rig::sgd(5, 0.0);
    let mut s = strategy("disturb_label", &format!("{{alpha: {alpha}}}"));
    let mut batch = Batch { images: Tensor::new(), labels: labels.shallow_clone(), soft_targets: None };
    rig.with_ctx(progress(0, 1, 1), &[0.1, 0.1], |ctx| s.before_step(ctx, &mut batch)).0.unwrap();
    batch.labels
}

#[test]
fn disturb_label_changes_labels_at_rate_alpha_times_c_minus_one_over_c() {
    let n = 20000;
    let labels = Tensor::arange(n, (Dtype::Int64, Device::Cpu)).remainder(5);
    let a = disturb(0.2, &labels);
    let changed = a.ne_tensor(&labels);
    let rate = changed.to_kind(Dtype::Double).mean(Dtype::Double).double_value(&[]);
    // Replaced with probability 0.2 by one of 5 classes, its own included: changed with 0.2·4/5 = 0.16.
    // Standard deviation sqrt(0.16·0.84/20000) ≈ 0.0026; 0.013 is 5 of them.
    assert!((rate - 0.16).abs() < 0.013, "change rate {rate}, expected 0.16");
    assert!(values(&a).iter().all(|&c| (0.0..5.0).contains(&c) && c.fract() == 0.0));
    // Each step draws again.
    let b = disturb(0.2, &labels);
    assert!(!b.ne_tensor(&labels).equal(&changed), "two steps disturbed the same labels");
    // α = 1: every label is a uniform draw, so 4/5 change (standard deviation 0.0028).
    let rate = disturb(1.0, &labels).ne_tensor(&labels).to_kind(Dtype::Double).mean(Dtype::Double).double_value(&[]);
    assert!((rate - 0.8).abs() < 0.014, "alpha 1: change rate {rate}");
    assert!(disturb(0.0, &labels).equal(&labels));
}

#[test]
fn disturb_label_refuses_regression_targets_and_soft_targets_set_before_it() {
    let mut rig = Rig::sgd(5, 0.0);
    let mut s = strategy("disturb_label", "{alpha: 0.1}");
    let mut regress = Batch { images: Tensor::new(), labels: Tensor::zeros([4, 2], (Dtype::Float, Device::Cpu)), soft_targets: None };
    let err = rig.with_ctx(progress(0, 1, 1), &[0.1, 0.1], |ctx| s.before_step(ctx, &mut regress)).0.unwrap_err();
    assert!(err.to_string().contains("classification"), "{err}");
    let labels = Tensor::from_slice(&[0i64, 1]);
    let mut soft = Batch { images: Tensor::new(), soft_targets: Some(labels.onehot(5).to_kind(Dtype::Float)), labels };
    let err = rig.with_ctx(progress(0, 1, 1), &[0.1, 0.1], |ctx| s.before_step(ctx, &mut soft)).0.unwrap_err();
    assert!(err.to_string().contains("before"), "{err}");
}

#[test]
fn evaluation_uses_the_true_labels_with_disturb_label_at_alpha_one() {
    let out = tempfile::tempdir().unwrap();
    let set: Vec<String> = ["strategies=[{disturb_label: {alpha: 1.0}}]", "dataset.mock.train=64", "dataset.mock.test=40", "batch_size=16"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let loaded = rifle_core::cli::load(&root().join("pipelines/mock.yaml"), &set, &[]).unwrap();
    let mut trainer = rifle_core::engine::Trainer::build(&loaded, out.path(), false).unwrap();
    let line = trainer.evaluate(0, &[0.05, 0.05]).unwrap();
    // The same evaluation by hand: the plain network on every test batch, against the dataset's labels.
    let (mut logits, mut targets) = (Vec::new(), Vec::new());
    for host in trainer.test.epoch(0, 0) {
        let host = host.unwrap();
        logits.push(tch::no_grad(|| trainer.net.forward(&host.inputs, false, &Plain)));
        targets.push(host.targets);
    }
    let (logits, targets) = (Tensor::cat(&logits, 0), Tensor::cat(&targets, 0));
    assert_eq!(line.samples, 40);
    let loss = logits.cross_entropy_for_logits(&targets).double_value(&[]);
    assert!((line.loss - loss).abs() < 1e-5 * loss.abs(), "evaluation loss {} but {loss} with the true labels", line.loss);
    let top1 = logits.argmax(-1, false).eq_tensor(&targets).to_kind(Dtype::Double).mean(Dtype::Double).double_value(&[]);
    assert_eq!(line.top1, Some(top1));
}
