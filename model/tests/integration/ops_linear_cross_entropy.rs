//! The chunked linear cross-entropy (`model::ops::linear_cross_entropy`) against the composed
//! candle ops it replaces: values and the gradients of both the hidden states and the LM head
//! weight, with chunks that end inside the batch, one row, a frozen weight, bf16 hidden states,
//! rows whose upstream gradient is 0, and the masked selection the losses use.

use candle_core::{D, DType, Device, Tensor, Var};
use model::ops::Kernels;
use model::ops::linear_cross_entropy::{
    default_chunk_rows, fused, fused_with_chunk_rows, next_token_log_probs, position_log_probs,
    reference, token_log_probs,
};

use crate::{max_abs, max_abs_difference, token_ids};

/// Deterministic values in `[-scale, scale)`.
fn values(count: usize, salt: u32, scale: f32) -> Vec<f32> {
    token_ids(count, 1 << 20, salt)
        .into_iter()
        .map(|id| (id as f32 / (1 << 19) as f32 - 1.0) * scale)
        .collect()
}

fn var(shape: (usize, usize), salt: u32, scale: f32) -> Var {
    Var::from_vec(values(shape.0 * shape.1, salt, scale), shape, &Device::Cpu).expect("var")
}

/// `max |a − b| / max(1, max |b|)`: an absolute tolerance near 0, a relative one for large values.
fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    max_abs_difference(a, b) / max_abs(b).max(1.0)
}

/// `Σ g · log p` for a fixed pseudo-random upstream gradient `g` (some entries 0 when `zeros`),
/// so every row's gradient is scaled differently.
fn weighted_sum(log_probs: &Tensor, salt: u32, zeros: bool) -> Tensor {
    let n = log_probs.dim(0).expect("dim");
    let mut upstream = values(n, salt, 1.0);
    if zeros {
        for value in upstream.iter_mut().step_by(3) {
            *value = 0.0;
        }
    }
    let upstream = Tensor::from_vec(upstream, n, &Device::Cpu).expect("upstream");
    (log_probs * upstream).expect("mul").sum_all().expect("sum")
}

struct Case {
    n: usize,
    hidden: usize,
    vocab: usize,
    chunk_rows: Option<usize>,
    trainable_hidden: bool,
    trainable_weight: bool,
    zero_upstream_rows: bool,
    /// Largest relative difference allowed ([`relative_difference`]).
    tolerance: f32,
}

impl Case {
    fn new(n: usize, hidden: usize, vocab: usize, chunk_rows: Option<usize>) -> Self {
        Self {
            n,
            hidden,
            vocab,
            chunk_rows,
            trainable_hidden: true,
            trainable_weight: true,
            zero_upstream_rows: false,
            tolerance: 1e-5,
        }
    }

    /// Fused against reference: values, then the gradients of whichever inputs are trainable
    /// (and none for the frozen ones).
    fn check(&self) {
        let hidden = var((self.n, self.hidden), 1, 1.0);
        let weight = var((self.vocab, self.hidden), 2, 0.5);
        let input = |var: &Var, trainable: bool| {
            if trainable {
                var.as_tensor().clone()
            } else {
                var.as_tensor().detach()
            }
        };
        let (hidden_input, weight_input) = (
            input(&hidden, self.trainable_hidden),
            input(&weight, self.trainable_weight),
        );
        let targets = Tensor::from_vec(token_ids(self.n, self.vocab, 3), self.n, &Device::Cpu)
            .expect("targets");
        let expected = reference(&hidden_input, &weight_input, &targets).expect("reference");
        let got = match self.chunk_rows {
            Some(rows) => fused_with_chunk_rows(&hidden_input, &weight_input, &targets, rows),
            None => fused(&hidden_input, &weight_input, &targets),
        }
        .expect("fused");
        assert_eq!(got.dims(), [self.n]);
        assert_eq!(got.dtype(), DType::F32);
        let difference = relative_difference(&got, &expected);
        assert!(
            difference < self.tolerance,
            "log-probs differ by {difference}"
        );

        let expected_gradients = weighted_sum(&expected, 4, self.zero_upstream_rows)
            .backward()
            .expect("reference backward");
        let gradients = weighted_sum(&got, 4, self.zero_upstream_rows)
            .backward()
            .expect("fused backward");
        for (name, var, trainable) in [
            ("hidden", &hidden, self.trainable_hidden),
            ("weight", &weight, self.trainable_weight),
        ] {
            let gradient = gradients.get(var.as_tensor());
            if !trainable {
                assert!(gradient.is_none(), "a frozen {name} got a gradient");
                continue;
            }
            let gradient = gradient.unwrap_or_else(|| panic!("{name} has no gradient"));
            let expected = expected_gradients.get(var.as_tensor()).expect("reference");
            let difference = relative_difference(gradient, expected);
            assert!(
                difference < self.tolerance,
                "d {name} differs by {difference}"
            );
        }
    }
}

