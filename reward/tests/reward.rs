//! The reward model end to end in the library: parity with TRL's `RewardTrainer` on the committed
//! fixture (`dev/reward_fixture.py`), gradients reaching every weight, a smoke run on synthetic
//! preferences whose held-out loss falls, exact resume, and the configs.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers stop at the first failure"
)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model::{Llama, LlamaConfig, SaveOptions, save, varmap_tensors};
use reward::data::{PreferencePair, to_batch};
use reward::loss::bradley_terry_loss;
use reward::{RewardConfig, RewardModel};
use serde_json::{Value, json};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-rm")
}

fn tiny_tokenizer() -> PathBuf {
    repository().join("datasets/tests/fixtures/tiny-tokenizer.json")
}

/// A freshly initialised tiny causal Llama (an "SFT checkpoint") with the tiny test tokenizer.
fn tiny_model(directory: &Path) {
    let vocabulary = datasets::tokenizer::Llama3Tokenizer::from_file(&tiny_tokenizer())
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
    std::fs::copy(tiny_tokenizer(), directory.join("tokenizer.json")).expect("copy tokenizer");
}

fn ids(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("ids")
                .iter()
                .map(|id| id.as_u64().expect("id") as u32)
                .collect()
        })
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("numbers")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// TRL's loss on the fixture's four pairs (chosen rows then rejected rows, right-padded together
/// with pad 255 from config.json), with and without margins and centring: within 1e-6.
#[test]
fn loss_and_rewards_equal_trl_reward_trainer() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let model = RewardModel::load(&fixture(), &Device::Cpu).unwrap();
    assert_eq!(model.pad_token_id(), 255, "pad id read from config.json");
    let (chosen, rejected) = (ids(&expected["chosen"]), ids(&expected["rejected"]));
    let margins = floats(&expected["margins"]);
    let pairs: Vec<PreferencePair> = chosen
        .iter()
        .zip(&rejected)
        .zip(&margins)
        .map(|((chosen, rejected), &margin)| PreferencePair {
            chosen: chosen.clone(),
            rejected: rejected.clone(),
            margin,
        })
        .collect();
    let batch = to_batch(&pairs.iter().collect::<Vec<_>>(), 255, &Device::Cpu).unwrap();
    let rewards = model.rewards(&batch.input_ids, &batch.lengths).unwrap();
    let count = pairs.len();
    let chosen_rewards = rewards.narrow(0, 0, count).unwrap();
    let rejected_rewards = rewards.narrow(0, count, count).unwrap();

    let mut reward_difference = 0f32;
    for (tensor, field) in [
        (&chosen_rewards, "rewards_chosen"),
        (&rejected_rewards, "rewards_rejected"),
    ] {
        for (ours, theirs) in tensor
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(floats(&expected[field]))
        {
            reward_difference = reward_difference.max((ours - theirs).abs());
        }
    }
    // The same rewards one sequence at a time and in score_ids' own length-sorted batches.
    let scored = model
        .score_ids(&chosen.iter().chain(&rejected).cloned().collect::<Vec<_>>())
        .unwrap();
    let trl: Vec<f32> = floats(&expected["rewards_chosen"])
        .into_iter()
        .chain(floats(&expected["rewards_rejected"]))
        .collect();
    for (ours, theirs) in scored.iter().zip(&trl) {
        reward_difference = reward_difference.max((ours - theirs).abs());
    }

    let margins = Tensor::new(margins, &Device::Cpu).unwrap();
    let mut loss_difference = 0f32;
    for case in expected["losses"].as_array().unwrap() {
        let use_margin = case["margin"].as_bool().unwrap();
        let loss = bradley_terry_loss(
            &chosen_rewards,
            &rejected_rewards,
            use_margin.then_some(&margins),
            case["center_rewards_coefficient"].as_f64().unwrap(),
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        let trl = case["loss"].as_f64().unwrap() as f32;
        eprintln!("{case}: ours {loss:.8}, |diff| {:.2e}", (loss - trl).abs());
        loss_difference = loss_difference.max((loss - trl).abs());
    }
    eprintln!("max |reward diff| {reward_difference:.2e}, max |loss diff| {loss_difference:.2e}");
    assert!(
        reward_difference <= 1e-6,
        "rewards differ by {reward_difference}"
    );
    assert!(
        loss_difference <= 1e-6,
        "losses differ by {loss_difference}"
    );
}

