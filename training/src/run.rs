//! A run's optimizer steps: what every stage's loop does after its micro-batches, in one place.
//!
//! A stage's `train.rs` computes the loss of its micro-batches its own way (next-token loss, DPO,
//! Bradley–Terry) into an [`AccumulatedGradients`]; the rest of a step is the same for all of them
//! and lives here: clip (or only measure) the global gradient norm, step `AdamW` at the schedule's
//! learning rate, write the metrics line and the progress line, save a resumable checkpoint when
//! due. Resuming (weights, optimizer state, RNG, data position, the metrics log cut to the step)
//! is [`TrainingRun::start`]. This is also the one place a data-parallel collective belongs.
//!
//! A small struct, not a trainer: the stage keeps its loop, its data and its model.
//!
//! ```text
//! let (mut run, mut position) = TrainingRun::start::<DataPosition>(dir, training, &var_map, optimizer, resolved)?;
//! while run.step() < training.steps {
//!     run.begin_step();
//!     let accumulated = /* the stage's micro-batches */;
//!     let update = run.update(accumulated)?;
//!     let held_out_loss = if run.evaluates_now() { /* the stage's evaluation */ } else { None };
//!     run.record(&update, tokens, held_out_loss, extra, &position)?;
//! }
//! run.finish();
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Var;
use candle_nn::VarMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::accumulation::AccumulatedGradients;
use crate::clipping::{clip_gradient_norm, global_norm};
use crate::error::{Result, TrainingError};
use crate::metrics::{MetricsLog, Progress, StepMetrics};
use crate::optimizer::AdamW;
use crate::resume::{Start, resume_or_start};
use crate::rng::Rng;
use crate::schedule::LearningRateSchedule;
use crate::settings::TrainingConfig;
use crate::state::{Checkpoint, save_checkpoint};

/// One optimizer update, as [`TrainingRun::update`] did it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// Updates done, this one included.
    pub step: u64,
    /// The step's mean loss over its normalising count (tokens or pairs).
    pub loss: f64,
    /// The count the step's gradients were divided by.
    pub normalised_by: u64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate the update used.
    pub learning_rate: f64,
}

/// The optimizer, schedule, metrics, progress and checkpoints of one stage's run.
pub struct TrainingRun<'a> {
    settings: &'a TrainingConfig,
    schedule: LearningRateSchedule,
    var_map: &'a VarMap,
    optimizer: AdamW,
    rng: Rng,
    metrics: MetricsLog,
    progress: Progress,
    checkpoints: PathBuf,
    resolved_config: &'a str,
    step: u64,
    resumed_from: Option<PathBuf>,
    elapsed_before: f64,
    started: Instant,
    step_started: Instant,
}

impl std::fmt::Debug for TrainingRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingRun")
            .field("step", &self.step)
            .field("steps", &self.settings.steps)
            .field("resumed_from", &self.resumed_from)
            .field("checkpoints", &self.checkpoints)
            .finish_non_exhaustive()
    }
}

impl<'a> TrainingRun<'a> {
    /// Starts the run in `output_dir` (`checkpoints/`, `metrics.jsonl`): from its newest checkpoint
    /// into `var_map` and `optimizer` when there is one, else fresh. Returns the run and the
    /// stage's data position (`P::default()` when fresh). `resolved_config` is saved with each
    /// checkpoint.
    pub fn start<P: DeserializeOwned + Default>(
        output_dir: &Path,
        settings: &'a TrainingConfig,
        var_map: &'a VarMap,
        mut optimizer: AdamW,
        resolved_config: &'a str,
    ) -> Result<(Self, P)> {
        let schedule = settings.schedule()?;
        let Start {
            step,
            rng,
            position,
            metrics,
            elapsed_before,
            resumed_from,
        } = resume_or_start::<P>(output_dir, var_map, &mut optimizer, settings.seed)?;
        let now = Instant::now();
        let run = Self {
            settings,
            schedule,
            var_map,
            optimizer,
            rng,
            metrics,
            progress: Progress::new(settings.steps, step),
            checkpoints: output_dir.join("checkpoints"),
            resolved_config,
            step,
            resumed_from,
            elapsed_before,
            started: now,
            step_started: now,
        };
        Ok((run, position))
    }

    /// Updates done so far.
    #[must_use]
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The checkpoint directory this run resumed from (`None` when it started fresh).
    #[must_use]
    pub fn resumed_from(&self) -> Option<&Path> {
        self.resumed_from.as_deref()
    }

    /// The trained variables, in the optimizer's order (what gradients are collected for).
    #[must_use]
    pub fn vars(&self) -> Vec<Var> {
        self.optimizer.vars()
    }

    /// The metrics log (`metrics.jsonl`), for the loss plot.
    #[must_use]
    pub fn metrics_path(&self) -> PathBuf {
        self.metrics.path().to_path_buf()
    }

    /// The run's RNG (saved with every checkpoint).
    #[must_use]
    pub fn rng(&self) -> &Rng {
        &self.rng
    }

    /// Marks the start of a step (its tokens/s counts from here).
    pub fn begin_step(&mut self) {
        self.step_started = Instant::now();
    }

    /// The step's gradients applied: the global norm clipped to `max_grad_norm` (or only measured
    /// when it is 0), then `AdamW` at the schedule's learning rate for this step.
    pub fn update(&mut self, mut accumulated: AccumulatedGradients) -> Result<Update> {
        let vars = self.optimizer.vars();
        let grad_norm = if self.settings.max_grad_norm > 0.0 {
            clip_gradient_norm(
                &mut accumulated.gradients,
                &vars,
                self.settings.max_grad_norm,
            )?
        } else {
            global_norm(&accumulated.gradients, &vars)?
        };
        let learning_rate = self.schedule.learning_rate(self.step);
        self.optimizer.step(&accumulated.gradients, learning_rate)?;
        self.step += 1;
        Ok(Update {
            step: self.step,
            loss: accumulated.loss,
            normalised_by: accumulated.tokens,
            grad_norm,
            learning_rate,
        })
    }

