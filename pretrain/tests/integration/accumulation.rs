use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use pretrain::run;
use training::read_metrics;

use crate::{resolved, tiny_config};

fn final_weights(directory: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        directory.join("checkpoints/step-00000002/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

/// Two updates of 8 sequences, as one micro-batch of 8 and as 8 micro-batches of 1: the same
/// windows in the same order, so the same loss, gradient norm and weights within 1e-6.
#[test]
fn one_micro_batch_of_eight_equals_eight_of_one() {
    let whole_dir = tempfile::tempdir().unwrap();
    let split_dir = tempfile::tempdir().unwrap();
    let configure = |directory: &Path, batch_size, gradient_accumulation| {
        let mut config = tiny_config(directory);
        config.training.steps = 2;
        config.training.warmup_steps = 0;
        // With ε = 1e-8 Adam's first updates are nearly lr·sign(g): a coordinate whose gradient
        // is ~1e-9 moves by lr·g/(|g| + ε), so float rounding between a batch of 8 and eight
        // batches of 1 (loss equal to 5e-7 relative) shows up as weight differences of 3e-5 at
        // lr 1e-2. ε = 1e-4 keeps the update a smooth function of the gradient, so what is
        // compared is the accumulated gradient, which is the invariant.
        config.training.epsilon = 1e-4;
        config.training.batch_size = batch_size;
        config.training.gradient_accumulation = gradient_accumulation;
        config
    };
    let whole = configure(whole_dir.path(), 8, 1);
    run(&whole, &resolved(&whole)).unwrap();
    let split = configure(split_dir.path(), 1, 8);
    run(&split, &resolved(&split)).unwrap();

    let whole_weights = final_weights(whole_dir.path());
    let split_weights = final_weights(split_dir.path());
    let mut largest = 0f32;
    for (name, tensor) in &whole_weights {
        let difference = (tensor - &split_weights[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        largest = largest.max(difference);
    }
    let whole_metrics = read_metrics(&whole_dir.path().join("metrics.jsonl")).unwrap();
    let split_metrics = read_metrics(&split_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(whole_metrics.len(), 2);
    for (left, right) in whole_metrics.iter().zip(&split_metrics) {
        assert_eq!(left.tokens, right.tokens);
        assert!(
            (left.loss - right.loss).abs() < 1e-6,
            "{} vs {}",
            left.loss,
            right.loss
        );
        assert!(
            (left.grad_norm - right.grad_norm).abs() < 1e-6,
            "{} vs {}",
            left.grad_norm,
            right.grad_norm
        );
    }
    assert!(largest < 1e-6, "largest weight difference {largest}");
}
