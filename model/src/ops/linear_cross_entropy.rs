//! Token log-probabilities straight from the final hidden states and the LM head, in row chunks,
//! so that the full `(tokens, vocab)` f32 logits never exist during training: the chunked
//! "fused linear cross-entropy" of Liger-Kernel (Hsu et al. 2024,
//! `liger_kernel/ops/fused_linear_cross_entropy.py`) and Apple's Cut Cross-Entropy (Wijmans et al.
//! 2024, "Cut Your Losses in Large-Vocabulary Language Models"), whose other saving is here too:
//! [`next_token_log_probs`] selects the counted positions first, so prompt and padding positions
//! never reach the LM head.
//!
//! For a Llama 3 vocabulary (128,256 ids) a batch of 8 × 4096 tokens has 16.8 GB of f32 logits,
//! and the composed candle ops keep two or three such tensors alive until the backward (logits,
//! their f32 copy, the log-softmax). The fused op keeps one chunk of at most [`CHUNK_BYTES`] and
//! `n` log-sum-exps, and recomputes each chunk's logits in the backward instead of storing them.
//!
//! With `logit = hidden · weightᵀ`, the op computes `log p(t | hidden) = logit[t] − lse(logit)`
//! and, for an upstream gradient `g`, `d logit = g · (onehot(t) − softmax(logit))`, then
//! `d hidden = d logit · weight` and `d weight = d logitᵀ · hidden`.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Shape, Storage, Tensor};
use kernels::{Matrix, MatrixMut, matmul};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::ops::{Kernels, contiguous_f32};

/// The most bytes one chunk's f32 logits may take: 32 MiB, i.e. 65 rows of Llama 3's 128,256 ids
/// or 262 rows of a 32,000-id vocabulary. Large enough for the matrix products to run near peak
/// (the inner dimension of `d weight += d logitᵀ · hidden` is the chunk's row count, and each
/// chunk reads and writes all of `d weight` once), small enough to stay a rounding error beside
/// the weights.
pub const CHUNK_BYTES: usize = 32 << 20;

/// `log p(targets[i] | hidden[i]) = logit[i, target] − logsumexp(logit[i, :])` with
/// `logit = hidden · weightᵀ`, computed in f32.
///
/// `hidden`: `(n, hidden_size)`, any float dtype; `weight`: `(vocab, hidden_size)` (`lm_head`, or
/// the tied embedding); `targets`: `(n)` u32. Returns `(n)` f32, differentiable with respect to
/// `hidden` and `weight`.
pub fn token_log_probs(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    kernels: Kernels,
) -> Result<Tensor> {
    match kernels {
        Kernels::Reference => reference(hidden, weight, targets),
        Kernels::Fused => fused(hidden, weight, targets),
    }
}

/// The composed candle ops, exactly what the losses did before this op: full logits in `hidden`'s
/// dtype (the weight cast to it, as the model's compute dtype casts every parameter), cast to f32,
/// `log_softmax`, `gather`. Memory: the `(n, vocab)` logits, their f32 copy and the log-softmax.
pub fn reference(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, _) = check_shapes(hidden, weight, targets)?;
    if n == 0 {
        return Ok(Tensor::zeros(0, DType::F32, hidden.device())?);
    }
    // (n, hidden) · (hidden, vocab) → (n, vocab)
    let logits = hidden.matmul(&weight.to_dtype(hidden.dtype())?.t()?)?;
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    // (n, 1) → (n)
    let targets = targets.reshape((n, 1))?.contiguous()?;
    Ok(log_probs.gather(&targets, 1)?.squeeze(1)?)
}

/// The chunked op (a `CustomOp2` on `(hidden, weight)` with its own backward). The weight is
/// taken at the hidden states' precision, as [`reference`] and the model's compute dtype take it
/// (bf16 hidden states: the head rounded to bf16, so a trainable f32 head and a frozen one cast
/// to bf16 once score alike), then both are cast to f32 around the op (`to_dtype` has a backward,
/// so the gradients come back in the inputs' dtypes). On the CPU the logits are computed in f32, a
/// chunk of rows at a time; unlike [`reference`] they are never rounded to bf16.
///
/// On other devices there is no kernel yet (a CUDA one comes later): this falls back to
/// [`reference`] on the same f32-cast inputs, the same numbers with full logits on the device.
pub fn fused(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (_, vocab) = check_shapes(hidden, weight, targets)?;
    fused_with_chunk_rows(hidden, weight, targets, default_chunk_rows(vocab))
}

