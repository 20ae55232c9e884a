//! `herd synth --config FILE`: the typed rejection-sampling configuration (Llama 3 paper §4.2.2:
//! K samples per prompt from the policy, the best kept). Unknown keys are rejected; `--set
//! key=value` overrides are applied before parsing (`training::config::load_config`), and the
//! resolved config is saved in `output_dir` as `config.json` so a resumed run can refuse a changed
//! one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::SynthError;

/// The whole rejection-sampling run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectionConfig {
    /// The policy: an HF checkpoint directory with its `tokenizer.json`.
    pub policy: PathBuf,
    /// Where the policy and the reward model run: `auto` (a CUDA GPU when herd has one, else the
    /// CPU), `cpu` or `cuda`.
    #[serde(default)]
    pub device: training::DeviceChoice,
    /// The dtype the policy and reward model keep their weights and compute in: `f32` or `bf16`.
    #[serde(default)]
    pub compute_dtype: training::ComputeDtype,
    /// A reward-model directory (`reward::RewardModel::load`); needed by every `selection` but
    /// `verifier`.
    #[serde(default)]
    pub reward_model: Option<PathBuf>,
    /// Prompt JSONL: conversation records (`{"id"?, "messages", "metadata"?}`) whose dialogue ends
    /// with a user (or tool-result) message. `metadata.answer` feeds the `reference_answer`
    /// verifier, `metadata.capability` picks a system prompt.
    pub prompts: PathBuf,
    /// Where `sft.jsonl`, `preferences.jsonl`, `candidates.jsonl`, `samples.jsonl`,
    /// `completed.jsonl` and `config.json` go; re-running with the same config resumes.
    pub output_dir: PathBuf,
    /// K, the samples drawn per prompt (the paper: 10 to 30).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Sampling temperature (0 is greedy, which makes the K samples identical).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Nucleus sampling threshold, in (0, 1].
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Sample among the k most likely tokens.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Upper bound on each sample's length; a sample that reaches it is truncated and never
    /// selected.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// Seeds the sampling: the same seed and `batch_size` give the same samples.
    #[serde(default)]
    pub seed: u64,
    /// Prompts prefilled and decoded together (each with its K samples, so `batch_size * samples`
    /// rows per decoding step).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The built-in verifier: `none` or `reference_answer` (`metadata.answer`, see
    /// [`crate::verifier::ReferenceAnswer`]).
    #[serde(default)]
    pub verifier: VerifierKind,
    /// How a sample's reward and verifier result make the score samples are ranked by.
    #[serde(default)]
    pub selection: Selection,
    /// In `selection = "weighted"`: score = reward + `verifier_weight` × verified (1 or 0).
    #[serde(default = "default_verifier_weight")]
    pub verifier_weight: f64,
    /// Drop a prompt from `sft.jsonl` when the verifier can check its best sample and says it is
    /// wrong (prompts the verifier cannot check are kept).
    #[serde(default = "default_true")]
    pub require_verified: bool,
    /// Drop a prompt from `sft.jsonl` when its best sample's score is below this.
    #[serde(default)]
    pub min_score: Option<f64>,
    /// System prompts by `metadata.capability` (a `default` entry serves every other prompt),
    /// added for generation when the prompt has no system message (the paper's steering, §4.2.2).
    #[serde(default)]
    pub system_prompts: BTreeMap<String, String>,
    /// Keep the steering system prompt in the written records; by default they hold the prompt as
    /// given, so the model learns the steered style without being told.
    #[serde(default)]
    pub keep_system_prompts: bool,
    /// The `model` label of each response in `candidates.jsonl`.
    #[serde(default = "default_model_name")]
    pub model_name: String,
    /// The `round` label of each response in `candidates.jsonl` (the recipe's iteration).
    #[serde(default = "default_round")]
    pub round: i64,
}

/// The built-in verifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifierKind {
    /// No verifier: every sample is "not checkable".
    #[default]
    None,
    /// The prompt's `metadata.answer` against the response's final answer.
    ReferenceAnswer,
}

/// How samples are ranked: each sample gets a `score` and a `tie_break`, compared in that order.
/// "verified" is the verifier's result (1 right, 0 wrong); a sample it cannot check counts as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// score = reward (the paper's rule).
    #[default]
    RewardModel,
    /// score = verified; no tie-break (the first of equal samples wins).
    Verifier,
    /// score = verified, tie-break = reward: a right answer always beats a wrong one, and the
    /// reward model chooses among equally right ones.
    VerifierThenRewardModel,
    /// score = reward + `verifier_weight` × verified.
    Weighted,
}

impl Selection {
    /// Whether the selection reads rewards.
    #[must_use]
    pub fn needs_reward_model(self) -> bool {
        self != Selection::Verifier
    }

    /// Whether the selection reads verifier results.
    #[must_use]
    pub fn needs_verifier(self) -> bool {
        self != Selection::RewardModel
    }
}

