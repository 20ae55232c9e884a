//! Applying rotary position embeddings (`RoFormer`, Su et al. 2021) as transformers' Llama does in
//! `apply_rotary_pos_emb`: `x * cos + rotate_half(x) * sin`, the half-split convention
//! (`rotate_half(x) = cat(-x2, x1)`), not the interleaved one. The tables come from
//! `model::rope` (`cat(freqs, freqs)`, one row per token, shared by all heads).
//!
//! [`reference`] is the composition of candle ops `model::rope::apply_rotary` was written with
//! (candle's `rotary_emb::rope` has no backward, `shared/research/candle.md` §1.1). [`fused`] is
//! one `CustomOp1` over `x` holding the tables as constants (no gradient flows to them), one pass
//! per direction; its products and sums are the reference's, so values and gradients are
//! bit-identical to the reference's.

use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::{Kernels, contiguous_f32};

/// `x * cos + rotate_half(x) * sin` for `x` `(batch, heads, seq, head_dim)` and `cos`, `sin`
/// `(batch, 1, seq, head_dim)` in `x`'s dtype, by the chosen implementation.
pub fn rotary(x: &Tensor, cos: &Tensor, sin: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Reference => reference(x, cos, sin),
        Kernels::Fused => fused(x, cos, sin),
    }
}

/// The composed candle ops: the test oracle.
pub fn reference(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let rotated = rotate_half(x)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `cat(-x2, x1)` over the last dimension, where `x1`, `x2` are its two halves.
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let first = x.narrow(D::Minus1, 0, half)?;
    let second = x.narrow(D::Minus1, half, half)?;
    Ok(Tensor::cat(&[&second.neg()?, &first], D::Minus1)?)
}

