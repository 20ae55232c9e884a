//! `RMSNorm` (Zhang & Sennrich 2019) as transformers' `LlamaRMSNorm` computes it: in f32,
//! `x * rsqrt(mean(x²) + eps)`, cast back to the input dtype, then times the weight.
//!
//! [`reference`] is the composition of candle ops `model::norm::RmsNorm::forward` was written with
//! (differentiable through candle's autograd; candle's own `ops::rms_norm` has no backward,
//! `shared/research/candle.md` §1.1). [`fused`] is one `CustomOp2` over `(x, weight)` with its own
//! backward, one pass over the rows per direction.
//!
//! The fused kernel reproduces the reference's arithmetic operation by operation, so its values
//! are bit-identical to the reference's on x86-64 with AVX2 (where candle sums a row in the order
//! [`sum_of_squares`] mirrors; elsewhere they differ in the last bits of the statistic):
//! - the statistic is always f32: `mean = Σx² · f32(1/size)`, `r = recip(sqrt(mean + f32(eps)))`;
//! - bf16 `x`: `n = bf16(x·r)` (the reference's cast back), then `y = bf16(n·w)` (candle's bf16
//!   product rounds an f32 product), both rounded to nearest even as `half::bf16::from_f32`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::Kernels;

/// `RMSNorm` of `x` `(..., size)` with `weight` `(size,)`, by the chosen implementation.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Reference => reference(x, weight, eps),
        Kernels::Fused => fused(x, weight, eps),
    }
}

/// The composed candle ops, in transformers' operation order: the test oracle.
pub fn reference(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inverse_rms = (variance + eps)?.sqrt()?.recip()?;
    let normalized = x.broadcast_mul(&inverse_rms)?.to_dtype(dtype)?;
    Ok(normalized.broadcast_mul(weight)?)
}

/// One pass per direction on the CPU, for f32 or bf16 `x` with a `(size,)` weight of the same
/// dtype. Anything else (another device — CUDA kernels are a later step —, another dtype, a
/// broadcast weight of another shape, an empty tensor) runs the [`reference`].
pub fn fused(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let size = x.dims().last().copied().unwrap_or(0);
    let supported = x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
        && weight.dtype() == x.dtype()
        && weight.dims() == [size]
        && size > 0
        && x.elem_count() > 0;
    if !supported {
        return reference(x, weight, eps);
    }
    let op = RmsNormOp {
        eps: eps as f32,
        size,
    };
    Ok(x.contiguous()?.apply_op2(&weight.contiguous()?, op)?)
}

/// Elements one rayon task normalizes: rows are grouped so a task is worth its scheduling.
const TASK_ELEMENTS: usize = 1 << 14;

/// At most this many per-task partial sums of the weight gradient (whatever the row count), so
/// their memory stays small. The task split depends only on the shape, never on the thread count,
/// so the gradient is the same on every machine and run.
const MAX_WEIGHT_PARTIALS: usize = 64;

/// The fused op. `eps` as the reference's affine applies it (`f32(eps)`).
#[derive(Debug, Clone, Copy)]
struct RmsNormOp {
    eps: f32,
    size: usize,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "herd-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = x_layout.shape().clone();
        let storage = match (x, weight) {
            (CpuStorage::F32(x), CpuStorage::F32(weight)) => {
                let x = contiguous(x, x_layout, "rms_norm x")?;
                let weight = contiguous(weight, weight_layout, "rms_norm weight")?;
                CpuStorage::F32(self.forward(x, weight))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(weight)) => {
                let x = contiguous(x, x_layout, "rms_norm x")?;
                let weight = contiguous(weight, weight_layout, "rms_norm weight")?;
                CpuStorage::BF16(self.forward(x, weight))
            }
            _ => candle_core::bail!(
                "rms_norm: the fused op takes f32 or bf16 x and weight of one dtype, got {:?} and {:?}",
                x.dtype(),
                weight.dtype()
            ),
        };
        Ok((storage, shape))
    }

    /// Both gradients from one pass over `(x, dy)` ([`RmsNormBackward`]); they come back detached
    /// (no second-order gradients through this op).
    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let rows = x.elem_count() / self.size;
        // The upstream gradient may be a broadcast view (e.g. from `sum_all`).
        let dy = dy.contiguous()?;
        let both = x.apply_op3_no_bwd(weight, &dy, &RmsNormBackward(*self))?;
        let dx = both.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dweight = both.narrow(0, rows, 1)?.reshape(weight.shape())?;
        Ok((Some(dx), Some(dweight)))
    }
}

impl RmsNormOp {
    /// `y` for contiguous rows of `x`.
    fn forward<E: WithDType>(self, x: &[E], weight: &[E]) -> Vec<E> {
        let size = self.size;
        let mut y = vec![E::from_f64(0.0); x.len()];
        let task = (TASK_ELEMENTS / size).max(1) * size;
        y.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .for_each(|(y, x)| {
                for (y, x) in y.chunks_exact_mut(size).zip(x.chunks_exact(size)) {
                    let r = inverse_rms(x, self.eps);
                    for ((y, &x), &w) in y.iter_mut().zip(x).zip(weight) {
                        // The reference casts n back to x's dtype before the weight product.
                        let normalized = load(store::<E>(load(x) * r));
                        *y = store(normalized * load(w));
                    }
                }
            });
        y
    }

