//! Saving and loading HF checkpoint directories: round trips give bit-identical logits, and a
//! missing, extra or mis-shaped tensor is an error that names it, its file and the shapes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use model::{Checkpoint, Llama, LlamaConfig, Positions, SaveOptions, save, varmap_tensors};

use crate::{fixture, row, token_ids};

fn logits(model: &Llama, ids: &[u32]) -> Vec<f32> {
    model
        .forward(&row(ids), &Positions::causal(1, ids.len()))
        .and_then(|output| Ok(output.logits.flatten_all()?.to_vec1::<f32>()?))
        .expect("forward")
}

fn copy_fixture(name: &str, to: &Path) {
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn save_then_load_gives_bit_identical_logits() {
    let original =
        Checkpoint::load(&fixture("gqa4_untied"), DType::F32, &Device::Cpu).expect("load");
    let ids = token_ids(12, 256, 9);
    let expected = logits(&original.model().expect("model"), &ids);
    let single = tempfile::tempdir().expect("tempdir");
    let options = SaveOptions {
        dtype: DType::F32,
        max_shard_bytes: usize::MAX,
    };
    save(single.path(), &original.config, &original.tensors, &options).expect("save");
    let sharded = tempfile::tempdir().expect("tempdir");
    let options = SaveOptions {
        dtype: DType::F32,
        max_shard_bytes: 100_000,
    };
    save(
        sharded.path(),
        &original.config,
        &original.tensors,
        &options,
    )
    .expect("save sharded");
    assert!(sharded.path().join("model.safetensors.index.json").exists());
    assert!(
        sharded
            .path()
            .join("model-00001-of-00005.safetensors")
            .exists()
    );
    for directory in [single.path(), sharded.path()] {
        let reloaded = Checkpoint::load(directory, DType::F32, &Device::Cpu).expect("reload");
        assert_eq!(reloaded.config, original.config);
        assert_eq!(logits(&reloaded.model().expect("model"), &ids), expected);
    }
}

#[test]
fn trained_varmap_round_trips_and_stays_trainable() {
    let mut config = LlamaConfig::tiny(64);
    config.eos_token_ids = vec![7];
    let (model, varmap) = Llama::from_scratch(&config, 3, &Device::Cpu).expect("model");
    let ids = token_ids(8, 64, 1);
    let directory = tempfile::tempdir().expect("tempdir");
    let options = SaveOptions {
        dtype: DType::F32,
        max_shard_bytes: usize::MAX,
    };
    save(
        directory.path(),
        &config,
        &varmap_tensors(&varmap),
        &options,
    )
    .expect("save");
    let checkpoint = Checkpoint::load(directory.path(), DType::F32, &Device::Cpu).expect("load");
    let (reloaded, reloaded_vars) = checkpoint.trainable_model().expect("trainable");
    assert_eq!(logits(&reloaded, &ids), logits(&model, &ids));
    assert_eq!(reloaded_vars.all_vars().len(), varmap.all_vars().len());
    let generation: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(directory.path().join("generation_config.json")).expect("read"),
    )
    .expect("json");
    assert_eq!(generation["eos_token_id"], serde_json::json!([7]));
}

#[test]
fn bf16_save_halves_the_file_and_loads() {
    let original = Checkpoint::load(&fixture("bf16"), DType::F32, &Device::Cpu).expect("load");
    let directory = tempfile::tempdir().expect("tempdir");
    save(
        directory.path(),
        &original.config,
        &original.tensors,
        &SaveOptions::default(),
    )
    .expect("save");
    let reloaded = Checkpoint::load(directory.path(), DType::F32, &Device::Cpu).expect("reload");
    let ids = token_ids(6, 256, 2);
    // The fixture's weights are bf16 values already, so nothing rounds.
    assert_eq!(
        logits(&reloaded.model().expect("model"), &ids),
        logits(&original.model().expect("model"), &ids)
    );
    assert!(reloaded.config.torch_dtype.as_deref() == Some("bfloat16"));
}

/// Rewrites `model.safetensors` of a copy of fixture `gqa4_untied` with `edit` applied.
fn load_edited(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> String {
    let directory = tempfile::tempdir().expect("tempdir");
    copy_fixture("gqa4_untied", directory.path());
    let file = directory.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).expect("load");
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &file).expect("save");
    Checkpoint::load(directory.path(), DType::F32, &Device::Cpu)
        .expect_err("the edited checkpoint must not load")
        .to_string()
}

#[test]
fn missing_tensor_is_named() {
    let message = load_edited(|tensors| {
        tensors.remove("model.layers.1.mlp.up_proj.weight");
    });
    assert!(
        message.contains("tensor `model.layers.1.mlp.up_proj.weight` (shape [128, 64]) is missing"),
        "{message}"
    );
}

#[test]
fn extra_tensor_is_named_with_its_file() {
    let message = load_edited(|tensors| {
        let extra = Tensor::zeros(3, DType::F32, &Device::Cpu).expect("zeros");
        tensors.insert("model.rotary_emb.inv_freq".to_owned(), extra);
    });
    assert!(
        message.contains(
            "model.safetensors: unexpected tensor `model.rotary_emb.inv_freq` (shape [3])"
        ),
        "{message}"
    );
}

#[test]
fn misshaped_tensor_is_named_with_both_shapes() {
    let message = load_edited(|tensors| {
        let wrong = Tensor::zeros((32, 64), DType::F32, &Device::Cpu).expect("zeros");
        tensors.insert("model.layers.0.self_attn.k_proj.weight".to_owned(), wrong);
    });
    assert!(
        message.contains("model.safetensors: tensor `model.layers.0.self_attn.k_proj.weight` has shape [32, 64], expected [16, 64]"),
        "{message}"
    );
}

