//! herd-dpo: direct preference optimisation (Rafailov et al. 2023) as the Llama 3 recipe runs it
//! (§4.1.4): β = 0.1, formatting tokens masked out of chosen and rejected, an NLL term on chosen
//! weighted 0.2. Reference log-probs are computed once before training and stored beside the data
//! (`reference.rs`), so the reference model is never in memory while the policy trains.
//!
//! The same file names as every stage crate — `config.rs`, `data.rs`, `loss.rs`, `train.rs` — plus
//! `reference.rs`, the precompute step SFT does not have.

pub mod config;
pub mod data;
pub mod error;
pub mod loss;
pub mod reference;
pub mod train;

pub use config::DpoConfig;
pub use error::DpoError;
pub use reference::{ReferenceReport, precompute};
pub use train::{Summary, run};
