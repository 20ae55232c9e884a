//! The ops layer: every hot operation of the model behind one function with two implementations.
//!
//! - **reference**: the plain composition of candle ops the model was first written with —
//!   readable, exact against transformers, differentiable through candle's autograd. It stays as
//!   the test oracle (as llm.c keeps `train_gpt2.c` beside its CUDA kernels).
//! - **fused**: one pass over the data per direction, as a candle `CustomOp` with its own
//!   backward (`bwd`), so no op herd trains through cuts the gradient (the candle fast paths
//!   `ops::rms_norm`, `softmax_last_dim`, `rotary_emb::rope*` have no backward,
//!   `shared/research/candle.md` §1.1). The CPU kernels are here (matrix products through
//!   `herd-kernels`); a CUDA kernel plugs in as the op's `cuda_fwd` and a `bwd` that dispatches
//!   on the device. Where a fused kernel does not exist for an input (a device or dtype), the
//!   function falls back to the reference and says so in its doc.
//!
//! Every fused op has a test of values and gradients against its reference (`tests/integration/
//! ops.rs`) and a criterion benchmark beside it (`benches/ops.rs`).

pub mod attention;
pub mod linear_cross_entropy;
pub mod rms_norm;
pub mod rope;
pub mod swiglu;

use candle_core::{CpuStorage, Layout};

/// Which implementation of the ops a model runs. Chosen at load time and kept for every forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The composed candle ops: the oracle the fused path is tested against.
    Reference,
    /// The fused kernels with their own backward passes.
    #[default]
    Fused,
}

/// The f32 elements of a contiguous CPU tensor, or an error naming `what` (`CustomOp` inputs).
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => {
            candle_core::bail!("{what}: the fused op needs a contiguous tensor, got {layout:?}")
        }
    }
}
