//! `herd round --config FILE`: one round of the Llama 3 chat recipe (§4.1, Figure 7) — from a
//! policy and preference data: reward model → rejection sampling → SFT → DPO → averaging →
//! export, every stage's outputs under the round's directory, and a report.
//!
//! The round only wires the stages together: each is run through its own library entry point with
//! a config the round writes to `configs/` first, so any stage can be re-run or inspected alone
//! with its `herd` command. A stage whose `final/` checkpoint exists is not run again, and a stage
//! that was interrupted resumes from its own checkpoints, so re-running the round resumes it.
//!
//! Data flow (paper §4.2): the reward model trains on all the preference data; rejection sampling
//! draws K samples per prompt from the policy and keeps the best by reward model and/or verifier;
//! SFT fine-tunes the policy on the kept samples (plus any other SFT data); DPO starts from that SFT
//! model on the rejection-sampled best-vs-worst pairs (and, if asked, the human preferences); the
//! DPO runs of several seeds are averaged (a model soup, §4.1.5); the average is exported.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use training::TrainingConfig;

use crate::error::RecipeError;
use crate::evaluate::{Accuracy, PromptStyle, accuracy, read_questions};

/// A whole round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundConfig {
    /// Where every stage's outputs, the configs and the report go.
    pub output_dir: PathBuf,
    /// The policy the round starts from (an HF checkpoint directory with its tokenizer.json).
    pub policy: PathBuf,
    /// Where the round's inference runs: the evaluation after each stage and rejection sampling
    /// (`auto`: a CUDA GPU when herd is built with it and one is present, else the CPU). The
    /// training stages take theirs from their own `training` sections.
    #[serde(default)]
    pub device: training::DeviceChoice,
    /// The dtype that inference keeps the weights and computes in (`bf16` halves the memory;
    /// logits stay f32).
    #[serde(default)]
    pub compute_dtype: training::ComputeDtype,
    /// Human (or other) preference files: the reward model trains on all of them.
    pub preferences: Vec<PathBuf>,
    /// Prompt files for rejection sampling (`{"messages": [...], "metadata": {...}}` lines).
    pub prompts: PathBuf,
    /// More SFT conversations mixed with the rejection-sampled ones.
    #[serde(default)]
    pub sft_data: Vec<PathBuf>,
    /// The previous round's directory, for the report's comparison.
    #[serde(default)]
    pub previous_round: Option<PathBuf>,
    /// Held-out questions with reference answers: accuracy after every stage goes in the report.
    #[serde(default)]
    pub evaluation: Option<EvaluationSettings>,
    /// The reward model.
    pub reward: RewardStage,
    /// Rejection sampling.
    pub rejection_sampling: RejectionStage,
    /// SFT on the rejection-sampled data.
    pub sft: SftStage,
    /// DPO.
    pub dpo: DpoStage,
    /// Averaging of the DPO runs.
    #[serde(default)]
    pub averaging: AveragingStage,
    /// The exported checkpoint's dtype: "bf16" (as released Llama checkpoints) or "f32".
    #[serde(default)]
    pub export_dtype: training::FinalDtype,
}

impl RoundConfig {
    /// Where the round's evaluation and rejection sampling run.
    #[must_use]
    pub fn placement(&self) -> training::Placement {
        training::Placement {
            device: self.device,
            dtype: self.compute_dtype,
        }
    }
}

/// Held-out evaluation after each stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSettings {
    /// Question lines with `metadata.answer`.
    pub questions: PathBuf,
    /// Longest greedy answer.
    #[serde(default = "default_answer_tokens")]
    pub max_new_tokens: usize,
    /// Questions answered together.
    #[serde(default = "default_evaluation_batch")]
    pub batch_size: usize,
}

fn default_answer_tokens() -> usize {
    32
}
fn default_evaluation_batch() -> usize {
    64
}

