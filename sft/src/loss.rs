//! The SFT loss: next-token cross entropy summed over the tokens the dialogue protocol marks
//! trainable (Llama 3 §4.1.3, "masking loss on prompt tokens").
//!
//! Position `i` predicts token `i + 1`, and counts when token `i + 1` is trained (`mask[i + 1] = 1`):
//! the mask marks the tokens the model must produce — assistant bodies and their end tokens — so the
//! header before an answer predicts its first token, and the answer's last token predicts
//! `<|eot_id|>`. Packed documents never leak into each other's loss: every document starts with
//! `<|begin_of_text|>`, whose mask is 0. The loss is a SUM; the toolbox's accumulator divides by the
//! step's trained-token count once, so 1×8 and 8×1 micro-batching give the same update.
//!
//! Two forms of the same loss: [`masked_next_token_loss`] over full logits (the reference, and what
//! the hand-derived test checks), and [`masked_next_token_loss_from_hidden`] over the final hidden
//! states and the LM head weight through the chunked op of `model::ops::linear_cross_entropy`,
//! which projects only the trained positions and never holds the `(tokens, vocab)` logits: what
//! training and evaluation run.

use candle_core::{D, DType, Tensor};
use model::ops::Kernels;
use model::ops::linear_cross_entropy::next_token_log_probs;

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

/// [`masked_next_token_loss`] from the final hidden states, without full logits: the same sum
/// of −log p over the same tokens (position i predicts i + 1, counted when `mask[i + 1] = 1`), and
/// the same count, with log p computed in f32.
///
/// `hidden_states` is `(batch, sequence, hidden)` ([`model::Llama::hidden_states`]),
/// `lm_head_weight` `(vocab, hidden)` ([`model::Llama::lm_head_weight`]), `input_ids` and `mask`
/// as for [`masked_next_token_loss`] (the mask 0/1). No trained token: a constant 0 and 0 tokens.
pub fn masked_next_token_loss_from_hidden(
    hidden_states: &Tensor,
    lm_head_weight: &Tensor,
    input_ids: &Tensor,
    mask: &Tensor,
    kernels: Kernels,
) -> model::Result<(Tensor, u64)> {
    let selected = next_token_log_probs(hidden_states, lm_head_weight, input_ids, mask, kernels)?;
    Ok((selected.sum()?.neg()?, selected.count as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

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

    /// The hidden-state form equals the logits form on the same inputs, value, count and
    /// gradients (of the hidden states and the head), with both kernels.
    #[test]
    fn the_hidden_state_form_equals_the_logits_form() {
        let device = Device::Cpu;
        let (batch, sequence, hidden, vocabulary) = (2, 5, 8, 11);
        let values = |count: usize, salt: f32| -> Vec<f32> {
            (0..count)
                .map(|i| (i as f32 * 0.731 + salt).sin())
                .collect()
        };
        let hidden_states = Var::from_vec(
            values(batch * sequence * hidden, 0.3),
            (batch, sequence, hidden),
            &device,
        )
        .unwrap();
        let weight = Var::from_vec(
            values(vocabulary * hidden, 1.7),
            (vocabulary, hidden),
            &device,
        )
        .unwrap();
        let ids: Vec<u32> = (0..batch * sequence)
            .map(|i| (i * 7 % vocabulary) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (batch, sequence), &device).unwrap();
        let mask = Tensor::new(&[[0u8, 0, 1, 1, 1], [1, 1, 0, 1, 0]], &device).unwrap();
        let logits = hidden_states
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap();
        let (expected, expected_tokens) = masked_next_token_loss(&logits, &ids, &mask).unwrap();
        let expected_gradients = expected.backward().unwrap();
        for kernels in [Kernels::Fused, Kernels::Reference] {
            let (loss, tokens) =
                masked_next_token_loss_from_hidden(&hidden_states, &weight, &ids, &mask, kernels)
                    .unwrap();
            assert_eq!(tokens, expected_tokens);
            let difference =
                (loss.to_scalar::<f32>().unwrap() - expected.to_scalar::<f32>().unwrap()).abs();
            assert!(difference < 1e-5, "{kernels:?}: {difference}");
            let gradients = loss.backward().unwrap();
            for var in [&hidden_states, &weight] {
                let difference = (gradients.get(var).unwrap()
                    - expected_gradients.get(var).unwrap())
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
                assert!(difference < 1e-5, "{kernels:?}: gradient {difference}");
            }
        }
        // Nothing trained: zero loss, zero tokens, as the logits form.
        let none = mask.zeros_like().unwrap();
        let (loss, tokens) = masked_next_token_loss_from_hidden(
            &hidden_states,
            &weight,
            &ids,
            &none,
            Kernels::Fused,
        )
        .unwrap();
        assert_eq!((loss.to_scalar::<f32>().unwrap(), tokens), (0.0, 0));
    }
}
