//! `herd synth`: rejection sampling (Llama 3 paper §4.2.2). For each prompt, K samples from the
//! policy; each is decoded, scored by a reward model and/or a verifier, and ranked
//! ([`crate::selection`]); the best becomes SFT data, (best, worst) a preference pair, the distinct
//! samples a labeling item, and every sample a line of analysis.
//!
//! - **Shared prompt cache.** A batch of prompts is prefilled once and its KV cache repeated K
//!   times (`model::generate_samples` for one prompt; the same `prefill` + `KvCache::repeat` +
//!   `continue_from` for several), the paper's "share the key-value cache pages for a prompt across
//!   all corresponding outputs". `synth/benches/rejection.rs` measures what it saves.
//! - **Steering.** `system_prompts[metadata.capability]` (or `default`) is added for generation
//!   to a prompt without a system message; records keep the prompt as given unless
//!   `keep_system_prompts`, and the reward model scores the dialogue as written.
//! - **Decoding** is `datasets::decode::decode_assistant`, the exact inverse of rendering. A sample
//!   that reaches `max_new_tokens` is recorded (`truncated: true`) but never selected — not chosen,
//!   not rejected, not a labeling candidate — because its rendered message would end in an
//!   `<|eot_id|>` the policy never produced. Undecodable samples (a special token in the body, a
//!   malformed tool call) are recorded with the error and never selected either.
//! - **Outputs** (in `output_dir`, one line per prompt unless said otherwise):
//!   `sft.jsonl` (conversation record: prompt + best; dropped when the verifier can check the best
//!   and it is wrong with `require_verified`, or its score is below `min_score`),
//!   `preferences.jsonl` (preference record: chosen = best, rejected = worst, when they differ in
//!   ranking and text), `candidates.jsonl` (`herd label import` items: the distinct selectable
//!   samples with text content, when there are two or more), `samples.jsonl` (one line per
//!   sample), and `completed.jsonl` (one line per finished prompt, written last).
//! - **Resume.** Every line carries its prompt's id, and a prompt counts as done once its
//!   `completed.jsonl` line is written. A re-run drops lines of unfinished prompts from the other
//!   files (a kill between two writes), skips finished prompts and regenerates the rest; batches
//!   are aligned on the prompt file, and each batch's seed depends only on its index, so the
//!   resumed output equals an uninterrupted run's. The config is saved as `config.json`; resuming
//!   with different generation settings is refused.

use std::collections::{BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datasets::decode::{StopReason as DecodeStop, decode_assistant};
use datasets::jsonl::JsonlLines;
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use datasets::{ConversationRecord, Dialogue, Message, PreferenceRecord, Record, Role};
use model::generation::{GenerationConfig, continue_from, generate_samples, prefill};
use model::{Generated, Llama, StopReason};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::{RejectionConfig, VerifierKind};
use crate::error::SynthError;
use crate::generate::Policy;
use crate::selection::{Ranking, SampleScores, best_and_worst, makes_pair, rank};
use crate::verifier::{ReferenceAnswer, Verifier};

/// The output files, by name.
pub const SFT_FILE: &str = "sft.jsonl";
/// Preference pairs (best, worst).
pub const PREFERENCES_FILE: &str = "preferences.jsonl";
/// Labeling items for `herd label import`.
pub const CANDIDATES_FILE: &str = "candidates.jsonl";
/// Every sample with its scores.
pub const SAMPLES_FILE: &str = "samples.jsonl";
/// One line per finished prompt; the resume ledger.
pub const COMPLETED_FILE: &str = "completed.jsonl";
/// The config the output directory was made with.
pub const CONFIG_FILE: &str = "config.json";

/// What a run did, over every prompt finished in `output_dir` (resumed ones included) except for
/// the speed, which is this invocation's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectionSummary {
    /// Prompts in the prompt file.
    pub prompts: usize,
    /// Prompts finished by an earlier run (skipped now).
    pub resumed_prompts: usize,
    /// Prompts finished in all.
    pub completed_prompts: usize,
    /// Samples drawn in all.
    pub samples: usize,
    /// Samples that could be selected (decoded, ended by a stop token).
    pub selectable_samples: usize,
    /// Samples that reached `max_new_tokens`.
    pub truncated_samples: usize,
    /// Samples that do not decode to an assistant message.
    pub undecodable_samples: usize,
    /// Lines in `sft.jsonl`.
    pub sft_records: usize,
    /// Lines in `preferences.jsonl`.
    pub preference_records: usize,
    /// Lines in `candidates.jsonl`.
    pub candidate_records: usize,
    /// Mean over prompts of the best sample's score.
    pub mean_best_score: Option<f64>,
    /// Mean over selectable samples of their score.
    pub mean_score: Option<f64>,
    /// Of the prompts where the verifier could check some sample, the fraction with at least one
    /// verified (score ≥ 1) sample.
    pub verified_fraction: Option<f64>,
    /// Tokens generated by this invocation (stop tokens included).
    pub generated_tokens: usize,
    /// Seconds this invocation spent generating and scoring.
    pub seconds: f64,
    /// `generated_tokens / seconds`.
    pub tokens_per_s: f64,
}