    /// `dx` for every row of `x`, then `dweight` as one more row: `(rows + 1) * size` values.
    ///
    /// Per row, with `r = (mean(x²) + eps)^(-1/2)`, `n = x·r`, `y = n·w` and `g = dy·w`:
    /// - `∂r/∂x_k = -½ (mean(x²) + eps)^(-3/2) · 2x_k/size = -r³ x_k / size`, so
    ///   `dx_k = Σ_j g_j ∂n_j/∂x_k = g_k r + Σ_j g_j x_j ∂r/∂x_k = r g_k − r³ x_k/size · Σ_j g_j x_j
    ///   = r (g_k − n_k · mean(g·n))`;
    /// - `dw_j = Σ_rows dy_j n_j` (with bf16 `x`, `n` as rounded to bf16, the value that
    ///   multiplied the weight; `dx` treats that rounding as the identity, as autograd does).
    ///
    /// r is recomputed rather than saved: the row is read again while in cache. The arithmetic is
    /// f32 for either dtype; bf16 gradients are rounded once at the end.
    fn backward<E: WithDType>(self, x: &[E], weight: &[E], dy: &[E]) -> Vec<E> {
        let size = self.size;
        let rows = x.len() / size;
        let mut out = vec![E::from_f64(0.0); x.len() + size];
        let (dx, dweight_out) = out.split_at_mut(x.len());
        let task_rows = (TASK_ELEMENTS / size)
            .max(rows.div_ceil(MAX_WEIGHT_PARTIALS))
            .max(1);
        let task = task_rows * size;
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .zip(dy.par_chunks(task))
            .map(|((dx, x), dy)| {
                let mut dweight = vec![0.0f32; size];
                let rows = dx
                    .chunks_exact_mut(size)
                    .zip(x.chunks_exact(size))
                    .zip(dy.chunks_exact(size));
                for ((dx, x), dy) in rows {
                    self.backward_row(x, weight, dy, dx, &mut dweight);
                }
                dweight
            })
            .collect();
        // Summed in task order: deterministic.
        let mut dweight = vec![0.0f32; size];
        for partial in &partials {
            for (total, &part) in dweight.iter_mut().zip(partial) {
                *total += part;
            }
        }
        for (out, value) in dweight_out.iter_mut().zip(dweight) {
            *out = store(value);
        }
        out
    }

    /// One row of [`Self::backward`]: writes `dx`, adds the row's `dy·n` to `dweight`.
    fn backward_row<E: WithDType>(
        self,
        x: &[E],
        weight: &[E],
        dy: &[E],
        dx: &mut [E],
        dweight: &mut [f32],
    ) {
        let r = inverse_rms(x, self.eps);
        let mut gn = 0.0f32;
        for (((&x, &w), &dy), dweight) in x.iter().zip(weight).zip(dy).zip(dweight.iter_mut()) {
            let (x, dy) = (load(x), load(dy));
            let normalized = x * r;
            gn += dy * load(w) * normalized;
            *dweight += dy * load(store::<E>(normalized));
        }
        let mean_gn = gn / self.size as f32;
        for (((dx, &x), &w), &dy) in dx.iter_mut().zip(x).zip(weight).zip(dy) {
            let g = load(dy) * load(w);
            *dx = store(r * (g - load(x) * r * mean_gn));
        }
    }
}

/// The backward of [`RmsNormOp`] over `(x, weight, dy)`, one output `(rows + 1, size)`.
#[derive(Debug, Clone, Copy)]
struct RmsNormBackward(RmsNormOp);

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "herd-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        dy: &CpuStorage,
        dy_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let size = self.0.size;
        let shape = Shape::from((x_layout.shape().elem_count() / size + 1, size));
        let storage = match (x, weight, dy) {
            (CpuStorage::F32(x), CpuStorage::F32(weight), CpuStorage::F32(dy)) => {
                CpuStorage::F32(self.0.backward(
                    contiguous(x, x_layout, "rms_norm x")?,
                    contiguous(weight, weight_layout, "rms_norm weight")?,
                    contiguous(dy, dy_layout, "rms_norm gradient")?,
                ))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(weight), CpuStorage::BF16(dy)) => {
                CpuStorage::BF16(self.0.backward(
                    contiguous(x, x_layout, "rms_norm x")?,
                    contiguous(weight, weight_layout, "rms_norm weight")?,
                    contiguous(dy, dy_layout, "rms_norm gradient")?,
                ))
            }
            _ => candle_core::bail!(
                "rms_norm backward: x, weight and gradient must share one dtype, f32 or bf16; got \
                 {:?}, {:?}, {:?}",
                x.dtype(),
                weight.dtype(),
                dy.dtype()
            ),
        };
        Ok((storage, shape))
    }
}

