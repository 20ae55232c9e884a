//! SFT on the shipped sample conversations with a tiny model made here: the held-out loss falls
//! clearly, and a run interrupted after a checkpoint and resumed ends bitwise identical to an
//! uninterrupted one.

#![expect(clippy::expect_used, reason = "test helpers stop at the first failure")]

use std::path::{Path, PathBuf};

use candle_core::Device;
use model::{Llama, LlamaConfig, SaveOptions, save, varmap_tensors};
use sft::SftConfig;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A freshly initialised tiny Llama saved as an HF directory with the tiny test tokenizer.
fn tiny_model(directory: &Path) {
    let tokenizer = repository().join("datasets/tests/fixtures/tiny-tokenizer.json");
    let vocabulary = datasets::tokenizer::Llama3Tokenizer::from_file(&tokenizer)
        .expect("tiny tokenizer")
        .vocab_size();
    let config = LlamaConfig {
        max_position_embeddings: 2048,
        ..LlamaConfig::tiny(vocabulary)
    };
    let (_, var_map) = Llama::from_scratch(&config, 7, &Device::Cpu).expect("tiny model");
    save(
        directory,
        &config,
        &varmap_tensors(&var_map),
        &SaveOptions::default(),
    )
    .expect("save");
    std::fs::copy(&tokenizer, directory.join("tokenizer.json")).expect("copy tokenizer");
}

fn config(model: &Path, output: &Path, steps: u64) -> SftConfig {
    let mut config = SftConfig::tiny(model.to_path_buf(), output.to_path_buf());
    config.data.train = vec![repository().join("data/samples/conversations.jsonl")];
    // 26 of the 40 samples fit in 512 tiny-tokenizer tokens; the rest are skipped (and reported).
    config.data.sequence_length = 512;
    config.training.batch_size = 1;
    config.training.learning_rate = 1e-2;
    config.training.steps = steps;
    config
}

#[test]
fn held_out_loss_falls_clearly() {
    let directory = tempfile::tempdir().unwrap();
    let model = directory.path().join("model");
    tiny_model(&model);
    let output = directory.path().join("run");
    let summary = sft::run(&config(&model, &output, 60), "").expect("sft runs");
    let before = summary.held_out_loss_before.expect("held-out data");
    let after = summary.held_out_loss_after.expect("held-out data");
    eprintln!("held-out loss {before:.3} → {after:.3}");
    assert!(
        after < 0.8 * before,
        "held-out loss {before:.3} → {after:.3}"
    );
    assert!(summary.train_conversations >= 20);
    assert!(output.join("final/model.safetensors").is_file());
    assert!(output.join("final/tokenizer.json").is_file());
    assert!(output.join("loss.svg").is_file());
    let metrics = training::read_metrics(&output.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 60);
}

