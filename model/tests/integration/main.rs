//! herd-model's integration tests: one binary, one module per subject.

#![expect(
    clippy::expect_used,
    reason = "test helpers stop at the first failure, with its message"
)]

mod checkpoint_io;
mod compute_dtype;
mod config;
mod generation;
mod gradients;
mod lora;
mod masking;
mod ops_attention;
mod ops_linear_cross_entropy;
mod ops_norm_rope_swiglu;
mod parity;

use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// `model/tests/fixtures/<name>`, written by `dev/model_fixtures.py`.
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Largest absolute value of a tensor, as f32.
fn max_abs(tensor: &Tensor) -> f32 {
    tensor
        .to_dtype(candle_core::DType::F32)
        .expect("f32")
        .abs()
        .expect("abs")
        .flatten_all()
        .expect("flatten")
        .max(0)
        .expect("max")
        .to_scalar::<f32>()
        .expect("scalar")
}

/// Largest absolute elementwise difference of two same-shaped tensors.
fn max_abs_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_abs(&(a - b).expect("subtract"))
}

/// Deterministic pseudo-random token ids in `0..vocab`.
fn token_ids(count: usize, vocab: usize, salt: u32) -> Vec<u32> {
    (0..count as u32)
        .map(|i| {
            (i.wrapping_mul(2_654_435_761)
                .wrapping_add(salt.wrapping_mul(40_503))
                >> 7)
                % vocab as u32
        })
        .collect()
}

/// `ids` as a `(1, len)` u32 tensor on the CPU.
fn row(ids: &[u32]) -> Tensor {
    Tensor::new(ids, &Device::Cpu)
        .expect("tensor")
        .unsqueeze(0)
        .expect("unsqueeze")
}