#[test]
fn matches_the_reference_across_chunk_boundaries() {
    // A vocabulary that is a multiple of nothing, chunks of 3 rows over 10 (the last one short).
    Case::new(10, 24, 103, Some(3)).check();
    // One row per chunk, and one chunk holding every row.
    Case::new(5, 16, 61, Some(1)).check();
    Case::new(7, 16, 61, Some(64)).check();
}

#[test]
fn matches_the_reference_for_one_row_and_with_the_default_chunks() {
    Case::new(1, 32, 257, None).check();
    Case::new(1, 32, 257, Some(1)).check();
    // The default chunking of a vocabulary large enough to need several chunks of rows.
    let vocab = 300_007;
    let rows = default_chunk_rows(vocab);
    assert!((1..100).contains(&rows), "{rows}");
    assert_eq!(default_chunk_rows(usize::MAX / 2), 1);
    // d hidden sums 300k products per element, in another order than candle's matmul: the f32
    // rounding of either side reaches 1e-5 of the largest value.
    Case {
        tolerance: 1e-4,
        ..Case::new(rows + 5, 8, vocab, None)
    }
    .check();
}

#[test]
fn a_frozen_weight_gets_no_gradient_and_the_hidden_states_still_do() {
    Case {
        trainable_weight: false,
        ..Case::new(9, 16, 50, Some(4))
    }
    .check();
    Case {
        trainable_hidden: false,
        ..Case::new(9, 16, 50, Some(4))
    }
    .check();
}

#[test]
fn rows_without_upstream_gradient_are_skipped_exactly() {
    Case {
        zero_upstream_rows: true,
        ..Case::new(11, 16, 45, Some(2))
    }
    .check();
}

#[test]
fn bf16_hidden_states_are_computed_in_f32() {
    let (n, hidden_size, vocab) = (12, 32, 77);
    let hidden = var((n, hidden_size), 5, 1.0);
    let weight = var((vocab, hidden_size), 6, 0.5);
    let targets = Tensor::from_vec(token_ids(n, vocab, 7), n, &Device::Cpu).expect("targets");
    let bf16 = hidden.as_tensor().to_dtype(DType::BF16).expect("bf16");
    let got = fused_with_chunk_rows(&bf16, weight.as_tensor(), &targets, 5).expect("fused");
    assert_eq!(got.dtype(), DType::F32);
    // The reference on the same values in f32: the hidden states exactly upcast, the head
    // rounded to bf16 as the model computing in bf16 rounds it.
    let upcast = bf16.to_dtype(DType::F32).expect("upcast");
    let rounded_weight = weight
        .as_tensor()
        .to_dtype(DType::BF16)
        .and_then(|weight| weight.to_dtype(DType::F32))
        .expect("rounded");
    let expected = reference(&upcast, &rounded_weight, &targets).expect("reference");
    let difference = relative_difference(&got, &expected);
    assert!(difference < 1e-5, "log-probs differ by {difference}");
    // A frozen head cast to bf16 once (the DPO reference) scores exactly as the f32 master.
    let frozen = weight.as_tensor().to_dtype(DType::BF16).expect("bf16");
    let frozen_values = fused_with_chunk_rows(&bf16, &frozen, &targets, 5).expect("fused");
    assert_eq!(
        frozen_values.to_vec1::<f32>().expect("values"),
        got.to_vec1::<f32>().expect("values")
    );

    let gradients = weighted_sum(&got, 8, false).backward().expect("backward");
    let expected_gradients = weighted_sum(&expected, 8, false)
        .backward()
        .expect("backward");
    // Both gradients pass back through a bf16 cast on both sides, so they can differ by a bf16
    // rounding (2⁻⁸ relative).
    for var in [&weight, &hidden] {
        let difference = relative_difference(
            gradients.get(var.as_tensor()).expect("gradient"),
            expected_gradients.get(var.as_tensor()).expect("gradient"),
        );
        assert!(difference < 1e-2, "gradient differs by {difference}");
    }
}

