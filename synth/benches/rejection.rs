//! Rejection sampling's shared prompt cache (Llama 3 paper §4.2.2: "share the key-value cache
//! pages for a prompt across all corresponding outputs … over 2× throughput"), measured: K samples
//! of one prompt drawn three ways, in samples/s —
//! - `shared`: `generate_samples`, the prompt prefilled once and its cache repeated K times;
//! - `batched`: `generate` over the prompt repeated K times, one batch, the prompt prefilled K
//!   times (what a batch of identical requests costs without sharing);
//! - `sequential`: K separate `generate` calls, one sample each.
//!
//! A random Llama (hidden 256, 4 layers, 4 heads over 2 key/value heads, MLP 704, vocabulary
//! 8,192), a 384-token prompt, 32 new tokens per sample (no stop token, so every row decodes the
//! same length), temperature 1. Each figure is the median of 3 runs after a warm-up.
//! Run: `cargo bench -p herd-synth --bench rejection` (`-- --quick`: one run, K = 8 only).

use std::time::Instant;

use candle_core::Device;
use model::generation::{GenerationConfig, generate, generate_samples};
use model::{Llama, LlamaConfig};

const PROMPT_TOKENS: usize = 384;
const NEW_TOKENS: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|argument| argument == "--quick");
    let config = LlamaConfig {
        hidden_size: 256,
        intermediate_size: 704,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 64,
        max_position_embeddings: 1024,
        ..LlamaConfig::tiny(8192)
    };
    let (model, _) = Llama::from_scratch(&config, 0, &Device::Cpu)?;
    // A fixed pseudo-random prompt (an LCG), so every run measures the same work.
    let mut state = 12_345u64;
    let prompt: Vec<u32> = (0..PROMPT_TOKENS)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % 8192) as u32
        })
        .collect();
    let generation = GenerationConfig {
        max_new_tokens: NEW_TOKENS,
        temperature: 1.0,
        top_k: None,
        top_p: None,
        seed: 0,
        stop_tokens: Vec::new(),
    };
    let runs = if quick { 1 } else { 3 };
    let sizes: &[usize] = if quick { &[8] } else { &[8, 16] };
    println!(
        "rejection sampling, hidden 256 × 4 layers, prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} new tokens per sample, {} threads",
        candle_core::utils::get_num_threads()
    );
    // Warm-up: first-touch allocations and thread pools.
    generate_samples(&model, &prompt, 2, &generation)?;
    for &samples in sizes {
        let shared = median_seconds(runs, || {
            generate_samples(&model, &prompt, samples, &generation).map(drop)
        })?;
        let repeated = vec![prompt.clone(); samples];
        let batched = median_seconds(runs, || generate(&model, &repeated, &generation).map(drop))?;
        let sequential = median_seconds(runs, || {
            for sample in 0..samples {
                let config = GenerationConfig {
                    seed: sample as u64,
                    ..generation.clone()
                };
                generate(&model, std::slice::from_ref(&prompt), &config)?;
            }
            Ok(())
        })?;
        let rate = |seconds: f64| samples as f64 / seconds;
        println!(
            "K = {samples:>2}: shared {:>6.1} samples/s | batched, prompt recomputed {:>6.1} samples/s ({:.2}× slower) | sequential {:>6.1} samples/s ({:.2}× slower)",
            rate(shared),
            rate(batched),
            batched / shared,
            rate(sequential),
            sequential / shared,
        );
    }
    Ok(())
}

fn median_seconds(
    runs: usize,
    mut work: impl FnMut() -> model::Result<()>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        work()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[seconds.len() / 2])
}
