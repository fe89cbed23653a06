//! The built-in plugins, one per file. Each registers itself with `register_plugin!`; nothing else lists
//! them.
pub mod augment {
    pub mod center_crop;
    pub mod hflip;
    pub mod random_crop;
    pub mod resize;
}
pub mod backbone {
    pub mod resnet;
}
pub mod dataset {
    pub mod csv_list;
    pub mod idx;
    pub mod image_folder;
    pub mod mock;
}
pub mod scheduler {
    pub mod cosine;
}
