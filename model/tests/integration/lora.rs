//! `LoRA`: the adapted model starts equal to the base, merging `W + scale · B A` gives the adapted
//! model's logits, gradients reach exactly the adapter `Var`s, and dropout is seeded.

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use model::lora::set_dropout_seed;
use model::{Llama, LlamaConfig, LoraConfig, Positions, apply_lora};

use crate::{max_abs_difference, token_ids};

const VOCAB: usize = 96;

fn all_modules() -> Vec<String> {
    model::lora::TARGET_MODULES
        .iter()
        .map(|&name| name.to_owned())
        .collect()
}

fn lora_config(target_modules: Vec<String>) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules,
        seed: 5,
    }
}

/// A tiny base model as trainable `Var`s (large init), and the `VarMap` holding them.
fn base(tied: bool) -> (Llama, VarMap) {
    let mut config = LlamaConfig::tiny(VOCAB);
    config.tie_word_embeddings = tied;
    let (model, varmap) = Llama::from_scratch(&config, 41, &Device::Cpu).expect("model");
    model::init::initialize(&varmap, 41, 0.2).expect("init");
    (model, varmap)
}

fn input() -> (Tensor, Positions) {
    let ids = Tensor::from_vec(token_ids(14, VOCAB, 12), (2, 7), &Device::Cpu).expect("ids");
    (ids, Positions::causal(2, 7))
}

fn logits(model: &Llama) -> Tensor {
    let (ids, positions) = input();
    model.forward(&ids, &positions).expect("forward").logits
}

fn loss(model: &Llama) -> Tensor {
    let targets = input().0.flatten_all().expect("targets");
    // (2, 7, vocab) -> (14, vocab)
    let logits = logits(model).reshape((14, VOCAB)).expect("reshape");
    candle_nn::loss::cross_entropy(&logits, &targets).expect("loss")
}

/// Sets every `lora_B` to seeded values of size ~0.1.
fn perturb_b(adapters: &VarMap) {
    for (i, (name, var)) in adapters.data().lock().expect("lock").iter().enumerate() {
        if name.contains("lora_B") {
            let count = var.elem_count();
            let values: Vec<f32> = token_ids(count, 201, i as u32)
                .into_iter()
                .map(|v| (v as f32 - 100.0) * 1e-3)
                .collect();
            let value = Tensor::from_vec(values, var.shape(), &Device::Cpu).expect("values");
            var.set(&value).expect("set");
        }
    }
}

fn gradient_magnitude(gradients: &candle_core::backprop::GradStore, var: &Var) -> Option<f32> {
    gradients.get(var).map(|g| {
        g.abs()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .expect("sum")
    })
}

#[test]
fn the_adapted_model_starts_equal_to_the_base() {
    for tied in [false, true] {
        let (base, _) = base(tied);
        let mut adapted = base.clone();
        let adapters = apply_lora(&mut adapted, &lora_config(all_modules())).expect("lora");
        // 2 layers × 7 modules × (A, B).
        assert_eq!(adapters.all_vars().len(), 28);
        assert!(
            max_abs_difference(&logits(&base), &logits(&adapted)) <= 0.0,
            "not bit-equal"
        );
    }
}

#[test]
fn merged_weights_give_the_adapted_logits() {
    for tied in [false, true] {
        let (base, _) = base(tied);
        let mut adapted = base.clone();
        let adapters = apply_lora(&mut adapted, &lora_config(all_modules())).expect("lora");
        perturb_b(&adapters);
        let moved = max_abs_difference(&logits(&base), &logits(&adapted));
        assert!(
            moved > 1e-2,
            "the update changed the logits by only {moved}"
        );

        let merged = adapted.merged_tensors().expect("merge");
        let shapes = Llama::parameter_shapes(base.config());
        assert_eq!(merged.len(), shapes.len());
        for (name, shape) in shapes {
            assert_eq!(merged[&name].dims(), shape.as_slice(), "{name}");
        }
        let vb = candle_nn::VarBuilder::from_tensors(merged, candle_core::DType::F32, &Device::Cpu);
        let plain = Llama::new(&vb, base.config()).expect("merged model");
        let difference = max_abs_difference(&logits(&plain), &logits(&adapted));
        eprintln!("lora tied={tied}: max |merged - adapted| = {difference:.2e}");
        assert!(difference <= 1e-5, "{difference}");
    }
}

#[test]
fn gradients_reach_exactly_the_adapters() {
    let (base, base_vars) = base(false);
    let mut adapted = base;
    let adapters = apply_lora(&mut adapted, &lora_config(all_modules())).expect("lora");
    set_dropout_seed(&mut adapted, Some(1));

    // Step one, B = 0: dL/dB ≠ 0, but dL/dA = (dL/dh · B) … = 0 exactly.
    let gradients = loss(&adapted).backward().expect("backward");
    for (name, var) in base_vars.data().lock().expect("lock").iter() {
        assert!(gradients.get(var).is_none(), "frozen {name} has a gradient");
    }
    for (name, var) in adapters.data().lock().expect("lock").iter() {
        let magnitude = gradient_magnitude(&gradients, var).expect("gradient");
        if name.contains("lora_A") {
            assert!(magnitude == 0.0, "{name}: {magnitude}");
        } else {
            assert!(magnitude > 0.0, "{name} has an all-zero gradient");
        }
    }

    // Once B ≠ 0 every adapter matrix gets a gradient.
    perturb_b(&adapters);
    let gradients = loss(&adapted).backward().expect("backward");
    for (name, var) in adapters.data().lock().expect("lock").iter() {
        let magnitude = gradient_magnitude(&gradients, var).expect("gradient");
        assert!(magnitude > 0.0, "{name} has an all-zero gradient");
    }
}

#[test]
fn dropout_is_seeded_and_off_without_a_seed() {
    let (base, _) = base(false);
    let mut adapted = base;
    let adapters = apply_lora(&mut adapted, &lora_config(all_modules())).expect("lora");
    perturb_b(&adapters);
    let evaluation = logits(&adapted);
    set_dropout_seed(&mut adapted, Some(7));
    let first = logits(&adapted);
    assert!(
        max_abs_difference(&first, &logits(&adapted)) <= 0.0,
        "not bit-equal"
    );
    assert!(max_abs_difference(&first, &evaluation) > 1e-4);
    set_dropout_seed(&mut adapted, Some(8));
    assert!(max_abs_difference(&first, &logits(&adapted)) > 1e-4);
    set_dropout_seed(&mut adapted, None);
    assert!(
        max_abs_difference(&evaluation, &logits(&adapted)) <= 0.0,
        "not bit-equal"
    );
}

#[test]
fn only_the_targeted_modules_get_adapters_with_peft_names() {
    let (mut model, _) = base(false);
    let targets = vec!["q_proj".to_owned(), "v_proj".to_owned()];
    let adapters = apply_lora(&mut model, &lora_config(targets)).expect("lora");
    let mut names: Vec<String> = adapters
        .data()
        .lock()
        .expect("lock")
        .keys()
        .cloned()
        .collect();
    names.sort();
    assert_eq!(names.len(), 8);
    assert_eq!(
        names[0],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    let Err(error) = apply_lora(&mut model, &lora_config(vec!["qkv".to_owned()])) else {
        panic!("an unknown target module was accepted");
    };
    assert!(error.to_string().contains("`qkv`"), "{error}");
}
