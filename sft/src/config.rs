//! `herd sft --config FILE`: the typed SFT configuration. Unknown keys are rejected; `--set
//! key=value` overrides are applied before parsing (`training::config::load_config`), and the
//! resolved config is saved beside every checkpoint.

use std::path::PathBuf;

use datasets::mask::TrainOn;
use serde::{Deserialize, Serialize};
use training::TrainingConfig;

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
    /// Optimisation (shared by every stage: [`training::TrainingConfig`]).
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
                warmup_steps: 4,
                min_lr_ratio: 0.1,
                eval_every: 10,
                checkpoint_every: 20,
                ..TrainingConfig::new(40, 2, 3e-3)
            },
        }
    }
}