/// The reward model's settings (its model is the round's policy, its data the round's
/// preferences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardStage {
    /// Longest prompt + response.
    pub sequence_length: usize,
    /// Fraction of pairs held out for the reward model's accuracy.
    #[serde(default = "default_held_out_fraction")]
    pub held_out_fraction: f64,
    /// Strengths kept (empty: all; Llama 3 kept significantly better and better).
    #[serde(default)]
    pub strengths: Vec<reward::config::StrengthSetting>,
    /// The Bradley–Terry loss's options.
    #[serde(default)]
    pub loss: reward::config::LossConfig,
    /// Optimisation.
    pub training: TrainingConfig,
}

fn default_held_out_fraction() -> f64 {
    0.1
}

/// Rejection sampling's settings (policy, reward model, prompts and output are the round's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionStage {
    /// Samples per prompt (paper: 10–30).
    pub samples: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus sampling threshold.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Longest sample.
    pub max_new_tokens: usize,
    /// Prompts generated together.
    #[serde(default = "default_rejection_batch")]
    pub batch_size: usize,
    /// The verifier (`none` or `reference_answer`).
    #[serde(default)]
    pub verifier: synth::VerifierKind,
    /// How samples are ranked: `reward_model`, `verifier`, `verifier_then_reward_model` or
    /// `weighted`.
    pub selection: synth::Selection,
    /// The verifier's weight with `selection = "weighted"`.
    #[serde(default = "default_verifier_weight")]
    pub verifier_weight: f64,
    /// Drop a prompt from the SFT data when its best sample fails the verifier.
    #[serde(default = "default_true")]
    pub require_verified: bool,
    /// Seeds the sampling.
    #[serde(default)]
    pub seed: u64,
}

fn default_rejection_batch() -> usize {
    8
}
fn default_verifier_weight() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}

/// SFT's settings (model: the round's policy; data: the kept samples and `sft_data`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// Tokens per packed row.
    pub sequence_length: usize,
    /// Fraction held out for the held-out loss.
    #[serde(default = "default_held_out_fraction")]
    pub held_out_fraction: f64,
    /// Optimisation.
    pub training: TrainingConfig,
}

/// DPO's settings (model and reference: the round's SFT model; data: the rejection-sampled pairs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoStage {
    /// Longest prompt + response.
    pub sequence_length: usize,
    /// Fraction of pairs held out.
    #[serde(default = "default_held_out_fraction")]
    pub held_out_fraction: f64,
    /// Also train on the round's preference files (Llama 3 used the latest human batches).
    #[serde(default)]
    pub use_preferences: bool,
    /// Loss, β and the NLL weight (Llama 3: sigmoid, 0.1, 0.2).
    #[serde(default)]
    pub dpo: dpo::config::DpoSettings,
    /// Which rejected tokens are blamed (`whole`, or `to_first_difference` for answers that one
    /// wrong token makes wrong: `dpo::config::RejectedSpan`).
    #[serde(default)]
    pub rejected_span: dpo::config::RejectedSpan,
    /// Optimisation; `training.seed` is replaced by each of `averaging.seeds`.
    pub training: TrainingConfig,
}

/// Which DPO runs are averaged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AveragingStage {
    /// One DPO run per seed (data order, held-out split); their final weights are averaged
    /// uniformly. One seed: no averaging, the DPO model is exported.
    pub seeds: Vec<u64>,
}

impl Default for AveragingStage {
    fn default() -> Self {
        AveragingStage { seeds: vec![0, 1] }
    }
}

/// One stage's outcome in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageOutcome {
    /// The stage's name in the report.
    pub name: String,
    /// The checkpoint it produced (none for rejection sampling).
    pub model: Option<PathBuf>,
    /// Seconds it took (0 when it had finished in an earlier run).
    pub seconds: f64,
    /// Its own summary (the stage library's JSON).
    pub summary: serde_json::Value,
    /// Held-out accuracy of `model`, with `evaluation`.
    pub accuracy: Option<Accuracy>,
    /// The stage's loss plot, if it has one.
    pub loss_plot: Option<PathBuf>,
}

