//! The measurement probes (the paper's Fig. 2 and weight distances): their values against an independent
//! computation on a tiny model, and when they record in a real run, next to RIFLE's re-initialisations.
use rifle_core::metrics;
use rifle_tests::{probe, progress, root, train, values, Rig};
use std::collections::BTreeMap;

const STAGE_CONVS: [&str; 4] = ["layer1.1.conv2.weight", "layer2.1.conv2.weight", "layer3.1.conv2.weight", "layer4.1.conv2.weight"];

fn frobenius(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[test]
fn grad_norm_records_the_frobenius_norm_of_each_stages_last_conv_gradient() {
    let mut rig = Rig::sgd(4, 0.0);
    let mut p = probe("grad_norm", "{params: [conv1.weight]}");
    rig.with_ctx(progress(0, 2, 3), &[0.1, 0.1], |ctx| p.run_start(ctx)).0.unwrap();
    rig.backward();
    // 2 epochs × 3 steps, every: 0 records at the first step of each epoch only.
    for step in 0..6 {
        rig.with_ctx(progress(step, 2, 3), &[0.1, 0.1], |ctx| p.after_backward(ctx)).0.unwrap();
    }
    assert_eq!(rig.records.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 3]);
    let expected: BTreeMap<String, f64> = STAGE_CONVS
        .iter()
        .chain(&["conv1.weight"])
        .map(|n| (n.to_string(), frobenius(&values(&rig.net.tensor(n).unwrap().grad()))))
        .collect();
    let got = &rig.records[0].values;
    assert_eq!(got.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (name, want) in &expected {
        assert!(*want > 0.0 && (got[name] - want).abs() <= 1e-9 * want, "`{name}`: {} expected {want}", got[name]);
    }
}

#[test]
fn grad_norm_every_n_steps_and_unknown_names() {
    let mut rig = Rig::sgd(4, 0.0);
    let mut p = probe("grad_norm", "{every: 4}");
    rig.with_ctx(progress(0, 3, 5), &[0.1, 0.1], |ctx| p.run_start(ctx)).0.unwrap();
    rig.backward();
    for step in 0..15 {
        rig.with_ctx(progress(step, 3, 5), &[0.1, 0.1], |ctx| p.after_backward(ctx)).0.unwrap();
    }
    assert_eq!(rig.records.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 4, 8, 12]);
    let mut bad = probe("grad_norm", "{params: [layer4.1.conv3.weight]}");
    let err = rig.with_ctx(progress(0, 1, 1), &[0.1, 0.1], |ctx| bad.run_start(ctx)).0.unwrap_err().to_string();
    assert!(err.contains("layer4.1.conv3.weight") && err.contains("did you mean"), "{err}");
}

#[test]
fn weight_distance_is_the_norm_of_the_change_per_stage() {
    let mut rig = Rig::sgd(4, 0.0);
    let mut p = probe("weight_distance", "{}");
    rig.with_ctx(progress(0, 1, 1), &[0.1, 0.1], |ctx| p.run_start(ctx)).0.unwrap();
    // Move layer2 by 0.01 per value and the head by 1: layer2's distance is 0.01·sqrt(n), the others 0,
    // and the head is not part of the backbone.
    let n: i64 = tch::no_grad(|| {
        rig.net
            .parameters()
            .into_iter()
            .filter(|(name, _)| name.starts_with("layer2.") || name.starts_with("fc."))
            .map(|(name, mut t)| {
                let _ = t.g_add_scalar_(if name.starts_with("fc.") { 1.0 } else { 0.01 });
                if name.starts_with("fc.") { 0 } else { t.numel() as i64 }
            })
            .sum()
    });
    rig.with_ctx(progress(0, 1, 1), &[0.1, 0.1], |ctx| p.epoch_end(ctx)).0.unwrap();
    let v = &rig.records[0].values;
    let want = 0.01 * (n as f64).sqrt();
    assert!((v["layer2"] - want).abs() < 1e-4 * want, "layer2 {} expected {want}", v["layer2"]);
    assert!((v["backbone"] - want).abs() < 1e-4 * want);
    for stage in ["layer1", "layer3", "layer4"] {
        assert_eq!(v[stage], 0.0, "{stage}");
    }
}

#[test]
fn a_rifle_run_records_reinits_gradient_norms_and_distances() {
    // 4 epochs of 128 / 32 = 4 steps; RIFLE with K = 1: periods of 2 epochs, one re-init at epoch 2
    // (step 8); the head's rate restarts then: 0.05 in epochs 0 and 2, ½(1 + cos(π/2))·0.05 = 0.025 in 1, 3.
    let out = tempfile::tempdir().unwrap();
    let set = [
        "dataset.mock.train=128",
        "dataset.mock.test=32",
        "strategies=[{rifle: {reinits: 1}}]",
        "probes=[grad_norm, weight_distance]",
    ];
    train(&root().join("pipelines/mock.yaml"), &set, out.path()).unwrap();
    let (epochs, records) = metrics::read(out.path()).unwrap();
    let of = |name: &str| records.iter().filter(|r| r.probe == name).map(|r| (r.epoch, r.step)).collect::<Vec<_>>();
    assert_eq!(of("rifle"), [(2, 8)]);
    assert_eq!(of("grad_norm"), [(0, 0), (1, 4), (2, 8), (3, 12)]);
    assert_eq!(of("weight_distance"), [(0, 4), (1, 8), (2, 12), (3, 16)]);
    for r in records.iter().filter(|r| r.probe == "grad_norm") {
        assert_eq!(r.values.keys().map(String::as_str).collect::<Vec<_>>(), STAGE_CONVS);
        assert!(r.values.values().all(|v| v.is_finite() && *v > 0.0));
    }
    for r in records.iter().filter(|r| r.probe == "weight_distance") {
        assert_eq!(r.values.keys().map(String::as_str).collect::<Vec<_>>(), ["backbone", "layer1", "layer2", "layer3", "layer4"]);
        assert!(r.values.values().all(|v| v.is_finite() && *v > 0.0));
    }
    let heads: Vec<f64> = epochs.iter().filter(|e| e.split == "train").map(|e| e.lr_head).collect();
    assert_eq!(heads.len(), 4);
    for (got, want) in heads.iter().zip([0.05, 0.025, 0.05, 0.025]) {
        assert!((got - want).abs() < 1e-12, "head lr {got}, expected {want}");
    }
}
