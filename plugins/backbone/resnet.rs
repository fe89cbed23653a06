//! ResNet-18/34/50/101/152 with torchvision parameter names, plus the knobs real non-torchvision ResNets
//! need: a width multiplier, the stride on the first 1x1 conv (Caffe/MSRA style), conv biases, and a
//! max-pool with ceil mode and no padding. `arch: resnet50_1by2` sets them for Yahoo's open_nsfw model.
use crate::params::{Param, Params};
use crate::plugin::{Backbone, Network, Perturb, Stage};
use crate::registry::{Built, Kind};
use anyhow::{bail, Result};
use tch::nn;
use tch::Tensor;

const PARAMS: &[Param] = &[
    Param::choice("arch", "resnet18", &["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50_1by2"], "architecture preset"),
    Param::float("width", 0.0, "multiplier of the stage widths (default: the preset's; 1 for torchvision, 0.5 for resnet50_1by2)").optional().min(0.01),
    Param::int("stem_width", 0, "channels of the 7x7 stem conv (default: 64·width for torchvision presets, 64 for resnet50_1by2)").optional().min(1.0),
    Param::bool("stride_on_1x1", false, "put a bottleneck's stride on its first 1x1 conv instead of the 3x3 (default: the preset's)").optional(),
    Param::bool("conv_bias", false, "every conv has a bias (default: the preset's)").optional(),
    Param::bool("maxpool_ceil", false, "stem max-pool 3x3/2 with ceil mode and no padding instead of padding 1 (default: the preset's)").optional(),
];

crate::register_plugin! {
    name: "resnet",
    kind: Kind::Backbone,
    doc: "ResNet (torchvision names) with width, stride-on-1x1, conv-bias and ceil-mode max-pool knobs",
    params: PARAMS,
    example: "{arch: resnet18, width: 0.25, stem_width: 16}",
    build: build,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    pub blocks: [usize; 4],
    pub bottleneck: bool,
    pub width: f64,
    pub stem_width: i64,
    pub stride_on_1x1: bool,
    pub conv_bias: bool,
    pub maxpool_ceil: bool,
}

impl ResNetConfig {
    pub fn preset(arch: &str) -> Result<ResNetConfig> {
        let (blocks, bottleneck) = match arch {
            "resnet18" => ([2, 2, 2, 2], false),
            "resnet34" => ([3, 4, 6, 3], false),
            "resnet50" | "resnet50_1by2" => ([3, 4, 6, 3], true),
            "resnet101" => ([3, 4, 23, 3], true),
            "resnet152" => ([3, 8, 36, 3], true),
            other => bail!("unknown ResNet arch `{other}`"),
        };
        let caffe = arch == "resnet50_1by2";
        Ok(ResNetConfig {
            blocks,
            bottleneck,
            width: if caffe { 0.5 } else { 1.0 },
            stem_width: 64,
            stride_on_1x1: caffe,
            conv_bias: caffe,
            maxpool_ceil: caffe,
        })
    }

    /// Output channels of the pooled features.
    pub fn feature_dim(&self) -> i64 {
        self.stage_width(3) * if self.bottleneck { 4 } else { 1 }
    }

    fn stage_width(&self, stage: usize) -> i64 {
        ((64i64 << stage) as f64 * self.width).round() as i64
    }
}

fn build(p: &Params) -> Result<Built> {
    let mut c = ResNetConfig::preset(p.str("arch")?)?;
    let preset_stem_from_width = p.str("arch")? != "resnet50_1by2";
    if let Some(w) = p.opt_float("width")? {
        c.width = w;
    }
    c.stem_width = match p.opt_int("stem_width")? {
        Some(s) => s,
        None if preset_stem_from_width => (64.0 * c.width).round().max(1.0) as i64,
        None => 64,
    };
    for (name, slot) in [("stride_on_1x1", &mut c.stride_on_1x1), ("conv_bias", &mut c.conv_bias), ("maxpool_ceil", &mut c.maxpool_ceil)] {
        if p.is_set(name) {
            *slot = p.bool(name)?;
        }
    }
    Ok(Built::Backbone(Box::new(c)))
}

