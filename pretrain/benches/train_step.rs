//! One CPU pretraining step, herd beside PyTorch (`dev/bench_train_cpu_torch.py` runs the same
//! shapes; `bash dev/bench-cpu.sh` runs both in interleaved rounds). Per step, what
//! `pretrain::train`'s `update` does with one micro-batch: the final hidden states of random token
//! ids (`Positions::causal`), the summed next-token cross entropy through the chunked LM head
//! (`pretrain::loss::cross_entropy_sum_from_hidden`, no `(batch, seq, vocab)` logits) into
//! `training::GradientAccumulator` (backward, then the division by the token count), global-norm
//! clipping at 1.0 and an `AdamW` step (lr 3e-4, weight decay 0.1 with the loop's groups, betas
//! 0.9 / 0.95). `--loss logits` takes the earlier form instead: full logits from `Llama::forward`
//! and `pretrain::loss::cross_entropy_sum` (what PyTorch's `labels=` loss does).
//!
//! Keep the step in line with `update` in `pretrain/src/train.rs` when that changes.
//!
//! The model: hidden 384, intermediate 1,024, 6 layers, 6 heads over 2 key/value heads (`head_dim`
//! 64), f32, untied head; vocabulary, sequence and batch from the flags. Prints one JSON line.
//!
//! ```text
//! cargo bench -p herd-pretrain --bench train_step -- [--vocab 768] [--seq 512] [--batch 4]
//!     [--steps 8] [--warmup 2] [--threads N] [--kernels fused|reference] [--loss chunked|logits]
//! ```
//!
//! `--threads N` runs the bench with `RAYON_NUM_THREADS=N` (candle's CPU matmul asks
//! `candle_core::utils::get_num_threads`, which reads that variable, and rayon's global pool does
//! too): the process starts itself again with the variable set, as the workspace forbids the
//! `unsafe` `std::env::set_var`.

use std::error::Error;
use std::time::Instant;

use candle_core::{Device, Tensor};
use model::ops::Kernels;
use model::{Llama, LlamaConfig, Positions};
use pretrain::loss::{
    cross_entropy_sum, cross_entropy_sum_from_hidden, next_token_mask, next_token_targets,
};
use training::{AdamW, AdamWConfig, GradientAccumulator, clip_gradient_norm, llama_weight_decay};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const HIDDEN: usize = 384;
const INTERMEDIATE: usize = 1024;
const LAYERS: usize = 6;
const HEADS: usize = 6;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const LEARNING_RATE: f64 = 3e-4;
const MAX_GRAD_NORM: f64 = 1.0;

#[derive(Debug)]
struct Args {
    vocab: usize,
    seq: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    threads: Option<usize>,
    kernels: Kernels,
    /// `--loss logits`: full logits and `cross_entropy_sum` instead of the loop's chunked loss.
    logits_loss: bool,
}