/// Runs rejection sampling with the verifier the config names.
pub fn run(config: &RejectionConfig) -> Result<RejectionSummary, SynthError> {
    let verifier: Option<Box<dyn Verifier>> = match config.verifier {
        VerifierKind::None => None,
        VerifierKind::ReferenceAnswer => Some(Box::new(ReferenceAnswer)),
    };
    run_with_verifier(config, verifier.as_deref())
}

/// Runs rejection sampling with a verifier of the caller's (the hook for checks herd does not ship:
/// unit tests of generated code, a format checker); `config.verifier` is ignored.
pub fn run_with_verifier(
    config: &RejectionConfig,
    verifier: Option<&dyn Verifier>,
) -> Result<RejectionSummary, SynthError> {
    config.validate()?;
    if config.selection.needs_verifier() && verifier.is_none() {
        return Err(SynthError::Config {
            field: "verifier".to_owned(),
            message: format!(
                "selection = {:?} reads verifier results: set verifier = \"reference_answer\"",
                config.selection
            ),
        });
    }
    let (device, dtype) = config.placement().open("synth config `device`")?;
    let policy = Policy::load_on(&config.policy, &device, dtype)?;
    let tokenizer = policy
        .tokenizer
        .as_ref()
        .ok_or_else(|| SynthError::Config {
            field: "policy".to_owned(),
            message: format!(
                "{} has no tokenizer.json; rejection sampling decodes text",
                config.policy.display()
            ),
        })?;
    let renderer = Renderer::new(tokenizer)?;
    let rewards = Rewards::load(config, &policy)?;
    let prompts = read_prompts(
        config,
        &renderer,
        policy.model.config().max_position_embeddings,
    )?;
    std::fs::create_dir_all(&config.output_dir)
        .map_err(|error| output_error(&config.output_dir, &error))?;
    check_saved_config(config)?;
    let previous = resume(&config.output_dir)?;
    let mut outputs = Outputs::open(&config.output_dir)?;

    let completed: HashSet<String> = previous.iter().map(|line| line.prompt_id.clone()).collect();
    let pending = prompts
        .iter()
        .filter(|prompt| !completed.contains(&prompt.id))
        .count();
    let resumed_prompts = prompts.len() - pending;
    let mut finished = previous;
    let mut progress = Progress::new(pending);
    let started = Instant::now();
    let mut generated_tokens = 0;
    let context = Context {
        config,
        tokenizer,
        renderer: &renderer,
        verifier,
        rewards: rewards.as_ref(),
    };
    for (batch_index, batch) in prompts.chunks(config.batch_size).enumerate() {
        if batch.iter().all(|prompt| completed.contains(&prompt.id)) {
            continue;
        }
        // Each batch's seed depends on its index alone, so a resumed run draws what an
        // uninterrupted one would.
        let generation = GenerationConfig {
            max_new_tokens: config.max_new_tokens,
            temperature: config.temperature,
            top_k: config.top_k,
            top_p: config.top_p,
            seed: config.seed ^ (batch_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            stop_tokens: policy.stop_tokens().to_vec(),
        };
        let ids: Vec<&[u32]> = batch.iter().map(|prompt| prompt.ids.as_slice()).collect();
        let generations = sample_batch(&policy.model, &ids, config.samples, &generation)?;
        for (prompt, samples) in batch.iter().zip(generations) {
            if completed.contains(&prompt.id) {
                continue;
            }
            generated_tokens += samples
                .iter()
                .map(|sample| sample.ids.len() + usize::from(sample.stop != StopReason::MaxTokens))
                .sum::<usize>();
            let outcome = context.process(prompt, &samples)?;
            outputs.write(&outcome)?;
            progress.update(&outcome.completed, generated_tokens);
            finished.push(outcome.completed);
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    Ok(summarise(
        &finished,
        prompts.len(),
        resumed_prompts,
        generated_tokens,
        seconds,
    ))
}

/// K samples of every prompt in `prompts`, the prompts' KV cache computed once and shared by their
/// samples; row `b * samples + k` is prompt `b`'s sample `k`.
pub fn sample_batch(
    model: &Llama,
    prompts: &[&[u32]],
    samples: usize,
    config: &GenerationConfig,
) -> Result<Vec<Vec<Generated>>, SynthError> {
    let generated = if let [prompt] = prompts {
        generate_samples(model, prompt, samples, config)?
    } else {
        let owned: Vec<Vec<u32>> = prompts.iter().map(|prompt| prompt.to_vec()).collect();
        let (logits, cache) = prefill(model, &owned)?;
        let (batch, vocabulary) = logits.dims2().map_err(model::ModelError::from)?;
        // (batch, vocab) -> (batch, samples, vocab) -> (batch * samples, vocab): each prompt's
        // rows together, as `KvCache::repeat` lays them out.
        let logits = logits
            .unsqueeze(1)
            .and_then(|logits| logits.broadcast_as((batch, samples, vocabulary)))
            .and_then(|logits| logits.contiguous())
            .and_then(|logits| logits.reshape((batch * samples, vocabulary)))
            .map_err(model::ModelError::from)?;
        continue_from(model, &logits, cache.repeat(samples)?, config)?
    };
    let mut rows = generated.into_iter();
    Ok(prompts
        .iter()
        .map(|_| rows.by_ref().take(samples).collect())
        .collect())
}

/// One prompt, ready to sample.
#[derive(Debug)]
struct Prompt {
    /// The record's `id`, or `line-N`.
    id: String,
    /// The record as given (the verifier reads its metadata).
    record: ConversationRecord,
    /// The prompt written to the output records.
    written: Dialogue,
    /// The rendered generation prompt (with the steering system prompt, open assistant header).
    ids: Vec<u32>,
}

fn read_prompts(
    config: &RejectionConfig,
    renderer: &Renderer<'_>,
    context_length: usize,
) -> Result<Vec<Prompt>, SynthError> {
    let source = config.prompts.display().to_string();
    let lines = JsonlLines::open(&source).map_err(|error| SynthError::Input(error.to_string()))?;
    let mut prompts = Vec::new();
    let mut ids = HashSet::new();
    for item in lines.records() {
        let (line, record) = item.map_err(|problems| {
            SynthError::Input(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let at = |message: String| SynthError::Input(format!("{source}:{line}: {message}"));
        let Record::Conversation(record) = record else {
            return Err(at(
                "a prompt is a conversation record ({\"messages\": [...]}), not a preference"
                    .to_owned(),
            ));
        };
        let messages = record.dialogue.messages();
        if messages.last().map(|message| message.role) == Some(Role::Assistant) {
            return Err(at(format!(
                "messages[{}]: a prompt must end with a user or tool-result message, not an assistant message",
                messages.len() - 1
            )));
        }
        let id = record.id.clone().unwrap_or_else(|| format!("line-{line}"));
        if !ids.insert(id.clone()) {
            return Err(at(format!(
                "id {id:?} appears twice; resuming tells prompts apart by id"
            )));
        }
        let capability = record
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.get("capability"))
            .and_then(Value::as_str);
        let has_system = messages.first().map(|message| message.role) == Some(Role::System);
        let steered = match config.system_prompt(capability) {
            Some(system) if !has_system => {
                let mut steered = vec![Message::new(Role::System, system)];
                steered.extend_from_slice(messages);
                Dialogue::new(steered)
                    .map_err(|problems| at(datasets::message::join_problems(&problems)))?
            }
            _ => record.dialogue.clone(),
        };
        let ids = renderer.render(&steered, true)?.ids;
        if ids.len() + config.max_new_tokens > context_length {
            return Err(at(format!(
                "the prompt is {} tokens; with max_new_tokens = {} it exceeds the model's context of {context_length}",
                ids.len(),
                config.max_new_tokens
            )));
        }
        let written = if config.keep_system_prompts {
            steered
        } else {
            record.dialogue.clone()
        };
        prompts.push(Prompt {
            id,
            record,
            written,
            ids,
        });
    }
    Ok(prompts)
}

/// The reward model, when the config names one.
struct Rewards {
    model: reward::RewardModel,
}

impl Rewards {
    fn load(config: &RejectionConfig, policy: &Policy) -> Result<Option<Rewards>, SynthError> {
        let Some(directory) = &config.reward_model else {
            return Ok(None);
        };
        let mut model = reward::RewardModel::load(directory, &policy.model.device())?;
        if let Some(dtype) = config.compute_dtype.cast() {
            model.set_compute_dtype(Some(dtype))?;
        }
        // The reward model reads the policy tokenizer's ids: a different vocabulary means a
        // different tokenizer, and its scores would be noise.
        let (reward_vocabulary, policy_vocabulary) =
            (model.config().vocab_size, policy.model.config().vocab_size);
        if reward_vocabulary != policy_vocabulary {
            return Err(SynthError::Config {
                field: "reward_model".to_owned(),
                message: format!(
                    "{} has a vocabulary of {reward_vocabulary} ids, the policy {} of {policy_vocabulary}: they must share a tokenizer",
                    directory.display(),
                    config.policy.display()
                ),
            });
        }
        Ok(Some(Rewards { model }))
    }

    /// One reward per rendered dialogue.
    fn score(&self, sequences: &[Vec<u32>]) -> Result<Vec<f64>, SynthError> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .model
            .score_ids(sequences)?
            .into_iter()
            .map(f64::from)
            .collect())
    }
}

/// What one sample became.
#[derive(Debug)]
struct Sample {
    /// The decoded message and the dialogue it completes, when it decodes.
    message: Option<(Message, Dialogue)>,
    /// Why decoding failed.
    error: Option<String>,
    truncated: bool,
    scores: SampleScores,
    ranking: Option<Ranking>,
}

/// One prompt's lines, ready to write.
struct Outcome {
    sft: Option<Value>,
    preference: Option<Value>,
    candidates: Option<Value>,
    samples: Vec<Value>,
    completed: CompletedPrompt,
}

/// A `completed.jsonl` line: a finished prompt and what it produced.
#[expect(
    clippy::struct_excessive_bools,
    reason = "a ledger line: each flag says whether one output file got a line or one count holds"
)]
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct CompletedPrompt {
    prompt_id: String,
    samples: usize,
    selectable: usize,
    truncated: usize,
    undecodable: usize,
    best_score: Option<f64>,
    score_sum: f64,
    /// Whether the verifier could check some sample.
    checkable: bool,
    /// Whether some sample was verified right.
    verified: bool,
    sft: bool,
    preference: bool,
    candidates: bool,
}

impl CompletedPrompt {
    /// The counts of one prompt's samples; the output flags start false.
    fn count(prompt_id: &str, samples: &[Sample], chosen: Option<(usize, usize)>) -> Self {
        let selectable: Vec<&Sample> = samples.iter().filter(|s| s.ranking.is_some()).collect();
        CompletedPrompt {
            prompt_id: prompt_id.to_owned(),
            samples: samples.len(),
            selectable: selectable.len(),
            truncated: samples.iter().filter(|sample| sample.truncated).count(),
            undecodable: samples
                .iter()
                .filter(|sample| sample.message.is_none())
                .count(),
            best_score: chosen
                .and_then(|(best, _)| samples[best].ranking)
                .map(|ranking| ranking.score),
            score_sum: selectable
                .iter()
                .filter_map(|sample| sample.ranking)
                .map(|ranking| ranking.score)
                .sum(),
            checkable: samples
                .iter()
                .any(|sample| sample.scores.verified.is_some()),
            verified: samples.iter().any(|sample| {
                sample
                    .scores
                    .verified
                    .is_some_and(|verified| verified >= 1.0)
            }),
            sft: false,
            preference: false,
            candidates: false,
        }
    }
}

struct Context<'a> {
    config: &'a RejectionConfig,
    tokenizer: &'a Llama3Tokenizer,
    renderer: &'a Renderer<'a>,
    verifier: Option<&'a dyn Verifier>,
    rewards: Option<&'a Rewards>,
}

