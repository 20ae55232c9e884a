//! DPO on tiny models made here: masks, the reference cache, gradients, accumulation, a smoke run
//! whose held-out reward accuracy and margin rise, exact resume, and the shipped configs.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers stop at the first failure"
)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use dpo::DpoConfig;
use dpo::config::{EditedPolicy, LossKind, Masking};
use dpo::data::{self, Pair};
use model::{Checkpoint, Llama, LlamaConfig, SaveOptions, save, varmap_tensors};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tokenizer_file() -> PathBuf {
    repository().join("datasets/tests/fixtures/tiny-tokenizer.json")
}

/// A freshly initialised tiny Llama saved as an HF directory with the tiny test tokenizer.
fn tiny_model(directory: &Path, seed: u64) {
    let vocabulary = Llama3Tokenizer::from_file(&tokenizer_file())
        .expect("tiny tokenizer")
        .vocab_size();
    let config = LlamaConfig {
        max_position_embeddings: 2048,
        ..LlamaConfig::tiny(vocabulary)
    };
    let (_, var_map) = Llama::from_scratch(&config, seed, &Device::Cpu).expect("tiny model");
    let options = SaveOptions {
        dtype: DType::F32,
        ..SaveOptions::default()
    };
    save(directory, &config, &varmap_tensors(&var_map), &options).expect("save");
    std::fs::copy(tokenizer_file(), directory.join("tokenizer.json")).expect("copy tokenizer");
}

/// Eight short records: chosen answers "yes …", rejected "no …"; the second has an edit.
fn synthetic_pairs(file: &Path) {
    let topics = [
        "cats", "rain", "tea", "maps", "bread", "snow", "bikes", "songs",
    ];
    let lines: Vec<String> = topics
        .iter()
        .enumerate()
        .map(|(index, topic)| {
            let mut record = serde_json::json!({
                "prompt": [{"role": "user", "content": format!("Do you like {topic}?")}],
                "chosen": [{"role": "assistant", "content": format!("Yes, I like {topic}.")}],
                "rejected": [{"role": "assistant", "content": "No."}],
            });
            if index == 1 {
                record["edited"] = serde_json::json!(
                    [{"role": "assistant", "content": format!("Yes, I like {topic} a lot.")}]
                );
            }
            if index == 2 {
                record["strength"] = serde_json::json!("marginally_better");
            }
            record.to_string()
        })
        .collect();
    std::fs::write(file, lines.join("\n") + "\n").expect("write pairs");
}

struct Setup {
    _directory: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    pairs: PathBuf,
}

fn setup() -> Setup {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().to_path_buf();
    let model = root.join("model");
    tiny_model(&model, 7);
    let pairs = root.join("pairs.jsonl");
    synthetic_pairs(&pairs);
    Setup {
        _directory: directory,
        root,
        model,
        pairs,
    }
}

fn config(setup: &Setup, output: &str, steps: u64) -> DpoConfig {
    let mut config = DpoConfig::tiny(setup.model.clone(), setup.root.join(output));
    config.data.train = vec![setup.pairs.clone()];
    // Measured on the training pairs themselves: the smoke test asks whether DPO fits them.
    config.data.held_out = vec![setup.pairs.clone()];
    config.data.sequence_length = 256;
    config.data.skip_invalid = false;
    config.training.steps = steps;
    config.training.batch_size = 2;
    config.training.learning_rate = 1e-2;
    config.training.warmup_steps = 0;
    config.training.final_dtype = training::FinalDtype::F32;
    config
}

fn load_pairs(config: &DpoConfig) -> Vec<Pair> {
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_file()).unwrap();
    let renderer = Renderer::new(&tokenizer).unwrap();
    data::load(&config.data, &renderer, 0).unwrap().train
}

