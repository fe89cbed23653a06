// The two libtorch calls rifle needs that tch 0.24 does not bind. Exceptions never cross into Rust: each
// function returns false (or a null message) instead.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>

extern "C" {

// PyTorch's `zero_grad(set_to_none=True)` for one parameter: the gradient is released, so the next backward
// writes a fresh one instead of adding into a zeroed buffer, and the model holds no gradients during the
// forward pass.
bool rifle_release_grad(at::Tensor *param) {
  try {
    param->mutable_grad().reset();
    return true;
  } catch (...) {
    return false;
  }
}

// The dtype CUDA autocast casts to: float16 (libtorch's default) or bfloat16.
bool rifle_set_cuda_autocast_bf16(bool bf16) {
  try {
    at::autocast::set_autocast_dtype(at::kCUDA, bf16 ? at::kBFloat16 : at::kHalf);
    return true;
  } catch (...) {
    return false;
  }
}

bool rifle_cuda_autocast_is_bf16() {
  try {
    return at::autocast::get_autocast_dtype(at::kCUDA) == at::kBFloat16;
  } catch (...) {
    return false;
  }
}
}
