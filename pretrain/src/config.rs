//! The pretraining config: which model (a new one of a given shape, or a checkpoint to continue),
//! which tokenizer and text, and how to train. Read from TOML by [`training::load_config`]
//! (unknown keys rejected, `--set` overrides applied first); checked by
//! [`PretrainConfig::validate`] before anything runs.
//!
//! Relative paths are relative to the directory `herd` runs in (the presets in `configs/` assume
//! the repository root). Defaults follow the Llama 3 recipe where it has one (paper §3.4.1:
//! `AdamW` β = (0.9, 0.95), weight decay 0.1, gradient clipping at 1.0, linear warmup then cosine
//! decay to 1% of the peak).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use training::{FinalDtype, ScheduleKind, TrainingConfig};

use crate::error::{PretrainError, Result};

/// A whole pretraining run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Where everything of the run goes: `data/` (the tokenized corpus), `checkpoints/`,
    /// `metrics.jsonl`, `loss.svg` and `final/` (the HF checkpoint). Re-running with the same
    /// directory resumes from its newest checkpoint.
    pub output_dir: PathBuf,
    /// The HF `tokenizer.json` (a Llama 3 layout: `<|begin_of_text|>`, `<|end_of_text|>`, …);
    /// copied into `final/`.
    pub tokenizer: PathBuf,
    /// The model to train.
    pub model: ModelSource,
    /// The text to train and evaluate on.
    pub data: DataConfig,
    /// The optimisation (shared by every stage: [`training::TrainingConfig`]).
    pub training: TrainingConfig,
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSource {
    /// A new model of this shape, initialised from `training.seed` (`[model.from_scratch]`).
    FromScratch(Architecture),
    /// Continued pretraining of the HF checkpoint directory (`model = { checkpoint = "DIR" }`).
    Checkpoint(PathBuf),
}

/// The shape of a new Llama, with the HF `config.json` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Token ids; defaults to the tokenizer's vocabulary size (which it must not be below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Width of the residual stream; a multiple of `num_attention_heads`.
    pub hidden_size: usize,
    /// Width of the `SwiGLU` MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// The `RoPE` base (Llama 3: 500,000).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// The longest context the model is meant for; at least `data.sequence_length`.
    pub max_position_embeddings: usize,
    /// Epsilon inside `RMSNorm` (Llama 3: 1e-5).
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Whether `lm_head` reuses the embedding matrix (Llama 3.2 1B/3B do, 3.1 does not).
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

/// The text, how it is cut into documents and sequences, and what is held out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// UTF-8 text files to train on, in order.
    pub files: Vec<PathBuf>,
    /// What one document is: a whole file, or a blank-line-separated paragraph.
    #[serde(default)]
    pub documents: DocumentSplit,
    /// Tokens per training sequence (one row of a micro-batch).
    pub sequence_length: usize,
    /// The fraction of documents held out for evaluation, spread evenly over the corpus
    /// (document `i` is held out when `⌊(i+1)·f⌋ > ⌊i·f⌋`). 0 with `held_out_files`.
    #[serde(default)]
    pub held_out_fraction: f64,
    /// Files held out for evaluation instead of a fraction of `files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out_files: Vec<PathBuf>,
}

/// What one document of the corpus is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentSplit {
    /// Each file is one document.
    File,
    /// Each blank-line-separated paragraph is one document.
    #[default]
    Paragraph,
}

fn default_rope_theta() -> f64 {
    500_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}

impl PretrainConfig {
    /// A run that takes seconds on a laptop CPU: a 2-layer, 32-wide Llama on 64-token sequences,
    /// 50 updates of 8 sequences. (On the 6 kB tokenizer corpus this 32-wide model gets from
    /// ln 768 ≈ 6.64 to 3.75 in 50 updates; a 64-wide one is still at 5.0, the unigram plateau.)
    #[must_use]
    pub fn tiny(tokenizer: PathBuf, files: Vec<PathBuf>, output_dir: PathBuf) -> Self {
        Self {
            output_dir,
            tokenizer,
            model: ModelSource::FromScratch(Architecture {
                vocab_size: None,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                num_key_value_heads: 2,
                rope_theta: default_rope_theta(),
                max_position_embeddings: 256,
                rms_norm_eps: default_rms_norm_eps(),
                tie_word_embeddings: false,
            }),
            data: DataConfig {
                files,
                documents: DocumentSplit::Paragraph,
                sequence_length: 64,
                held_out_fraction: 0.1,
                held_out_files: Vec::new(),
            },
            training: TrainingConfig {
                warmup_steps: 4,
                schedule: ScheduleKind::Cosine,
                min_lr_ratio: 0.1,
                weight_decay: 0.1,
                beta2: 0.95,
                eval_every: 10,
                checkpoint_every: 25,
                final_dtype: FinalDtype::F32,
                ..TrainingConfig::new(50, 8, 1e-2)
            },
        }
    }