#[test]
fn trl_masking_is_llama3_masking_plus_the_end_token_and_starts_after_the_header() {
    let setup = setup();
    let mut settings = config(&setup, "unused", 1);
    settings.data.edited_policy = EditedPolicy::Ignore;
    let llama3 = load_pairs(&settings);
    settings.data.masking = Masking::Trl;
    let trl = load_pairs(&settings);
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_file()).unwrap();
    let special = *tokenizer.special();
    let renderer = Renderer::new(&tokenizer).unwrap();
    assert_eq!(llama3.len(), 8);
    for (llama3, trl) in llama3.iter().zip(&trl) {
        for (ours, theirs) in [
            (&llama3.chosen, &trl.chosen),
            (&llama3.rejected, &trl.rejected),
        ] {
            assert_eq!(ours.ids, theirs.ids);
            let last = ours.ids.len() - 1;
            assert_eq!(ours.ids[last], special.eot);
            // TRL counts the trailing <|eot_id|>; Llama 3 masks it out; every other bit agrees.
            assert_eq!((ours.mask[last], theirs.mask[last]), (0, 1));
            assert_eq!(ours.mask[..last], theirs.mask[..last]);
            // TRL's completion: everything after the prompt rendered with the assistant header.
            let record = std::fs::read_to_string(&setup.pairs).unwrap();
            let line = record.lines().nth(ours.key.line - 1).unwrap();
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let prompt = datasets::Dialogue::from_json(&value["prompt"], "prompt").unwrap();
            let prompt_ids = renderer.render(&prompt, true).unwrap().ids;
            assert_eq!(ours.ids[..prompt_ids.len()], prompt_ids[..]);
            let expected: Vec<u8> = (0..ours.ids.len())
                .map(|index| u8::from(index >= prompt_ids.len()))
                .collect();
            assert_eq!(theirs.mask, expected);
        }
    }
}

#[test]
fn edited_policy_and_strength_filter() {
    let setup = setup();
    let mut settings = config(&setup, "unused", 1);
    let expanded = load_pairs(&settings);
    assert_eq!(
        expanded.len(),
        10,
        "8 records, the edited one gives 3 pairs"
    );
    let edited: Vec<(&str, &str)> = expanded
        .iter()
        .filter(|pair| pair.chosen.key.line == 2)
        .map(|pair| (pair.chosen.key.completion, pair.rejected.key.completion))
        .collect();
    assert_eq!(
        edited,
        [
            ("edited", "chosen"),
            ("edited", "rejected"),
            ("chosen", "rejected")
        ]
    );
    settings.data.edited_policy = EditedPolicy::ReplaceChosen;
    let replaced = load_pairs(&settings);
    assert_eq!(replaced.len(), 8);
    assert_eq!(replaced[1].chosen.key.completion, "edited");
    settings.data.strengths = vec!["significantly_better".to_owned(), "better".to_owned()];
    let filtered = load_pairs(&settings);
    assert_eq!(filtered.len(), 7, "the marginally_better record is dropped");
    assert!(filtered.iter().all(|pair| pair.chosen.key.line != 3));
}

#[test]
fn too_long_pairs_are_named_or_skipped() {
    let setup = setup();
    let mut settings = config(&setup, "unused", 1);
    settings.data.sequence_length = 8;
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_file()).unwrap();
    let renderer = Renderer::new(&tokenizer).unwrap();
    let error = data::load(&settings.data, &renderer, 0)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("pairs.jsonl:1: chosen is") && error.contains("data.sequence_length = 8"),
        "{error}"
    );
    settings.data.held_out = Vec::new();
    settings.data.held_out_fraction = 0.0;
    settings.data.sequence_length = 256;
    let all = load_pairs(&settings);
    let length = |pair: &Pair| pair.chosen.ids.len().max(pair.rejected.ids.len());
    let longest = all.iter().map(length).max().unwrap();
    settings.data.sequence_length = longest - 1;
    let mut too_long: Vec<usize> = all
        .iter()
        .filter(|pair| length(pair) == longest)
        .map(|pair| pair.chosen.key.line)
        .collect();
    too_long.dedup();
    assert!(!too_long.is_empty() && too_long.len() < 8);
    settings.data.skip_invalid = true;
    let loaded = data::load(&settings.data, &renderer, 0).unwrap();
    assert_eq!(loaded.skipped.len(), too_long.len(), "{:?}", loaded.skipped);
    for (reason, line) in loaded.skipped.iter().zip(&too_long) {
        assert!(
            reason.contains(&format!("pairs.jsonl:{line}: "))
                && reason.contains(&format!(
                    "longer than data.sequence_length = {}",
                    longest - 1
                )),
            "{reason}"
        );
    }
    assert!(loaded.train.iter().all(|pair| length(pair) < longest));
    assert!(!loaded.train.is_empty());
}

