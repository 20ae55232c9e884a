//! Rejection sampling end to end through the library on a tiny Llama made here: every output file
//! parses as the record type its consumer reads, the verifier's choice is what the files say,
//! steering system prompts stay out of the records unless asked, a run resumed after half its
//! prompts (and after a torn write) equals an uninterrupted one, and several prompts batched
//! together sample exactly as their rows generated alone.
//!
//! The tiny model is a random one with two weights set by hand so that its samples are short,
//! decodable and sometimes right: every embedding gets a constant first component, which
//! survives to the final norm (≈ 5.6 there), and `lm_head` rows read it to prefer `" "`, `"1"`,
//! `"2"` and `<|eot_id|>`, to disfavour other text and to avoid the other special tokens. Its answers to "1+1?" are strings
//! like `" 1 2"`, whose last number is right (2) about half the time.

#![expect(clippy::unwrap_used, reason = "test helpers stop at the first failure")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::{Device, IndexOp, Tensor};
use datasets::tokenizer::Llama3Tokenizer;
use datasets::{Dialogue, Record, Role};
use model::generation::{GenerationConfig, generate};
use model::{Checkpoint, Llama, LlamaConfig, SaveOptions, save, varmap_tensors};
use serde_json::{Value, json};
use synth::rejection::{self, sample_batch};
use synth::{RejectionConfig, Selection};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tokenizer() -> Llama3Tokenizer {
    Llama3Tokenizer::from_file(&repository().join("datasets/tests/fixtures/tiny-tokenizer.json"))
        .unwrap()
}

fn single_id(tokenizer: &Llama3Tokenizer, text: &str) -> usize {
    let ids = tokenizer.encode_text(text).unwrap();
    assert_eq!(ids.len(), 1, "{text:?} is one token");
    ids[0] as usize
}

