//! `herd dpo` through the built binary: a tiny model trained on (a copy of) the shipped sample
//! preferences with configs/dpo-tiny.toml, the reference log-probs cached beside the data and
//! reused by `herd dpo precompute`, and a re-run that resumes instead of starting over.

#![expect(clippy::expect_used, reason = "test helpers stop at the first failure")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use model::{Llama, LlamaConfig, SaveOptions, save, varmap_tensors};
use serde_json::Value;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn herd(arguments: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(arguments)
        .current_dir(repository())
        .output()
        .expect("herd runs");
    assert!(
        output.status.success(),
        "herd {arguments:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn path(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A freshly initialised tiny Llama with the tiny test tokenizer, as an HF directory.
fn tiny_model(directory: &Path) {
    let tokenizer = repository().join("datasets/tests/fixtures/tiny-tokenizer.json");
    let vocabulary = datasets::tokenizer::Llama3Tokenizer::from_file(&tokenizer)
        .expect("tiny tokenizer")
        .vocab_size();
    let config = LlamaConfig {
        max_position_embeddings: 2048,
        ..LlamaConfig::tiny(vocabulary)
    };
    let (_, var_map) = Llama::from_scratch(&config, 3, &Device::Cpu).expect("tiny model");
    let options = SaveOptions {
        dtype: DType::F32,
        ..SaveOptions::default()
    };
    save(directory, &config, &varmap_tensors(&var_map), &options).expect("save");
    std::fs::copy(&tokenizer, directory.join("tokenizer.json")).expect("copy tokenizer");
}

#[test]
fn dpo_trains_caches_reference_log_probs_and_resumes() {
    let directory = tempfile::tempdir().unwrap();
    let model = directory.path().join("model");
    tiny_model(&model);
    // A copy: the reference cache is written beside the data, never into the repository.
    let data = directory.path().join("preferences.jsonl");
    std::fs::copy(repository().join("data/samples/preferences.jsonl"), &data).unwrap();
    let output = directory.path().join("run");
    let settings = [
        format!("model=\"{}\"", path(&model)),
        format!("output_dir=\"{}\"", path(&output)),
        format!("data.train=[\"{}\"]", path(&data)),
        "training.steps=4".to_owned(),
        "training.eval_every=2".to_owned(),
        "training.checkpoint_every=2".to_owned(),
    ];
    let mut arguments = vec!["dpo", "--config", "configs/dpo-tiny.toml"];
    for setting in &settings {
        arguments.extend(["--set", setting.as_str()]);
    }
    let summary: Value = serde_json::from_slice(&herd(&arguments).stdout).unwrap();
    assert_eq!(summary["steps"], 4);
    let train_pairs = summary["train_pairs"].as_u64().unwrap();
    assert!(train_pairs >= 10, "{summary}");
    let scored = summary["reference"]["scored"].as_u64().unwrap();
    assert!(scored >= train_pairs, "{summary}");
    let cache = PathBuf::from(summary["reference"]["cache_files"][0].as_str().unwrap());
    assert_eq!(
        cache.parent().unwrap(),
        directory.path().join("preferences.jsonl.reference")
    );
    assert!(output.join("final/model.safetensors").is_file());
    assert!(output.join("loss.svg").is_file());
    let metrics = std::fs::read_to_string(output.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = metrics
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for name in [
        "rewards/chosen",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "nll",
    ] {
        assert!(lines[0][name].is_number(), "{name} in {}", lines[0]);
    }
    assert!(lines[1]["eval_rewards/margins"].is_number(), "{}", lines[1]);

    // Precompute again: every score is reused, the reference model is not loaded.
    let precompute = herd(&[
        "dpo",
        "precompute",
        "--config",
        "configs/dpo-tiny.toml",
        "--set",
        &settings[0],
        "--set",
        &settings[2],
    ]);
    let report: Value = serde_json::from_slice(&precompute.stdout).unwrap();
    assert_eq!(report["scored"], 0, "{report}");
    assert_eq!(report["reused"].as_u64().unwrap(), scored);

    // Two more steps: the run resumes from its step-4 checkpoint.
    let mut longer = arguments.clone();
    longer.extend(["--set", "training.steps=6"]);
    let resumed = herd(&longer);
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("resuming from"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let summary: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(summary["steps"], 6);
    assert_eq!(summary["reference"]["scored"], 0);
}

#[test]
fn dpo_refuses_unknown_keys_and_missing_config() {
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args([
            "dpo",
            "--config",
            "configs/dpo-tiny.toml",
            "--set",
            "dpo.bta=1",
        ])
        .current_dir(repository())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bta"));
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["dpo"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "usage error");
}
