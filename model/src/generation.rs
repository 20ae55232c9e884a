//! Batched autoregressive generation with a KV cache: [`prefill`] runs the prompts once (left-padded
//! to a common length, [`KvCache`] explains why), [`decode_step`] feeds one token per row, and
//! [`generate`] loops until each row draws a stop token or reaches `max_new_tokens`. Rows finish
//! independently; finished rows are dropped from the cache so they cost nothing afterwards.
//!
//! [`generate_samples`] draws K samples of one prompt from a single prefill, the shape of
//! rejection sampling (Llama 3 paper §4.2.2). Row `r` of a request draws from its own stream seeded
//! by `(seed, r)`, so K samples of a shared prefix equal the same prompt repeated K times in
//! [`generate`], and the same seed gives the same output.

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::init::fnv1a;
use crate::kv_cache::KvCache;
use crate::llama::Llama;
use crate::sampling::{Sampler, Xoshiro256};

/// The id that fills left padding; masked out, so any id in the vocabulary would do.
const PADDING_ID: u32 = 0;

/// How [`generate`] decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// The most tokens generated per row, stop token not counted.
    pub max_new_tokens: usize,
    /// Logits are divided by it; 0 means greedy argmax.
    pub temperature: f64,
    /// Sample only among the `top_k` most likely tokens.
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probability reaches `top_p`.
    pub top_p: Option<f64>,
    /// Seed of the sampling streams; row `r` draws from a stream of its own.
    pub seed: u64,
    /// Generation of a row ends when it draws one of these, e.g. Llama 3.1's `<|eot_id|>`,
    /// `<|eom_id|>` and `<|end_of_text|>`.
    pub stop_tokens: Vec<u32>,
}

impl GenerationConfig {
    /// Greedy decoding of at most `max_new_tokens`, stopping at `stop_tokens`.
    #[must_use]
    pub fn greedy(max_new_tokens: usize, stop_tokens: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_tokens,
        }
    }

    fn sampler(&self) -> Sampler {
        Sampler {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// It drew this stop token (not included in [`Generated::ids`]).
    StopToken(u32),
    /// It reached `max_new_tokens`.
    MaxTokens,
}

/// One row's generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The new tokens, without the prompt and without the stop token.
    pub ids: Vec<u32>,
    /// Why generation ended.
    pub stop: StopReason,
}

/// Runs `prompts` (each non-empty) left-padded into a new cache; returns the next-token logits of
/// each row, `(batch, vocab)`, and the cache.
pub fn prefill(model: &Llama, prompts: &[Vec<u32>]) -> Result<(Tensor, KvCache)> {
    if let Some(row) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Generation(format!("prompt {row} is empty")));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest == 0 {
        return Err(ModelError::Generation("no prompts".to_owned()));
    }
    let padding: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let ids: Vec<u32> = prompts
        .iter()
        .zip(&padding)
        .flat_map(|(prompt, &pad)| {
            std::iter::repeat_n(PADDING_ID, pad).chain(prompt.iter().copied())
        })
        .collect();
    let device = model.device();
    let input_ids = Tensor::from_vec(ids, (prompts.len(), longest), &device)?;
    let mut cache = KvCache::new(model.config().num_hidden_layers, padding);
    let logits = model.forward_with_cache(&input_ids, &mut cache)?.logits;
    // (batch, longest, vocab) -> (batch, vocab): every row's last slot is a real token.
    Ok((logits.narrow(1, longest - 1, 1)?.squeeze(1)?, cache))
}

/// Appends one token per row of `cache`; returns the next-token logits, `(batch, vocab)`.
pub fn decode_step(model: &Llama, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
    // (batch,) -> (batch, 1)
    let input_ids = Tensor::from_slice(tokens, (tokens.len(), 1), &model.device())?;
    let logits = model.forward_with_cache(&input_ids, cache)?.logits;
    // (batch, 1, vocab) -> (batch, vocab)
    Ok(logits.squeeze(1)?)
}

/// Generates a continuation of every prompt, batched; rows finish independently.
pub fn generate(
    model: &Llama,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    let (logits, cache) = prefill(model, prompts)?;
    continue_from(model, &logits, cache, config)
}

/// `samples` continuations of one `prompt` from a single prefill whose cache all of them share.
/// Equal to [`generate`] over the prompt repeated `samples` times.
pub fn generate_samples(
    model: &Llama,
    prompt: &[u32],
    samples: usize,
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    let (logits, cache) = prefill(model, &[prompt.to_vec()])?;
    // (1, vocab) -> (samples, vocab)
    let logits = logits.repeat((samples, 1))?;
    continue_from(model, &logits, cache.repeat(samples)?, config)
}

/// The decoding loop after a prefill: `logits` `(batch, vocab)` predict each row's first token.
pub fn continue_from(
    model: &Llama,
    logits: &Tensor,
    mut cache: KvCache,
    config: &GenerationConfig,
) -> Result<Vec<Generated>> {
    let batch = cache.batch_size();
    let sampler = config.sampler();
    let mut streams: Vec<Xoshiro256> = (0..batch)
        .map(|row| Xoshiro256::new(config.seed ^ fnv1a(&(row as u64).to_le_bytes())))
        .collect();
    let mut ids = vec![Vec::new(); batch];
    let mut stops = vec![StopReason::MaxTokens; batch];
    if config.max_new_tokens == 0 {
        return Ok(finish(ids, stops));
    }
    // `active[slot]`: the request row that sits in cache row `slot`.
    let mut active: Vec<usize> = (0..batch).collect();
    let mut logits = logits.clone();
    loop {
        let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let (mut kept, mut next) = (Vec::new(), Vec::new());
        for (slot, &row) in active.iter().enumerate() {
            let token = sampler.sample(&rows[slot], &mut streams[row]);
            if config.stop_tokens.contains(&token) {
                stops[row] = StopReason::StopToken(token);
                continue;
            }
            ids[row].push(token);
            if ids[row].len() < config.max_new_tokens {
                kept.push(slot);
                next.push(token);
            }
        }
        if kept.is_empty() {
            return Ok(finish(ids, stops));
        }
        if kept.len() < active.len() {
            cache = cache.select_rows(&kept)?;
            active = kept.iter().map(|&slot| active[slot]).collect();
        }
        logits = decode_step(model, &next, &mut cache)?;
    }
}

fn finish(ids: Vec<Vec<u32>>, stops: Vec<StopReason>) -> Vec<Generated> {
    ids.into_iter()
        .zip(stops)
        .map(|(ids, stop)| Generated { ids, stop })
        .collect()
}