/// The tiny model of the module doc, saved with the tiny tokenizer.
fn tiny_model(directory: &Path) {
    let tokenizer = tokenizer();
    let vocabulary = tokenizer.vocab_size();
    let config = LlamaConfig::tiny(vocabulary);
    let (_, var_map) = Llama::from_scratch(&config, 11, &Device::Cpu).unwrap();
    let mut tensors = varmap_tensors(&var_map);
    let hidden = config.hidden_size;

    // (vocab, hidden): column 0 is 1 for every token.
    let embedding = &tensors["model.embed_tokens.weight"];
    let rest = embedding.i((.., 1..)).unwrap();
    let ones = Tensor::ones((vocabulary, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let embedding = Tensor::cat(&[&ones, &rest], 1).unwrap();
    tensors.insert("model.embed_tokens.weight".to_owned(), embedding);

    // (vocab, hidden): column 0 sets each token's preference.
    let special = tokenizer.special();
    let mut preference = vec![0.0f32; vocabulary];
    for (id, value) in preference.iter_mut().enumerate() {
        *value = if id >= special.begin_of_text as usize {
            -3.0
        } else {
            -0.5
        };
    }
    preference[single_id(&tokenizer, " ")] = 1.0;
    preference[single_id(&tokenizer, "1")] = 0.95;
    preference[single_id(&tokenizer, "2")] = 0.95;
    preference[special.eot as usize] = 0.8;
    let head = &tensors["lm_head.weight"];
    let column = Tensor::from_vec(preference, (vocabulary, 1), &Device::Cpu).unwrap();
    let head = Tensor::cat(&[&column, &head.i((.., 1..hidden)).unwrap()], 1).unwrap();
    tensors.insert("lm_head.weight".to_owned(), head);

    save(
        directory,
        &config,
        &tensors,
        &SaveOptions {
            dtype: candle_core::DType::F32,
            ..SaveOptions::default()
        },
    )
    .unwrap();
    std::fs::copy(
        repository().join("datasets/tests/fixtures/tiny-tokenizer.json"),
        directory.join("tokenizer.json"),
    )
    .unwrap();
}

/// `count` prompts of different lengths; odd ones have no answer (not checkable).
fn prompt_lines(count: usize) -> String {
    (0..count)
        .map(|index| {
            let question = format!("{}What is 1+1?", "Please. ".repeat(index % 3));
            let metadata = if index % 2 == 0 {
                json!({"answer": "2", "capability": "math"})
            } else {
                json!({"capability": "chat"})
            };
            json!({"id": format!("q{index}"), "messages": [{"role": "user", "content": question}], "metadata": metadata})
                .to_string()
                + "\n"
        })
        .collect()
}

struct Setup {
    _directory: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    prompts: PathBuf,
}

fn setup(prompts: usize) -> Setup {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().to_owned();
    let model = root.join("model");
    tiny_model(&model);
    let prompts_path = root.join("prompts.jsonl");
    std::fs::write(&prompts_path, prompt_lines(prompts)).unwrap();
    Setup {
        _directory: directory,
        root,
        model,
        prompts: prompts_path,
    }
}

fn config(setup: &Setup, output: &str) -> RejectionConfig {
    let mut config = RejectionConfig::tiny(
        setup.model.clone(),
        setup.prompts.clone(),
        setup.root.join(output),
    );
    config.samples = 6;
    config
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one check per output file")]
fn outputs_parse_as_the_records_their_consumers_read() {
    let setup = setup(6);
    let config = config(&setup, "out");
    let summary = rejection::run(&config).unwrap();
    eprintln!("{summary:#?}");
    let output = &config.output_dir;

    // samples.jsonl: every sample, its scores; K per prompt.
    let samples = lines(&output.join(rejection::SAMPLES_FILE));
    assert_eq!(samples.len(), 6 * 6);
    assert_eq!(summary.samples, 36);
    assert!(summary.selectable_samples > 18, "{summary:?}");
    for sample in &samples {
        let truncated = sample["truncated"].as_bool().unwrap();
        assert_eq!(truncated, sample["stop"] == "max_new_tokens");
        // A truncated sample is never selectable (the module's rule).
        if truncated {
            assert_eq!(sample["selectable"], false);
            assert!(sample["score"].is_null());
        }
    }
    // Odd prompts have no answer: nothing of theirs is checkable.
    for sample in samples.iter().filter(|s| s["prompt_id"] == "q1") {
        assert!(sample["verified"].is_null(), "{sample}");
    }
    let verified: Vec<&Value> = samples.iter().filter(|s| s["verified"] == 1.0).collect();
    let wrong: Vec<&Value> = samples.iter().filter(|s| s["verified"] == 0.0).collect();
    assert!(!verified.is_empty() && !wrong.is_empty(), "{samples:#?}");
    for sample in &verified {
        let content = sample["message"]["content"].as_str().unwrap();
        assert!(content.contains('2'), "{content:?}");
    }

    // sft.jsonl: conversation records (prompt + best); a wrong best is dropped, an unchecked kept.
    let sft = lines(&output.join(rejection::SFT_FILE));
    assert_eq!(sft.len(), summary.sft_records);
    assert!(!sft.is_empty());
    for line in &sft {
        let Record::Conversation(record) = Record::from_json(line).unwrap() else {
            panic!("not a conversation: {line}");
        };
        let messages = record.dialogue.messages();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].role, Role::Assistant);
        let details = &line["metadata"]["rejection_sampling"];
        let id = line["id"].as_str().unwrap();
        let best = samples
            .iter()
            .find(|s| s["prompt_id"] == id && s["sample"] == details["sample"])
            .unwrap();
        assert_eq!(best["best"], true);
        assert_eq!(best["chosen"], true);
        assert_eq!(best["message"], messages[1].to_json());
        assert_ne!(best["verified"], 0.0, "a wrong best is not SFT data");
        assert!(line["metadata"]["capability"].as_str().is_some());
    }
    // A checkable prompt is in sft.jsonl exactly when one of its samples was right.
    for index in (0..6).step_by(2) {
        let id = format!("q{index}");
        let any_right = verified.iter().any(|s| s["prompt_id"] == id.as_str());
        assert_eq!(sft.iter().any(|line| line["id"] == id.as_str()), any_right);
    }

    // preferences.jsonl: chosen (right) over rejected (wrong), texts differ.
    let preferences = lines(&output.join(rejection::PREFERENCES_FILE));
    assert_eq!(preferences.len(), summary.preference_records);
    assert!(!preferences.is_empty());
    for line in &preferences {
        let Record::Preference(record) = Record::from_json(line).unwrap() else {
            panic!("not a preference: {line}");
        };
        assert_ne!(record.chosen[0].content, record.rejected[0].content);
        let details = &line["metadata"]["rejection_sampling"];
        assert_eq!(details["chosen_score"], 1.0);
        assert_eq!(details["rejected_score"], 0.0);
    }

    // candidates.jsonl: `herd label import` items — only its fields, two or more distinct texts.
    let candidates = lines(&output.join(rejection::CANDIDATES_FILE));
    assert_eq!(candidates.len(), summary.candidate_records);
    assert!(!candidates.is_empty());
    for line in &candidates {
        let fields: HashSet<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, HashSet::from(["id", "prompt", "responses"]));
        let prompt = Dialogue::from_json(&line["prompt"], "prompt").unwrap();
        assert_eq!(prompt.messages().last().unwrap().role, Role::User);
        let responses = line["responses"].as_array().unwrap();
        assert!(responses.len() >= 2);
        let texts: HashSet<&str> = responses
            .iter()
            .map(|response| response["content"].as_str().unwrap())
            .collect();
        assert_eq!(texts.len(), responses.len(), "duplicates removed");
        for response in responses {
            let keys: HashSet<&str> = response
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, HashSet::from(["id", "content", "model", "round"]));
            assert!(!response["content"].as_str().unwrap().trim().is_empty());
            assert_eq!(response["round"], 1);
        }
    }

    // The summary agrees with the files.
    let checkable: HashSet<&str> = samples
        .iter()
        .filter(|s| !s["verified"].is_null())
        .map(|s| s["prompt_id"].as_str().unwrap())
        .collect();
    let right: HashSet<&str> = verified
        .iter()
        .map(|s| s["prompt_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        summary.verified_fraction,
        Some(right.len() as f64 / checkable.len() as f64)
    );
    assert_eq!(summary.completed_prompts, 6);
    assert!(summary.tokens_per_s > 0.0);
}

