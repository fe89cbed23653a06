//! Mixed precision (`amp`). `fp16` runs forward passes under CUDA autocast (float16 matmuls and
//! convolutions, float32 parameters and optimizer) with dynamic loss scaling, as PyTorch's `GradScaler`:
//! the loss is multiplied by the scale before backward; the gradients are unscaled and checked in one fused
//! libtorch kernel per tensor before the regularizers, hooks and optimizer see them; a step whose scaled
//! gradients overflowed is skipped and the scale halved; after 2000 good steps in a row it doubles.
//!
//! `bf16` runs the forward passes under CUDA autocast to bfloat16 (its dtype set through `extras.rs`, which
//! tch does not bind) with no loss scaling: bfloat16 has float32's exponent range.
//! On the CPU, `amp` does nothing (tch's autocast is CUDA-only); the run says so once.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

const INITIAL_SCALE: f64 = 65536.0;
const GROWTH: f64 = 2.0;
const BACKOFF: f64 = 0.5;
const GROWTH_INTERVAL: usize = 2000;

/// The dynamic loss scale; saved in checkpoints so that a resumed run scales as a straight one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Steps in a row with finite gradients since the scale last changed.
    pub good_steps: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { scale: INITIAL_SCALE, good_steps: 0 }
    }
}

impl LossScale {
    /// Divides every gradient by the scale in place; returns whether all of them are finite.
    pub fn unscale(&self, grads: &mut [Tensor]) -> bool {
        let Some(first) = grads.first() else { return true };
        let device = first.device();
        let mut found_inf = Tensor::zeros([1], (Kind::Float, device));
        let inv_scale = Tensor::from_slice(&[(1.0 / self.scale) as f32]).to_device(device);
        for g in grads.iter_mut() {
            g.internal_amp_non_finite_check_and_unscale(&mut found_inf, &inv_scale);
        }
        found_inf.double_value(&[0]) == 0.0
    }

    /// Moves the scale after a step: halves it after an overflow, doubles it after `GROWTH_INTERVAL` good
    /// steps in a row.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == GROWTH_INTERVAL {
                self.scale *= GROWTH;
                self.good_steps = 0;
            }
        } else {
            self.scale *= BACKOFF;
            self.good_steps = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_and_doubles_after_the_interval() {
        let mut s = LossScale::default();
        s.update(false);
        assert_eq!(s, LossScale { scale: INITIAL_SCALE / 2.0, good_steps: 0 });
        for _ in 0..GROWTH_INTERVAL - 1 {
            s.update(true);
        }
        assert_eq!(s.scale, INITIAL_SCALE / 2.0);
        s.update(true);
        assert_eq!(s, LossScale { scale: INITIAL_SCALE, good_steps: 0 });
    }

    #[test]
    fn unscales_in_place_and_finds_overflow() {
        let s = LossScale { scale: 4.0, good_steps: 0 };
        let mut grads = vec![Tensor::from_slice(&[4.0f32, -8.0]), Tensor::from_slice(&[2.0f32])];
        assert!(s.unscale(&mut grads));
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, -2.0]);
        assert_eq!(Vec::<f32>::try_from(&grads[1]).unwrap(), vec![0.5]);
        let mut grads = vec![Tensor::from_slice(&[1.0f32]), Tensor::from_slice(&[f32::INFINITY])];
        assert!(!s.unscale(&mut grads));
        let mut grads = vec![Tensor::from_slice(&[f32::NAN])];
        assert!(!s.unscale(&mut grads));
    }
}