/// Rows per chunk so that a chunk's f32 logits fit in [`CHUNK_BYTES`] (at least one row).
#[must_use]
pub fn default_chunk_rows(vocab: usize) -> usize {
    (CHUNK_BYTES / size_of::<f32>() / vocab.max(1)).max(1)
}

/// [`fused`] with `chunk_rows` rows per chunk instead of [`default_chunk_rows`]: lets the tests
/// cross chunk boundaries on small inputs.
#[doc(hidden)]
pub fn fused_with_chunk_rows(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    chunk_rows: usize,
) -> Result<Tensor> {
    let (n, vocab) = check_shapes(hidden, weight, targets)?;
    // Each cast is a handle clone when the dtype already matches (f32 training).
    let weight = weight.to_dtype(hidden.dtype())?.to_dtype(DType::F32)?;
    let hidden = hidden.to_dtype(DType::F32)?;
    if !hidden.device().is_cpu() {
        return reference(&hidden, &weight, targets);
    }
    if n == 0 {
        return Ok(Tensor::zeros(0, DType::F32, hidden.device())?);
    }
    let targets = targets.to_vec1::<u32>()?;
    if let Some((row, &target)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &target)| target as usize >= vocab)
    {
        return Err(op_error(&format!(
            "target {target} of row {row} is outside the vocabulary of {vocab}"
        )));
    }
    let op = LinearCrossEntropy {
        targets,
        chunk_rows: chunk_rows.max(1),
        log_sum_exp: Mutex::new(Vec::new()),
    };
    Ok(hidden.contiguous()?.apply_op2(&weight.contiguous()?, op)?)
}

/// `(n, vocab)` when `hidden` is `(n, h)`, `weight` `(vocab, h)` and `targets` `(n)` u32.
fn check_shapes(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<(usize, usize)> {
    let (n, hidden_size) = hidden.dims2()?;
    let (vocab, weight_hidden) = weight.dims2()?;
    let targets_n = targets.dims1()?;
    if weight_hidden != hidden_size || targets_n != n || targets.dtype() != DType::U32 {
        return Err(op_error(&format!(
            "hidden {:?}, weight {:?} and targets {:?} {:?} do not fit: expected (n, h), \
             (vocab, h) and (n) u32",
            hidden.dims(),
            weight.dims(),
            targets.dims(),
            targets.dtype()
        )));
    }
    Ok((n, vocab))
}

fn op_error(message: &str) -> ModelError {
    candle_core::Error::msg(format!("linear_cross_entropy: {message}")).into()
}

/// The op: targets and chunking fixed at construction, the log-sum-exp of every row kept from the
/// forward for the backward.
struct LinearCrossEntropy {
    /// `(n)`: the id each row scores, each below the vocabulary size (checked).
    targets: Vec<u32>,
    chunk_rows: usize,
    /// `(n)`, written by the forward. Kept rather than recomputed: it is n floats, and without it
    /// the backward would need a second pass over each recomputed chunk (max, then Σ exp) before
    /// it could form the softmax. (Deriving it from the output, `logit[t] − out`, would be free
    /// but cancels digits when log p is large and negative.) Empty if the forward never ran, in
    /// which case the backward recomputes it.
    log_sum_exp: Mutex<Vec<f32>>,
}

/// `log Σ exp(row)`, with the row's maximum taken out first so nothing overflows. The sum runs in
/// f64: a 128k-term f32 running sum loses about 1e-4 of its value, as much as bf16 logits would.
fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f64 = row
        .iter()
        .map(|&logit| f64::from((logit - max).exp()))
        .sum();
    max + sum.ln() as f32
}

/// `logits (rows, vocab) = hidden_rows (rows, h) · weightᵀ (h, vocab)`, over every core: the
/// product dominates the op, and one large gemm splits better than rows would.
fn chunk_logits(
    logits: &mut [f32],
    hidden_rows: &[f32],
    weight: &[f32],
    rows: usize,
    hidden_size: usize,
    vocab: usize,
) -> candle_core::Result<()> {
    matmul(
        MatrixMut::new(logits, rows, vocab, vocab),
        Matrix::new(hidden_rows, rows, hidden_size, hidden_size),
        Matrix::new(weight, vocab, hidden_size, hidden_size).transpose(),
        false,
        1.0,
        rayon::current_num_threads(),
    )
    .map_err(candle_core::Error::wrap)
}

