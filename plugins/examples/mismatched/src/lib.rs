//! A deliberately mismatched plugin library, for the test that the host refuses it cleanly. It stands for a
//! library built against another rifle-core whose registrar has another layout under the same version
//! string: its stamp carries another layout fingerprint. Its entry point would crash the host if called
//! (it takes a different argument type), which is exactly what the stamp check prevents.
use std::ffi::c_char;

#[no_mangle]
pub extern "C" fn rifle_plugin_stamp() -> *const c_char {
    c"abi=1;core=0.1.0;rustc=rustc 1.95.0;profile=debug;layout=00000000deadbeef".as_ptr()
}

/// A registrar of another layout: never to be called by this host.
#[no_mangle]
pub fn rifle_plugin_register(registrar: &mut Vec<(u64, u64, u64)>) {
    registrar.push((1, 2, 3));
}
