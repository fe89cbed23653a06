//! Safe wrappers over `csrc/extras.cpp`: the libtorch calls tch 0.24 does not bind.
use tch::Tensor;

mod ffi {
    extern "C" {
        pub fn rifle_release_grad(param: *mut torch_sys::C_tensor) -> bool;
        pub fn rifle_set_cuda_autocast_bf16(bf16: bool) -> bool;
        pub fn rifle_cuda_autocast_is_bf16() -> bool;
    }
}

/// Releases a tensor's gradient (`.grad = None` in PyTorch); a tensor without one is left as it is. Should
/// libtorch refuse, the gradient is zeroed instead: the next backward then adds into zeros, which gives the
/// same gradient.
pub fn release_grad(param: &mut Tensor) {
    let mut grad = param.grad();
    if grad.defined() {
        // SAFETY: `param` is a live tensor owned by tch; the call only resets its gradient handle.
        if !unsafe { ffi::rifle_release_grad(param.as_mut_ptr()) } {
            let _ = grad.detach_().zero_();
        }
    }
}

/// Makes CUDA autocast cast to bfloat16 (`true`) or float16 (`false`, libtorch's default), for the calling
/// thread (libtorch keeps the setting per thread).
pub fn set_cuda_autocast_bf16(bf16: bool) -> anyhow::Result<()> {
    // SAFETY: sets a process-wide libtorch flag; no pointer crosses.
    anyhow::ensure!(unsafe { ffi::rifle_set_cuda_autocast_bf16(bf16) }, "libtorch refused to set CUDA autocast's dtype");
    Ok(())
}

/// Whether CUDA autocast casts to bfloat16.
pub fn cuda_autocast_is_bf16() -> bool {
    // SAFETY: reads a process-wide libtorch flag.
    unsafe { ffi::rifle_cuda_autocast_is_bf16() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn a_released_gradient_is_gone_and_the_next_backward_writes_a_fresh_one() {
        // d/dw Σ(w·x) = x: after a release the second backward gives x again, not 2x.
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0]);
        let mut w = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        (&w * &x).sum(Kind::Float).backward();
        release_grad(&mut w);
        assert!(!w.grad().defined());
        (&w * &x).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(&w.grad()).unwrap(), [1.0, -2.0, 3.0]);
        // Without a release libtorch accumulates: 2x.
        (&w * &x).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(&w.grad()).unwrap(), [2.0, -4.0, 6.0]);
        // A tensor with no gradient is left alone.
        let mut plain = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
        release_grad(&mut plain);
        assert!(!plain.grad().defined());
    }

    #[test]
    fn autocast_dtype_switches_between_bfloat16_and_float16() {
        set_cuda_autocast_bf16(true).unwrap();
        assert!(cuda_autocast_is_bf16());
        set_cuda_autocast_bf16(false).unwrap();
        assert!(!cuda_autocast_is_bf16());
    }
}
