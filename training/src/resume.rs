//! Where a run starts: from its newest checkpoint (weights, optimizer state, RNG, data position,
//! the metrics log truncated to that step and the time already spent), or fresh. The same few
//! lines every stage's `train.rs` would otherwise repeat; [`crate::TrainingRun::start`] calls it.

use std::path::Path;

use candle_nn::VarMap;
use serde::de::DeserializeOwned;

use crate::error::{Result, TrainingError};
use crate::metrics::{MetricsLog, read_metrics};
use crate::optimizer::AdamW;
use crate::rng::Rng;
use crate::state::{TRAIN_STATE_FILE, load_latest};

/// A run's starting point.
#[derive(Debug)]
pub struct Start<P> {
    /// Updates already done (0 when fresh).
    pub step: u64,
    /// The run's RNG as it was saved (or seeded from `seed`).
    pub rng: Rng,
    /// The stage's data position as it was saved (or its default).
    pub position: P,
    /// `metrics.jsonl`, truncated to `step` when resuming.
    pub metrics: MetricsLog,
    /// Seconds spent before the resume (from the metrics log).
    pub elapsed_before: f64,
    /// The checkpoint directory resumed from (`None` when fresh).
    pub resumed_from: Option<std::path::PathBuf>,
}

/// Resumes from the newest checkpoint under `output_dir/checkpoints` into `var_map` and
/// `optimizer`, or starts fresh with `Rng::from_seed(seed)`; the metrics log is
/// `output_dir/metrics.jsonl`.
pub fn resume_or_start<P: DeserializeOwned + Default>(
    output_dir: &Path,
    var_map: &VarMap,
    optimizer: &mut AdamW,
    seed: u64,
) -> Result<Start<P>> {
    std::fs::create_dir_all(output_dir).map_err(TrainingError::io(output_dir))?;
    let metrics_path = output_dir.join("metrics.jsonl");
    let Some(loaded) = load_latest(&output_dir.join("checkpoints"))? else {
        return Ok(Start {
            step: 0,
            rng: Rng::from_seed(seed),
            position: P::default(),
            metrics: MetricsLog::create(&metrics_path)?,
            elapsed_before: 0.0,
            resumed_from: None,
        });
    };
    loaded.restore(var_map, optimizer)?;
    let position: P = serde_json::from_value(loaded.data_position.clone())
        .map_err(TrainingError::json(loaded.directory.join(TRAIN_STATE_FILE)))?;
    let elapsed_before = read_metrics(&metrics_path)?
        .iter()
        .take_while(|line| line.step <= loaded.step)
        .last()
        .map_or(0.0, |line| line.elapsed_s);
    eprintln!(
        "resuming from {} (step {})",
        loaded.directory.display(),
        loaded.step
    );
    Ok(Start {
        step: loaded.step,
        rng: loaded.rng,
        position,
        metrics: MetricsLog::resume(&metrics_path, loaded.step)?,
        elapsed_before,
        resumed_from: Some(loaded.directory),
    })
}