#[test]
fn reference_cache_is_reused_resumed_and_invalidated() {
    let setup = setup();
    let settings = config(&setup, "unused", 1);
    let first = dpo::precompute(&settings).unwrap();
    // 8 records: 16 completions plus one edited.
    assert_eq!((first.scored, first.reused), (17, 0));
    assert_eq!(first.cache_files.len(), 1);
    let cache = first.cache_files[0].clone();
    assert_eq!(
        cache.parent().unwrap(),
        setup.root.join("pairs.jsonl.reference")
    );
    let complete = std::fs::read_to_string(&cache).unwrap();

    let again = dpo::precompute(&settings).unwrap();
    assert_eq!((again.scored, again.reused), (0, 17));

    // A kill mid-write: keep the header and 5 entries plus half a line.
    let lines: Vec<&str> = complete.lines().collect();
    let mut torn = lines[..6].join("\n") + "\n";
    torn.push_str(&lines[6][..lines[6].len() / 2]);
    std::fs::write(&cache, torn).unwrap();
    let resumed = dpo::precompute(&settings).unwrap();
    assert_eq!((resumed.scored, resumed.reused), (12, 5));
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted(&std::fs::read_to_string(&cache).unwrap()),
        sorted(&complete),
        "the resumed cache holds the same scores"
    );

    // A different masking mode or data file is a different fingerprint: a new file, all scored.
    let mut trl = settings.clone();
    trl.data.masking = Masking::Trl;
    let other = dpo::precompute(&trl).unwrap();
    assert_eq!(other.scored, 17);
    assert_ne!(other.cache_files[0], cache);
    let mut text = std::fs::read_to_string(&setup.pairs).unwrap();
    text = text.replace("Do you like tea?", "Do you like coffee?");
    std::fs::write(&setup.pairs, text).unwrap();
    let changed = dpo::precompute(&settings).unwrap();
    assert_eq!(changed.scored, 17);
    assert_ne!(changed.cache_files[0], cache);
    // And a different reference model too.
    let mut reference = settings;
    let other_model = setup.root.join("other-model");
    tiny_model(&other_model, 8);
    reference.reference = Some(other_model);
    assert_eq!(dpo::precompute(&reference).unwrap().scored, 17);
}

/// The policy at its start is the reference: every reward is 0 before the first update.
#[test]
fn the_reference_is_the_initial_policy_by_default() {
    let setup = setup();
    let settings = config(&setup, "run", 1);
    let summary = dpo::run(&settings, "").unwrap();
    assert_eq!(summary.held_out_accuracy_before, Some(0.0));
    let metrics = training::read_metrics(&settings.output_dir.join("metrics.jsonl")).unwrap();
    let margin = metrics[0].extra["rewards/margins"].as_f64().unwrap();
    assert!(margin.abs() < 1e-5, "{margin}");
    for name in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "nll",
        "eval_rewards/margins",
        "eval_rewards/accuracies",
        "eval_logps/chosen",
    ] {
        assert!(metrics[0].extra.contains_key(name), "{name} missing");
    }
}