#[test]
fn kernels_choose_the_implementation_and_bad_inputs_are_refused() {
    let hidden = var((4, 8), 9, 1.0);
    let weight = var((20, 8), 10, 0.5);
    let targets = Tensor::new(&[0u32, 19, 3, 7], &Device::Cpu).expect("targets");
    let fused_values = token_log_probs(
        hidden.as_tensor(),
        weight.as_tensor(),
        &targets,
        Kernels::Fused,
    )
    .expect("fused");
    let reference_values = token_log_probs(
        hidden.as_tensor(),
        weight.as_tensor(),
        &targets,
        Kernels::Reference,
    )
    .expect("reference");
    assert!(max_abs_difference(&fused_values, &reference_values) < 1e-5);

    let outside = Tensor::new(&[0u32, 20, 3, 7], &Device::Cpu).expect("targets");
    let error = fused(hidden.as_tensor(), weight.as_tensor(), &outside).expect_err("target 20");
    assert!(
        error.to_string().contains("outside the vocabulary"),
        "{error}"
    );
    let short = Tensor::new(&[0u32, 1], &Device::Cpu).expect("targets");
    assert!(fused(hidden.as_tensor(), weight.as_tensor(), &short).is_err());
    let empty = Tensor::zeros((0, 8), DType::F32, &Device::Cpu).expect("empty");
    let none = Tensor::zeros(0, DType::U32, &Device::Cpu).expect("empty");
    for kernels in [Kernels::Fused, Kernels::Reference] {
        let log_probs =
            token_log_probs(&empty, weight.as_tensor(), &none, kernels).expect("no rows");
        assert_eq!(log_probs.dims(), [0]);
    }
}

/// `(batch, seq, vocab)` log-softmax of the full logits: the losses' computation before the op.
fn full_log_probs(hidden_states: &Tensor, weight: &Tensor) -> Tensor {
    let (batch, sequence, hidden_size) = hidden_states.dims3().expect("dims");
    let logits = hidden_states
        .reshape((batch * sequence, hidden_size))
        .expect("reshape")
        .matmul(&weight.t().expect("t"))
        .expect("matmul");
    candle_nn::ops::log_softmax(&logits, D::Minus1)
        .expect("log_softmax")
        .reshape((batch, sequence, weight.dim(0).expect("vocab")))
        .expect("reshape")
}

#[test]
fn masked_selection_equals_the_full_logits_losses() {
    let (batch, sequence, hidden_size, vocab) = (3, 6, 16, 41);
    let device = Device::Cpu;
    let hidden_states = Var::from_vec(
        values(batch * sequence * hidden_size, 11, 1.0),
        (batch, sequence, hidden_size),
        &device,
    )
    .expect("hidden");
    let weight = var((vocab, hidden_size), 12, 0.5);
    let ids = token_ids(batch * sequence, vocab, 13);
    let input_ids = Tensor::from_vec(ids.clone(), (batch, sequence), &device).expect("ids");
    // Row 0: a completion after a prompt; row 1: token 0 marked (never predicted) and a gap;
    // row 2: nothing counted (it must still get a 0 row sum).
    let mask_values: [[u8; 6]; 3] = [[0, 0, 0, 1, 1, 1], [1, 1, 0, 1, 0, 1], [0; 6]];
    let mask = Tensor::new(&mask_values, &device).expect("mask");

    // The manual computation: Σ over t ≥ 1 with mask[t] = 1 of log p(ids[t] | position t − 1).
    let log_probs = full_log_probs(hidden_states.as_tensor(), weight.as_tensor());
    let mut expected_rows = Vec::new();
    for (row, mask_row) in mask_values.iter().enumerate() {
        let mut terms = Vec::new();
        for token in 1..sequence {
            if mask_row[token] == 1 {
                let id = ids[row * sequence + token] as usize;
                terms.push(
                    log_probs
                        .get(row)
                        .and_then(|row| row.get(token - 1))
                        .and_then(|position| position.get(id))
                        .expect("index"),
                );
            }
        }
        expected_rows.push(if terms.is_empty() {
            Tensor::zeros((), DType::F32, &device).expect("zero")
        } else {
            Tensor::stack(&terms, 0)
                .and_then(|terms| terms.sum_all())
                .expect("sum")
        });
    }
    let expected_rows = Tensor::stack(&expected_rows, 0).expect("stack");
    let expected_sum = expected_rows.sum_all().expect("sum");
    // Row sums weighted differently per row, so the row attribution is checked by the gradients.
    let row_weights = Tensor::new(&[1.0f32, -2.0, 3.0], &device).expect("weights");
    let expected_gradients = (expected_sum.clone()
        + (&expected_rows * &row_weights)
            .expect("mul")
            .sum_all()
            .expect("sum"))
    .expect("add")
    .backward()
    .expect("backward");

    for kernels in [Kernels::Fused, Kernels::Reference] {
        let selected = next_token_log_probs(
            hidden_states.as_tensor(),
            weight.as_tensor(),
            &input_ids,
            &mask,
            kernels,
        )
        .expect("selected");
        assert_eq!(selected.count, 6, "{kernels:?}");
        assert_eq!(selected.batch, batch);
        assert_eq!(
            selected.rows.to_vec1::<u32>().expect("rows"),
            [0, 0, 0, 1, 1, 1]
        );
        let sum = selected.sum().expect("sum");
        let rows = selected.row_sums().expect("row sums");
        assert!(
            max_abs_difference(&sum, &expected_sum) < 1e-5,
            "{kernels:?}"
        );
        assert!(
            max_abs_difference(&rows, &expected_rows) < 1e-5,
            "{kernels:?}"
        );
        let gradients = (sum + (rows * &row_weights).expect("mul").sum_all().expect("sum"))
            .expect("add")
            .backward()
            .expect("backward");
        for var in [&hidden_states, &weight] {
            let difference = max_abs_difference(
                gradients.get(var.as_tensor()).expect("gradient"),
                expected_gradients.get(var.as_tensor()).expect("gradient"),
            );
            assert!(
                difference < 1e-5,
                "{kernels:?}: gradient differs by {difference}"
            );
        }
    }
}

