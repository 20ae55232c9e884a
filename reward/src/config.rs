//! `herd reward train --config FILE`: the typed reward-model configuration. Unknown keys are
//! rejected; `--set key=value` overrides are applied before parsing
//! (`training::config::load_config`), and the resolved config is saved beside every checkpoint.

use std::path::PathBuf;

use datasets::records::Strength;
use serde::{Deserialize, Serialize};
use training::TrainingConfig;

/// The whole reward-model run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// The checkpoint to start from: an HF causal-LM directory (SFT or pretrained; its `lm_head` is
    /// dropped and a fresh `score.weight` drawn from `training.seed`), or a reward-model directory
    /// to continue training.
    pub model: PathBuf,
    /// The tokenizer.json; defaults to the one in the model directory.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Where checkpoints, metrics.jsonl, loss.svg and the final reward model go.
    pub output_dir: PathBuf,
    /// The preference pairs.
    pub data: DataConfig,
    /// The loss's optional terms.
    #[serde(default)]
    pub loss: LossConfig,
    /// Optimisation (shared by every stage: [`training::TrainingConfig`]); `batch_size` counts
    /// preference pairs (each pair is two rows of the forward pass).
    pub training: TrainingConfig,
}

/// Which preference records, and how they become pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Preference JSONL files (`{"prompt", "chosen", "rejected", ...}` per line).
    pub train: Vec<PathBuf>,
    /// Held-out preference files; when empty, `held_out_fraction` of the `train` records is held out.
    #[serde(default)]
    pub held_out: Vec<PathBuf>,
    /// Fraction of the training records held out when `held_out` is empty (0 = none). The split is
    /// by record, so the pairs of one edited record stay on one side.
    #[serde(default = "default_held_out_fraction")]
    pub held_out_fraction: f64,
    /// Keep only records of these strengths (Llama 3 §4.2.1 trains on `significantly_better` and
    /// `better`); empty keeps all. Records without a strength — rejection sampling's synthetic
    /// pairs — are always kept.
    #[serde(default)]
    pub strengths: Vec<StrengthSetting>,
    /// The longest sequence (prompt + response) accepted; a pair with a longer side is skipped.
    pub sequence_length: usize,
    /// Skip records that are invalid or too long (each reported), instead of stopping at the first.
    #[serde(default)]
    pub skip_invalid: bool,
}

fn default_held_out_fraction() -> f64 {
    0.1
}

/// A preference strength as spelled in configs and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrengthSetting {
    /// "significantly better".
    SignificantlyBetter,
    /// "better".
    Better,
    /// "slightly better".
    SlightlyBetter,
    /// "marginally better".
    MarginallyBetter,
}

impl From<StrengthSetting> for Strength {
    fn from(value: StrengthSetting) -> Strength {
        match value {
            StrengthSetting::SignificantlyBetter => Strength::SignificantlyBetter,
            StrengthSetting::Better => Strength::Better,
            StrengthSetting::SlightlyBetter => Strength::SlightlyBetter,
            StrengthSetting::MarginallyBetter => Strength::MarginallyBetter,
        }
    }
}

/// The Bradley–Terry loss's optional terms (`loss.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Subtract each pair's margin inside the sigmoid (Llama 2); the record's `margin`, else its
    /// strength's (1, 2/3, 1/3, 0), else 0. Off by default: Llama 3 removed it (§4.1.2).
    #[serde(default)]
    pub margin: bool,
    /// TRL's `center_rewards_coefficient`: adds `c·mean((r⁺ + r⁻)²)` to keep rewards centred
    /// (0.01 recommended by Eisenstein et al. 2023); 0 turns it off.
    #[serde(default)]
    pub center_rewards_coefficient: f64,
}

impl RewardConfig {
    /// A preset that trains a reward model from a tiny SFT checkpoint on the shipped sample
    /// preferences in a minute or two on two CPU cores.
    #[must_use]
    pub fn tiny(model: PathBuf, output_dir: PathBuf) -> RewardConfig {
        RewardConfig {
            model,
            tokenizer: None,
            output_dir,
            data: DataConfig {
                train: vec![PathBuf::from("data/samples/preferences.jsonl")],
                held_out: Vec::new(),
                held_out_fraction: 0.2,
                strengths: Vec::new(),
                sequence_length: 512,
                skip_invalid: true,
            },
            loss: LossConfig::default(),
            training: TrainingConfig {
                warmup_steps: 2,
                min_lr_ratio: 0.1,
                eval_every: 10,
                checkpoint_every: 20,
                ..TrainingConfig::new(40, 2, 1e-3)
            },
        }
    }

    /// Checks what the types cannot; the message names the setting.
    pub fn validate(&self) -> Result<(), crate::RewardError> {
        self.training.validate()?;
        let problem = |message: String| Err(crate::RewardError::Config(message));
        if self.data.train.is_empty() {
            return problem("data.train lists no file".to_owned());
        }
        if self.data.sequence_length == 0 {
            return problem("data.sequence_length = 0 must be positive".to_owned());
        }
        if !(0.0..1.0).contains(&self.data.held_out_fraction) {
            return problem(format!(
                "data.held_out_fraction = {} must be in [0, 1)",
                self.data.held_out_fraction
            ));
        }
        let coefficient = self.loss.center_rewards_coefficient;
        if !(coefficient >= 0.0 && coefficient.is_finite()) {
            return problem(format!(
                "loss.center_rewards_coefficient = {coefficient} must be finite and not negative"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strengths_parse_and_unknown_keys_are_refused() {
        let text = r#"
model = "m"
output_dir = "o"
[data]
train = ["p.jsonl"]
strengths = ["significantly_better", "better"]
sequence_length = 64
[training]
steps = 2
batch_size = 1
learning_rate = 1e-3
"#;
        let config: RewardConfig = toml::from_str(text).unwrap();
        assert_eq!(
            config.data.strengths,
            [
                StrengthSetting::SignificantlyBetter,
                StrengthSetting::Better
            ]
        );
        assert_eq!(config.loss, LossConfig::default());
        config.validate().unwrap();
        let bad = text.replace("\"better\"]", "\"much_better\"]");
        let error = toml::from_str::<RewardConfig>(&bad)
            .unwrap_err()
            .to_string();
        assert!(error.contains("much_better"), "{error}");
        let bad = text.replace("[training]", "[loss]\nmargins = true\n[training]");
        let error = toml::from_str::<RewardConfig>(&bad)
            .unwrap_err()
            .to_string();
        assert!(error.contains("margins"), "{error}");
    }
}
