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
