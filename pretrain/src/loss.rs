//! The causal language-modelling loss on packed rows: position `t` is trained to predict token
//! `t + 1` of its row, summed (not averaged) over the positions that have a target in the same
//! document, so that [`training::GradientAccumulator`] can divide once by the whole step's token
//! count (Llama 3 paper §3.2: no attention, and here no prediction, across documents).
//!
//! A position has no target when it is the last token of its document (its successor begins the
//! next document, or is cut off at the end of the row) or when it is padding.
//!
//! Two forms of the same loss: [`cross_entropy_sum`] over full logits (the reference, and what
//! the hand-derived test checks), and [`cross_entropy_sum_from_hidden`] over the final hidden
//! states and the LM head weight through the chunked op of `model::ops::linear_cross_entropy`,
//! which never holds the `(batch, seq, vocab)` logits: what training and the held-out loss run.

use candle_core::{D, DType, Tensor};
use model::ops::Kernels;
use model::ops::linear_cross_entropy::position_log_probs;

/// `(row_length)`: 1.0 where position `t` has a target (token `t + 1` is in the same document),
/// 0.0 elsewhere. `document_boundaries` is the row's `cu_seqlens`: the start of each document,
/// then the end of the last one; positions from that end on are padding.
///
/// Documents `[0, 3)` and `[3, 5)` in a row of 6 (the last token padding):
/// positions 0, 1 predict 1, 2; position 2 ends the first document; 3 predicts 4; 4 ends the
/// second; 5 is padding — `[1, 1, 0, 1, 0, 0]`.
#[must_use]
pub fn next_token_mask(document_boundaries: &[u32], row_length: usize) -> Vec<f32> {
    let mut mask = vec![0.0; row_length];
    for pair in document_boundaries.windows(2) {
        let (start, end) = (pair[0] as usize, (pair[1] as usize).min(row_length));
        for slot in mask.iter_mut().take(end.saturating_sub(1)).skip(start) {
            *slot = 1.0;
        }
    }
    mask
}

/// `(row_length)`: token `t + 1` of `row` at position `t`; the last position gets 0, a
/// placeholder that [`next_token_mask`] always masks out.
#[must_use]
pub fn next_token_targets(row: &[u32]) -> Vec<u32> {
    let mut targets: Vec<u32> = row.iter().skip(1).copied().collect();
    targets.push(0);
    targets
}

/// The summed next-token cross entropy and the number of positions it sums over.
///
/// `logits`: `(batch, seq, vocab)`; `targets`: `(batch, seq)` u32, the id each position predicts
/// ([`next_token_targets`]); `mask`: `(batch, seq)` f32, 1 where the position is trained
/// ([`next_token_mask`]). The log-softmax is taken in f32 whatever the logits' dtype, and the
/// result is differentiable with respect to `logits`.
///
/// Hand-derived: with two ids and logits `(0, 0)`, each trained position costs `ln 2 ≈ 0.693147`;
/// with logits `(ln 3, 0)` and target 0 it costs `−ln(3/4) = ln(4/3) ≈ 0.287682`.
pub fn cross_entropy_sum(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<(Tensor, u64)> {
    let log_probabilities = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?; // (b, s, V)
    let target_log_probabilities = log_probabilities
        .gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)? // (b, s, 1)
        .squeeze(D::Minus1)?; // (b, s)
    let mask = mask.to_dtype(DType::F32)?;
    let loss_sum = (target_log_probabilities * &mask)?.sum_all()?.neg()?;
    let tokens = mask.sum_all()?.to_scalar::<f32>()?;
    Ok((loss_sum, tokens as u64))
}

