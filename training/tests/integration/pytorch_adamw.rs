//! herd's `AdamW` against `torch.optim.AdamW` (foreach=False), replaying the gradients recorded by
//! `dev/adamw_fixture.py`: two parameter groups, a changing learning rate, and a step where one
//! parameter has no gradient. On CPU the results are bitwise identical: herd follows torch's
//! order of operations, including a true division where a reciprocal would be 1 ulp off. Each
//! update kernel (fused, reference, and `step`'s choice) is replayed on its own.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use serde::Deserialize;
use training::optimizer::UpdateKernel;
use training::{AdamW, AdamWConfig};

#[derive(Deserialize)]
struct Fixture {
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    weight_decay: f64,
    decays: BTreeMap<String, bool>,
    shapes: BTreeMap<String, Vec<usize>>,
    initial: BTreeMap<String, Vec<f32>>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    learning_rate: f64,
    gradients: BTreeMap<String, Option<Vec<f32>>>,
    parameters_after: BTreeMap<String, Vec<f32>>,
}

#[test]
fn matches_pytorch_adamw_step_by_step() {
    replay(None);
}

#[test]
fn fused_kernel_matches_pytorch_adamw_step_by_step() {
    replay(Some(UpdateKernel::Fused));
}

#[test]
fn reference_kernel_matches_pytorch_adamw_step_by_step() {
    replay(Some(UpdateKernel::Reference));
}

/// Replays the fixture through `AdamW::step` (`None`) or `step_with(kernel)`.
fn replay(kernel: Option<UpdateKernel>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/adamw_pytorch.json"
    );
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vars: BTreeMap<String, Var> = fixture
        .initial
        .iter()
        .map(|(name, values)| {
            let var =
                Var::from_vec(values.clone(), fixture.shapes[name].clone(), &Device::Cpu).unwrap();
            (name.clone(), var)
        })
        .collect();
    let config = AdamWConfig {
        beta1: fixture.beta1,
        beta2: fixture.beta2,
        epsilon: fixture.epsilon,
        weight_decay: fixture.weight_decay,
    };
    let decays = fixture.decays.clone();
    let mut optimizer = AdamW::new(
        vars.iter().map(|(name, var)| (name.clone(), var.clone())),
        config,
        |name| decays[name],
    )
    .unwrap();

    for (index, step) in fixture.steps.iter().enumerate() {
        let mut gradients = GradStore::default();
        for (name, values) in &step.gradients {
            if let Some(values) = values {
                let gradient =
                    Tensor::from_vec(values.clone(), fixture.shapes[name].clone(), &Device::Cpu)
                        .unwrap();
                gradients.insert(vars[name].as_tensor(), gradient);
            }
        }
        match kernel {
            None => optimizer.step(&gradients, step.learning_rate),
            Some(kernel) => optimizer.step_with(&gradients, step.learning_rate, kernel),
        }
        .unwrap();
        for (name, expected) in &step.parameters_after {
            let actual = vars[name]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (position, (got, want)) in actual.iter().zip(expected).enumerate() {
                assert!(
                    got.to_bits() == want.to_bits(),
                    "{kernel:?} step {index} {name}[{position}]: {got} vs PyTorch {want}"
                );
            }
        }
    }
}
