//! The `SwiGLU` gate (Shazeer 2020) of transformers' `LlamaMLP`: `silu(gate) * up`, with
//! `silu(g) = g · sigmoid(g)`.
//!
//! [`reference`] is the two candle ops `model::mlp::Mlp::forward` was written with. [`fused`] is
//! one `CustomOp2` over `(gate, up)` with its own backward: one pass instead of the reference's
//! silu, product, and in the backward the ~8 full-size temporaries of candle's silu and product
//! gradients (`shared/research/candle.md` §1.1 "Cost model").
//!
//! The fused kernel evaluates candle's own f32 formulas (`silu(g) = g / (1 + exp(-g))` and its
//! gradient `sigmoid(g)·(1 − silu(g)) + silu(g)`, `backprop.rs`) in the same order, so values and
//! gradients are bit-identical to the reference's.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::{Kernels, contiguous_f32};

/// `silu(gate) * up` for two tensors of one shape, by the chosen implementation.
pub fn swiglu(gate: &Tensor, up: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Reference => reference(gate, up),
        Kernels::Fused => fused(gate, up),
    }
}

/// The composed candle ops: the test oracle.
pub fn reference(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((gate.silu()? * up)?)
}

/// One pass per direction on the CPU for f32 `gate` and `up` of one shape. Anything else (another
/// device — CUDA kernels are a later step —, another dtype, shapes that differ, which the
/// reference rejects) runs the [`reference`].
pub fn fused(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let supported = gate.device().is_cpu()
        && gate.dtype() == DType::F32
        && up.dtype() == DType::F32
        && gate.shape() == up.shape();
    if !supported {
        return reference(gate, up);
    }
    Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGluOp)?)
}

/// Elements one rayon task handles: enough to be worth its scheduling.
const TASK_ELEMENTS: usize = 1 << 14;

/// The fused op.
#[derive(Debug, Clone, Copy)]
struct SwiGluOp;

impl CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "herd-swiglu"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let gate = contiguous_f32(gate, gate_layout, "swiglu gate")?;
        let up = contiguous_f32(up, up_layout, "swiglu up")?;
        let mut out = vec![0.0f32; gate.len()];
        out.par_chunks_mut(TASK_ELEMENTS)
            .zip(gate.par_chunks(TASK_ELEMENTS))
            .zip(up.par_chunks(TASK_ELEMENTS))
            .for_each(|((out, gate), up)| {
                for ((out, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                    *out = silu(g) * u;
                }
            });
        Ok((CpuStorage::F32(out), gate_layout.shape().clone()))
    }

    /// Both gradients from one pass ([`SwiGluBackward`]), detached (no second order).
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // The upstream gradient may be a broadcast view (e.g. from `sum_all`).
        let grad = grad.contiguous()?;
        let both = gate.apply_op3_no_bwd(up, &grad, &SwiGluBackward)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// The backward of [`SwiGluOp`] over `(gate, up, dy)`: `(2, ...)`, `d gate` then `d up`.
///
/// With `e = exp(-g)`, `s = sigmoid(g) = 1 / (e + 1)`, `silu = g / (1 + e)`:
/// `d up = dy · silu`, `d gate = (dy · up) · (s·(1 − silu) + silu)`, which is
/// `dy · up · s · (1 + g·(1 − s))` as candle's `backprop.rs` writes it, evaluated in its order.
#[derive(Debug, Clone, Copy)]
struct SwiGluBackward;

impl CustomOp3 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "herd-swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let gate = contiguous_f32(gate, gate_layout, "swiglu gate")?;
        let up = contiguous_f32(up, up_layout, "swiglu up")?;
        let grad = contiguous_f32(grad, grad_layout, "swiglu gradient")?;
        let mut out = vec![0.0f32; 2 * gate.len()];
        let (d_gate, d_up) = out.split_at_mut(gate.len());
        d_gate
            .par_chunks_mut(TASK_ELEMENTS)
            .zip(d_up.par_chunks_mut(TASK_ELEMENTS))
            .zip(gate.par_chunks(TASK_ELEMENTS))
            .zip(up.par_chunks(TASK_ELEMENTS))
            .zip(grad.par_chunks(TASK_ELEMENTS))
            .for_each(|((((d_gate, d_up), gate), up), grad)| {
                let elements = d_gate.iter_mut().zip(d_up).zip(gate).zip(up).zip(grad);
                for ((((d_gate, d_up), &g), &u), &dy) in elements {
                    let e = (-g).exp();
                    let sigmoid = (e + 1.0).recip();
                    let silu = g / (1.0 + e);
                    *d_gate = (dy * u) * (sigmoid * (1.0 - silu) + silu);
                    *d_up = dy * silu;
                }
            });
        let mut dims = vec![2];
        dims.extend_from_slice(gate_layout.dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// candle's f32 silu (`op.rs`), same expression so the same rounding.
#[inline]
fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}
