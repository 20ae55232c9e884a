//! Learning-rate schedules: linear warmup, then cosine decay to a floor, linear decay to zero, or
//! a constant rate.
//!
//! The values are those of Hugging Face transformers' `optimization.py` (5.23):
//! `get_cosine_with_min_lr_schedule_with_warmup` (which is `get_cosine_schedule_with_warmup` when
//! the floor is 0), `get_linear_schedule_with_warmup` and `get_constant_schedule_with_warmup`.
//! As with torch's `LambdaLR`, the rate for the update numbered `step` (0 for the first update)
//! is `peak · factor(step)`, so with warmup the very first update has rate 0.
//!
//! Llama 3 pretraining (paper §3.4.1) warms up linearly for 8,000 steps and decays with a cosine
//! to 8e-7 from a peak of 8e-5, i.e. a floor ratio of 0.01.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// What happens after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// Half a cosine from the peak down to `peak · min_ratio` at `total_steps`.
    Cosine {
        /// The floor as a fraction of the peak (transformers' `min_lr_rate`); 0 for plain cosine.
        min_ratio: f64,
    },
    /// A straight line from the peak down to 0 at `total_steps`.
    Linear,
    /// The peak, held.
    Constant,
}

/// A warmup-then-decay schedule over a run of `total_steps` updates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningRateSchedule {
    /// The rate reached at the end of warmup.
    pub peak: f64,
    /// Updates spent ramping from 0 to the peak.
    pub warmup_steps: u64,
    /// Updates in the whole run, warmup included.
    pub total_steps: u64,
    /// The shape after warmup.
    pub decay: Decay,
}

impl LearningRateSchedule {
    /// Checks the values: a non-negative finite peak, warmup within the run, a floor in [0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.peak >= 0.0 && self.peak.is_finite()) {
            return Err(TrainingError::InvalidValue {
                field: "peak",
                value: self.peak.to_string(),
                reason: "must be finite and non-negative",
            });
        }
        if self.warmup_steps > self.total_steps {
            return Err(TrainingError::InvalidValue {
                field: "warmup_steps",
                value: self.warmup_steps.to_string(),
                reason: "must not exceed total_steps",
            });
        }
        if let Decay::Cosine { min_ratio } = self.decay
            && !(0.0..=1.0).contains(&min_ratio)
        {
            return Err(TrainingError::InvalidValue {
                field: "min_ratio",
                value: min_ratio.to_string(),
                reason: "must lie in [0, 1]",
            });
        }
        Ok(())
    }

    /// The multiplier of the peak for update `step` (0-based), transformers' `lr_lambda`.
    #[must_use]
    pub fn factor(&self, step: u64) -> f64 {
        let step_f = step as f64;
        if step < self.warmup_steps {
            return step_f / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => (self.total_steps as f64 - step_f) / decay_steps,
            Decay::Cosine { min_ratio } => {
                let progress = (step_f - self.warmup_steps as f64) / decay_steps;
                // transformers' num_cycles = 0.5: cos(π · 2 · 0.5 · progress).
                let cosine = 0.5 * (1.0 + (PI * progress).cos());
                cosine * (1.0 - min_ratio) + min_ratio
            }
        }
        // transformers clamps at 0 for steps past the end of the run.
        .max(0.0)
    }

    /// The learning rate for update `step` (0-based).
    #[must_use]
    pub fn learning_rate(&self, step: u64) -> f64 {
        self.peak * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(decay: Decay) -> LearningRateSchedule {
        LearningRateSchedule {
            peak: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            decay,
        }
    }

    fn close(left: f64, right: f64) {
        assert!((left - right).abs() <= 1e-15, "{left} vs {right}");
    }

    /// Warmup is step/10: update 0 gets rate 0, update 5 half the peak, update 10 the peak.
    #[test]
    fn warmup_is_linear_from_zero() {
        for decay in [
            Decay::Constant,
            Decay::Linear,
            Decay::Cosine { min_ratio: 0.1 },
        ] {
            let schedule = schedule(decay);
            close(schedule.learning_rate(0), 0.0);
            close(schedule.learning_rate(5), 5e-4);
            close(schedule.learning_rate(10), 1e-3);
        }
    }

    /// Cosine over the 100 decay updates: progress p = (step − 10)/100,
    /// factor = 0.5(1 + cos πp)·(1 − 0.1) + 0.1.
    /// step 60: p = 0.5, cos = 0 → 0.5·0.9 + 0.1 = 0.55.
    /// step 35: p = 0.25, cos = √2/2 → 0.5(1 + 0.70710678)·0.9 + 0.1 = 0.868198052...
    /// step 110: p = 1 → the floor 0.1. Past the end: cos comes back up, as in transformers.
    #[test]
    fn cosine_matches_transformers_formula() {
        let schedule = schedule(Decay::Cosine { min_ratio: 0.1 });
        close(schedule.factor(60), 0.55);
        close(
            schedule.factor(35),
            0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) * 0.9 + 0.1,
        );
        close(schedule.factor(110), 0.1);
        let plain = schedule_with_floor_zero();
        close(plain.factor(110), 0.0);
    }

    fn schedule_with_floor_zero() -> LearningRateSchedule {
        schedule(Decay::Cosine { min_ratio: 0.0 })
    }

    /// Linear: factor = (110 − step)/100: step 10 → 1, step 60 → 0.5, step 110 → 0, after → 0.
    #[test]
    fn linear_matches_transformers_formula() {
        let schedule = schedule(Decay::Linear);
        close(schedule.factor(60), 0.5);
        close(schedule.factor(110), 0.0);
        close(schedule.factor(500), 0.0);
    }

    #[test]
    fn zero_warmup_starts_at_peak() {
        let schedule = LearningRateSchedule {
            peak: 2.0,
            warmup_steps: 0,
            total_steps: 4,
            decay: Decay::Linear,
        };
        close(schedule.learning_rate(0), 2.0);
        close(schedule.learning_rate(2), 1.0);
    }

    #[test]
    fn validate_rejects_warmup_longer_than_run() {
        let schedule = LearningRateSchedule {
            peak: 1.0,
            warmup_steps: 5,
            total_steps: 4,
            decay: Decay::Constant,
        };
        let error = schedule.validate().unwrap_err().to_string();
        assert_eq!(error, "warmup_steps = 5: must not exceed total_steps");
    }

    #[test]
    fn parses_from_json_with_a_kind_tag() {
        let schedule: LearningRateSchedule = serde_json::from_str(
            r#"{"peak": 1e-4, "warmup_steps": 2, "total_steps": 8, "decay": {"kind": "cosine", "min_ratio": 0.01}}"#,
        )
        .unwrap();
        assert_eq!(schedule.decay, Decay::Cosine { min_ratio: 0.01 });
    }
}