/// One pass per direction on the CPU for f32 `x` `(batch, heads, seq, head_dim)`, `head_dim`
/// even, with f32 tables `(batch or 1, heads or 1, seq, head_dim)`, read in place where they
/// broadcast (never materialised per head). Anything else (another device — CUDA kernels are a
/// later step —, another dtype or shape) runs the [`reference`].
pub fn fused(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let Some(geometry) = Geometry::of(x, cos, sin) else {
        return reference(x, cos, sin);
    };
    let op = RotaryOp {
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        geometry,
        transposed: false,
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// The shapes the fused kernel handles, or `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    heads: usize,
    seq: usize,
    head_dim: usize,
    /// Whether the tables have a row per batch element (else one shared by all).
    table_per_batch: bool,
    /// Whether the tables have a row per head (else one shared by all, the usual case).
    table_per_head: bool,
}

impl Geometry {
    fn of(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Option<Self> {
        let all_f32_on_cpu = [x, cos, sin]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.device().is_cpu());
        let (&[batch, heads, seq, head_dim], &[table_batch, table_heads, table_seq, table_dim]) =
            (x.dims(), cos.dims())
        else {
            return None;
        };
        let fits = all_f32_on_cpu
            && cos.dims() == sin.dims()
            && head_dim % 2 == 0
            && x.elem_count() > 0
            && (table_batch == batch || table_batch == 1)
            && (table_heads == heads || table_heads == 1)
            && (table_seq, table_dim) == (seq, head_dim);
        fits.then_some(Self {
            heads,
            seq,
            head_dim,
            table_per_batch: table_batch > 1,
            table_per_head: table_heads > 1,
        })
    }

    /// The table row for row `row` of `x` viewed as `(batch * heads * seq, head_dim)`.
    fn table_row(self, row: usize) -> usize {
        let position = row % self.seq;
        let head = (row / self.seq) % self.heads;
        let batch = row / (self.seq * self.heads);
        let table_heads = if self.table_per_head { self.heads } else { 1 };
        let batch = if self.table_per_batch { batch } else { 0 };
        let head = if self.table_per_head { head } else { 0 };
        (batch * table_heads + head) * self.seq + position
    }
}

/// Elements one rayon task rotates: enough to be worth its scheduling.
const TASK_ELEMENTS: usize = 1 << 14;

/// The rotation (or, `transposed`, its transpose, the backward) with its constant tables.
///
/// Per row, with `h = head_dim / 2`, `c`, `s` the row's tables:
/// - forward, `y = x·c + rotate_half(x)·s`: `y_i = x_i c_i − x_{i+h} s_i` for `i < h`,
///   `y_i = x_i c_i + x_{i−h} s_i` for `i ≥ h`;
/// - its transpose, `dx = dy·c + rotate_halfᵀ(dy·s)`: `dx_i = dy_i c_i + dy_{i+h} s_{i+h}` for
///   `i < h`, `dx_i = dy_i c_i − dy_{i−h} s_{i−h}` for `i ≥ h` (no assumption that the two
///   halves of the tables are equal).
///
/// The map is linear in `x`, so the backward of either direction is the other one: gradients of
/// any order.
#[derive(Debug, Clone)]
struct RotaryOp {
    cos: Tensor,
    sin: Tensor,
    geometry: Geometry,
    transposed: bool,
}

impl CustomOp1 for RotaryOp {
    fn name(&self) -> &'static str {
        if self.transposed {
            "herd-rotary-backward"
        } else {
            "herd-rotary"
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "rotary x")?;
        let (cos_storage, cos_layout) = self.cos.storage_and_layout();
        let (sin_storage, sin_layout) = self.sin.storage_and_layout();
        let (Storage::Cpu(cos_storage), Storage::Cpu(sin_storage)) = (&*cos_storage, &*sin_storage)
        else {
            candle_core::bail!("rotary: the fused CPU op needs cos and sin on the CPU");
        };
        let cos = contiguous_f32(cos_storage, cos_layout, "rotary cos")?;
        let sin = contiguous_f32(sin_storage, sin_layout, "rotary sin")?;
        let geometry = self.geometry;
        let dim = geometry.head_dim;
        let half = dim / 2;
        let task_rows = (TASK_ELEMENTS / dim).max(1);
        let mut out = vec![0.0f32; x.len()];
        out.par_chunks_mut(task_rows * dim)
            .zip(x.par_chunks(task_rows * dim))
            .enumerate()
            .for_each(|(task, (out, x))| {
                let rows = out.chunks_exact_mut(dim).zip(x.chunks_exact(dim));
                for (i, (out, x)) in rows.enumerate() {
                    let table = geometry.table_row(task * task_rows + i) * dim;
                    let (c, s) = (&cos[table..table + dim], &sin[table..table + dim]);
                    let (x1, x2) = x.split_at(half);
                    let (c1, c2) = c.split_at(half);
                    let (s1, s2) = s.split_at(half);
                    let (out1, out2) = out.split_at_mut(half);
                    if self.transposed {
                        rotate_halves(out1, out2, (x1, x2), (c1, c2), (s2, s1), -1.0);
                    } else {
                        rotate_halves(out1, out2, (x1, x2), (c1, c2), (s1, s2), 1.0);
                    }
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let transpose = Self {
            transposed: !self.transposed,
            ..self.clone()
        };
        // The upstream gradient may be a broadcast view (e.g. from `sum_all`).
        Ok(Some(grad.contiguous()?.apply_op1(transpose)?))
    }
}

/// `out1 = x1·c1 − sign·x2·s_for_1`, `out2 = x2·c2 + sign·x1·s_for_2`: the forward with
/// `sign = 1` and the tables' own halves, the transpose with `sign = −1` and the halves of `s`
/// swapped (`dx_i` for `i < h` takes `s_{i+h}`, for `i ≥ h` takes `s_{i−h}`).
///
/// The sign is applied to `x` before the product, as the reference's `neg` does, so every
/// product and sum rounds as the reference's (`(−a)·b = −(a·b)` exactly).
fn rotate_halves(
    out1: &mut [f32],
    out2: &mut [f32],
    (x1, x2): (&[f32], &[f32]),
    (c1, c2): (&[f32], &[f32]),
    (s_for_1, s_for_2): (&[f32], &[f32]),
    sign: f32,
) {
    let first = out1.iter_mut().zip(x1).zip(x2).zip(c1).zip(s_for_1);
    for ((((out, &a), &b), &c), &s) in first {
        *out = a * c + (-sign * b) * s;
    }
    let second = out2.iter_mut().zip(x2).zip(x1).zip(c2).zip(s_for_2);
    for ((((out, &b), &a), &c), &s) in second {
        *out = b * c + (sign * a) * s;
    }
}
