//! The SFT loss: next-token cross entropy summed over the tokens the dialogue protocol marks
//! trainable (Llama 3 §4.1.3, "masking loss on prompt tokens").
//!
//! Position `i` predicts token `i + 1`, and counts when token `i + 1` is trained (`mask[i + 1] = 1`):
//! the mask marks the tokens the model must produce — assistant bodies and their end tokens — so the
//! header before an answer predicts its first token, and the answer's last token predicts
//! `<|eot_id|>`. Packed documents never leak into each other's loss: every document starts with
//! `<|begin_of_text|>`, whose mask is 0. The loss is a SUM; the toolbox's accumulator divides by the
//! step's trained-token count once, so 1×8 and 8×1 micro-batching give the same update.

use candle_core::{D, DType, Tensor};

/// Summed masked next-token loss of a batch, and how many tokens it counts.
///
/// `logits` is `(batch, sequence, vocab)`, `input_ids` `(batch, sequence)` u32, `mask`
/// `(batch, sequence)` of 0/1 per input token.
pub fn masked_next_token_loss(
    logits: &Tensor,
    input_ids: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<(Tensor, u64)> {
    let (batch, sequence, vocabulary) = logits.dims3()?;
    // (batch, sequence - 1, vocab) → (batch·(sequence − 1), vocab): position i predicts i + 1.
    let predictions = logits
        .narrow(1, 0, sequence - 1)?
        .reshape((batch * (sequence - 1), vocabulary))?
        .to_dtype(DType::F32)?;
    // (batch, sequence − 1) → (batch·(sequence − 1), 1)
    let targets = input_ids
        .narrow(1, 1, sequence - 1)?
        .reshape((batch * (sequence - 1), 1))?;
    let weights = mask
        .narrow(1, 1, sequence - 1)?
        .reshape(batch * (sequence - 1))?
        .to_dtype(DType::F32)?;
    let log_probabilities = candle_nn::ops::log_softmax(&predictions, D::Minus1)?;
    // (n, 1) → (n)
    let target_log_probabilities = log_probabilities.gather(&targets, 1)?.squeeze(1)?;
    let loss_sum = (target_log_probabilities * &weights)?.sum_all()?.neg()?;
    let tokens = weights.sum_all()?.to_scalar::<f32>()? as u64;
    Ok((loss_sum, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One sequence of 3 tokens `[0, 1, 1]` over a vocabulary of 2, uniform logits except position 0
    /// which puts logit ln 3 on token 1: p(1 | pos 0) = 3/4, p(1 | pos 1) = 1/2.
    /// With mask `[0, 1, 1]` both predictions count: loss = −ln(3/4) − ln(1/2) = 0.98083, 2 tokens.
    /// With mask `[0, 0, 1]` only the last: loss = ln 2 = 0.69315, 1 token.
    #[test]
    fn hand_derived_values() {
        let device = Device::Cpu;
        let logits =
            Tensor::new(&[[[0.0f32, 3f32.ln()], [0.0, 0.0], [5.0, -5.0]]], &device).unwrap();
        let ids = Tensor::new(&[[0u32, 1, 1]], &device).unwrap();
        let all = Tensor::new(&[[0u8, 1, 1]], &device).unwrap();
        let (loss, tokens) = masked_next_token_loss(&logits, &ids, &all).unwrap();
        assert_eq!(tokens, 2);
        assert!((loss.to_scalar::<f32>().unwrap() - 0.980_829).abs() < 1e-5);
        let last = Tensor::new(&[[0u8, 0, 1]], &device).unwrap();
        let (loss, tokens) = masked_next_token_loss(&logits, &ids, &last).unwrap();
        assert_eq!(tokens, 1);
        assert!((loss.to_scalar::<f32>().unwrap() - std::f32::consts::LN_2).abs() < 1e-5);
    }
}
