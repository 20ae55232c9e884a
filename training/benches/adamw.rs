//! One `AdamW` step over a 10.2M-parameter set (six f32 tensors of 1.7M, half of them decaying),
//! the fused pass beside the reference (composed candle ops) on the same state and gradients:
//! `cargo bench -p herd-training --bench adamw`.

#![expect(clippy::unwrap_used, reason = "a benchmark stops at the first failure")]

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use training::optimizer::UpdateKernel;
use training::{AdamW, AdamWConfig, Rng};

const TENSORS: usize = 6;
const ROWS: usize = 1_024;
const COLUMNS: usize = 1_660;

fn random_tensor(rng: &mut Rng, scale: f32) -> Tensor {
    let values = (0..ROWS * COLUMNS)
        .map(|_| (rng.next_f32() * 2.0 - 1.0) * scale)
        .collect();
    Tensor::from_vec(values, (ROWS, COLUMNS), &Device::Cpu).unwrap()
}

/// An optimizer over the parameter set (every moment already non-zero after one step) and a
/// gradient for every parameter.
fn setup(kernel: UpdateKernel) -> (AdamW, GradStore) {
    let mut rng = Rng::from_seed(7);
    let vars: Vec<(String, Var)> = (0..TENSORS)
        .map(|index| {
            let var = Var::from_tensor(&random_tensor(&mut rng, 0.02)).unwrap();
            (format!("model.layers.{index}.mlp.up_proj.weight"), var)
        })
        .collect();
    let mut gradients = GradStore::default();
    for (_, var) in &vars {
        gradients.insert(var.as_tensor(), random_tensor(&mut rng, 1e-3));
    }
    let mut optimizer = AdamW::new(vars, AdamWConfig::default(), |name: &str| {
        name.contains("layers.0") || name.contains("layers.2") || name.contains("layers.4")
    })
    .unwrap();
    optimizer.step_with(&gradients, 1e-4, kernel).unwrap();
    (optimizer, gradients)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("adamw_step_10m");
    group.sample_size(10);
    group.throughput(Throughput::Elements((TENSORS * ROWS * COLUMNS) as u64));
    for (label, kernel) in [
        ("fused", UpdateKernel::Fused),
        ("reference", UpdateKernel::Reference),
    ] {
        let (mut optimizer, gradients) = setup(kernel);
        group.bench_function(label, |b| {
            b.iter(|| optimizer.step_with(&gradients, 1e-4, kernel).unwrap());
        });
    }
    group.finish();
}

criterion_group!(adamw, bench);
criterion_main!(adamw);
