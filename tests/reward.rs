//! `herd reward train`, `eval` and `score` through the built binary, on the shipped sample
//! preferences and a tiny causal Llama made here (standing in for an SFT checkpoint).

#![expect(clippy::expect_used, reason = "test helpers stop at the first failure")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
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

#[test]
#[expect(clippy::too_many_lines, reason = "one user's journey, step by step")]
fn train_eval_and_score_through_the_binary() {
    let directory = tempfile::tempdir().unwrap();
    let sft = directory.path().join("sft");
    tiny_model(&sft);
    let output = directory.path().join("reward");
    let train = |steps: u64| {
        herd(&[
            "reward",
            "train",
            "--config",
            "configs/reward-tiny.toml",
            "--set",
            &format!("model=\"{}\"", path(&sft)),
            "--set",
            &format!("output_dir=\"{}\"", path(&output)),
            "--set",
            &format!("training.steps={steps}"),
            "--set",
            "training.eval_every=2",
            "--set",
            "training.checkpoint_every=2",
        ])
    };
    let first = train(4);
    let summary: Value = serde_json::from_slice(&first.stdout).expect("a JSON summary");
    assert_eq!(summary["steps"], 4);
    assert!(summary["train_pairs"].as_u64().unwrap() > 10, "{summary}");
    assert!(
        summary["held_out_after"]["accuracy"].is_number(),
        "{summary}"
    );
    // Re-running with more steps resumes from the step-4 checkpoint.
    let resumed = train(6);
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("resuming from"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let metrics = std::fs::read_to_string(output.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    let line: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    for key in [
        "accuracy",
        "margin",
        "rewards/chosen",
        "rewards/rejected",
        "held_out_accuracy",
    ] {
        assert!(line[key].is_number(), "metrics lack {key}: {line}");
    }
    let final_model = output.join("final");

    let evaluation = herd(&[
        "reward",
        "eval",
        "--model",
        path(&final_model),
        "--data",
        "data/samples/preferences.jsonl",
        "--json",
    ]);
    let evaluation: Value = serde_json::from_slice(&evaluation.stdout).expect("JSON evaluation");
    let pairs = evaluation["pairs"].as_u64().unwrap();
    // 20 records, some with an edit (three pairs each).
    assert!(pairs > 20, "{evaluation}");
    let accuracy = evaluation["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert_eq!(evaluation["chosen"]["count"].as_u64().unwrap(), pairs);
    let table = herd(&[
        "reward",
        "eval",
        "--model",
        path(&final_model),
        "--data",
        "data/samples/preferences.jsonl",
    ]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("accuracy") && table.contains("median"),
        "{table}"
    );

    let conversations = directory.path().join("conversations.jsonl");
    let samples =
        std::fs::read_to_string(repository().join("data/samples/conversations.jsonl")).unwrap();
    std::fs::write(
        &conversations,
        samples.lines().take(3).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let scores = directory.path().join("scores.jsonl");
    herd(&[
        "reward",
        "score",
        "--model",
        path(&final_model),
        "--input",
        path(&conversations),
        "--output",
        path(&scores),
    ]);
    let scored: Vec<Value> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(scored.len(), 3);
    for (line, original) in scored.iter().zip(samples.lines()) {
        assert!(line["reward"].is_number(), "{line}");
        let original: Value = serde_json::from_str(original).unwrap();
        assert_eq!(line["record"]["messages"], original["messages"]);
    }
    let preference_scores = directory.path().join("preference-scores.jsonl");
    herd(&[
        "reward",
        "score",
        "--model",
        path(&final_model),
        "--input",
        "data/samples/preferences.jsonl",
        "--output",
        path(&preference_scores),
    ]);
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&preference_scores)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        first["reward_chosen"].is_number() && first["reward_rejected"].is_number(),
        "{first}"
    );
}