impl CustomOp2 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        hidden_storage: &CpuStorage,
        hidden_layout: &Layout,
        weight_storage: &CpuStorage,
        weight_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let hidden = contiguous_f32(hidden_storage, hidden_layout, "linear_cross_entropy hidden")?;
        let weight = contiguous_f32(weight_storage, weight_layout, "linear_cross_entropy weight")?;
        let (n, hidden_size) = hidden_layout.shape().dims2()?;
        let (vocab, _) = weight_layout.shape().dims2()?;
        let mut out = vec![0f32; n];
        let mut log_sum_exps = vec![0f32; n];
        // (chunk_rows, vocab): the only logits that exist at any time.
        let mut logits = vec![0f32; self.chunk_rows.min(n) * vocab];
        for start in (0..n).step_by(self.chunk_rows) {
            let rows = self.chunk_rows.min(n - start);
            let logits = &mut logits[..rows * vocab];
            chunk_logits(
                logits,
                &hidden[start * hidden_size..(start + rows) * hidden_size],
                weight,
                rows,
                hidden_size,
                vocab,
            )?;
            logits
                .par_chunks(vocab)
                .zip(&mut out[start..start + rows])
                .zip(&mut log_sum_exps[start..start + rows])
                .zip(&self.targets[start..start + rows])
                .for_each(|(((row, out), lse), &target)| {
                    *lse = log_sum_exp(row);
                    *out = row[target as usize] - *lse;
                });
        }
        match self.log_sum_exp.lock() {
            Ok(mut saved) => *saved = log_sum_exps,
            Err(_) => candle_core::bail!("linear_cross_entropy: the log-sum-exp lock is poisoned"),
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // A frozen head (LoRA, a reference model) needs no `d weight`: the (vocab, h) product per
        // chunk is half the backward's work. Hidden states from detached inputs need no `d hidden`.
        let (want_hidden, want_weight) = (hidden.track_op(), weight.track_op());
        if !want_hidden && !want_weight {
            return Ok((None, None));
        }
        let (n, hidden_size) = hidden.dims2()?;
        let (vocab, _) = weight.dims2()?;
        // (n): the upstream gradient, possibly a broadcast view (the backward of a sum).
        let grad_out = grad_out.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let saved = match self.log_sum_exp.lock() {
            Ok(saved) => saved.clone(),
            Err(_) => candle_core::bail!("linear_cross_entropy: the log-sum-exp lock is poisoned"),
        };
        let saved = (saved.len() == n).then_some(saved);
        // Rows with g = 0 (masked out downstream) contribute nothing to either gradient.
        let active: Vec<usize> = (0..n).filter(|&row| grad_out[row] != 0.0).collect();

        let (hidden_guard, hidden_layout) = hidden.storage_and_layout();
        let (weight_guard, weight_layout) = weight.storage_and_layout();
        let (Storage::Cpu(hidden_storage), Storage::Cpu(weight_storage)) =
            (&*hidden_guard, &*weight_guard)
        else {
            candle_core::bail!("linear_cross_entropy: the fused backward runs on the CPU only")
        };
        let hidden_data =
            contiguous_f32(hidden_storage, hidden_layout, "linear_cross_entropy hidden")?;
        let weight_data =
            contiguous_f32(weight_storage, weight_layout, "linear_cross_entropy weight")?;

        let threads = rayon::current_num_threads();
        let chunk_rows = self.chunk_rows.min(active.len()).max(1);
        let mut d_hidden = want_hidden.then(|| vec![0f32; n * hidden_size]);
        let mut d_weight = want_weight.then(|| vec![0f32; vocab * hidden_size]);
        // Per chunk: its hidden rows gathered (the active rows need not be adjacent), its logits
        // turned in place into d logit, and its rows of d hidden before they are scattered back.
        let mut hidden_rows = vec![0f32; chunk_rows * hidden_size];
        let mut logits = vec![0f32; chunk_rows * vocab];
        let mut d_hidden_rows = vec![0f32; chunk_rows * hidden_size];
        for chunk in active.chunks(chunk_rows) {
            let rows = chunk.len();
            let hidden_rows = &mut hidden_rows[..rows * hidden_size];
            for (slot, &row) in hidden_rows.chunks_mut(hidden_size).zip(chunk) {
                slot.copy_from_slice(&hidden_data[row * hidden_size..(row + 1) * hidden_size]);
            }
            let logits = &mut logits[..rows * vocab];
            chunk_logits(logits, hidden_rows, weight_data, rows, hidden_size, vocab)?;
            // d logit = g · (onehot(target) − softmax(logit)), in place.
            logits
                .par_chunks_mut(vocab)
                .zip(chunk)
                .for_each(|(row_logits, &row)| {
                    let lse = saved
                        .as_ref()
                        .map_or_else(|| log_sum_exp(row_logits), |saved| saved[row]);
                    let g = grad_out[row];
                    for logit in row_logits.iter_mut() {
                        *logit = -g * (*logit - lse).exp();
                    }
                    row_logits[self.targets[row] as usize] += g;
                });
            if let Some(d_hidden) = &mut d_hidden {
                // (rows, vocab) · (vocab, h) → (rows, h)
                let d_hidden_rows = &mut d_hidden_rows[..rows * hidden_size];
                matmul(
                    MatrixMut::new(d_hidden_rows, rows, hidden_size, hidden_size),
                    Matrix::new(logits, rows, vocab, vocab),
                    Matrix::new(weight_data, vocab, hidden_size, hidden_size),
                    false,
                    1.0,
                    threads,
                )
                .map_err(candle_core::Error::wrap)?;
                for (values, &row) in d_hidden_rows.chunks(hidden_size).zip(chunk) {
                    d_hidden[row * hidden_size..(row + 1) * hidden_size].copy_from_slice(values);
                }
            }
            if let Some(d_weight) = &mut d_weight {
                // (vocab, rows) · (rows, h) → (vocab, h), summed over the chunks.
                matmul(
                    MatrixMut::new(d_weight, vocab, hidden_size, hidden_size),
                    Matrix::new(logits, rows, vocab, vocab).transpose(),
                    Matrix::new(hidden_rows, rows, hidden_size, hidden_size),
                    true,
                    1.0,
                    threads,
                )
                .map_err(candle_core::Error::wrap)?;
            }
        }
        drop((hidden_guard, weight_guard));
        let device = hidden.device();
        let d_hidden = d_hidden
            .map(|values| Tensor::from_vec(values, (n, hidden_size), device))
            .transpose()?;
        let d_weight = d_weight
            .map(|values| Tensor::from_vec(values, (vocab, hidden_size), device))
            .transpose()?;
        Ok((d_hidden, d_weight))
    }
}