#[test]
fn tokenizer_files_are_copied_when_present() {
    let (from, to) = (
        tempfile::tempdir().expect("from"),
        tempfile::tempdir().expect("to"),
    );
    std::fs::write(from.path().join("tokenizer.json"), "{}").expect("write");
    let copied = model::copy_tokenizer_files(from.path(), to.path()).expect("copy");
    assert_eq!(copied, [to.path().join("tokenizer.json")]);
}

/// f16 weights (as some HF checkpoints ship) load and compute like the same rounded values in f32.
#[test]
fn f16_checkpoints_load() {
    let original =
        Checkpoint::load(&fixture("mha_classic"), DType::F32, &Device::Cpu).expect("load");
    let rounded: HashMap<String, Tensor> = original
        .tensors
        .iter()
        .map(|(name, tensor)| {
            let half = tensor.to_dtype(DType::F16).expect("to f16");
            (name.clone(), half)
        })
        .collect();
    let directory = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixture("mha_classic").join("config.json"),
        directory.path().join("config.json"),
    )
    .expect("copy config");
    candle_core::safetensors::save(&rounded, directory.path().join("model.safetensors"))
        .expect("save f16");
    let loaded = Checkpoint::load(directory.path(), DType::F32, &Device::Cpu).expect("load f16");
    assert!(
        loaded
            .tensors
            .values()
            .all(|tensor| tensor.dtype() == DType::F32)
    );
    let ids = token_ids(10, 256, 3);
    let from_f16 = logits(&loaded.model().expect("model"), &ids);
    let widened: HashMap<String, Tensor> = rounded
        .iter()
        .map(|(name, tensor)| (name.clone(), tensor.to_dtype(DType::F32).expect("to f32")))
        .collect();
    let reference = tempfile::tempdir().expect("tempdir");
    let options = SaveOptions {
        dtype: DType::F32,
        max_shard_bytes: usize::MAX,
    };
    save(reference.path(), &original.config, &widened, &options).expect("save f32");
    let expected = logits(
        &Checkpoint::load(reference.path(), DType::F32, &Device::Cpu)
            .expect("load")
            .model()
            .expect("model"),
        &ids,
    );
    assert_eq!(from_f16, expected);
}

/// A trunk (no `lm_head`) with an extra head tensor saved by `save_parameters` and read back by
/// `load_parameters`: the hidden states equal the full model's, the config JSON is written as
/// given, `forward` on a trunk is an error, and `load` (which wants `lm_head`) refuses the file.
#[test]
fn a_trunk_with_another_head_round_trips() {
    let original =
        Checkpoint::load(&fixture("gqa4_untied"), DType::F32, &Device::Cpu).expect("load");
    let config = original.config.clone();
    let head_shape = vec![1, config.hidden_size];
    let shapes = |config: &LlamaConfig| {
        let mut shapes = Llama::trunk_parameter_shapes(config);
        shapes.push(("score.weight".to_owned(), vec![1, config.hidden_size]));
        shapes
    };
    assert!(
        !Llama::trunk_parameter_shapes(&config)
            .iter()
            .any(|(name, _)| name == "lm_head.weight")
    );
    let mut tensors = original.tensors.clone();
    tensors.remove("lm_head.weight");
    tensors.insert(
        "score.weight".to_owned(),
        Tensor::ones(head_shape.as_slice(), DType::F32, &Device::Cpu).expect("ones"),
    );
    let directory = tempfile::tempdir().expect("tempdir");
    let mut config_json = config.to_hf_json();
    config_json["architectures"] = serde_json::json!(["LlamaForSequenceClassification"]);
    let options = SaveOptions {
        dtype: DType::F32,
        max_shard_bytes: usize::MAX,
    };
    model::save_parameters(
        directory.path(),
        &config_json,
        &shapes(&config),
        &tensors,
        &options,
    )
    .expect("save trunk");
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(directory.path().join("config.json")).expect("config"),
    )
    .expect("json");
    assert_eq!(
        written["architectures"][0],
        "LlamaForSequenceClassification"
    );
    assert_eq!(written["torch_dtype"], "float32");

    let reloaded = Checkpoint::load_parameters(directory.path(), DType::F32, &Device::Cpu, &shapes)
        .expect("reload");
    assert_eq!(
        reloaded.tensors["score.weight"].dims(),
        head_shape.as_slice()
    );
    let vb =
        candle_nn::VarBuilder::from_tensors(reloaded.tensors.clone(), DType::F32, &Device::Cpu);
    let trunk = Llama::trunk(&vb, &reloaded.config).expect("trunk");
    let full = original.model().expect("model");
    let ids = token_ids(9, 256, 3);
    let positions = Positions::causal(1, ids.len());
    let hidden = |model: &Llama| {
        model
            .hidden_states(&row(&ids), &positions)
            .and_then(|hidden| Ok(hidden.flatten_all()?.to_vec1::<f32>()?))
            .expect("hidden states")
    };
    assert_eq!(hidden(&trunk), hidden(&full));
    let error = trunk.forward(&row(&ids), &positions).unwrap_err();
    assert!(error.to_string().contains("without lm_head"), "{error}");
    let error = Checkpoint::load(directory.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(error.to_string().contains("score.weight"), "{error}");
    // Saving a trunk's tensors with the causal-LM layout names the missing lm_head.
    let error = save(directory.path(), &config, &tensors, &options).unwrap_err();
    assert!(error.to_string().contains("lm_head.weight"), "{error}");
}