impl Context<'_> {
    fn process(&self, prompt: &Prompt, generations: &[Generated]) -> Result<Outcome, SynthError> {
        let mut samples: Vec<Sample> = generations
            .iter()
            .map(|generated| {
                let mut ids = generated.ids.clone();
                if let StopReason::StopToken(id) = generated.stop {
                    ids.push(id);
                }
                let decoded = decode_assistant(self.tokenizer, &ids)
                    .map_err(|error| error.to_string())
                    .and_then(|decoded| {
                        let full = prompt
                            .written
                            .extended(std::slice::from_ref(&decoded.message), "response")
                            .map_err(|problems| datasets::message::join_problems(&problems))?;
                        Ok((decoded, full))
                    });
                match decoded {
                    Ok((decoded, full)) => Sample {
                        truncated: decoded.stop == DecodeStop::OutOfTokens,
                        message: Some((decoded.message, full)),
                        error: None,
                        scores: SampleScores {
                            reward: None,
                            verified: None,
                        },
                        ranking: None,
                    },
                    Err(error) => Sample {
                        truncated: generated.stop == StopReason::MaxTokens,
                        message: None,
                        error: Some(error),
                        scores: SampleScores {
                            reward: None,
                            verified: None,
                        },
                        ranking: None,
                    },
                }
            })
            .collect();

        // Score the selectable samples: the verifier on each, the reward model on all at once.
        let selectable: Vec<usize> = (0..samples.len())
            .filter(|&index| samples[index].message.is_some() && !samples[index].truncated)
            .collect();
        if let Some(verifier) = self.verifier {
            for &index in &selectable {
                if let Some((message, _)) = &samples[index].message {
                    samples[index].scores.verified = verifier.verify(&prompt.record, message);
                }
            }
        }
        if let Some(rewards) = self.rewards {
            let sequences = selectable
                .iter()
                .filter_map(|&index| samples[index].message.as_ref())
                .map(|(_, full)| Ok(self.renderer.render(full, false)?.ids))
                .collect::<Result<Vec<_>, SynthError>>()?;
            for (&index, reward) in selectable.iter().zip(rewards.score(&sequences)?) {
                samples[index].scores.reward = Some(reward);
            }
        }
        for &index in &selectable {
            samples[index].ranking = rank(
                self.config.selection,
                self.config.verifier_weight,
                samples[index].scores,
            );
        }
        let rankings: Vec<Option<Ranking>> = samples.iter().map(|sample| sample.ranking).collect();
        let chosen = best_and_worst(&rankings);
        Ok(self.outcome(prompt, generations, &samples, chosen))
    }

    fn outcome(
        &self,
        prompt: &Prompt,
        generations: &[Generated],
        samples: &[Sample],
        chosen: Option<(usize, usize)>,
    ) -> Outcome {
        let config = self.config;
        let message = |index: usize| samples[index].message.as_ref().map(|(message, _)| message);
        let ranking = |index: usize| samples[index].ranking;

        let sft = chosen.and_then(|(best, _)| {
            let (_, full) = samples[best].message.as_ref()?;
            let score = ranking(best)?.score;
            let failed = samples[best]
                .scores
                .verified
                .is_some_and(|verified| verified < 1.0);
            if (config.require_verified && failed)
                || config.min_score.is_some_and(|minimum| score < minimum)
            {
                return None;
            }
            Some(
                ConversationRecord {
                    id: Some(prompt.id.clone()),
                    dialogue: full.clone(),
                    metadata: Some(self.metadata(
                        prompt,
                        &json!({
                            "sample": best,
                            "score": score,
                            "reward": samples[best].scores.reward,
                            "verified": samples[best].scores.verified,
                            "samples": samples.len(),
                            "model": config.model_name,
                            "round": config.round,
                        }),
                    )),
                }
                .to_json(),
            )
        });

        let preference = chosen.and_then(|(best, worst)| {
            let (chosen_message, rejected_message) = (message(best)?, message(worst)?);
            if !makes_pair(ranking(best)?, ranking(worst)?)
                || same_text(chosen_message, rejected_message)
            {
                return None;
            }
            Some(
                PreferenceRecord {
                    id: Some(prompt.id.clone()),
                    prompt: prompt.written.clone(),
                    chosen: vec![chosen_message.clone()],
                    rejected: vec![rejected_message.clone()],
                    edited: None,
                    strength: None,
                    margin: None,
                    item_id: None,
                    annotator_id: None,
                    metadata: Some(self.metadata(
                        prompt,
                        &json!({
                            "chosen_sample": best,
                            "rejected_sample": worst,
                            "chosen_score": ranking(best)?.score,
                            "rejected_score": ranking(worst)?.score,
                            "model": config.model_name,
                            "round": config.round,
                        }),
                    )),
                }
                .to_json(),
            )
        });

        let candidates = candidates_item(config, prompt, samples);
        let sample_lines = self.sample_lines(prompt, generations, samples, chosen, sft.is_some());

        let mut completed = CompletedPrompt::count(&prompt.id, samples, chosen);
        completed.sft = sft.is_some();
        completed.preference = preference.is_some();
        completed.candidates = candidates.is_some();
        Outcome {
            sft,
            preference,
            candidates,
            samples: sample_lines,
            completed,
        }
    }

    /// One `samples.jsonl` line per sample.
    fn sample_lines(
        &self,
        prompt: &Prompt,
        generations: &[Generated],
        samples: &[Sample],
        chosen: Option<(usize, usize)>,
        in_sft: bool,
    ) -> Vec<Value> {
        samples
            .iter()
            .zip(generations)
            .enumerate()
            .map(|(index, (sample, generated))| {
                let stop = match generated.stop {
                    StopReason::MaxTokens => "max_new_tokens".to_owned(),
                    StopReason::StopToken(id) => self
                        .tokenizer
                        .id_to_token(id)
                        .unwrap_or_else(|| id.to_string()),
                };
                let mut line = json!({
                    "prompt_id": prompt.id,
                    "sample": index,
                    "tokens": generated.ids.len(),
                    "stop": stop,
                    "truncated": sample.truncated,
                    "selectable": sample.ranking.is_some(),
                    "reward": sample.scores.reward,
                    "verified": sample.scores.verified,
                    "score": sample.ranking.map(|ranking| ranking.score),
                    "chosen": chosen.is_some_and(|(best, _)| best == index) && in_sft,
                    "best": chosen.is_some_and(|(best, _)| best == index),
                    "worst": chosen.is_some_and(|(_, worst)| worst == index),
                });
                match (&sample.message, &sample.error) {
                    (Some((message, _)), _) => line["message"] = message.to_json(),
                    (None, Some(error)) => {
                        line["text"] = self
                            .tokenizer
                            .decode(&generated.ids)
                            .unwrap_or_default()
                            .into();
                        line["decode_error"] = error.clone().into();
                    }
                    (None, None) => {}
                }
                line
            })
            .collect()
    }

    /// The prompt's metadata with a `rejection_sampling` entry (an object's keys kept; any other
    /// metadata kept under `prompt_metadata`).
    fn metadata(&self, prompt: &Prompt, details: &Value) -> Value {
        let mut fields = match &prompt.record.metadata {
            Some(Value::Object(fields)) => fields.clone(),
            Some(other) => Map::from_iter([("prompt_metadata".to_owned(), other.clone())]),
            None => Map::new(),
        };
        if self.config.system_prompts.is_empty() {
            fields.insert("rejection_sampling".to_owned(), details.clone());
        } else {
            let mut details = details.clone();
            let capability = prompt
                .record
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.get("capability"))
                .and_then(Value::as_str);
            details["system_prompt"] = self.config.system_prompt(capability).into();
            fields.insert("rejection_sampling".to_owned(), details);
        }
        Value::Object(fields)
    }
}

