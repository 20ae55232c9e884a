//! herd-pretrain: causal-language-model training, from scratch or continued from a checkpoint, on
//! plain text packed into fixed-length rows with document masking (Llama 3 paper §3.2, §3.4).
//!
//! `herd pretrain --config FILE [--set key=value]…` is [`training::load_config`] into a
//! [`PretrainConfig`], then [`run`]. The files are the same in every stage crate:
//! `config.rs` (the TOML config), `data.rs` (text → token stream → batches), `loss.rs` (the
//! summed next-token cross entropy) and `train.rs` (the loop).

pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod train;

pub use config::{Architecture, DataConfig, DocumentSplit, ModelSource, PretrainConfig};
pub use error::{PretrainError, Result};
pub use train::{Summary, run, run_until};
pub use training::{FinalDtype, ScheduleKind, TrainingConfig};