fn trainable(model_directory: &Path) -> (Llama, candle_nn::VarMap) {
    Checkpoint::load(model_directory, DType::F32, &Device::Cpu)
        .unwrap()
        .trainable_model()
        .unwrap()
}

/// Pairs with reference log-probs from a different model, so the log-ratios are not zero.
fn pairs_with_reference(setup: &Setup) -> Vec<Pair> {
    let mut settings = config(setup, "unused", 1);
    let other_model = setup.root.join("reference");
    tiny_model(&other_model, 11);
    settings.reference = Some(other_model);
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_file()).unwrap();
    let renderer = Renderer::new(&tokenizer).unwrap();
    let mut loaded = data::load(&settings.data, &renderer, 0).unwrap();
    dpo::reference::attach(
        &settings,
        &mut loaded,
        &tokenizer_file(),
        tokenizer.special().finetune_right_pad,
        &Device::Cpu,
    )
    .unwrap();
    loaded.train
}

#[test]
fn every_trainable_tensor_gets_a_gradient() {
    let setup = setup();
    let pairs = pairs_with_reference(&setup);
    let (model, var_map) = trainable(&setup.model);
    let vars = training::named_vars(&var_map);
    let batch: Vec<&Pair> = pairs.iter().take(4).collect();
    let pad = Llama3Tokenizer::from_file(&tokenizer_file())
        .unwrap()
        .special()
        .finetune_right_pad;
    let all: Vec<candle_core::Var> = vars.iter().map(|(_, var)| var.clone()).collect();
    let (accumulated, _) = dpo::train::accumulate_step(
        &model,
        &all,
        &[batch],
        &dpo::config::DpoSettings::default(),
        pad,
        &Device::Cpu,
    )
    .unwrap();
    for (name, var) in &vars {
        let gradient = accumulated
            .gradients
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let largest = gradient
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(largest > 0.0, "{name}: zero gradient");
    }
}

#[test]
fn one_micro_batch_of_four_equals_four_micro_batches_of_one() {
    let setup = setup();
    let pairs = pairs_with_reference(&setup);
    // Pairs 1 and 2 of the edited record have completions of unequal length: a mean of
    // per-micro-batch token means would differ from the step's token mean.
    let chosen: Vec<&Pair> = pairs.iter().skip(1).take(4).collect();
    let lengths: Vec<usize> = chosen
        .iter()
        .map(|pair| pair.chosen.completion_tokens())
        .collect();
    assert!(
        lengths.iter().any(|&length| length != lengths[0]),
        "{lengths:?}"
    );
    let pad = Llama3Tokenizer::from_file(&tokenizer_file())
        .unwrap()
        .special()
        .finetune_right_pad;
    for loss in [LossKind::Sigmoid, LossKind::Ipo, LossKind::Hinge] {
        let settings = dpo::config::DpoSettings {
            loss,
            nll_weight: 0.2,
            ..dpo::config::DpoSettings::default()
        };
        let (model, var_map) = trainable(&setup.model);
        let vars = var_map.all_vars();
        let run = |micro_batches: &[Vec<&Pair>]| {
            dpo::train::accumulate_step(&model, &vars, micro_batches, &settings, pad, &Device::Cpu)
                .unwrap()
        };
        let (whole, whole_sums) = run(std::slice::from_ref(&chosen));
        let split_batches: Vec<Vec<&Pair>> = chosen.iter().map(|pair| vec![*pair]).collect();
        let (split, split_sums) = run(&split_batches);
        assert_eq!((whole.micro_batches, split.micro_batches), (1, 4));
        assert!(
            (whole.loss - split.loss).abs() < 1e-5 * whole.loss.abs().max(1.0),
            "{loss:?}: {} vs {}",
            whole.loss,
            split.loss
        );
        assert!((whole_sums.loss(&settings) - whole.loss).abs() < 1e-4);
        assert!((split_sums.loss(&settings) - split.loss).abs() < 1e-4);
        let mut largest = 0f32;
        for var in &vars {
            let left = whole.gradients.get(var.as_tensor()).unwrap();
            let right = split.gradients.get(var.as_tensor()).unwrap();
            let scale = left
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(1e-6);
            let difference = (left - right)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            largest = largest.max(difference / scale);
        }
        assert!(
            largest < 1e-4,
            "{loss:?}: relative gradient difference {largest}"
        );
    }
}