/// A `herd label import` item: the distinct selectable text responses, when two or more.
fn candidates_item(config: &RejectionConfig, prompt: &Prompt, samples: &[Sample]) -> Option<Value> {
    // Labeling items: the distinct selectable text responses (a tool call has no text to
    // rank, and `herd label import` refuses empty content).
    let mut seen = BTreeSet::new();
    let responses: Vec<Value> = samples
        .iter()
        .enumerate()
        .filter(|(_, sample)| sample.ranking.is_some())
        .filter_map(|(index, sample)| {
            let (message, _) = sample.message.as_ref()?;
            let text_response = message.tool_call.is_none() && !message.content.trim().is_empty();
            (text_response && seen.insert(message.content.clone())).then(|| {
                json!({
                    "id": format!("{}/{index}", prompt.id),
                    "content": message.content,
                    "model": config.model_name,
                    "round": config.round,
                })
            })
        })
        .collect();
    (responses.len() >= 2).then(|| {
        json!({
            "id": prompt.id,
            "prompt": prompt.written.messages(),
            "responses": responses,
        })
    })
}

fn same_text(a: &Message, b: &Message) -> bool {
    a.content == b.content
        && a.end == b.end
        && a.tool_call.as_ref().map(|call| &call.tool)
            == b.tool_call.as_ref().map(|call| &call.tool)
}

