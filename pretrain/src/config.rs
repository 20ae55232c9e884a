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
    /// The optimisation.
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

/// The optimisation and its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Optimizer updates in the whole run (a resumed run continues to this number).
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer update; the update is the mean over all their tokens.
    #[serde(default = "one")]
    pub gradient_accumulation: usize,
    /// The peak learning rate.
    pub learning_rate: f64,
    /// Updates of linear warmup from 0 to the peak.
    #[serde(default)]
    pub warmup_steps: u64,
    /// The decay after warmup.
    #[serde(default)]
    pub schedule: ScheduleKind,
    /// The cosine schedule's floor as a fraction of the peak (Llama 3: 0.01).
    #[serde(default = "default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay of the matrices (norms and embeddings are not decayed).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// `AdamW` β1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// `AdamW` β2 (Llama 3: 0.95).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// `AdamW` ε.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Gradients are scaled down to this global L2 norm.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Seeds the initial weights and the order of the sequences.
    #[serde(default)]
    pub seed: u64,
    /// Held-out loss and perplexity every this many updates (and after the last); 0: only after
    /// the last.
    #[serde(default)]
    pub eval_every: u64,
    /// A resumable checkpoint every this many updates (and after the last).
    pub checkpoint_every: u64,
    /// Checkpoints kept; older ones are deleted.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// The dtype of the final HF checkpoint's weights (training is in f32).
    #[serde(default)]
    pub final_dtype: FinalDtype,
    /// Where to train: "auto" (a CUDA GPU when herd is built with `--features cuda` and one is
    /// present, else the CPU), "cpu" or "cuda".
    #[serde(default)]
    pub device: training::DeviceChoice,
    /// The forward pass's dtype: "f32", or "bf16" over f32 master weights (the optimizer and its
    /// state stay f32).
    #[serde(default)]
    pub compute_dtype: training::ComputeDtype,
}

/// The learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Half a cosine down to `min_lr_ratio` of the peak.
    #[default]
    Cosine,
    /// A straight line down to 0.
    Linear,
    /// The peak, held.
    Constant,
}

/// The dtype of the exported weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalDtype {
    /// bfloat16, as released Llama checkpoints.
    #[default]
    Bf16,
    /// float32, exactly the trained weights.
    F32,
}

fn one() -> usize {
    1
}
fn default_rope_theta() -> f64 {
    500_000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_min_lr_ratio() -> f64 {
    0.01
}
fn default_weight_decay() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_epsilon() -> f64 {
    1e-8
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_keep_checkpoints() -> usize {
    2
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
                steps: 50,
                batch_size: 8,
                gradient_accumulation: 1,
                learning_rate: 1e-2,
                warmup_steps: 4,
                schedule: ScheduleKind::Cosine,
                min_lr_ratio: 0.1,
                weight_decay: default_weight_decay(),
                beta1: default_beta1(),
                beta2: default_beta2(),
                epsilon: default_epsilon(),
                max_grad_norm: default_max_grad_norm(),
                seed: 0,
                eval_every: 10,
                checkpoint_every: 25,
                keep_checkpoints: default_keep_checkpoints(),
                final_dtype: FinalDtype::F32,
                device: training::DeviceChoice::default(),
                compute_dtype: training::ComputeDtype::default(),
            },
        }
    }

    /// Checks what the types cannot: positive sizes, ratios in range, a consistent model shape.
    pub fn validate(&self) -> Result<()> {
        let training = &self.training;
        let data = &self.data;
        positive("training.steps", training.steps)?;
        positive("training.batch_size", training.batch_size as u64)?;
        positive(
            "training.gradient_accumulation",
            training.gradient_accumulation as u64,
        )?;
        positive("training.checkpoint_every", training.checkpoint_every)?;
        positive(
            "training.keep_checkpoints",
            training.keep_checkpoints as u64,
        )?;
        if !(training.learning_rate > 0.0 && training.learning_rate.is_finite()) {
            return invalid(
                "training.learning_rate",
                training.learning_rate,
                "must be positive and finite",
            );
        }
        if training.warmup_steps > training.steps {
            return invalid(
                "training.warmup_steps",
                training.warmup_steps,
                "must not exceed training.steps",
            );
        }
        if !(0.0..=1.0).contains(&training.min_lr_ratio) {
            return invalid(
                "training.min_lr_ratio",
                training.min_lr_ratio,
                "must lie in [0, 1]",
            );
        }
        if training.max_grad_norm.is_nan() || training.max_grad_norm <= 0.0 {
            return invalid(
                "training.max_grad_norm",
                training.max_grad_norm,
                "must be positive",
            );
        }
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