/// What a round reports (also `report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundSummary {
    /// Held-out accuracy of the starting policy, with `evaluation`.
    pub policy_accuracy: Option<Accuracy>,
    /// The stages in order.
    pub stages: Vec<StageOutcome>,
    /// The exported checkpoint.
    pub export: PathBuf,
    /// `report.md`.
    pub report: PathBuf,
}

/// Runs (or resumes) the round `config` describes.
#[expect(
    clippy::too_many_lines,
    reason = "the round's stages in order, read top to bottom"
)]
pub fn run(config: &RoundConfig) -> Result<RoundSummary, RecipeError> {
    // A device that cannot be opened stops the round before its first stage, not after it.
    config
        .placement()
        .open("device")
        .map_err(RecipeError::stage("round"))?;
    let out = &config.output_dir;
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs).map_err(RecipeError::io(&configs))?;
    let questions = match &config.evaluation {
        Some(evaluation) => Some((read_questions(&evaluation.questions)?, evaluation)),
        None => None,
    };
    let evaluate = |model: &Path| -> Result<Option<Accuracy>, RecipeError> {
        questions
            .as_ref()
            .map(|(questions, settings)| {
                accuracy(
                    model,
                    config.placement(),
                    "device",
                    questions,
                    PromptStyle::Chat,
                    settings.max_new_tokens,
                    settings.batch_size,
                )
            })
            .transpose()
    };
    let policy_accuracy = evaluate(&config.policy)?;
    let mut stages = Vec::new();

    // 1. The reward model, from the policy, on every preference file.
    let reward_dir = out.join("reward");
    let mut reward_config = reward::RewardConfig::tiny(config.policy.clone(), reward_dir.clone());
    reward_config.data = reward::config::DataConfig {
        train: config.preferences.clone(),
        held_out: Vec::new(),
        held_out_fraction: config.reward.held_out_fraction,
        strengths: config.reward.strengths.clone(),
        sequence_length: config.reward.sequence_length,
        skip_invalid: true,
    };
    reward_config.loss = config.reward.loss;
    reward_config.training = config.reward.training.clone();
    let resolved = write_config(&configs.join("reward.toml"), &reward_config)?;
    let started = Instant::now();
    let summary = if is_finished(&reward_dir) {
        None
    } else {
        announce(
            "reward model",
            "herd reward train",
            &configs.join("reward.toml"),
        );
        Some(json(
            &reward::train::run(&reward_config, &resolved)
                .map_err(RecipeError::stage("reward model"))?,
        )?)
    };
    let reward_model = reward_dir.join("final");
    stages.push(StageOutcome {
        name: "reward model".to_owned(),
        model: None,
        seconds: elapsed(summary.as_ref(), started),
        summary: summary.unwrap_or_else(|| previous_summary(out, "reward model")),
        accuracy: None,
        loss_plot: Some(reward_dir.join("loss.svg")),
    });

    // 2. Rejection sampling from the policy, scored by the reward model and/or the verifier.
    let rejection_dir = out.join("rejection_sampling");
    let stage = &config.rejection_sampling;
    let mut rejection_config = synth::RejectionConfig::tiny(
        config.policy.clone(),
        config.prompts.clone(),
        rejection_dir.clone(),
    );
    rejection_config.device = config.device;
    rejection_config.compute_dtype = config.compute_dtype;
    rejection_config.reward_model = stage
        .selection
        .needs_reward_model()
        .then(|| reward_model.clone());
    rejection_config.samples = stage.samples;
    rejection_config.temperature = stage.temperature;
    rejection_config.top_p = stage.top_p;
    rejection_config.max_new_tokens = stage.max_new_tokens;
    rejection_config.batch_size = stage.batch_size;
    rejection_config.verifier = stage.verifier;
    rejection_config.selection = stage.selection;
    rejection_config.verifier_weight = stage.verifier_weight;
    rejection_config.require_verified = stage.require_verified;
    rejection_config.seed = stage.seed;
    write_config(&configs.join("rejection_sampling.toml"), &rejection_config)?;
    announce(
        "rejection sampling",
        "herd synth",
        &configs.join("rejection_sampling.toml"),
    );
    let started = Instant::now();
    // Rejection sampling resumes by itself (it skips finished prompts), so it always runs.
    let summary = json(
        &synth::rejection::run(&rejection_config)
            .map_err(RecipeError::stage("rejection sampling"))?,
    )?;
    stages.push(StageOutcome {
        name: "rejection sampling".to_owned(),
        model: None,
        seconds: started.elapsed().as_secs_f64(),
        summary,
        accuracy: None,
        loss_plot: None,
    });

    // 3. SFT of the policy on the best samples.
    let sft_dir = out.join("sft");
    let mut sft_config = sft::SftConfig::tiny(config.policy.clone(), sft_dir.clone());
    sft_config.data.train = std::iter::once(rejection_dir.join("sft.jsonl"))
        .chain(config.sft_data.iter().cloned())
        .collect();
    sft_config.data.held_out_fraction = config.sft.held_out_fraction;
    sft_config.data.train_on = sft::config::TrainOnConfig::LastAssistantTurn;
    sft_config.data.sequence_length = config.sft.sequence_length;
    sft_config.data.skip_invalid = true;
    sft_config.training = config.sft.training.clone();
    let resolved = write_config(&configs.join("sft.toml"), &sft_config)?;
    let started = Instant::now();
    let summary = if is_finished(&sft_dir) {
        None
    } else {
        announce(
            "SFT on the kept samples",
            "herd sft",
            &configs.join("sft.toml"),
        );
        Some(json(
            &sft::run(&sft_config, &resolved).map_err(RecipeError::stage("SFT"))?,
        )?)
    };
    let sft_model = sft_dir.join("final");
    stages.push(StageOutcome {
        name: "rejection-sampled SFT".to_owned(),
        accuracy: evaluate(&sft_model)?,
        model: Some(sft_model.clone()),
        seconds: elapsed(summary.as_ref(), started),
        summary: summary.unwrap_or_else(|| previous_summary(out, "rejection-sampled SFT")),
        loss_plot: Some(sft_dir.join("loss.svg")),
    });

    // 4. DPO from the SFT model (also the reference), one run per averaging seed.
    let mut dpo_models = Vec::new();
    let seeds = if config.averaging.seeds.is_empty() {
        vec![config.dpo.training.seed]
    } else {
        config.averaging.seeds.clone()
    };
    for seed in &seeds {
        let name = format!("dpo-seed{seed}");
        let dpo_dir = out.join(&name);
        let mut dpo_config = dpo::DpoConfig::tiny(sft_model.clone(), dpo_dir.clone());
        dpo_config.data.train = std::iter::once(rejection_dir.join("preferences.jsonl"))
            .chain(
                config
                    .preferences
                    .iter()
                    .filter(|_| config.dpo.use_preferences)
                    .cloned(),
            )
            .collect();
        dpo_config.data.held_out_fraction = config.dpo.held_out_fraction;
        dpo_config.data.sequence_length = config.dpo.sequence_length;
        dpo_config.data.rejected_span = config.dpo.rejected_span;
        dpo_config.data.skip_invalid = true;
        dpo_config.dpo = config.dpo.dpo;
        dpo_config.training = TrainingConfig {
            seed: *seed,
            ..config.dpo.training.clone()
        };
        let config_path = configs.join(format!("{name}.toml"));
        let resolved = write_config(&config_path, &dpo_config)?;
        let started = Instant::now();
        let summary = if is_finished(&dpo_dir) {
            None
        } else {
            announce(&format!("DPO (seed {seed})"), "herd dpo", &config_path);
            Some(json(
                &dpo::run(&dpo_config, &resolved).map_err(RecipeError::stage("DPO"))?,
            )?)
        };
        let stage_name = format!("DPO (seed {seed})");
        let model = dpo_dir.join("final");
        stages.push(StageOutcome {
            accuracy: evaluate(&model)?,
            model: Some(model.clone()),
            seconds: elapsed(summary.as_ref(), started),
            summary: summary.unwrap_or_else(|| previous_summary(out, &stage_name)),
            loss_plot: Some(dpo_dir.join("loss.svg")),
            name: stage_name,
        });
        dpo_models.push(model);
    }

    // 5. The average of the DPO runs (a uniform soup).
    let averaged = if dpo_models.len() > 1 {
        let averaged = out.join("averaged");
        let started = Instant::now();
        training::average_into_directory(&dpo_models, None, &averaged)
            .map_err(RecipeError::stage("averaging"))?;
        stages.push(StageOutcome {
            name: format!("average of {} DPO runs", dpo_models.len()),
            accuracy: evaluate(&averaged)?,
            model: Some(averaged.clone()),
            seconds: started.elapsed().as_secs_f64(),
            summary: serde_json::json!({"inputs": dpo_models}),
            loss_plot: None,
        });
        averaged
    } else {
        dpo_models[0].clone()
    };

    // 6. Export: weights, config, tokenizer and chat template, loadable by transformers.
    let export_dir = out.join("export");
    let started = Instant::now();
    let dtype = match config.export_dtype {
        training::FinalDtype::Bf16 => candle_core::DType::BF16,
        training::FinalDtype::F32 => candle_core::DType::F32,
    };
    let exported =
        training::export(&averaged, &export_dir, dtype).map_err(RecipeError::stage("export"))?;
    stages.push(StageOutcome {
        name: format!("export ({})", exported.dtype),
        accuracy: evaluate(&export_dir)?,
        model: Some(export_dir.clone()),
        seconds: started.elapsed().as_secs_f64(),
        summary: json(&exported)?,
        loss_plot: None,
    });

    let report = out.join("report.md");
    let summary = RoundSummary {
        policy_accuracy,
        stages,
        export: export_dir,
        report: report.clone(),
    };
    let previous = config
        .previous_round
        .as_ref()
        .map(|directory| read_summary(&directory.join("report.json")))
        .transpose()?;
    crate::report::write(&summary, previous.as_ref(), out)?;
    Ok(summary)
}