/// The output files, opened for appending.
struct Outputs {
    directory: PathBuf,
    files: [std::fs::File; 5],
}

const OUTPUT_FILES: [&str; 5] = [
    SFT_FILE,
    PREFERENCES_FILE,
    CANDIDATES_FILE,
    SAMPLES_FILE,
    COMPLETED_FILE,
];

impl Outputs {
    fn open(directory: &Path) -> Result<Outputs, SynthError> {
        let open = |name: &str| {
            let path = directory.join(name);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|error| output_error(&path, &error))
        };
        Ok(Outputs {
            directory: directory.to_owned(),
            files: [
                open(SFT_FILE)?,
                open(PREFERENCES_FILE)?,
                open(CANDIDATES_FILE)?,
                open(SAMPLES_FILE)?,
                open(COMPLETED_FILE)?,
            ],
        })
    }

    /// Appends one prompt's lines, `completed.jsonl` last, each file in one write and flushed.
    fn write(&mut self, outcome: &Outcome) -> Result<(), SynthError> {
        let completed = serde_json::to_value(&outcome.completed)
            .map_err(|error| SynthError::Output(format!("{COMPLETED_FILE}: {error}")))?;
        let lines: [Vec<&Value>; 5] = [
            outcome.sft.iter().collect(),
            outcome.preference.iter().collect(),
            outcome.candidates.iter().collect(),
            outcome.samples.iter().collect(),
            vec![&completed],
        ];
        for ((file, name), values) in self.files.iter_mut().zip(OUTPUT_FILES).zip(lines) {
            if values.is_empty() {
                continue;
            }
            let mut text = String::new();
            for value in values {
                text.push_str(&value.to_string());
                text.push('\n');
            }
            file.write_all(text.as_bytes())
                .and_then(|()| file.flush())
                .map_err(|error| output_error(&self.directory.join(name), &error))?;
        }
        Ok(())
    }
}