fn parse_args() -> BenchResult<Args> {
    let mut args = Args {
        vocab: 768,
        seq: 512,
        batch: 4,
        steps: 8,
        warmup: 2,
        threads: None,
        kernels: Kernels::Fused,
        logits_loss: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let mut value = || iter.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--vocab" => args.vocab = value()?.parse()?,
            "--seq" => args.seq = value()?.parse()?,
            "--batch" => args.batch = value()?.parse()?,
            "--steps" => args.steps = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--threads" => args.threads = Some(value()?.parse()?),
            "--kernels" => {
                args.kernels = match value()?.as_str() {
                    "fused" => Kernels::Fused,
                    "reference" => Kernels::Reference,
                    other => return Err(format!("--kernels fused|reference, not {other}").into()),
                }
            }
            "--loss" => {
                args.logits_loss = match value()?.as_str() {
                    "chunked" => false,
                    "logits" => true,
                    other => return Err(format!("--loss chunked|logits, not {other}").into()),
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.steps == 0 || args.seq < 2 || args.batch == 0 || args.vocab == 0 {
        return Err("need --steps ≥ 1, --seq ≥ 2, --batch ≥ 1, --vocab ≥ 1".into());
    }
    Ok(args)
}

/// With `--threads N` and `RAYON_NUM_THREADS` not already `N`: runs this binary again with the
/// variable set (and `CANDLE_NUM_THREADS`, which some candle kernels read) and exits with its
/// status. Returns when this process is the one to measure.
fn run_with_threads(threads: Option<usize>) -> BenchResult<()> {
    let Some(threads) = threads else {
        return Ok(());
    };
    let wanted = threads.to_string();
    if std::env::var("RAYON_NUM_THREADS").ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("RAYON_NUM_THREADS", &wanted)
        .env("CANDLE_NUM_THREADS", &wanted)
        .status()?;
    std::process::exit(status.code().unwrap_or(1));
}

fn main() -> BenchResult<()> {
    let args = parse_args()?;
    run_with_threads(args.threads)?;

    let device = Device::Cpu;
    let config = llama_config(args.vocab, args.seq);
    let (mut llama, var_map) = Llama::from_scratch(&config, 0, &device)?;
    llama.set_kernels(args.kernels);
    // The loop's optimizer: norms and embeddings in the no-decay group (`pretrain::train`'s
    // `optimizer_and_schedule`); the PyTorch script uses the same two groups.
    let adamw = AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        epsilon: 1e-8,
        weight_decay: 0.1,
    };
    let mut optimizer = AdamW::from_var_map(&var_map, adamw, llama_weight_decay(false))?;
    let vars = optimizer.vars();

    let parameters: usize = vars.iter().map(|var| var.elem_count()).sum();
    // The embedding lookup is a gather, not a matmul; the untied LM head is a matmul and counts.
    let non_embedding = parameters - config.vocab_size * config.hidden_size;
    // Model FLOPs per trained token (forward + backward, PaLM appendix B / Chinchilla):
    //   6 · N_non_embedding                       the weight matmuls, 2 forward + 4 backward
    // + 12 · layers · seq · (heads · head_dim) / 2  attention scores QKᵀ and weights·V, halved
    //                                             because a causal query sees half the keys on average
    // (heads · head_dim = hidden = 384 here.) Norms, RoPE, SwiGLU and softmax are not counted.
    let flops_per_token =
        6.0 * non_embedding as f64 + 12.0 * (LAYERS * args.seq * HEADS * HEAD_DIM) as f64 / 2.0;

    let positions = Positions::causal(args.batch, args.seq);
    // Every row one document: position t predicts t + 1, the last position has no target (as
    // transformers' `labels=input_ids` shift does).
    let row_mask = next_token_mask(&[0, args.seq as u32], args.seq);
    let mask = Tensor::from_vec(row_mask.repeat(args.batch), (args.batch, args.seq), &device)?;
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    let mut step_seconds = Vec::with_capacity(args.steps);
    let mut losses = Vec::with_capacity(args.warmup + args.steps);
    for step in 0..args.warmup + args.steps {
        // Fresh random ids every step (an LCG: the same ids every run), built outside the timing.
        let ids: Vec<u32> = (0..args.batch * args.seq)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) % args.vocab as u64) as u32
            })
            .collect();
        let targets: Vec<u32> = ids.chunks(args.seq).flat_map(next_token_targets).collect();
        let input_ids = Tensor::from_vec(ids, (args.batch, args.seq), &device)?;
        let targets = Tensor::from_vec(targets, (args.batch, args.seq), &device)?;

        let started = Instant::now();
        let mut accumulator = GradientAccumulator::new();
        {
            let (loss_sum, tokens) = if args.logits_loss {
                let logits = llama.forward(&input_ids, &positions)?.logits; // (b, s, V)
                cross_entropy_sum(&logits, &targets, &mask)?
            } else {
                // As `update`: (b, s, hidden), the LM head runs in chunks inside the loss.
                let hidden_states = llama.hidden_states(&input_ids, &positions)?;
                cross_entropy_sum_from_hidden(
                    &hidden_states,
                    llama.lm_head_weight()?,
                    &targets,
                    &mask,
                    llama.kernels(),
                )?
            };
            accumulator.add(&loss_sum, tokens)?;
        }
        let mut gradients = accumulator.finish(&vars)?;
        clip_gradient_norm(&mut gradients.gradients, &vars, MAX_GRAD_NORM)?;
        optimizer.step(&gradients.gradients, LEARNING_RATE)?;
        let seconds = started.elapsed().as_secs_f64();

        losses.push(gradients.loss);
        if step >= args.warmup {
            step_seconds.push(seconds);
        }
    }

    let tokens_per_step = (args.batch * args.seq) as f64;
    let mut rates: Vec<f64> = step_seconds.iter().map(|s| tokens_per_step / s).collect();
    rates.sort_by(f64::total_cmp);
    let mut sorted_seconds = step_seconds.clone();
    sorted_seconds.sort_by(f64::total_cmp);
    let tokens_per_s = median(&rates);
    let json = serde_json::json!({
        "bench": "train_step",
        "impl": "herd",
        "candle": "0.11.1",
        "kernels": match llama.kernels() {
            Kernels::Fused => "fused",
            Kernels::Reference => "reference",
        },
        "loss": if args.logits_loss { "logits" } else { "chunked" },
        "threads": candle_core::utils::get_num_threads(),
        "vocab": args.vocab,
        "seq": args.seq,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "params": parameters,
        "params_non_embedding": non_embedding,
        "flops_per_token": flops_per_token,
        "tokens_per_s": round(tokens_per_s, 1),
        "tokens_per_s_min": round(rates[0], 1),
        "tokens_per_s_max": round(rates[rates.len() - 1], 1),
        "ms_per_step": round(1000.0 * median(&sorted_seconds), 1),
        "gflops_per_s": round(flops_per_token * tokens_per_s / 1e9, 2),
        "peak_rss_mib": round(peak_rss_mib()?, 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[losses.len() - 1], 4),
    });
    println!("{json}");
    Ok(())
}

/// The benchmarked shape: hidden 384, 6 layers, GQA 6:2, f32, untied head.
fn llama_config(vocab: usize, seq: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        hidden_size: HIDDEN,
        intermediate_size: INTERMEDIATE,
        num_hidden_layers: LAYERS,
        num_attention_heads: HEADS,
        num_key_value_heads: KV_HEADS,
        head_dim: HEAD_DIM,
        rms_norm_eps: 1e-5,
        max_position_embeddings: seq,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        rope_theta: 500_000.0,
        rope_scaling: None,
        torch_dtype: None,
    }
}

/// The median of sorted, non-empty `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        f64::midpoint(values[middle - 1], values[middle])
    } else {
        values[middle]
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`), MiB.
fn peak_rss_mib() -> BenchResult<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or("no VmHWM line in /proc/self/status")?
        .parse()?;
    Ok(kib / 1024.0)
}