#[test]
fn position_selection_uses_shifted_targets_as_pretraining_does() {
    let (batch, sequence, hidden_size, vocab) = (2, 5, 8, 29);
    let device = Device::Cpu;
    let hidden_states = Tensor::from_vec(
        values(batch * sequence * hidden_size, 14, 1.0),
        (batch, sequence, hidden_size),
        &device,
    )
    .expect("hidden");
    let weight = var((vocab, hidden_size), 15, 0.5);
    let targets = token_ids(batch * sequence, vocab, 16);
    let target_tensor = Tensor::from_vec(targets.clone(), (batch, sequence), &device).expect("t");
    let mask_values = [[1u8, 1, 0, 1, 0], [0, 1, 1, 1, 1]];
    // f32, as pretraining's `next_token_mask`.
    let mask = Tensor::new(&mask_values, &device)
        .and_then(|mask| mask.to_dtype(DType::F32))
        .expect("mask");
    let log_probs = full_log_probs(&hidden_states, weight.as_tensor());
    let mut expected = 0.0f32;
    for (row, mask_row) in mask_values.iter().enumerate() {
        for (position, &counted) in mask_row.iter().enumerate() {
            if counted == 1 {
                let id = targets[row * sequence + position] as usize;
                expected += log_probs
                    .get(row)
                    .and_then(|row| row.get(position))
                    .and_then(|position| position.get(id))
                    .and_then(|value| value.to_scalar::<f32>())
                    .expect("value");
            }
        }
    }
    let selected = position_log_probs(
        &hidden_states,
        weight.as_tensor(),
        &target_tensor,
        &mask,
        Kernels::Fused,
    )
    .expect("selected");
    assert_eq!(selected.count, 7);
    let sum = selected
        .sum()
        .and_then(|sum| Ok(sum.to_scalar::<f32>()?))
        .expect("sum");
    assert!((sum - expected).abs() < 1e-4, "{sum} vs {expected}");
    // Only the weight is a Var here: the frozen-hidden path of the backward.
    let gradients = selected.sum().expect("sum").backward().expect("backward");
    assert!(gradients.get(weight.as_tensor()).is_some());
}

#[test]
fn no_counted_token_gives_a_zero_loss_and_masks_must_be_zero_or_one() {
    let device = Device::Cpu;
    let hidden_states =
        Var::from_vec(values(2 * 4 * 8, 17, 1.0), (2, 4, 8), &device).expect("hidden");
    let weight = var((13, 8), 18, 0.5);
    let input_ids = Tensor::from_vec(token_ids(8, 13, 19), (2, 4), &device).expect("ids");
    // Only token 0 is marked, and token 0 is never predicted.
    let mask = Tensor::new(&[[1u8, 0, 0, 0], [0, 0, 0, 0]], &device).expect("mask");
    let selected = next_token_log_probs(
        hidden_states.as_tensor(),
        weight.as_tensor(),
        &input_ids,
        &mask,
        Kernels::Fused,
    )
    .expect("selected");
    assert_eq!(selected.count, 0);
    let sum = selected.sum().expect("sum");
    assert!(sum.to_scalar::<f32>().expect("scalar").abs() < f32::MIN_POSITIVE);
    assert_eq!(
        selected
            .row_sums()
            .expect("rows")
            .to_vec1::<f32>()
            .expect("rows"),
        [0.0, 0.0]
    );
    // The accumulator back-propagates every micro-batch's loss; an empty one must not fail.
    sum.backward().expect("backward of a zero loss");

    let weighted = Tensor::new(&[[0f32, 1.0, 2.0, 1.0], [0.0; 4]], &device).expect("mask");
    let error = next_token_log_probs(
        hidden_states.as_tensor(),
        weight.as_tensor(),
        &input_ids,
        &weighted,
        Kernels::Fused,
    )
    .expect_err("a mask of 2");
    assert!(error.to_string().contains("0 or 1"), "{error}");
}