/// Whether a stage directory holds a finished run (its `final/` weights).
fn is_finished(stage_dir: &Path) -> bool {
    stage_dir.join("final").join("model.safetensors").is_file()
}

fn elapsed(summary: Option<&serde_json::Value>, started: Instant) -> f64 {
    if summary.is_some() {
        started.elapsed().as_secs_f64()
    } else {
        0.0
    }
}

fn announce(stage: &str, command: &str, config: &Path) {
    eprintln!(
        "\n== round: {stage}  (alone: {command} --config {})",
        config.display()
    );
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, RecipeError> {
    serde_json::to_value(value).map_err(|error| RecipeError::Config(error.to_string()))
}

/// A finished stage's summary from the round's earlier `report.json`, or null.
fn previous_summary(out: &Path, stage: &str) -> serde_json::Value {
    read_summary(&out.join("report.json"))
        .ok()
        .and_then(|summary| {
            summary
                .stages
                .into_iter()
                .find(|outcome| outcome.name == stage)
                .map(|outcome| outcome.summary)
        })
        .unwrap_or(serde_json::Value::Null)
}

/// Reads a round's `report.json`.
pub fn read_summary(path: &Path) -> Result<RoundSummary, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(RecipeError::io(path))?;
    serde_json::from_str(&text)
        .map_err(|error| RecipeError::Config(format!("{}: {error}", path.display())))
}

/// Writes `config` as TOML to `path` and returns the text (saved beside the stage's checkpoints).
pub(crate) fn write_config<T: Serialize>(path: &Path, config: &T) -> Result<String, RecipeError> {
    let text = toml::to_string(config)
        .map_err(|error| RecipeError::Config(format!("{}: {error}", path.display())))?;
    std::fs::write(path, &text).map_err(RecipeError::io(path))?;
    Ok(text)
}