/// `r = recip(sqrt(Σx² · f32(1/size) + eps))`: `mean_keepdim` scales by the f64 `1/size` through
/// an f32 affine, `+ eps` is an affine too, then `sqrt` and `recip`, each rounding in f32.
fn inverse_rms<E: WithDType>(row: &[E], eps: f32) -> f32 {
    let inverse_size = (1.0 / row.len() as f64) as f32;
    (sum_of_squares(row) * inverse_size + eps).sqrt().recip()
}

/// `Σ x²` in the order candle 0.11.1's AVX2 `vec_sum` adds a contiguous row (`cpu/avx.rs`):
/// 32 running sums over blocks of 32, folded as four 8-lane vectors `(v0 + v1) + (v2 + v3)`,
/// then the 128-bit halves, then two horizontal adds; the tail (`len % 32`) added last, in order.
/// Mirroring it makes the statistic bit-identical to the reference's on such machines; the 32
/// independent sums also vectorize.
fn sum_of_squares<E: WithDType>(row: &[E]) -> f32 {
    const LANES: usize = 32;
    let body = row.len() - row.len() % LANES;
    let mut lanes = [0.0f32; LANES];
    for block in row[..body].chunks_exact(LANES) {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            let x = load(x);
            *lane += x * x;
        }
    }
    let vector: [f32; 8] =
        std::array::from_fn(|k| (lanes[k] + lanes[8 + k]) + (lanes[16 + k] + lanes[24 + k]));
    let half: [f32; 4] = std::array::from_fn(|k| vector[k] + vector[k + 4]);
    let mut sum = (half[0] + half[1]) + (half[2] + half[3]);
    for &x in &row[body..] {
        let x = load(x);
        sum += x * x;
    }
    sum
}

/// An element as f32 (exact for f32 and bf16).
#[inline]
fn load<E: WithDType>(value: E) -> f32 {
    value.to_f64() as f32
}

/// An f32 as the element type, rounded as candle rounds f32 → bf16 (`half::bf16::from_f32`).
/// `WithDType::from_f64` alone would not do: half's f64 → bf16 ignores the low 32 bits of the
/// f64 and so mis-rounds some ties; given a value bf16 represents exactly it is exact.
#[inline]
fn store<E: WithDType>(value: f32) -> E {
    if E::DTYPE == DType::BF16 {
        E::from_f64(f64::from(round_to_bf16(value)))
    } else {
        E::from_f64(f64::from(value))
    }
}

/// `value` rounded to bf16 precision (nearest, ties to even; NaN kept quiet), still an f32:
/// `half` 2.x's `f32_to_bf16`, bit for bit.
fn round_to_bf16(value: f32) -> f32 {
    let bits = value.to_bits();
    if bits & 0x7FFF_FFFF > 0x7F80_0000 {
        return f32::from_bits((bits & 0xFFFF_0000) | 0x0040_0000);
    }
    let round_bit = 0x0000_8000;
    let upper = if bits & round_bit != 0 && bits & (3 * round_bit - 1) != 0 {
        (bits >> 16) + 1
    } else {
        bits >> 16
    };
    f32::from_bits(upper << 16)
}

/// The elements of a contiguous CPU tensor of any dtype ([`crate::ops::contiguous_f32`] for
/// f32 and bf16 alike).
fn contiguous<'a, E>(data: &'a [E], layout: &Layout, what: &str) -> candle_core::Result<&'a [E]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => {
            candle_core::bail!("{what}: the fused op needs a contiguous tensor, got {layout:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn rounds_to_bf16_as_half_does() {
        let bits = |v: f32| round_to_bf16(v).to_bits();
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1). One ulp above the tie: up.
        assert_eq!(bits(1.0 + 2f32.powi(-8)), 1.0f32.to_bits());
        let above_tie = f32::from_bits((1.0f32 + 2f32.powi(-8)).to_bits() + 1);
        assert_eq!(bits(above_tie), (1.0 + 2f32.powi(-7)).to_bits());
        // 1 + 3·2^-8: a tie between 1 + 2^-7 (odd) and 1 + 2^-6: to even, up.
        assert_eq!(
            bits(1.0 + 3.0 * 2f32.powi(-8)),
            (1.0 + 2f32.powi(-6)).to_bits()
        );
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(bits(f32::MAX), f32::INFINITY.to_bits());
        assert_eq!(bits(-0.0), (-0.0f32).to_bits());

        // Against candle's own f32 → bf16 cast on bit patterns of every binade, ties included.
        let mut state = 1u32;
        let values: Vec<f32> = (0..20_000u32)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let pattern = if i % 4 == 0 {
                    state & 0xFFFF_8000
                } else {
                    state
                };
                f32::from_bits(pattern)
            })
            .filter(|v| v.is_finite())
            .collect();
        let cast = Tensor::new(values.as_slice(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::BF16))
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_vec1::<f32>());
        let Ok(cast) = cast else {
            panic!("cast failed: {cast:?}");
        };
        for (value, cast) in values.iter().zip(cast) {
            assert_eq!(bits(*value), cast.to_bits(), "{value:e}");
        }
    }
}
