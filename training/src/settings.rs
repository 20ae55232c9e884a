//! The `[training]` section every stage's config shares: how long, how big, the optimizer, the
//! learning-rate schedule and the bookkeeping (evaluation, checkpoints, device, dtypes).
//!
//! One struct, so `herd pretrain`, `sft`, `reward` and `dpo` spell every optimisation setting the
//! same way and a value that works in one config works in the others. Defaults are `AdamW`'s torch
//! defaults and the Llama 3 recipe's where it has one (gradient clipping at 1.0); a stage's preset
//! sets what differs (pretraining: β2 = 0.95, weight decay 0.1, cosine floor 1% of the peak, §3.4.1).

use model::SaveOptions;
use serde::{Deserialize, Serialize};

use crate::device::{ComputeDtype, DeviceChoice};
use crate::error::{Result, TrainingError};
use crate::optimizer::AdamWConfig;
use crate::schedule::{Decay, LearningRateSchedule};

/// The optimisation and its bookkeeping (`[training]` in every stage's TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Optimizer updates in the whole run (a resumed run continues to this number).
    pub steps: u64,
    /// Rows (sequences, conversations or preference pairs) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer update; the update is normalised over all of them.
    #[serde(default = "one")]
    pub gradient_accumulation: usize,
    /// The peak learning rate.
    pub learning_rate: f64,
    /// Updates of linear warm-up from 0 to the peak.
    #[serde(default)]
    pub warmup_steps: u64,
    /// The decay after warm-up.
    #[serde(default)]
    pub schedule: ScheduleKind,
    /// The cosine schedule's floor as a fraction of the peak (Llama 3 pretraining: 0.01).
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay of the matrices (norms and embeddings are never decayed).
    #[serde(default)]
    pub weight_decay: f64,
    /// `AdamW` β1.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// `AdamW` β2 (Llama 3 pretraining: 0.95).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// `AdamW` ε.
    #[serde(default = "default_epsilon")]
    pub epsilon: f64,
    /// Gradients are scaled down to this global L2 norm; 0 turns clipping off.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// Seeds the initial weights (where a stage makes new ones), the data order and the held-out
    /// split.
    #[serde(default)]
    pub seed: u64,
    /// Held-out evaluation every this many updates (and after the last); 0: only after the last.
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// A resumable checkpoint every this many updates (and after the last).
    #[serde(default = "default_checkpoint_every")]
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
    pub device: DeviceChoice,
    /// The forward pass's dtype: "f32", or "bf16" over f32 master weights (the optimizer and its
    /// state stay f32).
    #[serde(default)]
    pub compute_dtype: ComputeDtype,
}

/// The learning-rate decay after warm-up.
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