impl Backbone for ResNetConfig {
    fn build(&self, root: &nn::Path) -> Result<Box<dyn Network>> {
        Ok(Box::new(ResNet::new(root, self.clone())))
    }
}

struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(vs: &nn::Path, conv: &str, bn: &str, cin: i64, cout: i64, k: i64, stride: i64, padding: i64, bias: bool) -> ConvBn {
        let config = nn::ConvConfig {
            stride,
            padding,
            bias,
            // torchvision's ResNet init: kaiming normal, fan_out, ReLU gain
            ws_init: nn::Init::Kaiming { dist: nn::init::NormalOrUniform::Normal, fan: nn::init::FanInOut::FanOut, non_linearity: nn::init::NonLinearity::ReLU },
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        ConvBn { conv: nn::conv2d(vs / conv, cin, cout, k, config), bn: nn::batch_norm2d(vs / bn, cout, Default::default()) }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.conv).apply_t(&self.bn, train)
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

struct ResNet {
    config: ResNetConfig,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
}

impl ResNet {
    fn new(vs: &nn::Path, c: ResNetConfig) -> ResNet {
        let bias = c.conv_bias;
        let stem = ConvBn::new(vs, "conv1", "bn1", 3, c.stem_width, 7, 2, 3, bias);
        let expansion = if c.bottleneck { 4 } else { 1 };
        let mut cin = c.stem_width;
        let mut stages = Vec::new();
        for (s, &count) in c.blocks.iter().enumerate() {
            let width = c.stage_width(s);
            let cout = width * expansion;
            let layer = vs / format!("layer{}", s + 1);
            let mut blocks = Vec::new();
            for b in 0..count {
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let v = &layer / b;
                let convs = if c.bottleneck {
                    let (s1, s3) = if c.stride_on_1x1 { (stride, 1) } else { (1, stride) };
                    vec![
                        ConvBn::new(&v, "conv1", "bn1", cin, width, 1, s1, 0, bias),
                        ConvBn::new(&v, "conv2", "bn2", width, width, 3, s3, 1, bias),
                        ConvBn::new(&v, "conv3", "bn3", width, cout, 1, 1, 0, bias),
                    ]
                } else {
                    vec![ConvBn::new(&v, "conv1", "bn1", cin, width, 3, stride, 1, bias), ConvBn::new(&v, "conv2", "bn2", width, width, 3, 1, 1, bias)]
                };
                let downsample = (stride != 1 || cin != cout).then(|| ConvBn::new(&(&v / "downsample"), "0", "1", cin, cout, 1, stride, 0, bias));
                blocks.push(Block { convs, downsample });
                cin = cout;
            }
            stages.push(blocks);
        }
        ResNet { config: c, stem, stages }
    }
}

impl Network for ResNet {
    fn features(&self, x: &Tensor, train: bool, perturb: &dyn Perturb) -> Tensor {
        // ReLUs run in place on the fresh outputs of BatchNorm and of the residual sum (as torchvision's
        // `inplace=True`): one activation-sized allocation less each, which is time and memory on the CPU.
        let mut x = self.stem.forward(x, train).relu_();
        x = if self.config.maxpool_ceil { x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], true) } else { x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false) };
        let total: usize = self.config.blocks.iter().sum();
        let mut index = 0;
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                let last = block.convs.len() - 1;
                let mut r = x.shallow_clone();
                for (i, cb) in block.convs.iter().enumerate() {
                    r = cb.forward(&r, train);
                    if i < last {
                        r = r.relu_();
                    }
                }
                let shortcut = match &block.downsample {
                    Some(d) => d.forward(&x, train),
                    None => x.shallow_clone(),
                };
                x = (perturb.residual(index, total, r, train) + shortcut).relu_();
                index += 1;
            }
            x = perturb.stage_output(s, x, train);
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn feature_dim(&self) -> i64 {
        self.config.feature_dim()
    }

    fn stages(&self) -> Vec<Stage> {
        // Fig. 2 of the paper watches the last 3x3 conv of each stage.
        (0..4)
            .map(|s| {
                let last = self.config.blocks[s] - 1;
                let prefix = format!("layer{}", s + 1);
                Stage { name: prefix.clone(), probe_param: format!("{prefix}.{last}.conv2.weight"), prefix }
            })
            .collect()
    }
}
