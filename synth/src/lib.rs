//! herd-synth: generating from a policy: `herd generate` (JSONL prompts in, one generation per
//! line out), `herd chat`, and `herd synth`, rejection sampling (K samples per prompt, scored by a
//! reward model and/or a verifier, the best kept; Llama 3 §4.2.2).

pub mod chat;
pub mod config;
pub mod error;
pub mod generate;
pub mod rejection;
pub mod selection;
pub mod verifier;

pub use config::{RejectionConfig, Selection, VerifierKind};
pub use error::SynthError;
pub use generate::{GenerateOptions, Policy, generate_file};
pub use rejection::RejectionSummary;
