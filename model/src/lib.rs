//! herd-model: a training-capable Llama 3 in candle. Config in both HF layouts, differentiable
//! layers (no candle fast path that cuts gradients), a forward that returns every position's
//! logits and the final hidden states, packed-document and padding masks, HF checkpoint IO, a KV
//! cache with batched sampling, and `LoRA` adapters. The model speaks token ids, never text.

pub mod attention;
pub mod checkpoint;
pub mod checkpoint_save;
pub mod config;
pub mod decoder_layer;
pub mod error;
pub mod generation;
mod hf_config;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod ops;
pub mod positions;
pub mod rope;
pub mod sampling;

pub use checkpoint::{Checkpoint, varmap_tensors};
pub use checkpoint_save::{
    SaveOptions, copy_tokenizer_files, generation_config, save, save_parameters,
};
pub use config::{Llama3RopeScaling, LlamaConfig};
pub use error::{ModelError, Result};
pub use generation::{
    Generated, GenerationConfig, StopReason, decode_step, generate, generate_samples, prefill,
};
pub use kv_cache::KvCache;
pub use llama::{ForwardOutput, Llama};
pub use lora::{LoraConfig, apply_lora};
pub use positions::Positions;
