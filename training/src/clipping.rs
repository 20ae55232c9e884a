//! Global-norm gradient clipping, as `torch.nn.utils.clip_grad_norm_` does it (`norm_type = 2`,
//! `error_if_nonfinite=False`): the norm is taken over all the given gradients at once, and if it
//! exceeds `max_norm` every gradient is scaled by `max_norm / (norm + 1e-6)`. Llama 3 clips at 1.0.
//!
//! The per-tensor sums of squares are stacked on the device and reduced there, so the whole norm
//! costs one device-to-host copy rather than one per tensor.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Result, TrainingError};

/// The L2 norm of all the gradients of `vars` in `gradients`, taken together (vars without a
/// gradient count as zero). Computed in f32, returned as f64.
pub fn global_norm(gradients: &GradStore, vars: &[Var]) -> Result<f64> {
    let squares = vars
        .iter()
        .filter_map(|var| gradients.get(var.as_tensor()))
        .map(|gradient| gradient.to_dtype(DType::F32)?.sqr()?.sum_all())
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(TrainingError::tensor("sum of squared gradients"))?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&squares, 0)
        .and_then(|stacked| stacked.sum_all()?.sqrt()?.to_scalar::<f32>())
        .map_err(TrainingError::tensor("global gradient norm"))?;
    Ok(f64::from(total))
}

/// Scales the gradients of `vars` so their global norm is at most `max_norm`, and returns the
/// norm before clipping (what to log). A non-finite norm is returned and the gradients are left
/// alone; the caller decides whether to skip the step.
pub fn clip_gradient_norm(gradients: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(TrainingError::InvalidValue {
            field: "max_norm",
            value: max_norm.to_string(),
            reason: "must be positive",
        });
    }
    let norm = global_norm(gradients, vars)?;
    // PyTorch's clip_coef = max_norm / (total_norm + 1e-6), clamped to at most 1. When the clamp
    // bites, the multiplication by 1.0 changes nothing, so we skip it.
    let coefficient = max_norm / (norm + 1e-6);
    if coefficient < 1.0 && norm.is_finite() {
        for var in vars {
            if let Some(gradient) = gradients.get(var.as_tensor()) {
                let scaled = (gradient * coefficient)
                    .map_err(TrainingError::tensor("scaling a gradient for clipping"))?;
                gradients.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// Two vars with gradients (3, 4) and (12): the global norm is sqrt(9 + 16 + 144) = 13.
    /// Clipping at 6.5 scales by 6.5 / (13 + 1e-6) ≈ 0.49999996, giving ≈ (1.5, 2, 6).
    fn two_vars() -> (Var, Var, GradStore) {
        let first = Var::new(&[1.0f32, 1.0], &Device::Cpu).unwrap();
        let second = Var::new(&[2.0f32], &Device::Cpu).unwrap();
        // loss = 1.5·first0² + 2·first1² + 3·second² → grads (3·first0, 4·first1, 6·second) = (3, 4, 12)
        let loss = ((first.as_tensor().sqr().unwrap() * 1.0)
            .unwrap()
            .broadcast_mul(&Tensor::new(&[1.5f32, 2.0], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            + (second.as_tensor().sqr().unwrap() * 3.0)
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let gradients = loss.backward().unwrap();
        (first, second, gradients)
    }

    #[test]
    fn clips_to_max_norm_and_returns_the_norm_before() {
        let (first, second, mut gradients) = two_vars();
        let vars = [first.clone(), second.clone()];
        let norm = clip_gradient_norm(&mut gradients, &vars, 6.5).unwrap();
        assert!((norm - 13.0).abs() < 1e-6, "{norm}");
        let scale = 6.5 / (13.0 + 1e-6);
        let first_grad = gradients
            .get(first.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let second_grad = gradients
            .get(second.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (got, want) in first_grad.iter().chain(&second_grad).zip([3.0, 4.0, 12.0]) {
            assert!(
                (f64::from(*got) - want * scale).abs() < 1e-6,
                "{got} vs {}",
                want * scale
            );
        }
        assert!((global_norm(&gradients, &vars).unwrap() - 6.5).abs() < 1e-5);
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let (first, second, mut gradients) = two_vars();
        let vars = [first.clone(), second];
        let norm = clip_gradient_norm(&mut gradients, &vars, 100.0).unwrap();
        assert!((norm - 13.0).abs() < 1e-6);
        assert_eq!(
            gradients
                .get(first.as_tensor())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [3.0, 4.0]
        );
    }
}