/// Every weight — trunk and score head — gets a non-zero gradient from the loss, and the causal
/// LM's `lm_head` is gone.
#[test]
fn every_trainable_tensor_gets_a_gradient() {
    let directory = tempfile::tempdir().unwrap();
    tiny_model(directory.path());
    let (model, var_map) = RewardModel::trainable(directory.path(), 5, 3, &Device::Cpu).unwrap();
    let tensors = varmap_tensors(&var_map);
    assert!(tensors.contains_key("score.weight"));
    assert!(!tensors.contains_key("lm_head.weight"));
    let pairs = [
        PreferencePair {
            chosen: vec![1, 20, 30, 40, 50],
            rejected: vec![1, 20, 31],
            margin: 0.0,
        },
        PreferencePair {
            chosen: vec![1, 60, 70],
            rejected: vec![1, 61, 71, 81, 91, 101],
            margin: 0.0,
        },
    ];
    let batch = to_batch(&pairs.iter().collect::<Vec<_>>(), 5, &Device::Cpu).unwrap();
    let rewards = model.rewards(&batch.input_ids, &batch.lengths).unwrap();
    let loss = bradley_terry_loss(
        &rewards.narrow(0, 0, 2).unwrap(),
        &rewards.narrow(0, 2, 2).unwrap(),
        None,
        0.01,
    )
    .unwrap();
    let gradients = loss.backward().unwrap();
    let vars = var_map.data().lock().unwrap();
    for (name, var) in vars.iter() {
        let gradient = gradients
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm = gradient
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0, "{name} has a zero gradient");
    }
    assert_eq!(vars.len(), tensors.len());
}

/// A causal-LM directory is not a reward model: `load` says so, naming the field.
#[test]
fn load_refuses_a_causal_lm() {
    let directory = tempfile::tempdir().unwrap();
    tiny_model(directory.path());
    let error = RewardModel::load(directory.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("architectures") && error.contains("LlamaForSequenceClassification"),
        "{error}"
    );
}

