//! `ops::attention`: fused (FlashAttention-2 style) against reference, forward and
//! forward + backward, at the training benchmark shape (batch 4, 6 heads over 2 key/value heads,
//! 512 causal tokens, head dim 64) and at a decode step (batch 8, 9 heads over 3, one query over
//! 256 cached keys, head dim 64).

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use criterion::Criterion;
use model::ops::attention::{AttentionLayout, fused, reference};

type Implementation = fn(&Tensor, &Tensor, &Tensor, &AttentionLayout) -> model::Result<Tensor>;

/// Query, key and value as variables (so the backward reaches them), and a causal layout.
struct Inputs {
    query: Var,
    key: Var,
    value: Var,
    layout: AttentionLayout,
}

/// Deterministic values in `[-1, 1)`.
fn values(shape: (usize, usize, usize, usize), salt: usize) -> candle_core::Result<Var> {
    let count = shape.0 * shape.1 * shape.2 * shape.3;
    let data: Vec<f32> = (0..count)
        .map(|i| ((i * 7919 + salt * 104_729) % 2000) as f32 / 1000.0 - 1.0)
        .collect();
    Var::from_tensor(&Tensor::from_vec(data, shape, &Device::Cpu)?)
}

fn inputs(
    batch: usize,
    (heads, kv_heads): (usize, usize),
    (queries, keys): (usize, usize),
    head_dim: usize,
) -> model::Result<Inputs> {
    Ok(Inputs {
        query: values((batch, heads, queries, head_dim), 1)?,
        key: values((batch, kv_heads, keys, head_dim), 2)?,
        value: values((batch, kv_heads, keys, head_dim), 3)?,
        layout: AttentionLayout::new(batch, keys, vec![0; batch * keys])?,
    })
}

fn forward(implementation: Implementation, inputs: &Inputs) -> model::Result<Tensor> {
    implementation(
        inputs.query.as_tensor(),
        inputs.key.as_tensor(),
        inputs.value.as_tensor(),
        &inputs.layout,
    )
}

fn forward_backward(
    implementation: Implementation,
    inputs: &Inputs,
) -> model::Result<candle_core::backprop::GradStore> {
    Ok(forward(implementation, inputs)?.sum_all()?.backward()?)
}

#[expect(
    clippy::expect_used,
    reason = "a benchmark stops at the first failure, with its message"
)]
pub fn bench(c: &mut Criterion) {
    let training = inputs(4, (6, 2), (512, 512), 64).expect("training inputs");
    let decode = inputs(8, (9, 3), (1, 256), 64).expect("decode inputs");
    let mut group = c.benchmark_group("attention");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let implementations: [(&str, Implementation); 2] = [("fused", fused), ("reference", reference)];
    for (name, implementation) in implementations {
        group.bench_function(format!("{name}/forward/b4_h6kv2_t512_d64"), |b| {
            b.iter(|| black_box(forward(implementation, &training).expect("forward")));
        });
        group.bench_function(format!("{name}/forward_backward/b4_h6kv2_t512_d64"), |b| {
            b.iter(|| black_box(forward_backward(implementation, &training).expect("backward")));
        });
        group.bench_function(format!("{name}/decode/b8_h9kv3_q1_k256_d64"), |b| {
            b.iter(|| black_box(forward(implementation, &decode).expect("decode")));
        });
    }
    group.finish();
}
