//! A two-layer perceptron, the network of the paper's MLP-oracle study (§4.6.2): features ReLU(W1 x) with
//! W1 the `hidden` layer; the engine's head is the second layer `out`. No biases by default, as the oracles
//! h(X) = W2ᵀ ReLU(W1ᵀ X) have none.
use crate::params::{Param, Params};
use crate::plugin::{Backbone, InputKind, Network, Perturb, Stage};
use crate::registry::{Built, Kind};
use anyhow::Result;
use tch::{nn, Tensor};

const PARAMS: &[Param] = &[
    Param::int("inputs", 100, "input dimension").min(1.0),
    Param::int("hidden", 50, "hidden units").min(1.0),
    Param::bool("bias", false, "give both layers a bias"),
];

crate::register_plugin! {
    name: "mlp",
    kind: Kind::Backbone,
    doc: "two-layer ReLU perceptron (the MLP-oracle study); head `out`, hidden layer `hidden`",
    params: PARAMS,
    example: "{inputs: 100, hidden: 50}",
    build: build,
}

#[derive(Clone)]
struct MlpConfig {
    inputs: i64,
    hidden: i64,
    bias: bool,
}

fn build(p: &Params) -> Result<Built> {
    Ok(Built::Backbone(Box::new(MlpConfig { inputs: p.int("inputs")?, hidden: p.int("hidden")?, bias: p.bool("bias")? })))
}

impl Backbone for MlpConfig {
    fn build(&self, root: &nn::Path) -> Result<Box<dyn Network>> {
        // PyTorch's nn.Linear default init, like the head.
        let bound = 1.0 / (self.inputs as f64).sqrt();
        let init = nn::Init::Uniform { lo: -bound, up: bound };
        let layer = root / "hidden";
        let weight = layer.var("weight", &[self.hidden, self.inputs], init);
        let bias = self.bias.then(|| layer.var("bias", &[self.hidden], init));
        Ok(Box::new(Mlp { weight, bias, hidden: self.hidden }))
    }
    fn head(&self) -> (&str, bool) {
        ("out", self.bias)
    }
    fn input(&self) -> InputKind {
        InputKind::Vector(self.inputs)
    }
}

struct Mlp {
    weight: Tensor,
    bias: Option<Tensor>,
    hidden: i64,
}

impl Network for Mlp {
    fn features(&self, x: &Tensor, train: bool, perturb: &dyn Perturb) -> Tensor {
        perturb.stage_output(0, x.linear(&self.weight, self.bias.as_ref()).relu(), train)
    }
    fn feature_dim(&self) -> i64 {
        self.hidden
    }
    fn stages(&self) -> Vec<Stage> {
        vec![Stage { name: "hidden".into(), prefix: "hidden".into(), probe_param: "hidden.weight".into() }]
    }
}