/// The log-probs of the tokens a loss counts, and which batch row each belongs to.
#[derive(Debug, Clone)]
pub struct SelectedLogProbs {
    /// `(count)` f32: log p(token | prefix) of every counted token, row-major (row by row, in
    /// sequence order).
    pub log_probs: Tensor,
    /// `(count)` u32: the batch row of each counted token.
    pub rows: Tensor,
    /// Counted tokens (0 when nothing is trained in the batch).
    pub count: usize,
    /// Rows of the batch.
    pub batch: usize,
}

impl SelectedLogProbs {
    /// Σ log p over every counted token: a scalar f32, 0 (a constant) when none is counted.
    pub fn sum(&self) -> Result<Tensor> {
        if self.count == 0 {
            return Ok(Tensor::zeros((), DType::F32, self.log_probs.device())?);
        }
        // Accumulated in f64: a micro-batch's loss is then the same number whether its tokens
        // were summed here in one go or over several micro-batches by the accumulator, to f32
        // rounding of the total rather than of every partial sum.
        Ok(self
            .log_probs
            .to_dtype(DType::F64)?
            .sum_all()?
            .to_dtype(DType::F32)?)
    }

    /// `(batch)` f32: Σ log p over each row's counted tokens (0 for a row without any).
    pub fn row_sums(&self) -> Result<Tensor> {
        let device = self.log_probs.device();
        if self.count == 0 {
            return Ok(Tensor::zeros(self.batch, DType::F32, device)?);
        }
        // index_add has a backward: each token's log-prob gets its row's gradient. In f64 as
        // [`SelectedLogProbs::sum`].
        Ok(Tensor::zeros(self.batch, DType::F64, device)?
            .index_add(&self.rows, &self.log_probs.to_dtype(DType::F64)?, 0)?
            .to_dtype(DType::F32)?)
    }
}

/// The log-probs of the tokens `mask` counts, predicted from the positions before them: token
/// `t` counts when `mask[t] = 1` and is predicted by position `t − 1` (the shift of the SFT and
/// DPO losses, TRL's shifted completion mask); token 0 of a row is never predicted.
///
/// `hidden_states`: `(batch, seq, hidden)` after the final norm ([`crate::Llama::hidden_states`]);
/// `lm_head_weight`: `(vocab, hidden)` ([`crate::Llama::lm_head_weight`]); `input_ids`:
/// `(batch, seq)` u32; `mask`: `(batch, seq)` of 0/1 in any dtype (other values are an error: the
/// losses count tokens, they do not weight them). Only the counted positions are projected onto
/// the vocabulary.
pub fn next_token_log_probs(
    hidden_states: &Tensor,
    lm_head_weight: &Tensor,
    input_ids: &Tensor,
    mask: &Tensor,
    kernels: Kernels,
) -> Result<SelectedLogProbs> {
    let (batch, sequence, _) = hidden_states.dims3()?;
    // The ids and the mask come to the host (a few KB) to decide which positions reach the head.
    let ids = input_ids.to_vec2::<u32>()?;
    let mask = mask_rows(mask, (batch, sequence))?;
    check_rows(&ids, (batch, sequence), "input_ids")?;
    let mut picks = Vec::new();
    for (row, (ids, mask)) in ids.iter().zip(&mask).enumerate() {
        for token in 1..sequence {
            if mask[token] {
                picks.push(Pick {
                    position: row * sequence + token - 1,
                    target: ids[token],
                    row,
                });
            }
        }
    }
    select(hidden_states, lm_head_weight, &picks, kernels)
}

