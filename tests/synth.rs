//! `herd synth` end to end through the binary, as a user runs it: rejection sampling from a tiny
//! model with configs/synth-tiny.toml; `herd data validate` accepts sft.jsonl and
//! preferences.jsonl as they are, `herd label import` (embedded SQLite) accepts candidates.jsonl,
//! and re-running resumes with nothing left to do.
//!
//! The tiny model is random but for two hand-set weights (as in synth/tests/rejection.rs): a
//! constant first embedding component that `lm_head` reads to prefer `" "`, `"1"`, `"2"` and
//! `<|eot_id|>`, so samples are short, decodable, and right about "1+1" some of the time.

#![expect(clippy::unwrap_used, reason = "test helpers stop at the first failure")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, IndexOp, Tensor};
use datasets::tokenizer::Llama3Tokenizer;
use model::{Llama, LlamaConfig, SaveOptions, save, varmap_tensors};
use serde_json::{Value, json};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn herd(data_dir: &Path, arguments: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(arguments)
        .current_dir(repository())
        .env("HERD_DATA_DIR", data_dir)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "herd {arguments:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn tiny_model(directory: &Path) {
    let tokenizer_path = repository().join("datasets/tests/fixtures/tiny-tokenizer.json");
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path).unwrap();
    let vocabulary = tokenizer.vocab_size();
    let config = LlamaConfig::tiny(vocabulary);
    let (_, var_map) = Llama::from_scratch(&config, 11, &Device::Cpu).unwrap();
    let mut tensors = varmap_tensors(&var_map);
    // (vocab, hidden): column 0 is 1 for every token.
    let embedding = &tensors["model.embed_tokens.weight"];
    let ones = Tensor::ones((vocabulary, 1), DType::F32, &Device::Cpu).unwrap();
    let embedding = Tensor::cat(&[&ones, &embedding.i((.., 1..)).unwrap()], 1).unwrap();
    tensors.insert("model.embed_tokens.weight".to_owned(), embedding);
    // (vocab, hidden): column 0 sets each token's preference.
    let special = tokenizer.special();
    let mut preference: Vec<f32> = (0..vocabulary)
        .map(|id| {
            if id >= special.begin_of_text as usize {
                -3.0
            } else {
                -0.5
            }
        })
        .collect();
    for (text, value) in [(" ", 1.0), ("1", 0.95), ("2", 0.95)] {
        preference[tokenizer.encode_text(text).unwrap()[0] as usize] = value;
    }
    preference[special.eot as usize] = 0.8;
    let column = Tensor::from_vec(preference, (vocabulary, 1), &Device::Cpu).unwrap();
    let head = &tensors["lm_head.weight"];
    let head = Tensor::cat(&[&column, &head.i((.., 1..)).unwrap()], 1).unwrap();
    tensors.insert("lm_head.weight".to_owned(), head);
    let options = SaveOptions {
        dtype: DType::F32,
        ..SaveOptions::default()
    };
    save(directory, &config, &tensors, &options).unwrap();
    std::fs::copy(&tokenizer_path, directory.join("tokenizer.json")).unwrap();
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn synth_outputs_are_accepted_by_validate_and_label_import() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let model = root.join("model");
    tiny_model(&model);
    let prompts = root.join("prompts.jsonl");
    let lines: String = (0..4)
        .map(|index| {
            json!({"id": format!("p{index}"),
                   "messages": [{"role": "user", "content": format!("Question {index}: what is 1+1?")}],
                   "metadata": {"answer": "2", "capability": "math"}})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&prompts, lines).unwrap();
    let output = root.join("synth");
    let settings = [
        format!("policy=\"{}\"", path(&model)),
        format!("prompts=\"{}\"", path(&prompts)),
        format!("output_dir=\"{}\"", path(&output)),
        "samples=6".to_owned(),
        "max_new_tokens=24".to_owned(),
    ];
    let mut arguments = vec!["synth", "--config", "configs/synth-tiny.toml"];
    for setting in &settings {
        arguments.extend(["--set", setting.as_str()]);
    }
    let run = herd(root, &arguments);
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["completed_prompts"], 4, "{summary}");
    assert!(summary["sft_records"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["preference_records"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["candidate_records"].as_u64().unwrap() > 0,
        "{summary}"
    );

    for name in ["sft.jsonl", "preferences.jsonl"] {
        let file = output.join(name);
        let validated = herd(root, &["data", "validate", "--json", path(&file)]);
        let report: Value = serde_json::from_slice(&validated.stdout).unwrap();
        assert_eq!(report["invalid_lines"], 0, "{name}: {report}");
        assert!(report["lines"].as_u64().unwrap() > 0, "{name}: {report}");
    }

    let candidates = output.join("candidates.jsonl");
    let imported = herd(
        root,
        &[
            "label",
            "import",
            "--project",
            "rs-round1",
            path(&candidates),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&imported.stdout),
        String::from_utf8_lossy(&imported.stderr)
    );
    let expected = format!("{} items added", summary["candidate_records"]);
    assert!(text.contains(&expected), "{text}");

    // Re-running finds every prompt done and leaves the files as they were.
    let before = std::fs::read_to_string(output.join("samples.jsonl")).unwrap();
    let again = herd(root, &arguments);
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["resumed_prompts"], 4, "{summary}");
    assert_eq!(summary["generated_tokens"], 0, "{summary}");
    assert_eq!(
        std::fs::read_to_string(output.join("samples.jsonl")).unwrap(),
        before
    );
}
