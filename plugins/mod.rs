//! The built-in plugins, one per file. Each registers itself with `register_plugin!`; nothing else lists
//! them. `timeline` is not a plugin: it holds the epoch/step arithmetic schedulers and RIFLE share.
pub mod timeline;

pub mod augment {
    pub mod center_crop;
    pub mod hflip;
    pub mod random_crop;
    pub mod resize;
}
pub mod backbone {
    pub mod mlp;
    pub mod resnet;
}
pub mod dataset {
    pub mod csv_list;
    pub mod idx;
    pub mod image_folder;
    pub mod mlp_oracle;
    pub mod mock;
}
pub mod probe {
    pub mod grad_norm;
    pub mod oracle_distance;
    pub mod weight_distance;
}
pub mod regularizer {
    pub mod l2;
    pub mod l2_sp;
}
pub mod scheduler {
    pub mod constant;
    pub mod cosine;
    pub mod cyclic;
    pub mod multistep;
    pub mod step;
    pub mod warmup;
}
pub mod strategy {
    pub mod cnn_dropout;
    pub mod disturb_label;
    pub mod dropconnect;
    pub mod dropout;
    pub mod rifle;
    pub mod rifle_a;
    pub mod rifle_b;
    pub mod stochastic_depth;
}