fn default_samples() -> usize {
    8
}
fn default_temperature() -> f64 {
    // Llama 3's final multilingual rejection-sampling round used a constant 0.6 (§4.3.2); 0.7
    // keeps a little more variety between the K samples.
    0.7
}
fn default_max_new_tokens() -> usize {
    512
}
fn default_batch_size() -> usize {
    1
}
fn default_verifier_weight() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}
fn default_model_name() -> String {
    "policy".to_owned()
}
fn default_round() -> i64 {
    1
}

impl RejectionConfig {
    /// Where the policy and reward model run ([`training::Placement`]).
    #[must_use]
    pub fn placement(&self) -> training::Placement {
        training::Placement {
            device: self.device,
            dtype: self.compute_dtype,
        }
    }

    /// A small run for tests and smoke runs: 4 samples of at most 32 tokens per prompt, the
    /// reference-answer verifier ranking them (no reward model needed).
    #[must_use]
    pub fn tiny(policy: PathBuf, prompts: PathBuf, output_dir: PathBuf) -> Self {
        Self {
            policy,
            device: training::DeviceChoice::default(),
            compute_dtype: training::ComputeDtype::default(),
            reward_model: None,
            prompts,
            output_dir,
            samples: 4,
            temperature: 1.0,
            top_p: None,
            top_k: None,
            max_new_tokens: 32,
            seed: 0,
            batch_size: 1,
            verifier: VerifierKind::ReferenceAnswer,
            selection: Selection::Verifier,
            verifier_weight: default_verifier_weight(),
            require_verified: true,
            min_score: None,
            system_prompts: BTreeMap::new(),
            keep_system_prompts: false,
            model_name: default_model_name(),
            round: default_round(),
        }
    }

    /// Checks values serde cannot: ranges, and that a selection that reads rewards has a reward
    /// model (the verifier is checked by `rejection::run`, where a caller's own may stand in).
    pub fn validate(&self) -> Result<(), SynthError> {
        let invalid = |field: &str, message: String| {
            Err(SynthError::Config {
                field: field.to_owned(),
                message,
            })
        };
        if self.samples == 0 {
            return invalid("samples", "must be at least 1".to_owned());
        }
        if self.batch_size == 0 {
            return invalid("batch_size", "must be at least 1".to_owned());
        }
        if self.max_new_tokens == 0 {
            return invalid("max_new_tokens", "must be at least 1".to_owned());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return invalid(
                "temperature",
                format!("{} is not a finite number ≥ 0", self.temperature),
            );
        }
        if let Some(top_p) = self.top_p
            && !(top_p > 0.0 && top_p <= 1.0)
        {
            return invalid("top_p", format!("{top_p} is not in (0, 1]"));
        }
        if self.top_k == Some(0) {
            return invalid("top_k", "must be at least 1".to_owned());
        }
        if !self.verifier_weight.is_finite() {
            return invalid(
                "verifier_weight",
                format!("{} is not finite", self.verifier_weight),
            );
        }
        if self.selection.needs_reward_model() && self.reward_model.is_none() {
            return invalid(
                "reward_model",
                format!(
                    "selection = {:?} reads rewards: set reward_model (or use selection = \"verifier\")",
                    self.selection
                ),
            );
        }
        Ok(())
    }

    /// The system prompt for a prompt of `capability` (the `default` entry otherwise).
    #[must_use]
    pub fn system_prompt(&self, capability: Option<&str>) -> Option<&str> {
        capability
            .and_then(|capability| self.system_prompts.get(capability))
            .or_else(|| self.system_prompts.get("default"))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RejectionConfig {
        RejectionConfig::tiny("p".into(), "q.jsonl".into(), "out".into())
    }

    #[test]
    fn a_selection_needs_what_it_reads() {
        assert!(config().validate().is_ok());
        let mut needs_reward = config();
        needs_reward.selection = Selection::VerifierThenRewardModel;
        let error = needs_reward.validate().unwrap_err().to_string();
        assert!(error.contains("reward_model"), "{error}");
        let mut zero = config();
        zero.samples = 0;
        assert!(zero.validate().unwrap_err().to_string().contains("samples"));
    }

    #[test]
    fn capability_system_prompts_fall_back_to_default() {
        let mut config = config();
        assert_eq!(config.system_prompt(Some("math")), None);
        config
            .system_prompts
            .insert("math".into(), "Show your work.".into());
        assert_eq!(config.system_prompt(Some("math")), Some("Show your work."));
        assert_eq!(config.system_prompt(Some("code")), None);
        config
            .system_prompts
            .insert("default".into(), "Be helpful.".into());
        assert_eq!(config.system_prompt(Some("code")), Some("Be helpful."));
        assert_eq!(config.system_prompt(None), Some("Be helpful."));
    }
}
