//! herd-synth: generating from a policy. Today: `herd generate` (JSONL prompts in, one generation per
//! line out) and `herd chat`; rejection sampling (K samples per prompt scored by a reward model,
//! Llama 3 §4.2.2) builds on the same engine.

pub mod chat;
pub mod error;
pub mod generate;

pub use error::SynthError;
pub use generate::{GenerateOptions, Policy, generate_file};
