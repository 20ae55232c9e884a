//! `herd demo --short` through the binary: every stage of the recipe runs from nothing (tokenizer,
//! pretraining, SFT, preference collection, reward model, rejection sampling, SFT, DPO ×2,
//! averaging, export) on tiny sizes, the table lists held-out accuracy after each stage, the round
//! report and every stage's config exist, the export loads in candle with its tokenizer and chat
//! template, and every data file a stage wrote is accepted by `herd data validate`. Re-running
//! resumes: finished stages are not trained again.
//!
//! The short demo's models are too small to learn the task; the full demo's improvement figures
//! are measured by `herd demo` itself and recorded in the README.

#![expect(clippy::expect_used, reason = "test helpers stop at the first failure")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use model::Checkpoint;

fn herd(arguments: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(arguments)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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

#[test]
fn the_short_demo_runs_every_stage_and_reports_accuracy_after_each() {
    let directory = tempfile::tempdir().unwrap();
    let out = directory.path().join("demo");
    let output = herd(&["demo", "--short", "--out", path(&out)]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    for stage in [
        "pretrained (base), text prompt",
        "pretrained (base), chat prompt",
        "| SFT |",
        "rejection-sampled SFT",
        "DPO (seed 0)",
        "DPO (seed 1)",
        "average of 2 DPO runs",
        "export (bf16)",
    ] {
        assert!(stdout.contains(stage), "no row {stage:?} in\n{stdout}");
    }
    let rows = stdout
        .lines()
        .filter(|line| line.starts_with("| ") && line.contains('%'))
        .count();
    assert_eq!(rows, 8, "{stdout}");

    let round = out.join("round1");
    for file in [
        "report.md",
        "report.json",
        "accuracy.svg",
        "configs/reward.toml",
        "configs/rejection_sampling.toml",
        "configs/sft.toml",
        "configs/dpo-seed0.toml",
        "reward/final/model.safetensors",
        "rejection_sampling/sft.jsonl",
        "rejection_sampling/preferences.jsonl",
        "rejection_sampling/candidates.jsonl",
        "averaged/model.safetensors",
        "averaged/config.json",
        "export/tokenizer_config.json",
    ] {
        assert!(round.join(file).is_file(), "{file} missing");
    }
    assert!(out.join("report.md").is_file());
    for file in [
        "configs/pretrain.toml",
        "configs/sft.toml",
        "configs/round1.toml",
        "configs/preference_collection.toml",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }

    // The export is a checkpoint candle loads, in bf16, with the tokenizer and chat template.
    let export = round.join("export");
    let checkpoint = Checkpoint::load(&export, DType::F32, &Device::Cpu).unwrap();
    checkpoint.model().unwrap();
    let tokenizer_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(export.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert!(tokenizer_config["chat_template"].is_string());

    // Every training file the demo wrote or a stage produced is valid for herd's readers (prompt
    // files end with a user message, which `validate` rightly calls nothing to train on).
    let data_files: Vec<PathBuf> = [
        out.join("data/sft.jsonl"),
        out.join("preference_collection/annotated_preferences.jsonl"),
        round.join("rejection_sampling/sft.jsonl"),
        round.join("rejection_sampling/preferences.jsonl"),
    ]
    .into_iter()
    .filter(|file| std::fs::metadata(file).is_ok_and(|metadata| metadata.len() > 0))
    .collect();
    assert!(data_files.len() >= 2, "{data_files:?}");
    let mut arguments = vec!["data", "validate"];
    arguments.extend(data_files.iter().map(|file| path(file)));
    herd(&arguments);

    // A second run resumes: every stage is finished, so nothing trains again and the table is
    // the same.
    let again = herd(&["demo", "--short", "--out", path(&out)]);
    let again = String::from_utf8(again.stdout).unwrap();
    let table = |text: &str| {
        text.lines()
            .filter(|line| line.starts_with("| ") && line.contains('%'))
            .map(|line| {
                line.rsplit_once('|')
                    .map_or(line, |(before, _)| before)
                    .to_owned()
            })
            .map(|line| {
                // Drop the stage-time column, which differs between runs.
                let mut cells: Vec<&str> = line.split('|').collect();
                cells.pop();
                cells.join("|")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&stdout), table(&again));
}
