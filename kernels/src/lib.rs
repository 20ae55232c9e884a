//! herd-kernels: the only crate of herd where `unsafe` is allowed (the workspace forbids it
//! everywhere else). It holds safe wrappers whose every `unsafe` block carries a `SAFETY:` comment
//! saying why it holds; callers never see a raw pointer.
//!
//! - [`matmul`]: a bounds-checked strided f32 matrix product over the `gemm` crate — the kernel
//!   candle's own CPU matmul calls — so that the fused ops of `herd-model` (tiled attention,
//!   chunked linear cross-entropy) multiply blocks in place without a candle tensor per tile.
//! - [`MappedSafetensors`]: a checkpoint file memory-mapped instead of read whole, so loading a
//!   sharded 8B checkpoint never holds a file's bytes and its tensors at once.
//!
//! The CUDA kernels of the fused ops will live here too.

mod mapped;
mod matmul;

pub use mapped::MappedSafetensors;
pub use matmul::{Matrix, MatrixMut, ShapeError, matmul};