#[test]
fn training_raises_reward_accuracy_and_margin_on_its_pairs() {
    let setup = setup();
    let settings = config(&setup, "smoke", 20);
    let summary = dpo::run(&settings, "").unwrap();
    let (before, after) = (
        summary.held_out_accuracy_before.unwrap(),
        summary.held_out_accuracy_after.unwrap(),
    );
    let margin = summary.held_out_margin_after.unwrap();
    eprintln!(
        "accuracy {before:.2} → {after:.2}, margin {margin:.3}, loss {:.3} → {:.3}",
        summary.held_out_loss_before.unwrap(),
        summary.held_out_loss_after.unwrap()
    );
    assert!(before < 0.5 && after >= 0.9, "accuracy {before} → {after}");
    assert!(margin > 0.05, "margin {margin}");
    assert!(summary.held_out_loss_after < summary.held_out_loss_before);
    assert_eq!(
        summary.reference.scored, 17,
        "reference scored once, before training"
    );
    assert!(
        settings
            .output_dir
            .join("final/model.safetensors")
            .is_file()
    );
    assert!(settings.output_dir.join("final/tokenizer.json").is_file());
    assert!(settings.output_dir.join("loss.svg").is_file());
    let metrics = training::read_metrics(&settings.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 20);
    // A second run over the same data reuses every reference score.
    let mut again = settings.clone();
    again.output_dir = setup.root.join("smoke-again");
    again.training.steps = 1;
    assert_eq!(dpo::run(&again, "").unwrap().reference.scored, 0);
}

#[test]
fn resumed_run_is_bitwise_identical() {
    let setup = setup();
    let mut settings = config(&setup, "whole", 6);
    settings.training.checkpoint_every = 3;
    settings.training.eval_every = 3;
    settings.training.gradient_accumulation = 2;
    dpo::run(&settings, "").expect("uninterrupted run");

    let interrupted = setup.root.join("interrupted");
    settings.output_dir.clone_from(&interrupted);
    dpo::run(&settings, "").expect("first run");
    // Lose everything after the step-3 checkpoint, as a kill right after it would.
    std::fs::remove_dir_all(interrupted.join("checkpoints/step-00000006")).unwrap();
    std::fs::remove_dir_all(interrupted.join("final")).unwrap();
    dpo::run(&settings, "").expect("resumed run");

    let whole = std::fs::read(setup.root.join("whole/final/model.safetensors")).unwrap();
    let resumed = std::fs::read(interrupted.join("final/model.safetensors")).unwrap();
    assert!(
        whole == resumed,
        "resumed weights differ from the uninterrupted run"
    );
    let losses = |directory: &Path| {
        training::read_metrics(&directory.join("metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|line| (line.step, line.loss, line.extra.clone()))
            .map(|(step, loss, extra)| (step, loss, extra["rewards/margins"].as_f64()))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&setup.root.join("whole")), losses(&interrupted));
}

#[test]
fn every_dpo_config_parses() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repository().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("dpo-")
            && path
                .extension()
                .is_some_and(|extension| extension == "toml")
        {
            let (config, resolved) = training::config::load_config::<DpoConfig>(&path, &[])
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            config
                .validate()
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert!(resolved.contains("nll_weight"));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configs/dpo-*.toml");
    let error = training::config::load_config::<DpoConfig>(
        &repository().join("configs/dpo-tiny.toml"),
        &["dpo.bta=1".to_owned()],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("bta"), "{error}");
}
