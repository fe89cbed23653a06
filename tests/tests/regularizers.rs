//! `l2` and `l2_sp` on a tiny model: penalties equal their closed forms, gradients equal autograd of the
//! penalty, and each term covers exactly the parameters it should.
use rifle_core::model::Net;
use rifle_tests::{regularizer, values, Rig};
use tch::Tensor;

/// Adds `delta` to every element of the parameters whose name passes `pick`.
fn shift(net: &Net, pick: impl Fn(&str) -> bool, delta: f64) {
    tch::no_grad(|| {
        for (name, mut p) in net.parameters() {
            if pick(&name) {
                let _ = p.g_add_scalar_(delta);
            }
        }
    });
}

fn sum_squares(net: &Net, pick: impl Fn(&str) -> bool) -> f64 {
    net.parameters().iter().filter(|(n, _)| pick(n)).flat_map(|(_, p)| values(p)).map(|v| v * v).sum()
}

fn numel(net: &Net, pick: impl Fn(&str) -> bool) -> f64 {
    net.parameters().iter().filter(|(n, _)| pick(n)).map(|(_, p)| p.numel() as f64).sum()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-30)
}

/// A rig whose parameters all have a zero (defined) gradient.
fn zero_grad_rig() -> Rig {
    let mut rig = Rig::sgd(4, 0.0);
    rig.backward();
    rig.optimizer.zero_grad();
    rig
}

#[test]
fn l2_penalty_and_gradient_are_half_alpha_w_squared_and_alpha_w() {
    let rig = zero_grad_rig();
    let mut r = regularizer("l2", "{alpha: 0.003}");
    r.setup(&rig.net).unwrap();
    r.add_grad(&rig.net);
    for (name, p) in rig.net.parameters() {
        let (g, w) = (values(&p.grad()), values(&p));
        assert!(g.iter().zip(&w).all(|(g, w)| (g - 0.003 * w).abs() <= 1e-6 * (0.003 * w).abs() + 1e-12), "`{name}`: gradient is not α·w");
    }
    assert!(close(r.penalty(&rig.net), 0.5 * 0.003 * sum_squares(&rig.net, |_| true), 1e-9));
}

#[test]
fn l2_can_leave_out_batchnorm_and_biases() {
    let rig = zero_grad_rig();
    let mut r = regularizer("l2", "{alpha: 0.003, exclude_1d: true}");
    r.setup(&rig.net).unwrap();
    r.add_grad(&rig.net);
    // BatchNorm weights and biases (bn1.weight, layer1.0.bn2.bias, downsample.1.*) and the head's bias.
    let bn_or_bias = |n: &str| n.contains("bn") || n.ends_with("bias") || n.contains("downsample.1");
    for (name, p) in rig.net.parameters() {
        let decayed = values(&p.grad()).iter().any(|&g| g != 0.0);
        assert_eq!(decayed, !bn_or_bias(&name), "`{name}`");
    }
    let expected = 0.5 * 0.003 * sum_squares(&rig.net, |n| !bn_or_bias(n));
    assert!(close(r.penalty(&rig.net), expected, 1e-9));
}

#[test]
fn l2_sp_penalty_is_the_closed_form_over_pretrained_non_head_parameters() {
    let (alpha, beta) = (0.01, 1e-4);
    let mut rig = Rig::sgd(4, 0.0);
    // Pretend the weights file held everything but layer4 (and the head, which loading never counts).
    let pretrained = |n: &str| !n.starts_with("layer4.") && !n.starts_with("fc.");
    rig.net.pretrained = rig.net.state().into_iter().map(|(n, _)| n).filter(|n| pretrained(n)).collect();
    let mut r = regularizer("l2_sp", &format!("{{alpha: {alpha}, beta: {beta}}}"));
    r.setup(&rig.net).unwrap();
    // At w0 only the head term remains.
    let head = sum_squares(&rig.net, |n| n.starts_with("fc."));
    assert!(close(r.penalty(&rig.net), 0.5 * beta * head, 1e-6));
    // Move every parameter, the head included, by 0.1: the SP term is α/2·0.01·(number of pretrained
    // values); layer4 (not pretrained) and the head are not in it, the head's new norm is in the β term.
    shift(&rig.net, |_| true, 0.1);
    let anchored = numel(&rig.net, pretrained);
    let expected = 0.5 * alpha * 0.01 * anchored + 0.5 * beta * sum_squares(&rig.net, |n| n.starts_with("fc."));
    assert!(close(r.penalty(&rig.net), expected, 1e-4), "penalty {} expected {expected}", r.penalty(&rig.net));
}

#[test]
fn l2_sp_without_pretrained_weights_anchors_every_non_head_parameter() {
    let rig = Rig::sgd(4, 0.0);
    assert!(rig.net.pretrained.is_empty());
    let mut r = regularizer("l2_sp", "{alpha: 0.01, beta: 0.0}");
    r.setup(&rig.net).unwrap();
    shift(&rig.net, |_| true, 0.1);
    let expected = 0.5 * 0.01 * 0.01 * numel(&rig.net, |n| !n.starts_with("fc."));
    assert!(close(r.penalty(&rig.net), expected, 1e-4));
}

#[test]
fn l2_sp_gradient_equals_autograd_of_its_penalty() {
    let (alpha, beta) = (0.01, 0.001);
    let mut rig = zero_grad_rig();
    rig.net.pretrained = rig.net.state().into_iter().map(|(n, _)| n).filter(|n| !n.starts_with("fc.") && !n.contains("layer3.1")).collect();
    let w0: Vec<(String, Tensor)> = rig.net.parameters().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    let mut r = regularizer("l2_sp", &format!("{{alpha: {alpha}, beta: {beta}}}"));
    r.setup(&rig.net).unwrap();
    tch::no_grad(|| {
        for (_, mut p) in rig.net.parameters() {
            let _ = p.g_add_(&(Tensor::randn_like(&p) * 0.05));
        }
    });
    // The penalty written out with tensors, differentiated by autograd.
    let params = rig.net.parameters();
    let terms: Vec<Tensor> = params
        .iter()
        .zip(&w0)
        .map(|((name, w), (_, w0))| {
            if name.starts_with("fc.") {
                w.square().sum(tch::Kind::Float) * (0.5 * beta)
            } else if rig.net.pretrained.contains(name) {
                (w - w0).square().sum(tch::Kind::Float) * (0.5 * alpha)
            } else {
                w.sum(tch::Kind::Float) * 0.0
            }
        })
        .collect();
    let penalty = Tensor::stack(&terms, 0).sum(tch::Kind::Float);
    penalty.backward();
    let autograd: Vec<Vec<f64>> = params.iter().map(|(_, p)| values(&p.grad())).collect();
    assert!(close(r.penalty(&rig.net), penalty.double_value(&[]), 1e-5));
    rig.optimizer.zero_grad();
    r.add_grad(&rig.net);
    for ((name, p), want) in params.iter().zip(&autograd) {
        let got = values(&p.grad());
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        // float32: α·w − α·w0 and α·(w − w0) round differently, by about 1e-7·α·|w|.
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1e-5 * scale + 1e-9), "`{name}`: add_grad differs from autograd");
    }
}