/// The log-probs of `targets[t]` at the positions `t` where `mask[t] = 1`, the targets already
/// shifted as pretraining's `next_token_targets` makes them (position t predicts `targets[t]`,
/// so a position without a target is one whose mask is 0). Shapes and mask as
/// [`next_token_log_probs`], `targets` `(batch, seq)` u32.
pub fn position_log_probs(
    hidden_states: &Tensor,
    lm_head_weight: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    kernels: Kernels,
) -> Result<SelectedLogProbs> {
    let (batch, sequence, _) = hidden_states.dims3()?;
    let targets = targets.to_vec2::<u32>()?;
    let mask = mask_rows(mask, (batch, sequence))?;
    check_rows(&targets, (batch, sequence), "targets")?;
    let mut picks = Vec::new();
    for (row, (targets, mask)) in targets.iter().zip(&mask).enumerate() {
        for position in 0..sequence {
            if mask[position] {
                picks.push(Pick {
                    position: row * sequence + position,
                    target: targets[position],
                    row,
                });
            }
        }
    }
    select(hidden_states, lm_head_weight, &picks, kernels)
}

/// One counted token: the flat `(batch · seq)` position whose hidden state predicts it, its id,
/// and its batch row.
struct Pick {
    position: usize,
    target: u32,
    row: usize,
}

/// `mask` read as booleans, checked to be `(batch, seq)` of 0/1.
fn mask_rows(mask: &Tensor, (batch, sequence): (usize, usize)) -> Result<Vec<Vec<bool>>> {
    let values = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    check_rows(&values, (batch, sequence), "mask")?;
    values
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|value| match value {
                    0.0 => Ok(false),
                    1.0 => Ok(true),
                    other => Err(op_error(&format!(
                        "mask values must be 0 or 1, found {other}"
                    ))),
                })
                .collect()
        })
        .collect()
}

fn check_rows<T>(rows: &[Vec<T>], (batch, sequence): (usize, usize), what: &str) -> Result<()> {
    if rows.len() != batch || rows.iter().any(|row| row.len() != sequence) {
        return Err(op_error(&format!(
            "{what} must be ({batch}, {sequence}) as the hidden states, found {} rows of {}",
            rows.len(),
            rows.first().map_or(0, Vec::len)
        )));
    }
    Ok(())
}

/// Projects only the picked positions: `index_select` of the `(batch · seq, hidden)` states (its
/// backward scatters the gradient back), then [`token_log_probs`].
fn select(
    hidden_states: &Tensor,
    lm_head_weight: &Tensor,
    picks: &[Pick],
    kernels: Kernels,
) -> Result<SelectedLogProbs> {
    let (batch, sequence, hidden_size) = hidden_states.dims3()?;
    let device = hidden_states.device();
    let count = picks.len();
    let rows: Vec<u32> = picks.iter().map(|pick| pick.row as u32).collect();
    let rows = Tensor::from_vec(rows, count, device)?;
    if count == 0 {
        return Ok(SelectedLogProbs {
            log_probs: Tensor::zeros(0, DType::F32, device)?,
            rows,
            count,
            batch,
        });
    }
    let positions: Vec<u32> = picks.iter().map(|pick| pick.position as u32).collect();
    let targets: Vec<u32> = picks.iter().map(|pick| pick.target).collect();
    // (batch, seq, hidden) → (batch · seq, hidden) → (count, hidden)
    let selected = hidden_states
        .reshape((batch * sequence, hidden_size))?
        .index_select(&Tensor::from_vec(positions, count, device)?, 0)?;
    let targets = Tensor::from_vec(targets, count, device)?;
    let log_probs = token_log_probs(&selected, lm_head_weight, &targets, kernels)?;
    Ok(SelectedLogProbs {
        log_probs,
        rows,
        count,
        batch,
    })
}
