//! herd's training toolbox: the pieces every stage's loop calls — `AdamW` with saveable state,
//! learning-rate schedules, gradient clipping, token-normalised gradient accumulation, exact-resume
//! checkpoints, the run's RNG, the metrics log and progress line, loss plots and checkpoint
//! averaging.
//!
//! A toolbox, not a framework: free functions and small structs, no trainer trait. Each stage's
//! `train.rs` is the loop, readable top to bottom; what differs between the methods (data, loss,
//! evaluation, metrics) is written there, and the step's shared mechanics — clipping, the `AdamW`
//! step on the schedule, metrics, progress, checkpoints, resume — are one [`TrainingRun`]:
//!
//! ```text
//! let optimizer = AdamW::from_var_map(&var_map, training.adamw(), llama_weight_decay(false))?;
//! let (mut run, mut position) = TrainingRun::start::<DataPosition>(dir, training, &var_map, optimizer, resolved)?;
//! while run.step() < training.steps {
//!     run.begin_step();
//!     let mut accumulator = GradientAccumulator::new();
//!     for micro_batch in ... { accumulator.add(&loss_sum, tokens)?; }
//!     let update = run.update(accumulator.finish(&run.vars())?)?;
//!     let held_out_loss = run.evaluates_now().then(|| ...);
//!     run.record(&update, tokens, held_out_loss, extra, &position)?;
//! }
//! run.finish();
//! ```

pub mod accumulation;
pub mod average;
pub mod clipping;
pub mod config;
pub mod device;
pub mod error;
pub mod export;
pub mod metrics;
pub mod optimizer;
pub mod plot;
pub mod resume;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod settings;
pub mod state;

pub use accumulation::{AccumulatedGradients, GradientAccumulator};
pub use average::{average_checkpoints, average_into_directory};
pub use clipping::{clip_gradient_norm, global_norm};
pub use config::{ConfigError, load_config, parse_config};
pub use device::{ComputeDtype, DeviceChoice, Placement, select_device};
pub use error::{Result, TrainingError};
pub use export::{ExportSummary, export};
pub use metrics::{MetricsLog, Progress, StepMetrics, read_metrics};
pub use optimizer::{AdamW, AdamWConfig, llama_weight_decay, named_vars};
pub use plot::{loss_curve_svg, write_loss_plot};
pub use resume::{Start, resume_or_start};
pub use rng::Rng;
pub use run::{TrainingRun, Update};
pub use schedule::{Decay, LearningRateSchedule};
pub use settings::{FinalDtype, ScheduleKind, TrainingConfig};
pub use state::{
    Checkpoint, LoadedCheckpoint, list_checkpoints, load_latest, load_weights, save_checkpoint,
};