    /// Checks what the types cannot: positive sizes, ratios in range, a consistent model shape.
    pub fn validate(&self) -> Result<()> {
        let data = &self.data;
        self.training.validate()?;
        if data.files.is_empty() {
            return invalid("data.files", "[]", "name at least one text file");
        }
        if data.sequence_length < 2 {
            return invalid(
                "data.sequence_length",
                data.sequence_length,
                "must be at least 2 (a token and its successor)",
            );
        }
        if !(0.0..1.0).contains(&data.held_out_fraction) {
            return invalid(
                "data.held_out_fraction",
                data.held_out_fraction,
                "must lie in [0, 1)",
            );
        }
        if data.held_out_fraction > 0.0 && !data.held_out_files.is_empty() {
            return invalid(
                "data.held_out_fraction",
                data.held_out_fraction,
                "must be 0 when data.held_out_files are given",
            );
        }
        if let ModelSource::FromScratch(architecture) = &self.model {
            architecture.validate(data.sequence_length)?;
        }
        Ok(())
    }
}

impl Architecture {
    fn validate(&self, sequence_length: usize) -> Result<()> {
        positive("model.from_scratch.hidden_size", self.hidden_size as u64)?;
        positive(
            "model.from_scratch.intermediate_size",
            self.intermediate_size as u64,
        )?;
        positive(
            "model.from_scratch.num_hidden_layers",
            self.num_hidden_layers as u64,
        )?;
        positive(
            "model.from_scratch.num_attention_heads",
            self.num_attention_heads as u64,
        )?;
        positive(
            "model.from_scratch.num_key_value_heads",
            self.num_key_value_heads as u64,
        )?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return invalid(
                "model.from_scratch.hidden_size",
                self.hidden_size,
                format!(
                    "must be a multiple of num_attention_heads = {}",
                    self.num_attention_heads
                ),
            );
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return invalid(
                "model.from_scratch.num_key_value_heads",
                self.num_key_value_heads,
                format!(
                    "must divide num_attention_heads = {}",
                    self.num_attention_heads
                ),
            );
        }
        if self.max_position_embeddings < sequence_length {
            return invalid(
                "model.from_scratch.max_position_embeddings",
                self.max_position_embeddings,
                format!("must be at least data.sequence_length = {sequence_length}"),
            );
        }
        Ok(())
    }
}

fn positive(field: &'static str, value: u64) -> Result<()> {
    if value == 0 {
        return invalid(field, value, "must be positive");
    }
    Ok(())
}

fn invalid<T>(
    field: &'static str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> Result<T> {
    Err(PretrainError::InvalidConfig {
        field,
        value: value.to_string(),
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_preset_is_valid_and_round_trips_through_toml() {
        let config = PretrainConfig::tiny(
            "tokenizer.json".into(),
            vec!["a.txt".into()],
            "runs/tiny".into(),
        );
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("[model.from_scratch]"), "{text}");
        let (parsed, _): (PretrainConfig, String) =
            training::parse_config(&text, std::path::Path::new("tiny.toml"), &[]).unwrap();
        assert_eq!(parsed, config);
    }

    #[test]
    fn a_checkpoint_source_parses_and_bad_values_are_named() {
        let text = "output_dir = \"o\"\ntokenizer = \"t.json\"\nmodel = { checkpoint = \"base\" }\n\
                    [data]\nfiles = [\"a.txt\"]\nsequence_length = 16\n\
                    [training]\nsteps = 3\nbatch_size = 0\nlearning_rate = 1e-3\ncheckpoint_every = 1\n";
        let (config, _): (PretrainConfig, String) =
            training::parse_config(text, std::path::Path::new("c.toml"), &[]).unwrap();
        assert_eq!(config.model, ModelSource::Checkpoint("base".into()));
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "config `training.batch_size` = 0: must be positive"
        );
    }
}
