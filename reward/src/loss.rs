//! The reward-model loss: Bradley–Terry over preference pairs (Llama 3 §4.1.2, "the same as Llama 2
//! except that we remove the margin term"), exactly TRL's `RewardTrainer.compute_loss`:
//!
//! ```text
//! loss = mean over pairs of −log σ(r⁺ − r⁻ − m)  +  c · mean over pairs of (r⁺ + r⁻)²
//! ```
//!
//! `m` is the pair's margin (Llama 2's margin loss; 0 unless the config turns margins on) and `c`
//! TRL's `center_rewards_coefficient` (Eisenstein et al. 2023, 2312.09244: keeps rewards near 0;
//! 0 = off). Both terms are per-pair means, so the loss is written as a SUM over pairs and the
//! toolbox's accumulator divides once by the step's pair count: 1×8 and 8×1 micro-batching agree.
//!
//! log σ(x) is built from differentiable candle ops in the overflow-free form
//! `min(x, 0) − ln(1 + e^(−|x|))`, with `min(x, 0) = x − relu(x)`.

use candle_core::{DType, Tensor};

/// ln σ(x) elementwise, stable for large |x| and differentiable.
pub fn log_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    let negative_part = (x - x.relu()?)?;
    let softplus_tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    negative_part - softplus_tail
}

/// Per-pair loss terms `(pairs,)`: `−ln σ(r⁺ − r⁻ − m) + c·(r⁺ + r⁻)²`. `chosen`, `rejected`
/// and `margins` are `(pairs,)`; margins `None` means 0.
pub fn pair_losses(
    chosen: &Tensor,
    rejected: &Tensor,
    margins: Option<&Tensor>,
    center_rewards_coefficient: f64,
) -> candle_core::Result<Tensor> {
    let chosen = chosen.to_dtype(DType::F32)?;
    let rejected = rejected.to_dtype(DType::F32)?;
    let mut difference = (&chosen - &rejected)?;
    if let Some(margins) = margins {
        difference = (difference - margins.to_dtype(DType::F32)?)?;
    }
    let mut losses = log_sigmoid(&difference)?.neg()?;
    if center_rewards_coefficient != 0.0 {
        let centring = ((chosen + rejected)?.sqr()? * center_rewards_coefficient)?;
        losses = (losses + centring)?;
    }
    Ok(losses)
}

/// The summed loss of a batch of pairs (a scalar), for the accumulator to divide by the step's
/// pair count.
pub fn bradley_terry_loss_sum(
    chosen: &Tensor,
    rejected: &Tensor,
    margins: Option<&Tensor>,
    center_rewards_coefficient: f64,
) -> candle_core::Result<Tensor> {
    pair_losses(chosen, rejected, margins, center_rewards_coefficient)?.sum_all()
}

/// The mean loss over the pairs: TRL's `compute_loss` value.
pub fn bradley_terry_loss(
    chosen: &Tensor,
    rejected: &Tensor,
    margins: Option<&Tensor>,
    center_rewards_coefficient: f64,
) -> candle_core::Result<Tensor> {
    pair_losses(chosen, rejected, margins, center_rewards_coefficient)?.mean_all()
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn vector(values: &[f32]) -> Tensor {
        Tensor::new(values, &Device::Cpu).unwrap()
    }

    fn scalar(tensor: &Tensor) -> f32 {
        tensor.to_scalar::<f32>().unwrap()
    }

    /// ln σ(0) = −ln 2 = −0.693147; ln σ(ln 3) = ln(3/4) = −0.287682; ln σ(−ln 3) = ln(1/4) =
    /// −1.386294; ln σ(100) = −e^(−100) ≈ 0; ln σ(−100) = −100 − ln(1 + e^(−100)) = −100 (a naive
    /// ln(1/(1 + e^100)) overflows to −inf).
    #[test]
    fn log_sigmoid_by_hand_and_far_out() {
        let values = log_sigmoid(&vector(&[0.0, 3f32.ln(), -(3f32.ln()), 100.0, -100.0]))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let expected = [-std::f32::consts::LN_2, -0.287_682, -1.386_294, 0.0, -100.0];
        for (value, expected) in values.iter().zip(expected) {
            assert!((value - expected).abs() < 1e-5, "{values:?}");
        }
    }

    /// Two pairs: (r⁺, r⁻) = (ln 3, 0) and (0, 0).
    /// Plain: [−ln(3/4), ln 2] = [0.287682, 0.693147], mean 0.490415.
    /// Margins [ln 3, 0]: the first difference becomes 0, so both terms are ln 2: mean 0.693147.
    /// Centring c = 0.5: (r⁺ + r⁻)² = [(ln 3)², 0] = [1.206949, 0], mean 0.603474, times 0.5 =
    /// 0.301737, so the loss is 0.490415 + 0.301737 = 0.792152.
    #[test]
    fn bradley_terry_hand_derived_values() {
        let chosen = vector(&[3f32.ln(), 0.0]);
        let rejected = vector(&[0.0, 0.0]);
        let plain = bradley_terry_loss(&chosen, &rejected, None, 0.0).unwrap();
        assert!((scalar(&plain) - 0.490_415).abs() < 1e-6);
        let summed = bradley_terry_loss_sum(&chosen, &rejected, None, 0.0).unwrap();
        assert!((scalar(&summed) - 0.980_829).abs() < 1e-6);
        let margins = vector(&[3f32.ln(), 0.0]);
        let with_margin = bradley_terry_loss(&chosen, &rejected, Some(&margins), 0.0).unwrap();
        assert!((scalar(&with_margin) - std::f32::consts::LN_2).abs() < 1e-6);
        let centred = bradley_terry_loss(&chosen, &rejected, None, 0.5).unwrap();
        assert!((scalar(&centred) - 0.792_152).abs() < 1e-6);
    }

    /// ∂/∂r⁺ of −ln σ(r⁺ − r⁻) is −(1 − σ(r⁺ − r⁻)) = −σ(r⁻ − r⁺): at (ln 3, 0) that is
    /// −1/4, and +1/4 for r⁻; at (0, 0) ∓1/2.
    #[test]
    fn gradients_by_hand() {
        let chosen = candle_core::Var::new(&[3f32.ln(), 0.0], &Device::Cpu).unwrap();
        let rejected = candle_core::Var::new(&[0f32, 0.0], &Device::Cpu).unwrap();
        let loss = bradley_terry_loss_sum(&chosen, &rejected, None, 0.0).unwrap();
        let gradients = loss.backward().unwrap();
        let chosen_gradient = gradients.get(&chosen).unwrap().to_vec1::<f32>().unwrap();
        let rejected_gradient = gradients.get(&rejected).unwrap().to_vec1::<f32>().unwrap();
        for (value, expected) in chosen_gradient.iter().zip([-0.25, -0.5]) {
            assert!((value - expected).abs() < 1e-6, "{chosen_gradient:?}");
        }
        for (value, expected) in rejected_gradient.iter().zip([0.25, 0.5]) {
            assert!((value - expected).abs() < 1e-6, "{rejected_gradient:?}");
        }
    }
}
