//! Incremental decoding equals the full forward: prefill plus cached decode steps give the logits
//! the uncached forward gives at the same positions, for left-padded batches, grouped-query and
//! multi-head attention and llama3 `RoPE` scaling; a prompt's cache shared by K rows equals K
//! prefills; greedy generation equals repeated argmax of the full forward.

use candle_core::{Device, IndexOp, Tensor};
use model::kv_cache::KvCache;
use model::sampling::argmax;
use model::{
    GenerationConfig, Llama, Llama3RopeScaling, LlamaConfig, Positions, StopReason, decode_step,
    generate, generate_samples, prefill,
};

use crate::{max_abs_difference, row, token_ids};

const TOLERANCE: f32 = 1e-5;
const VOCAB: usize = 96;

/// A tiny model with a large init (0.2), so that a wrong position or a leaking mask shows.
fn model(config: &LlamaConfig, seed: u64) -> Llama {
    let (model, varmap) = Llama::from_scratch(config, seed, &Device::Cpu).expect("model");
    model::init::initialize(&varmap, seed, 0.2).expect("init");
    model
}

fn configs() -> Vec<(&'static str, LlamaConfig)> {
    let grouped = LlamaConfig::tiny(VOCAB);
    let mut multi_head = LlamaConfig::tiny(VOCAB);
    multi_head.num_key_value_heads = multi_head.num_attention_heads;
    multi_head.tie_word_embeddings = true;
    let mut scaled = LlamaConfig::tiny(VOCAB);
    scaled.num_key_value_heads = 1;
    scaled.rope_theta = 10_000.0;
    // A short original context, so that the scaling changes every frequency band in 16 tokens.
    scaled.rope_scaling = Some(Llama3RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16,
    });
    vec![
        ("grouped-query", grouped),
        ("multi-head", multi_head),
        ("llama3-scaled", scaled),
    ]
}

/// Full-forward logits of `ids` alone, `(len, vocab)`.
fn full_logits(model: &Llama, ids: &[u32]) -> Tensor {
    model
        .forward(&row(ids), &Positions::causal(1, ids.len()))
        .expect("forward")
        .logits
        .squeeze(0)
        .expect("squeeze")
}

#[test]
fn prefill_and_cached_steps_equal_the_full_forward_for_a_left_padded_batch() {
    const STEPS: usize = 6;
    for (name, config) in configs() {
        let model = model(&config, 31);
        // Three rows of different prompt lengths, each with its own continuation.
        let sequences: Vec<Vec<u32>> = [(7, 1), (3, 2), (5, 3)]
            .iter()
            .map(|&(prompt, salt)| token_ids(prompt + STEPS, VOCAB, salt))
            .collect();
        let prompts: Vec<Vec<u32>> = sequences
            .iter()
            .map(|s| s[..s.len() - STEPS].to_vec())
            .collect();
        let (first, mut cache) = prefill(&model, &prompts).expect("prefill");
        let mut step_logits = vec![first];
        for step in 0..STEPS - 1 {
            let tokens: Vec<u32> = sequences
                .iter()
                .map(|s| s[s.len() - STEPS + step])
                .collect();
            step_logits.push(decode_step(&model, &tokens, &mut cache).expect("step"));
        }
        assert_eq!(cache.len(), 7 + STEPS - 1);

        let mut worst = 0.0f32;
        for (r, sequence) in sequences.iter().enumerate() {
            let full = full_logits(&model, &sequence[..sequence.len() - 1]);
            let prompt_length = prompts[r].len();
            for (step, logits) in step_logits.iter().enumerate() {
                let expected = full.i(prompt_length - 1 + step).expect("position");
                let cached = logits.i(r).expect("row");
                worst = worst.max(max_abs_difference(&cached, &expected));
            }
        }
        eprintln!("{name}: max |cached - full| = {worst:.2e}");
        assert!(worst <= TOLERANCE, "{name}: {worst}");
    }
}

#[test]
fn several_new_tokens_after_a_cache_equal_the_full_forward() {
    let config = LlamaConfig::tiny(VOCAB);
    let model = model(&config, 32);
    let ids = token_ids(12, VOCAB, 4);
    let mut cache = KvCache::new(config.num_hidden_layers, vec![0]);
    model
        .forward_with_cache(&row(&ids[..5]), &mut cache)
        .expect("first chunk");
    let chunk = model
        .forward_with_cache(&row(&ids[5..]), &mut cache)
        .expect("second chunk")
        .logits
        .squeeze(0)
        .expect("squeeze");
    let full = full_logits(&model, &ids);
    let difference = max_abs_difference(&chunk, &full.i(5..).expect("tail"));
    assert!(difference <= TOLERANCE, "{difference}");
}