#[test]
fn resumed_run_is_bitwise_identical() {
    let directory = tempfile::tempdir().unwrap();
    let model = directory.path().join("model");
    tiny_model(&model);
    let mut settings = config(&model, &directory.path().join("whole"), 6);
    settings.training.checkpoint_every = 3;
    settings.training.eval_every = 3;
    settings.training.gradient_accumulation = 2;
    sft::run(&settings, "").expect("uninterrupted run");

    let interrupted = directory.path().join("interrupted");
    settings.output_dir.clone_from(&interrupted);
    sft::run(&settings, "").expect("first run");
    // Lose everything after the step-3 checkpoint, as a kill right after it would.
    std::fs::remove_dir_all(interrupted.join("checkpoints/step-00000006")).unwrap();
    std::fs::remove_dir_all(interrupted.join("final")).unwrap();
    sft::run(&settings, "").expect("resumed run");

    let whole = std::fs::read(directory.path().join("whole/final/model.safetensors")).unwrap();
    let resumed = std::fs::read(interrupted.join("final/model.safetensors")).unwrap();
    assert!(
        whole == resumed,
        "resumed weights differ from the uninterrupted run"
    );
    let whole_metrics =
        training::read_metrics(&directory.path().join("whole/metrics.jsonl")).unwrap();
    let resumed_metrics = training::read_metrics(&interrupted.join("metrics.jsonl")).unwrap();
    let losses = |lines: &[training::StepMetrics]| {
        lines
            .iter()
            .map(|line| (line.step, line.loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&whole_metrics), losses(&resumed_metrics));
}

#[test]
fn every_sft_config_parses() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repository().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("sft-")
            && path
                .extension()
                .is_some_and(|extension| extension == "toml")
        {
            let (config, resolved) = training::config::load_config::<SftConfig>(&path, &[])
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            config
                .training
                .schedule()
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(resolved.contains("sequence_length"));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configs/sft-*.toml");
}

#[test]
fn unknown_config_keys_are_refused_by_name() {
    let path = repository().join("configs/sft-tiny.toml");
    let error =
        training::config::load_config::<SftConfig>(&path, &["training.lerning_rate=1".to_owned()])
            .unwrap_err()
            .to_string();
    assert!(error.contains("lerning_rate"), "{error}");
}

#[test]
fn lora_trains_adapters_only_and_merges_them() {
    let directory = tempfile::tempdir().unwrap();
    let model = directory.path().join("model");
    tiny_model(&model);
    // LoRA adapts a trained model: over a random base, the frozen final norm and LM head (init std
    // 0.02) cap the logits near uniform whatever the adapters do. So first a short full fine-tune
    // on all samples gives the base; then the adapters must fit two conversations (trained and
    // measured on the same pair).
    let base_run = directory.path().join("base");
    let mut base_settings = config(&model, &base_run, 40);
    base_settings.training.learning_rate = 1e-2;
    sft::run(&base_settings, "").expect("base fine-tune");
    let model = base_run.join("final");
    let samples =
        std::fs::read_to_string(repository().join("data/samples/conversations.jsonl")).unwrap();
    let small = directory.path().join("two.jsonl");
    std::fs::write(
        &small,
        samples.lines().take(2).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let output = directory.path().join("lora");
    let mut settings = config(&model, &output, 30);
    settings.data.train = vec![small.clone()];
    settings.data.held_out = vec![small];
    settings.training.learning_rate = 2e-2;
    settings.lora = Some(sft::config::LoraSettings {
        rank: 8,
        alpha: 16.0,
        dropout: 0.05,
        target_modules: [
            "q_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        .map(str::to_owned)
        .to_vec(),
    });
    settings.training.checkpoint_every = 30;
    let summary = sft::run(&settings, "").expect("LoRA sft runs");
    let (before, after) = (
        summary.held_out_loss_before.unwrap(),
        summary.held_out_loss_after.unwrap(),
    );
    eprintln!("LoRA loss on its two conversations {before:.3} → {after:.3}");
    // Every step sees one of the two conversations: each one's loss must fall step after step.
    // (Measured 2026-11-23: 4.74 → 4.66 and 4.38 → 4.25 in 30 steps — slower than full
    // fine-tuning on a model this small; not yet compared with PEFT.)
    let losses: Vec<f64> = training::read_metrics(&output.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|line| line.loss)
        .collect();
    let (high, low): (Vec<f64>, Vec<f64>) = losses.iter().partition(|&&loss| loss > 4.5);
    for row in [&high, &low] {
        assert!(row.len() >= 10, "{losses:.3?}");
        assert!(row[row.len() - 1] < row[0] - 0.05, "{losses:.3?}");
    }
    assert!(after < before - 0.05, "LoRA loss {before:.3} → {after:.3}");

    let load = |file: PathBuf| candle_core::safetensors::load(file, &Device::Cpu).unwrap();
    let resumable = load(output.join("checkpoints/step-00000030/model.safetensors"));
    assert!(!resumable.is_empty());
    assert!(
        resumable
            .keys()
            .all(|name| name.contains(".lora_A.") || name.contains(".lora_B.")),
        "the resumable checkpoint should hold adapters only: {:?}",
        resumable.keys().collect::<Vec<_>>()
    );
    let base = load(model.join("model.safetensors"));
    let merged = load(output.join("final/model.safetensors"));
    assert_eq!(
        base.keys().collect::<std::collections::BTreeSet<_>>(),
        merged.keys().collect::<std::collections::BTreeSet<_>>()
    );
    let differs = |name: &str| {
        (&base[name] - &merged[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    };
    assert!(!differs("model.embed_tokens.weight"), "the base is frozen");
    assert!(
        !differs("model.layers.0.self_attn.k_proj.weight"),
        "k_proj has no adapter"
    );
    assert!(
        differs("model.layers.0.self_attn.q_proj.weight"),
        "the q_proj adapter is merged"
    );
    assert!(
        differs("model.layers.1.mlp.down_proj.weight"),
        "the down_proj adapter is merged"
    );
}
