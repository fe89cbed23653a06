//! Puts libtorch in the test binaries' rpath (see core/build_support.rs).
include!("../core/build_support.rs");

fn main() {
    link_libtorch();
}