/// [`cross_entropy_sum`] from the final hidden states, without full logits: the same sum of
/// −log p over the same positions and the same count, with log p computed in f32.
///
/// `hidden_states`: `(batch, seq, hidden)` ([`model::Llama::hidden_states`]); `lm_head_weight`:
/// `(vocab, hidden)` ([`model::Llama::lm_head_weight`]); `targets` and `mask` as for
/// [`cross_entropy_sum`] (the mask 0/1). Only the trained positions reach the LM head.
pub fn cross_entropy_sum_from_hidden(
    hidden_states: &Tensor,
    lm_head_weight: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    kernels: Kernels,
) -> model::Result<(Tensor, u64)> {
    let selected = position_log_probs(hidden_states, lm_head_weight, targets, mask, kernels)?;
    Ok((selected.sum()?.neg()?, selected.count as u64))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    #[test]
    fn masks_the_last_token_of_each_document_and_padding() {
        assert_eq!(
            next_token_mask(&[0, 3, 5], 6),
            [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(next_token_mask(&[0, 4], 4), [1.0, 1.0, 1.0, 0.0]);
        // A one-token document has nothing to predict.
        assert_eq!(next_token_mask(&[0, 1, 3], 3), [0.0, 1.0, 0.0]);
        assert_eq!(next_token_targets(&[7, 8, 9]), [8, 9, 0]);
    }

    /// Row of three positions over two ids: logits (0, 0), (ln 3, 0), (5, −5); targets 1, 0, 1;
    /// the third position masked. Loss = ln 2 + ln(4/3) = ln(8/3) ≈ 0.980829, 2 tokens.
    /// d loss / d logits = softmax − one-hot on trained positions: (0.5, −0.5), (−0.25, 0.25),
    /// and 0 on the masked one.
    #[test]
    fn hand_derived_loss_and_gradient() {
        let device = Device::Cpu;
        let ln3 = 3f32.ln();
        let logits =
            Var::from_vec(vec![0.0f32, 0.0, ln3, 0.0, 5.0, -5.0], (1, 3, 2), &device).unwrap();
        let targets = Tensor::new(&[[1u32, 0, 1]], &device).unwrap();
        let mask = Tensor::new(&[[1f32, 1.0, 0.0]], &device).unwrap();
        let (loss, tokens) = cross_entropy_sum(logits.as_tensor(), &targets, &mask).unwrap();
        assert_eq!(tokens, 2);
        let value = loss.to_scalar::<f32>().unwrap();
        assert!((value - (8.0f32 / 3.0).ln()).abs() < 1e-6, "{value}");

        let gradients = loss.backward().unwrap();
        let gradient: Vec<f32> = gradients
            .get(logits.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let expected = [0.5, -0.5, -0.25, 0.25, 0.0, 0.0];
        for (got, want) in gradient.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{gradient:?}");
        }
    }

    /// The hidden-state form equals the logits form on the same inputs: value, token count and
    /// the gradients of the hidden states and the head, with both kernels.
    #[test]
    fn the_hidden_state_form_equals_the_logits_form() {
        let device = Device::Cpu;
        let (batch, sequence, hidden, vocabulary) = (2, 6, 8, 17);
        let values = |count: usize, salt: f32| -> Vec<f32> {
            (0..count)
                .map(|i| (i as f32 * 0.977 + salt).sin())
                .collect()
        };
        let hidden_states = Var::from_vec(
            values(batch * sequence * hidden, 0.2),
            (batch, sequence, hidden),
            &device,
        )
        .unwrap();
        let weight = Var::from_vec(
            values(vocabulary * hidden, 1.1),
            (vocabulary, hidden),
            &device,
        )
        .unwrap();
        let mut targets = Vec::new();
        let mut mask = Vec::new();
        for (row, boundaries) in [[0u32, 4, 6], [0, 2, 5]].iter().enumerate() {
            let ids: Vec<u32> = (0..sequence)
                .map(|i| ((row * sequence + i) * 3 % vocabulary) as u32)
                .collect();
            targets.extend(next_token_targets(&ids));
            mask.extend(next_token_mask(boundaries, sequence));
        }
        let targets = Tensor::from_vec(targets, (batch, sequence), &device).unwrap();
        let mask = Tensor::from_vec(mask, (batch, sequence), &device).unwrap();
        let logits = hidden_states
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap();
        let (expected, expected_tokens) = cross_entropy_sum(&logits, &targets, &mask).unwrap();
        let expected_gradients = expected.backward().unwrap();
        for kernels in [Kernels::Fused, Kernels::Reference] {
            let (loss, tokens) =
                cross_entropy_sum_from_hidden(&hidden_states, &weight, &targets, &mask, kernels)
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
    }
}