/// The dtype of the final checkpoint's weights.
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
fn default_beta1() -> f64 {
    AdamWConfig::default().beta1
}
fn default_beta2() -> f64 {
    AdamWConfig::default().beta2
}
fn default_epsilon() -> f64 {
    AdamWConfig::default().epsilon
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
    /// Settings for `steps` updates of `batch_size` rows at `learning_rate`, everything else at
    /// its default (what a preset starts from).
    #[must_use]
    pub fn new(steps: u64, batch_size: usize, learning_rate: f64) -> Self {
        Self {
            steps,
            batch_size,
            gradient_accumulation: 1,
            learning_rate,
            warmup_steps: 0,
            schedule: ScheduleKind::default(),
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
            max_grad_norm: default_max_grad_norm(),
            seed: 0,
            eval_every: default_eval_every(),
            checkpoint_every: default_checkpoint_every(),
            keep_checkpoints: default_keep_checkpoints(),
            final_dtype: FinalDtype::default(),
            device: DeviceChoice::default(),
            compute_dtype: ComputeDtype::default(),
        }
    }

    /// Checks what the types cannot; the error names the setting as `training.<field>`.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &'static str, value: u64| {
            if value == 0 {
                return invalid(field, value, "must be positive");
            }
            Ok(())
        };
        positive("training.steps", self.steps)?;
        positive("training.batch_size", self.batch_size as u64)?;
        positive(
            "training.gradient_accumulation",
            self.gradient_accumulation as u64,
        )?;
        positive("training.checkpoint_every", self.checkpoint_every)?;
        positive("training.keep_checkpoints", self.keep_checkpoints as u64)?;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return invalid(
                "training.learning_rate",
                self.learning_rate,
                "must be positive and finite",
            );
        }
        if self.warmup_steps > self.steps {
            return invalid(
                "training.warmup_steps",
                self.warmup_steps,
                "must not exceed training.steps",
            );
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return invalid(
                "training.min_lr_ratio",
                self.min_lr_ratio,
                "must lie in [0, 1]",
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return invalid(
                "training.weight_decay",
                self.weight_decay,
                "must be finite and not negative",
            );
        }
        for (field, value) in [
            ("training.beta1", self.beta1),
            ("training.beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&value) {
                return invalid(field, value, "must lie in [0, 1)");
            }
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return invalid("training.epsilon", self.epsilon, "must be positive");
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return invalid(
                "training.max_grad_norm",
                self.max_grad_norm,
                "must be finite and not negative (0 turns clipping off)",
            );
        }
        Ok(())
    }

    /// The `AdamW` hyper-parameters these settings describe.
    #[must_use]
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        }
    }

    /// The learning-rate schedule these settings describe (validated).
    pub fn schedule(&self) -> Result<LearningRateSchedule> {
        let schedule = LearningRateSchedule {
            peak: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            decay: match self.schedule {
                ScheduleKind::Cosine => Decay::Cosine {
                    min_ratio: self.min_lr_ratio,
                },
                ScheduleKind::Linear => Decay::Linear,
                ScheduleKind::Constant => Decay::Constant,
            },
        };
        schedule.validate()?;
        Ok(schedule)
    }

    /// How the final HF checkpoint is written.
    #[must_use]
    pub fn final_save_options(&self) -> SaveOptions {
        SaveOptions {
            dtype: match self.final_dtype {
                FinalDtype::Bf16 => candle_core::DType::BF16,
                FinalDtype::F32 => candle_core::DType::F32,
            },
            ..SaveOptions::default()
        }
    }

    /// Whether evaluation runs after update `step` (every `eval_every`, and after the last).
    #[must_use]
    pub fn evaluates_at(&self, step: u64) -> bool {
        step == self.steps || (self.eval_every > 0 && step.is_multiple_of(self.eval_every))
    }

    /// Whether a resumable checkpoint is saved after update `step`.
    #[must_use]
    pub fn checkpoints_at(&self, step: u64) -> bool {
        step == self.steps || step.is_multiple_of(self.checkpoint_every.max(1))
    }
}

fn invalid(field: &'static str, value: impl std::fmt::Display, reason: &str) -> Result<()> {
    Err(TrainingError::InvalidSetting {
        field,
        value: value.to_string(),
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_a_config_leaves_out_and_bad_values_are_named() {
        let text = "steps = 10\nbatch_size = 2\nlearning_rate = 1e-3\n";
        let parsed: TrainingConfig = toml::from_str(text).unwrap();
        assert_eq!(parsed, TrainingConfig::new(10, 2, 1e-3));
        parsed.validate().unwrap();
        let mut bad = parsed.clone();
        bad.warmup_steps = 11;
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "config `training.warmup_steps` = 11: must not exceed training.steps"
        );
        let mut bad = parsed;
        bad.beta2 = 1.0;
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "config `training.beta2` = 1: must lie in [0, 1)"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text =
            "steps = 10\nbatch_size = 2\nlearning_rate = 1e-3\nmin_learning_rate_ratio = 0.1\n";
        let error = toml::from_str::<TrainingConfig>(text).unwrap_err();
        assert!(
            error.to_string().contains("min_learning_rate_ratio"),
            "{error}"
        );
    }

    #[test]
    fn evaluation_and_checkpoint_steps() {
        let mut config = TrainingConfig::new(10, 1, 1e-3);
        config.eval_every = 0;
        config.checkpoint_every = 4;
        assert!(!config.evaluates_at(5) && config.evaluates_at(10));
        assert!(config.checkpoints_at(4) && config.checkpoints_at(8) && config.checkpoints_at(10));
        assert!(!config.checkpoints_at(5));
    }
}