#[test]
fn a_shared_prefix_cache_equals_independent_prefills() {
    const SAMPLES: usize = 3;
    let config = LlamaConfig::tiny(VOCAB);
    let model = model(&config, 33);
    let prompt = token_ids(6, VOCAB, 5);

    let (shared_first, shared) = prefill(&model, std::slice::from_ref(&prompt)).expect("prefill");
    let mut shared = shared.repeat(SAMPLES).expect("repeat");
    let (independent_first, mut independent) =
        prefill(&model, &vec![prompt.clone(); SAMPLES]).expect("prefill");
    for r in 0..SAMPLES {
        let difference = max_abs_difference(
            &shared_first.i(0).expect("row"),
            &independent_first.i(r).expect("row"),
        );
        assert!(difference <= TOLERANCE);
    }
    // Different continuations per row after the shared prefix.
    for step in 0..4u32 {
        let tokens: Vec<u32> = (0..SAMPLES as u32).map(|r| (7 * r + step) % 96).collect();
        let a = decode_step(&model, &tokens, &mut shared).expect("shared step");
        let b = decode_step(&model, &tokens, &mut independent).expect("independent step");
        let difference = max_abs_difference(&a, &b);
        assert!(difference <= TOLERANCE, "step {step}: {difference}");
    }

    let sampling = GenerationConfig {
        max_new_tokens: 8,
        temperature: 1.0,
        top_k: Some(20),
        top_p: Some(0.9),
        seed: 17,
        stop_tokens: vec![],
    };
    let from_shared = generate_samples(&model, &prompt, SAMPLES, &sampling).expect("samples");
    let from_repeated = generate(&model, &vec![prompt; SAMPLES], &sampling).expect("generate");
    assert_eq!(from_shared, from_repeated);
    // The rows draw from different streams.
    assert!(from_shared.iter().any(|g| g.ids != from_shared[0].ids));
}

#[test]
fn greedy_generation_is_repeated_argmax_of_the_full_forward() {
    for (name, config) in configs() {
        let model = model(&config, 34);
        let prompts = vec![token_ids(4, VOCAB, 6), token_ids(9, VOCAB, 7)];
        let generated =
            generate(&model, &prompts, &GenerationConfig::greedy(10, vec![])).expect("generate");
        for (prompt, generated) in prompts.iter().zip(&generated) {
            let mut ids = prompt.clone();
            for _ in 0..10 {
                let full = full_logits(&model, &ids);
                let last = full
                    .i(ids.len() - 1)
                    .and_then(|l| l.to_vec1::<f32>())
                    .expect("last");
                ids.push(argmax(&last));
            }
            assert_eq!(generated.ids, ids[prompt.len()..], "{name}");
            assert_eq!(generated.stop, StopReason::MaxTokens);
        }
    }
}

#[test]
fn rows_stop_independently_at_stop_tokens() {
    let config = LlamaConfig::tiny(VOCAB);
    let model = model(&config, 35);
    let prompts = vec![token_ids(4, VOCAB, 8), token_ids(6, VOCAB, 9)];
    let free = generate(&model, &prompts, &GenerationConfig::greedy(8, vec![])).expect("free");
    // Stop row 0 at its third token; row 1 runs on unless it meets the same id.
    let stop = free[0].ids[2];
    let stopped =
        generate(&model, &prompts, &GenerationConfig::greedy(8, vec![stop])).expect("stopped");
    let first_stop = free[0].ids.iter().position(|&id| id == stop).expect("stop");
    assert_eq!(stopped[0].ids, free[0].ids[..first_stop]);
    assert_eq!(stopped[0].stop, StopReason::StopToken(stop));
    match free[1].ids.iter().position(|&id| id == stop) {
        Some(at) => assert_eq!(stopped[1].ids, free[1].ids[..at]),
        None => assert_eq!(stopped[1], free[1]),
    }
    let none = generate(&model, &prompts, &GenerationConfig::greedy(0, vec![])).expect("zero");
    assert!(
        none.iter()
            .all(|g| g.ids.is_empty() && g.stop == StopReason::MaxTokens)
    );
}

#[test]
fn the_same_seed_samples_the_same_tokens() {
    let config = LlamaConfig::tiny(VOCAB);
    let model = model(&config, 36);
    let prompts = vec![token_ids(5, VOCAB, 10), token_ids(3, VOCAB, 11)];
    let sampling = |seed| GenerationConfig {
        max_new_tokens: 12,
        temperature: 0.8,
        top_k: None,
        top_p: Some(0.95),
        seed,
        stop_tokens: vec![],
    };
    let first = generate(&model, &prompts, &sampling(1)).expect("first");
    assert_eq!(
        first,
        generate(&model, &prompts, &sampling(1)).expect("again")
    );
    assert_ne!(
        first,
        generate(&model, &prompts, &sampling(2)).expect("other seed")
    );
    // top_k = 1 is greedy whatever the temperature.
    let top_one = GenerationConfig {
        top_k: Some(1),
        ..sampling(3)
    };
    assert_eq!(
        generate(&model, &prompts, &top_one).expect("top-1"),
        generate(&model, &prompts, &GenerationConfig::greedy(12, vec![])).expect("greedy")
    );
}
