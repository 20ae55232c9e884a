//! `config.json` in both HF layouts, its defaults, its errors, and the written form.

use std::path::Path;

use model::{Llama3RopeScaling, LlamaConfig};

use crate::fixture;

fn parse(text: &str) -> Result<LlamaConfig, String> {
    LlamaConfig::from_json(text, Path::new("config.json")).map_err(|error| error.to_string())
}

const BASE: &str = r#""vocab_size": 128, "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4"#;

#[test]
fn transformers_5_layout_with_llama3_rope_parameters() {
    let config = parse(&format!(
        r#"{{{BASE}, "num_key_value_heads": 2, "eos_token_id": [1, 2], "dtype": "bfloat16",
        "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
    ))
    .unwrap();
    assert!((config.rope_theta - 500_000.0).abs() < 1e-9);
    assert_eq!(
        config.rope_scaling,
        Some(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
    assert_eq!(
        (config.eos_token_ids.clone(), config.torch_dtype.as_deref()),
        (vec![1, 2], Some("bfloat16"))
    );
}

#[test]
fn classic_layout_with_legacy_type_key_and_defaults() {
    let config = parse(&format!(
        r#"{{{BASE}, "rope_theta": 1000.0, "eos_token_id": 5, "head_dim": null,
        "rope_scaling": {{"type": "llama3", "factor": 2.0, "low_freq_factor": 1.0,
        "high_freq_factor": 2.0, "original_max_position_embeddings": 32}}}}"#
    ))
    .unwrap();
    assert_eq!((config.num_key_value_heads, config.head_dim), (4, 16));
    assert_eq!((config.rope_theta, config.rms_norm_eps), (1000.0, 1e-6));
    assert_eq!(config.eos_token_ids, [5]);
    assert!(!config.tie_word_embeddings);
    assert_eq!(config.rope_scaling.map(|s| s.factor), Some(2.0));
}

#[test]
fn unknown_rope_type_names_field_and_value() {
    let message = parse(&format!(
        r#"{{{BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
    ))
    .unwrap_err();
    assert_eq!(
        message,
        "config.json: field `rope_scaling.rope_type`: `yarn` is not supported; herd implements `default` and `llama3`"
    );
    let message = parse(&format!(
        r#"{{{BASE}, "rope_parameters": {{"rope_type": "llama3", "factor": 8.0}}}}"#
    ))
    .unwrap_err();
    assert!(
        message.contains("`rope_parameters.low_freq_factor`: missing"),
        "{message}"
    );
}

#[test]
fn unsupported_architecture_fields_are_rejected() {
    let message = parse(&format!(r#"{{{BASE}, "num_key_value_heads": 3}}"#)).unwrap_err();
    assert!(
        message.contains("`num_key_value_heads`: 3 does not divide num_attention_heads 4"),
        "{message}"
    );
    let message = parse(&format!(r#"{{{BASE}, "attention_bias": true}}"#)).unwrap_err();
    assert!(message.contains("`attention_bias`"), "{message}");
}

#[test]
fn written_config_reads_back_equal() {
    for name in ["gqa2_tied", "llama3_long"] {
        let config = LlamaConfig::read(&fixture(name).join("config.json")).unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("config.json");
        config.write(&path).unwrap();
        assert_eq!(LlamaConfig::read(&path).unwrap(), config);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            json["architectures"],
            serde_json::json!(["LlamaForCausalLM"])
        );
        assert_eq!(json["model_type"], "llama");
    }
}