fn output_error(path: &Path, error: &dyn std::fmt::Display) -> SynthError {
    SynthError::Output(format!("{}: {error}", path.display()))
}

/// Saves the config as `config.json`, or, when the directory already holds a run, refuses one
/// whose settings other than `prompts` and `output_dir` differ.
fn check_saved_config(config: &RejectionConfig) -> Result<(), SynthError> {
    let path = config.output_dir.join(CONFIG_FILE);
    let comparable = |value: &Value| -> Value {
        let mut value = value.clone();
        if let Some(fields) = value.as_object_mut() {
            fields.remove("prompts");
            fields.remove("output_dir");
        }
        value
    };
    let current = serde_json::to_value(config).map_err(|error| output_error(&path, &error))?;
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|error| output_error(&path, &error))?;
        let saved: Value =
            serde_json::from_str(&text).map_err(|error| output_error(&path, &error))?;
        let (saved, now) = (comparable(&saved), comparable(&current));
        if saved != now {
            let differing: Vec<String> = now
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, value)| saved.get(key.as_str()) != Some(value))
                .map(|(key, value)| {
                    format!(
                        "{key} = {value} (was {})",
                        saved.get(key.as_str()).unwrap_or(&Value::Null)
                    )
                })
                .collect();
            return Err(SynthError::Config {
                field: differing
                    .first()
                    .and_then(|line| line.split(' ').next())
                    .unwrap_or("config")
                    .to_owned(),
                message: format!(
                    "{} holds a run made with other settings ({}); resuming it would mix them — use a new output_dir",
                    config.output_dir.display(),
                    differing.join(", ")
                ),
            });
        }
        return Ok(());
    }
    let text =
        serde_json::to_string_pretty(&current).map_err(|error| output_error(&path, &error))?;
    std::fs::write(&path, text + "\n").map_err(|error| output_error(&path, &error))
}

