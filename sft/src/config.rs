//! `herd sft --config FILE`: the typed SFT configuration. Unknown keys are rejected; `--set
//! key=value` overrides are applied before parsing (`training::config::load_config`), and the
//! resolved config is saved beside every checkpoint.

use std::path::PathBuf;

use datasets::mask::TrainOn;
use serde::{Deserialize, Serialize};
use training::{Decay, LearningRateSchedule};

/// The whole SFT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// The HF checkpoint directory to fine-tune (config.json + safetensors).
    pub model: PathBuf,
    /// The tokenizer.json; defaults to the one in the model directory.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Where checkpoints, metrics.jsonl, loss.svg and the final model go.
    pub output_dir: PathBuf,
    /// The conversations.
    pub data: DataConfig,
    /// Optimisation.
    pub training: TrainingConfig,
    /// Train LoRA adapters on a frozen base instead of every weight; `final/` holds the merged
    /// model.
    #[serde(default)]
    pub lora: Option<LoraSettings>,
}

/// LoRA adapters (Hu et al. 2021; names and init as PEFT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSettings {
    /// Rank of each adapter.
    pub rank: usize,
    /// The update is scaled by alpha / rank.
    pub alpha: f64,
    /// Dropout on the adapter input while training.
    #[serde(default)]
    pub dropout: f64,
    /// Projections that get adapters: `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`,
    /// `up_proj`, `down_proj`.
    #[serde(default = "default_target_modules")]
    pub target_modules: Vec<String>,
}

fn default_target_modules() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"]
        .map(str::to_owned)
        .to_vec()
}

/// Which conversations, and how they become batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Conversation JSONL files (`{"messages": [...]}` per line).
    pub train: Vec<PathBuf>,
    /// Held-out conversation files; when empty, `held_out_fraction` of `train` is held out.
    #[serde(default)]
    pub held_out: Vec<PathBuf>,
    /// Fraction of the training conversations held out when `held_out` is empty (0 = none).
    #[serde(default = "default_held_out_fraction")]
    pub held_out_fraction: f64,
    /// Which assistant messages are trained on.
    #[serde(default)]
    pub train_on: TrainOnConfig,
    /// Tokens per packed sequence, and the longest conversation accepted.
    pub sequence_length: usize,
    /// Pack several conversations per sequence (document-masked), or pad one per row.
    #[serde(default)]
    pub layout: Layout,
    /// Skip conversations that are invalid or longer than `sequence_length` (each reported),
    /// instead of stopping at the first.
    #[serde(default)]
    pub skip_invalid: bool,
}

fn default_held_out_fraction() -> f64 {
    0.1
}

/// Which assistant messages are trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainOnConfig {
    /// The assistant messages after the last user message (the default).
    #[default]
    LastAssistantTurn,
    /// Every assistant message.
    AllAssistantTurns,
}

impl From<TrainOnConfig> for TrainOn {
    fn from(value: TrainOnConfig) -> TrainOn {
        match value {
            TrainOnConfig::LastAssistantTurn => TrainOn::LastAssistantTurn,
            TrainOnConfig::AllAssistantTurns => TrainOn::AllAssistantTurns,
        }
    }
}

/// How conversations are laid out in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Several conversations per row, attention kept within each (Llama 3's document mask).
    #[default]
    Packed,
    /// One conversation per row, right-padded with `<|finetune_right_pad_id|>`.
    Padded,
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Optimizer updates.
    pub steps: u64,
    /// Rows (packed sequences or padded conversations) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per update; the loss is normalised by the update's trained tokens.
    #[serde(default = "one")]
    pub gradient_accumulation: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decay after warm-up: "cosine", "linear" or "constant".
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// The cosine schedule's floor, as a fraction of the peak.
    #[serde(default)]
    pub min_learning_rate_ratio: f64,
    /// Decoupled weight decay (not applied to norms or embeddings).
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 turns clipping off.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Seeds the data order and the held-out split.
    #[serde(default)]
    pub seed: u64,
    /// Held-out loss and perplexity every this many steps (and at the end).
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// A resumable checkpoint every this many steps (and at the end).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// How many resumable checkpoints to keep.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Where to train: "auto" (a CUDA GPU when herd is built with `--features cuda` and one is
    /// present, else the CPU), "cpu" or "cuda".
    #[serde(default)]
    pub device: training::DeviceChoice,
    /// The forward pass's dtype: "f32", or "bf16" over f32 master weights (the optimizer and its
    /// state stay f32).
    #[serde(default)]
    pub compute_dtype: training::ComputeDtype,
}

fn one() -> usize {
    1
}
fn default_schedule() -> String {
    "cosine".to_owned()
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_eval_every() -> u64 {
    50
}
fn default_checkpoint_every() -> u64 {
    100
}
fn default_keep_checkpoints() -> usize {
    2
}

impl TrainingConfig {
    /// The learning-rate schedule these settings describe.
    pub fn schedule(&self) -> Result<LearningRateSchedule, String> {
        let decay = match self.schedule.as_str() {
            "cosine" => Decay::Cosine {
                min_ratio: self.min_learning_rate_ratio,
            },
            "linear" => Decay::Linear,
            "constant" => Decay::Constant,
            other => {
                return Err(format!(
                    "training.schedule = {other:?}: expected \"cosine\", \"linear\" or \"constant\""
                ));
            }
        };
        Ok(LearningRateSchedule {
            peak: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            decay,
        })
    }
}

impl SftConfig {
    /// A preset that fine-tunes a tiny model on the shipped sample conversations in minutes on
    /// two CPU cores.
    #[must_use]
    pub fn tiny(model: PathBuf, output_dir: PathBuf) -> SftConfig {
        SftConfig {
            model,
            tokenizer: None,
            lora: None,
            output_dir,
            data: DataConfig {
                train: vec![PathBuf::from("data/samples/conversations.jsonl")],
                held_out: Vec::new(),
                held_out_fraction: 0.1,
                train_on: TrainOnConfig::AllAssistantTurns,
                sequence_length: 512,
                layout: Layout::Packed,
                skip_invalid: true,
            },
            training: TrainingConfig {
                steps: 40,
                batch_size: 2,
                gradient_accumulation: 1,
                learning_rate: 3e-3,
                warmup_steps: 4,
                schedule: default_schedule(),
                min_learning_rate_ratio: 0.1,
                weight_decay: 0.0,
                max_grad_norm: 1.0,
                seed: 0,
                eval_every: 10,
                checkpoint_every: 20,
                keep_checkpoints: 2,
                device: training::DeviceChoice::default(),
                compute_dtype: training::ComputeDtype::default(),
            },
        }
    }
}
