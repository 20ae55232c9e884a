//! herd-sft: supervised fine-tuning on conversations (Llama 3 §4.1.3). Loss only on the tokens the
//! dialogue protocol marks trainable; packed (document-masked) or padded batches; held-out loss and
//! perplexity; exact resume through the training toolbox; an HF checkpoint at the end.
//!
//! The same file names as every stage crate — `config.rs`, `data.rs`, `loss.rs`, `train.rs` — so
//! the methods compare side by side.

pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod train;

pub use config::SftConfig;
pub use error::SftError;
pub use train::{Summary, run};