/// Reads `completed.jsonl` and drops, from every output file, lines of prompts that did not finish
/// (and a torn last line). Returns the finished prompts.
fn resume(directory: &Path) -> Result<Vec<CompletedPrompt>, SynthError> {
    let completed_path = directory.join(COMPLETED_FILE);
    let mut completed = Vec::new();
    if completed_path.is_file() {
        let text = std::fs::read_to_string(&completed_path)
            .map_err(|error| output_error(&completed_path, &error))?;
        for line in text.lines() {
            // Only a torn last line can fail to parse: lines are written whole.
            if let Ok(prompt) = serde_json::from_str::<CompletedPrompt>(line) {
                completed.push(prompt);
            }
        }
    }
    let ids: HashSet<&str> = completed
        .iter()
        .map(|prompt| prompt.prompt_id.as_str())
        .collect();
    for (name, key) in [
        (SFT_FILE, "id"),
        (PREFERENCES_FILE, "id"),
        (CANDIDATES_FILE, "id"),
        (SAMPLES_FILE, "prompt_id"),
        (COMPLETED_FILE, "prompt_id"),
    ] {
        retain_finished(&directory.join(name), key, &ids)?;
    }
    Ok(completed)
}

/// Rewrites `path` without the lines whose `key` is not in `ids` (torn lines included), through a
/// temporary file and a rename so a kill leaves the old or the new file.
fn retain_finished(path: &Path, key: &str, ids: &HashSet<&str>) -> Result<(), SynthError> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|error| output_error(path, &error))?;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let finished = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|value| {
                value
                    .get(key)
                    .and_then(Value::as_str)
                    .map(|id| ids.contains(id))
            })
            .unwrap_or(false);
        if finished {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if kept != text {
        let temporary = path.with_extension("jsonl.partial");
        std::fs::write(&temporary, &kept)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|error| output_error(path, &error))?;
    }
    Ok(())
}

