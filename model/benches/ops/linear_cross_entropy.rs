//! Chunked linear cross-entropy against the composed candle ops (full logits, f32 log-softmax,
//! gather), forward and backward of `Σ log p` for 2048 rows of hidden size 384: a vocabulary of
//! 768 (the tiny test models) and of 32,000 (Llama 2's), where the full logits are 250 MiB.

use candle_core::{Device, Tensor, Var};
use criterion::{BenchmarkId, Criterion};
use model::ops::linear_cross_entropy::{fused, reference};

/// `fused` or `reference`: `(hidden, weight, targets) → log-probs`.
type Implementation = fn(&Tensor, &Tensor, &Tensor) -> model::Result<Tensor>;

const ROWS: usize = 2048;
const HIDDEN: usize = 384;

#[expect(
    clippy::expect_used,
    reason = "a benchmark stops at its first failure, with its message"
)]
pub fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_cross_entropy");
    group.sample_size(10);
    let device = Device::Cpu;
    for vocab in [768, 32_000] {
        // Final hidden states after RMSNorm are O(1); a 0.02-initialised head.
        let hidden =
            Var::from_tensor(&Tensor::randn(0f32, 1.0, (ROWS, HIDDEN), &device).expect("hidden"))
                .expect("var");
        let weight =
            Var::from_tensor(&Tensor::randn(0f32, 0.02, (vocab, HIDDEN), &device).expect("weight"))
                .expect("var");
        let ids: Vec<u32> = (0..ROWS).map(|row| (row * 7919 % vocab) as u32).collect();
        let targets = Tensor::from_vec(ids, ROWS, &device).expect("targets");
        let implementations: [(&str, Implementation); 2] =
            [("fused", fused), ("reference", reference)];
        for (name, implementation) in implementations {
            group.bench_function(BenchmarkId::new(name, vocab), |b| {
                b.iter(|| {
                    let log_probs =
                        implementation(hidden.as_tensor(), weight.as_tensor(), &targets)
                            .expect("forward");
                    let gradients = log_probs
                        .sum_all()
                        .and_then(|loss| loss.backward())
                        .expect("backward");
                    std::hint::black_box(gradients);
                });
            });
        }
    }
    group.finish();
}