#[test]
fn system_prompts_steer_generation_and_stay_out_of_records_unless_kept() {
    let setup = setup(2);
    let mut config = config(&setup, "plain");
    config.require_verified = false;
    config.selection = Selection::Verifier;
    let plain = rejection::run(&config).unwrap();

    let mut steered = config.clone();
    steered.output_dir = setup.root.join("steered");
    steered
        .system_prompts
        .insert("math".into(), "Answer with one number.".into());
    rejection::run(&steered).unwrap();
    let mut kept = steered.clone();
    kept.output_dir = setup.root.join("kept");
    kept.keep_system_prompts = true;
    rejection::run(&kept).unwrap();

    let first_roles = |directory: &Path| -> Vec<String> {
        lines(&directory.join(rejection::SFT_FILE))
            .iter()
            .map(|line| line["messages"][0]["role"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(plain.sft_records, 2);
    assert_eq!(first_roles(&steered.output_dir), ["user", "user"]);
    // q0 is math (steered), q1 is chat (no default entry).
    assert_eq!(first_roles(&kept.output_dir), ["system", "user"]);
    // The steered prompt is a different prefix, so q0's samples differ; q1's are the same.
    let samples = |directory: &Path, id: &str| -> Vec<Value> {
        lines(&directory.join(rejection::SAMPLES_FILE))
            .into_iter()
            .filter(|s| s["prompt_id"] == id)
            .map(|s| s["message"].clone())
            .collect()
    };
    assert_ne!(
        samples(&config.output_dir, "q0"),
        samples(&steered.output_dir, "q0")
    );
    assert_eq!(
        samples(&config.output_dir, "q1"),
        samples(&steered.output_dir, "q1")
    );
}

#[test]
fn a_run_resumed_after_half_its_prompts_and_a_torn_write_equals_an_uninterrupted_one() {
    let setup = setup(7);
    let mut whole = config(&setup, "whole");
    whole.batch_size = 2;
    let summary = rejection::run(&whole).unwrap();

    // The first half (3 prompts: the last batch is cut short), then a kill mid-write: a line of an
    // unfinished prompt in samples.jsonl and a torn line in sft.jsonl.
    let mut resumed = whole.clone();
    resumed.output_dir = setup.root.join("resumed");
    let half = setup.root.join("half.jsonl");
    std::fs::write(&half, prompt_lines(3)).unwrap();
    resumed.prompts = half;
    let first = rejection::run(&resumed).unwrap();
    assert_eq!(first.completed_prompts, 3);
    let append = |name: &str, text: &str| {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(resumed.output_dir.join(name))
            .unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    append(
        rejection::SAMPLES_FILE,
        "{\"prompt_id\": \"q3\", \"sample\": 0}\n",
    );
    append(rejection::SFT_FILE, "{\"id\": \"q3\", \"messa");

    resumed.prompts.clone_from(&whole.prompts);
    let second = rejection::run(&resumed).unwrap();
    assert_eq!(second.resumed_prompts, 3);
    assert_eq!(second.completed_prompts, 7);
    for name in [
        rejection::SFT_FILE,
        rejection::PREFERENCES_FILE,
        rejection::CANDIDATES_FILE,
        rejection::SAMPLES_FILE,
        rejection::COMPLETED_FILE,
    ] {
        assert_eq!(
            std::fs::read_to_string(resumed.output_dir.join(name)).unwrap(),
            std::fs::read_to_string(whole.output_dir.join(name)).unwrap(),
            "{name}"
        );
    }
    let strip_speed = |mut summary: synth::RejectionSummary| {
        summary.resumed_prompts = 0;
        summary.generated_tokens = 0;
        summary.seconds = 0.0;
        summary.tokens_per_s = 0.0;
        summary
    };
    assert_eq!(strip_speed(second), strip_speed(summary.clone()));

    // Nothing left to do: a third run generates nothing and reports the same totals.
    let third = rejection::run(&resumed).unwrap();
    assert_eq!(third.resumed_prompts, 7);
    assert_eq!(third.generated_tokens, 0);
    assert_eq!(strip_speed(third), strip_speed(summary));
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let setup = setup(1);
    let config = config(&setup, "out");
    rejection::run(&config).unwrap();
    let mut changed = config.clone();
    changed.temperature = 0.5;
    let error = rejection::run(&changed).unwrap_err().to_string();
    assert!(error.contains("temperature = 0.5 (was 1.0)"), "{error}");
}

#[test]
fn batched_prompts_sample_as_their_rows_generated_alone() {
    let setup = setup(0);
    let model = Checkpoint::load(&setup.model, candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .model()
        .unwrap();
    let tokenizer = tokenizer();
    let prompts: Vec<Vec<u32>> = ["What is 1+1?", "Please. Please. What is 2+2?"]
        .iter()
        .map(|text| tokenizer.encode_text(text).unwrap())
        .collect();
    let config = GenerationConfig {
        max_new_tokens: 12,
        temperature: 1.0,
        top_k: None,
        top_p: None,
        seed: 5,
        stop_tokens: vec![tokenizer.special().eot],
    };
    let samples = 3;
    let batched = sample_batch(
        &model,
        &[prompts[0].as_slice(), prompts[1].as_slice()],
        samples,
        &config,
    )
    .unwrap();
    // Row b * samples + k is prompt b's sample k: the prompts repeated in that order.
    let repeated: Vec<Vec<u32>> = prompts
        .iter()
        .flat_map(|prompt| std::iter::repeat_n(prompt.clone(), samples))
        .collect();
    let alone = generate(&model, &repeated, &config).unwrap();
    assert_eq!(batched.concat(), alone);
    assert_eq!(batched[0].len(), samples);
    let distinct: HashSet<&Vec<u32>> = batched[0].iter().map(|g| &g.ids).collect();
    assert!(distinct.len() > 1, "samples differ: {batched:?}");
}

#[test]
fn the_shipped_config_parses() {
    let path = repository().join("configs/synth-tiny.toml");
    let (config, _) =
        training::config::load_config::<RejectionConfig>(&path, &[]).expect("synth-tiny.toml");
    config.validate().unwrap();
}

/// A reward model with a fresh random head on the tiny policy's trunk.
fn tiny_reward_model(policy: &Path, directory: &Path) {
    let pad = tokenizer().special().finetune_right_pad;
    let (model, var_map) = reward::RewardModel::trainable(policy, pad, 3, &Device::Cpu).unwrap();
    reward::model::save(
        directory,
        model.config(),
        pad,
        &varmap_tensors(&var_map),
        &SaveOptions {
            dtype: candle_core::DType::F32,
            ..SaveOptions::default()
        },
    )
    .unwrap();
}

#[test]
#[expect(clippy::float_cmp, reason = "verifier results are exactly 0 or 1")]
fn the_reward_model_scores_the_written_dialogue_and_breaks_verifier_ties() {
    let setup = setup(4);
    let reward_directory = setup.root.join("reward");
    tiny_reward_model(&setup.model, &reward_directory);
    let mut config = config(&setup, "out");
    config.reward_model = Some(reward_directory.clone());
    config.selection = Selection::VerifierThenRewardModel;
    config.require_verified = false;
    let summary = rejection::run(&config).unwrap();
    assert_eq!(summary.sft_records, 4);

    let reward_model = reward::RewardModel::load(&reward_directory, &Device::Cpu).unwrap();
    let tokenizer = tokenizer();
    let renderer = datasets::Renderer::new(&tokenizer).unwrap();
    let samples = lines(&config.output_dir.join(rejection::SAMPLES_FILE));
    for line in lines(&config.output_dir.join(rejection::SFT_FILE)) {
        let Record::Conversation(record) = Record::from_json(&line).unwrap() else {
            panic!("{line}");
        };
        // The reward is the reward model's score of the dialogue as written to sft.jsonl.
        let ids = renderer.render(&record.dialogue, false).unwrap().ids;
        let expected = f64::from(reward_model.score_ids(&[ids]).unwrap()[0]);
        let details = &line["metadata"]["rejection_sampling"];
        let reward = details["reward"].as_f64().unwrap();
        assert!((reward - expected).abs() < 1e-5, "{reward} vs {expected}");
        // Verifier first, reward second: no selectable sample of this prompt ranks above the best.
        let id = line["id"].as_str().unwrap();
        let best_verified = details["verified"].as_f64().unwrap_or(0.0);
        for sample in samples
            .iter()
            .filter(|s| s["prompt_id"] == id && s["selectable"] == true)
        {
            let verified = sample["verified"].as_f64().unwrap_or(0.0);
            let sample_reward = sample["reward"].as_f64().unwrap();
            assert!(
                verified < best_verified || (verified == best_verified && sample_reward <= reward),
                "{sample} ranks above the best of {id}"
            );
        }
    }
    // Unchecked prompts (q1, q3) are chosen by reward alone, and their samples' rewards differ.
    let rewards: HashSet<u64> = samples
        .iter()
        .filter(|s| s["prompt_id"] == "q1" && s["selectable"] == true)
        .map(|s| s["reward"].as_f64().unwrap().to_bits())
        .collect();
    assert!(rewards.len() > 1);
}