fn summarise(
    finished: &[CompletedPrompt],
    prompts: usize,
    resumed_prompts: usize,
    generated_tokens: usize,
    seconds: f64,
) -> RejectionSummary {
    let count = |test: fn(&CompletedPrompt) -> bool| finished.iter().filter(|p| test(p)).count();
    let sum = |value: fn(&CompletedPrompt) -> usize| finished.iter().map(value).sum::<usize>();
    let best: Vec<f64> = finished
        .iter()
        .filter_map(|prompt| prompt.best_score)
        .collect();
    let selectable_samples = sum(|prompt| prompt.selectable);
    let checkable = count(|prompt| prompt.checkable);
    RejectionSummary {
        prompts,
        resumed_prompts,
        completed_prompts: finished.len(),
        samples: sum(|prompt| prompt.samples),
        selectable_samples,
        truncated_samples: sum(|prompt| prompt.truncated),
        undecodable_samples: sum(|prompt| prompt.undecodable),
        sft_records: count(|prompt| prompt.sft),
        preference_records: count(|prompt| prompt.preference),
        candidate_records: count(|prompt| prompt.candidates),
        mean_best_score: (!best.is_empty()).then(|| best.iter().sum::<f64>() / best.len() as f64),
        mean_score: (selectable_samples > 0).then(|| {
            finished.iter().map(|prompt| prompt.score_sum).sum::<f64>() / selectable_samples as f64
        }),
        verified_fraction: (checkable > 0)
            .then(|| count(|prompt| prompt.checkable && prompt.verified) as f64 / checkable as f64),
        generated_tokens,
        seconds,
        tokens_per_s: if seconds > 0.0 {
            generated_tokens as f64 / seconds
        } else {
            0.0
        },
    }
}

/// `synth 12/100 prompts | 8/8 selectable | best 1.000 | 123 tok/s | eta 1m05s` on standard error.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, prompt: &CompletedPrompt, tokens: usize) {
        self.done += 1;
        let elapsed = self.started.elapsed();
        let eta = elapsed.mul_f64((self.total - self.done) as f64 / self.done as f64);
        let best = prompt
            .best_score
            .map_or_else(|| "-".to_owned(), |score| format!("{score:.3}"));
        let line = format!(
            "synth {}/{} prompts | {}/{} selectable | best {best} | {:.0} tok/s | eta {}",
            self.done,
            self.total,
            prompt.selectable,
            prompt.samples,
            tokens as f64 / elapsed.as_secs_f64().max(1e-9),
            format_duration(eta)
        );
        let mut stderr = std::io::stderr().lock();
        // Progress is best-effort: a closed standard error must not stop the run.
        let _ = if self.terminal {
            write!(stderr, "\r{line}\x1b[K").and_then(|()| stderr.flush())
        } else {
            writeln!(stderr, "{line}")
        };
    }

    fn finish(&self) {
        if self.terminal && self.done > 0 {
            let _ = writeln!(std::io::stderr());
        }
    }
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds / 60 % 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}
