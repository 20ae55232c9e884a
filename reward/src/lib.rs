//! herd-reward: reward models (Llama 3 §4.1.2). A Llama trunk with a scalar head read at the last
//! token of each dialogue, trained with the Bradley–Terry loss on preference pairs (an edited
//! response adds the pairs edited > chosen > rejected, §4.2.1); held-out accuracy and margin;
//! exact resume through the training toolbox; a Hugging Face `LlamaForSequenceClassification`
//! directory at the end, which scores dialogues for rejection sampling (§4.2.2).
//!
//! The same file names as every stage crate — `config.rs`, `data.rs`, `loss.rs`, `train.rs` — so
//! the methods compare side by side; `model.rs` is the reward model itself and `eval.rs` the
//! `herd reward eval` / `score` commands.

pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod loss;
pub mod model;
pub mod train;

pub use config::RewardConfig;
pub use error::RewardError;
pub use model::RewardModel;
pub use train::{Summary, run};
