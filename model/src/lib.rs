//! herd-model: a training-capable Llama 3 in candle. Config in both HF layouts, differentiable
//! layers (no candle fast path that cuts gradients), a forward that returns every position's
//! logits and the final hidden states, packed-document and padding masks, and HF checkpoint IO.
//! The model speaks token ids, never text.

pub mod attention;
pub mod checkpoint;
pub mod checkpoint_save;
pub mod config;
pub mod decoder_layer;
pub mod error;
mod hf_config;
pub mod init;
pub mod linear;
pub mod llama;
pub mod mlp;
pub mod norm;
pub mod positions;
pub mod rope;

pub use checkpoint::{Checkpoint, varmap_tensors};
pub use checkpoint_save::{SaveOptions, copy_tokenizer_files, generation_config, save};
pub use config::{Llama3RopeScaling, LlamaConfig};
pub use error::{ModelError, Result};
pub use llama::{ForwardOutput, Llama};
pub use positions::Positions;