    /// Whether the stage evaluates its held-out data after the update just done.
    #[must_use]
    pub fn evaluates_now(&self) -> bool {
        self.settings.evaluates_at(self.step)
    }

    /// Writes the step's metrics line (`tokens` trained, the held-out loss when evaluated, the
    /// stage's `extra` fields) and the progress line, and saves a resumable checkpoint with
    /// `data_position` when one is due.
    pub fn record(
        &mut self,
        update: &Update,
        tokens: u64,
        held_out_loss: Option<f64>,
        extra: serde_json::Map<String, serde_json::Value>,
        data_position: &impl Serialize,
    ) -> Result<()> {
        let line = StepMetrics {
            step: update.step,
            loss: update.loss,
            learning_rate: update.learning_rate,
            grad_norm: update.grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / self.step_started.elapsed().as_secs_f64().max(1e-9),
            elapsed_s: self.elapsed_before + self.started.elapsed().as_secs_f64(),
            held_out_loss,
            extra,
        };
        self.metrics.append(&line)?;
        self.progress.update(&line);
        if self.settings.checkpoints_at(update.step) {
            let data_position = serde_json::to_value(data_position)
                .map_err(TrainingError::json(&self.checkpoints))?;
            save_checkpoint(
                &self.checkpoints,
                &Checkpoint {
                    step: update.step,
                    schedule_step: update.step,
                    var_map: self.var_map,
                    optimizer: &self.optimizer,
                    data_position,
                    rng: &self.rng,
                    config: self.resolved_config,
                },
                self.settings.keep_checkpoints,
            )?;
        }
        Ok(())
    }

    /// Seconds this process has spent in the run.
    #[must_use]
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Ends the progress line.
    pub fn finish(self) {
        self.progress.finish();
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{Init, VarMap};

    use super::*;
    use crate::accumulation::GradientAccumulator;
    use crate::metrics::read_metrics;
    use crate::optimizer::llama_weight_decay;

    /// A least-squares problem on one `Var`: the step's data follow from the step number, so a
    /// resumed run sees what an uninterrupted one does.
    fn train(directory: &Path, settings: &TrainingConfig, stop_after: u64) -> Vec<f32> {
        let var_map = VarMap::new();
        let weight = var_map
            .get((4, 3), "weight", Init::Const(0.5), DType::F32, &Device::Cpu)
            .unwrap();
        let optimizer =
            AdamW::from_var_map(&var_map, settings.adamw(), llama_weight_decay(false)).unwrap();
        let (mut run, mut position) =
            TrainingRun::start::<u64>(directory, settings, &var_map, optimizer, "config").unwrap();
        assert_eq!(
            position,
            run.step(),
            "the data position comes back with the step"
        );
        while run.step() < settings.steps.min(stop_after) {
            run.begin_step();
            let mut accumulator = GradientAccumulator::new();
            for micro_batch in 0..2_u64 {
                let seed = (position * 2 + micro_batch) as f32;
                let inputs =
                    Tensor::from_vec(vec![seed, 1.0, -seed, 0.5, 2.0, seed], (2, 3), &Device::Cpu)
                        .unwrap();
                let loss_sum = inputs
                    .matmul(&weight.t().unwrap())
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                accumulator.add(&loss_sum, 2).unwrap();
            }
            let update = run
                .update(accumulator.finish(&run.vars()).unwrap())
                .unwrap();
            position += 1;
            assert_eq!(update.step, run.step());
            assert_eq!(update.normalised_by, 4);
            let held_out = run.evaluates_now().then_some(update.loss);
            run.record(&update, 4, held_out, serde_json::Map::new(), &position)
                .unwrap();
        }
        run.finish();
        weight.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn a_run_killed_and_resumed_ends_where_an_uninterrupted_one_does() {
        let mut settings = TrainingConfig::new(6, 2, 0.05);
        settings.checkpoint_every = 2;
        settings.max_grad_norm = 1.0;
        settings.warmup_steps = 2;
        let straight = tempfile::tempdir().unwrap();
        let expected = train(straight.path(), &settings, u64::MAX);

        let resumed = tempfile::tempdir().unwrap();
        // Stopped after update 3: the newest checkpoint is step 2, so update 3 runs again.
        train(resumed.path(), &settings, 3);
        let weights = train(resumed.path(), &settings, u64::MAX);
        assert_eq!(weights, expected, "bit for bit");
        assert_ne!(weights, vec![0.5; 12], "the run trained");

        let lines = read_metrics(&resumed.path().join("metrics.jsonl")).unwrap();
        let steps: Vec<u64> = lines.iter().map(|line| line.step).collect();
        assert_eq!(
            steps,
            vec![1, 2, 3, 4, 5, 6],
            "the log was cut back to the checkpoint"
        );
        let straight_lines = read_metrics(&straight.path().join("metrics.jsonl")).unwrap();
        for (line, other) in lines.iter().zip(&straight_lines) {
            assert_eq!(line.loss.to_bits(), other.loss.to_bits());
            assert_eq!(line.grad_norm.to_bits(), other.grad_norm.to_bits());
            assert_eq!(line.learning_rate.to_bits(), other.learning_rate.to_bits());
        }
        // Clipping at 1.0 on these inputs: the reported norm is the pre-clip one, above it.
        assert!(lines[0].grad_norm > 1.0, "{}", lines[0].grad_norm);
        assert!(lines[5].held_out_loss.is_some(), "the last step evaluates");
    }
}