/// Synthetic preferences: the chosen answer states a fact, the rejected one refuses; lengths vary
/// on both sides so length alone does not separate them.
fn synthetic_preferences(path: &Path, count: usize) {
    let mut lines = String::new();
    for i in 0..count {
        let filler = "and more ".repeat(i % 4);
        let record = json!({
            "prompt": [{"role": "user", "content": format!("What is {i} plus {i}?")}],
            "chosen": [{"role": "assistant", "content": format!("It is {}, {filler}exactly.", 2 * i)}],
            "rejected": [{"role": "assistant", "content": format!("No idea, sorry {}", "really ".repeat(3 - i % 4))}],
        });
        lines.push_str(&record.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

fn smoke_config(model: &Path, data: &Path, output: &Path, steps: u64) -> RewardConfig {
    let mut config = RewardConfig::tiny(model.to_path_buf(), output.to_path_buf());
    config.data.train = vec![data.to_path_buf()];
    config.data.held_out_fraction = 0.25;
    config.training.steps = steps;
    config.training.batch_size = 4;
    config.training.learning_rate = 3e-3;
    config.training.warmup_steps = 2;
    config
}

#[test]
fn held_out_loss_falls_and_the_final_model_reloads() {
    let directory = tempfile::tempdir().unwrap();
    let model = directory.path().join("model");
    tiny_model(&model);
    let data = directory.path().join("preferences.jsonl");
    synthetic_preferences(&data, 32);
    let output = directory.path().join("run");
    let summary = reward::run(&smoke_config(&model, &data, &output, 30), "").unwrap();
    let before = summary.held_out_before.unwrap();
    let after = summary.held_out_after.unwrap();
    eprintln!("held-out {before:?} → {after:?}");
    assert_eq!((summary.train_pairs, summary.held_out_pairs), (24, 8));
    assert!(after.loss < 0.5 * before.loss, "{before:?} → {after:?}");
    assert!(after.accuracy >= 0.875, "{after:?}");
    assert!(after.margin > before.margin + 1.0, "{before:?} → {after:?}");

    let metrics = training::read_metrics(&output.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 30);
    for key in ["accuracy", "margin", "rewards/chosen", "rewards/rejected"] {
        assert!(metrics[0].extra.contains_key(key), "metrics lack {key}");
    }
    assert!(output.join("loss.svg").is_file());
    let final_model = output.join("final");
    assert!(final_model.join("tokenizer.json").is_file());
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(final_model.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["architectures"],
        json!(["LlamaForSequenceClassification"])
    );
    let tensors =
        candle_core::safetensors::load(final_model.join("model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(tensors["score.weight"].dims(), [1, 32]);
    assert!(!tensors.contains_key("lm_head.weight"));

    // The reloaded model ranks the held-out-style pair as training taught it, through dialogues.
    let reloaded = RewardModel::load(&final_model, &Device::Cpu).unwrap();
    let tokenizer =
        datasets::tokenizer::Llama3Tokenizer::from_file(&final_model.join("tokenizer.json"))
            .unwrap();
    let renderer = datasets::Renderer::new(&tokenizer).unwrap();
    assert_eq!(
        reloaded.pad_token_id(),
        tokenizer.special().finetune_right_pad
    );
    let dialogue = |answer: &str| {
        datasets::Dialogue::from_json(
            &json!([
                {"role": "user", "content": "What is 40 plus 40?"},
                {"role": "assistant", "content": answer},
            ]),
            "messages",
        )
        .unwrap()
    };
    let rewards = reloaded
        .score_dialogues(
            &renderer,
            &[
                dialogue("It is 80, exactly."),
                dialogue("No idea, sorry really "),
            ],
        )
        .unwrap();
    assert!(rewards[0] > rewards[1], "{rewards:?}");
    let prompt_only =
        datasets::Dialogue::from_json(&json!([{"role": "user", "content": "hi"}]), "messages")
            .unwrap();
    let error = reloaded
        .score_dialogues(&renderer, &[prompt_only])
        .unwrap_err();
    assert!(error.to_string().contains("sequence 0"), "{error}");
}

#[test]
fn resumed_run_is_bitwise_identical() {
    let directory = tempfile::tempdir().unwrap();
    let model = directory.path().join("model");
    tiny_model(&model);
    let data = directory.path().join("preferences.jsonl");
    synthetic_preferences(&data, 12);
    let mut settings = smoke_config(&model, &data, &directory.path().join("whole"), 6);
    settings.training.batch_size = 2;
    settings.training.checkpoint_every = 3;
    settings.training.eval_every = 3;
    settings.training.gradient_accumulation = 2;
    settings.loss.margin = true;
    settings.loss.center_rewards_coefficient = 0.01;
    reward::run(&settings, "").unwrap();

    let interrupted = directory.path().join("interrupted");
    settings.output_dir.clone_from(&interrupted);
    reward::run(&settings, "").unwrap();
    // Lose everything after the step-3 checkpoint, as a kill right after it would.
    std::fs::remove_dir_all(interrupted.join("checkpoints/step-00000006")).unwrap();
    std::fs::remove_dir_all(interrupted.join("final")).unwrap();
    reward::run(&settings, "").unwrap();

    let whole = std::fs::read(directory.path().join("whole/final/model.safetensors")).unwrap();
    let resumed = std::fs::read(interrupted.join("final/model.safetensors")).unwrap();
    assert!(
        whole == resumed,
        "resumed weights differ from the uninterrupted run"
    );
    let losses = |path: PathBuf| {
        training::read_metrics(&path)
            .unwrap()
            .iter()
            .map(|line| (line.step, line.loss))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        losses(directory.path().join("whole/metrics.jsonl")),
        losses(interrupted.join("metrics.jsonl"))
    );
}

/// A conversation line in preference data is an error naming file and line; with `skip_invalid`
/// it is skipped and reported. The strength filter drops records by level.
#[test]
fn conversations_are_refused_and_strengths_filtered() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("mixed.jsonl");
    let preference = |strength: &str| {
        json!({
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "strength": strength,
        })
        .to_string()
    };
    let conversation = json!({"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    ]});
    std::fs::write(
        &data,
        [
            preference("better"),
            conversation.to_string(),
            preference("slightly_better"),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let tokenizer = datasets::tokenizer::Llama3Tokenizer::from_file(&tiny_tokenizer()).unwrap();
    let renderer = datasets::Renderer::new(&tokenizer).unwrap();
    let mut config = RewardConfig::tiny(PathBuf::from("m"), PathBuf::from("o"));
    config.data.train = vec![data.clone()];
    config.data.held_out_fraction = 0.0;
    config.data.skip_invalid = false;
    let error = reward::data::load(&config.data, &renderer, 0)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("{}:2", data.display())) && error.contains("conversation"),
        "{error}"
    );
    config.data.skip_invalid = true;
    config.data.strengths = vec![
        reward::config::StrengthSetting::SignificantlyBetter,
        reward::config::StrengthSetting::Better,
    ];
    let loaded = reward::data::load(&config.data, &renderer, 0).unwrap();
    assert_eq!((loaded.train.len(), loaded.filtered), (1, 1));
    assert_eq!(loaded.skipped.len(), 1);
    config.data.sequence_length = 5;
    let error = reward::data::load(&config.data, &renderer, 0)
        .unwrap_err()
        .to_string();
    assert!(error.contains("no training pairs"), "{error}");
}

#[test]
fn every_reward_config_parses() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repository().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("reward-")
            && path
                .extension()
                .is_some_and(|extension| extension == "toml")
        {
            let (config, resolved) = training::config::load_config::<RewardConfig>(&path, &[])
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            config
                .validate()
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(resolved.contains("sequence_length"));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configs/reward-*.toml");
    let error = training::config::load_config::<RewardConfig>(
        &repository().join("configs/reward-tiny.toml"),
        &["loss.margins=true".to_owned()],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("margins"), "{error}");
}

/// The f32 fixture loads in bf16 compute too (the CUDA path's setting) and stays close.
#[test]
fn bf16_compute_stays_close() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let mut model = RewardModel::load(&fixture(), &Device::Cpu).unwrap();
    let chosen = ids(&expected["chosen"]);
    let reference = model.score_ids(&chosen).unwrap();
    model.set_compute_dtype(Some(DType::BF16)).unwrap();
    let bf16 = model.score_ids(&chosen).unwrap();
    for (a, b) in reference.iter().zip(&bf16) {
        assert!((a - b).abs() < 0.1, "{reference:?} vs {bf16:?}");
    }
}
