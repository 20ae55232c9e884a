//! `rms_norm`, `swiglu` and `rotary`, fused beside reference, forward and backward together (the
//! training step's cost), at the model's benchmark shapes: 4 sequences of 512 tokens, hidden 384,
//! intermediate 1024, 6 heads of 64.

use candle_core::{Device, Tensor, Var};
use criterion::{BenchmarkId, Criterion};
use model::ops::{Kernels, rms_norm, rope, swiglu};

/// Deterministic values uniform in `[-1, 1)` as a trainable `Var`.
fn var(dims: &[usize], seed: u64) -> candle_core::Result<Var> {
    let count: usize = dims.iter().product();
    let mut state = seed.wrapping_add(1);
    let values: Vec<f32> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(values, dims, &Device::Cpu)?)
}

/// Forward, then backward from an all-ones upstream gradient.
fn step(output: model::Result<Tensor>) {
    let gradients = output.and_then(|y| Ok(y.backward()?));
    if let Err(error) = gradients {
        panic!("benchmark step failed: {error}");
    }
}

/// The cos/sin tables `(batch, 1, seq, head_dim)` for positions `0..seq` in every row.
fn rope_tables(batch: usize, seq: usize, head_dim: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let angles: Vec<f32> = (0..batch * seq)
        .flat_map(|token| {
            let position = (token % seq) as f32;
            (0..head_dim)
                .map(move |i| position / 10_000f32.powf((2 * (i % half)) as f32 / head_dim as f32))
        })
        .collect();
    let angles = Tensor::from_vec(angles, (batch, 1, seq, head_dim), &Device::Cpu)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// The three groups, each op by both implementations on the same inputs.
///
/// # Panics
/// If building the inputs or running an op fails.
pub fn bench(c: &mut Criterion) {
    if let Err(error) = bench_all(c) {
        panic!("benchmark setup failed: {error}");
    }
}

fn bench_all(c: &mut Criterion) -> candle_core::Result<()> {
    let kernels = [Kernels::Reference, Kernels::Fused];

    let mut group = c.benchmark_group("rms_norm fwd+bwd (2048, 384)");
    group.sample_size(10);
    let (x, weight) = (var(&[4 * 512, 384], 1)?, var(&[384], 2)?);
    for kernels in kernels {
        group.bench_function(BenchmarkId::from_parameter(format!("{kernels:?}")), |b| {
            b.iter(|| step(rms_norm::rms_norm(&x, &weight, 1e-5, kernels)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("swiglu fwd+bwd (2048, 1024)");
    group.sample_size(10);
    let (gate, up) = (var(&[4 * 512, 1024], 3)?, var(&[4 * 512, 1024], 4)?);
    for kernels in kernels {
        group.bench_function(BenchmarkId::from_parameter(format!("{kernels:?}")), |b| {
            b.iter(|| step(swiglu::swiglu(&gate, &up, kernels)));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("rotary fwd+bwd (4, 6, 512, 64)");
    group.sample_size(10);
    let x = var(&[4, 6, 512, 64], 5)?;
    let (cos, sin) = rope_tables(4, 512, 64)?;
    for kernels in kernels {
        group.bench_function(BenchmarkId::from_parameter(format!("{kernels:?}")), |b| {
            b.iter(|| step(rope::rotary(&x, &cos, &sin, kernels)));
        });
    }
    group.finish();
    Ok(())
}
