//! Batched greedy generation on CPU, herd beside PyTorch (`dev/bench_generate_cpu_torch.py` runs
//! the same shapes; `bash dev/bench-cpu.sh` runs both in interleaved rounds).
//!
//! A model of SmolLM2-135M's shape (30 layers, hidden 576, intermediate 1,536, 9 heads over 3
//! key/value heads, vocabulary 49,152, tied head, `rope_theta` 100,000) with random weights, written
//! as an HF checkpoint in the measured dtype by a child process (so the parent's peak RSS is that
//! of loading and generating only), then timed: the load (`Checkpoint::load` + `model()`), the
//! prefill of 8 prompts of 32 random tokens (`generation::prefill`), and the decoding of 128 new
//! tokens per row (`generation::continue_from`, greedy, no stop token, so every row runs to 128).
//! Decode tokens/s = batch · new tokens / (total − prefill), the load excluded. Prints one JSON line.
//!
//! ```text
//! cargo bench -p herd-model --bench generation -- [--dtype f32|bf16] [--batch 8] [--prompt 32]
//!     [--new 128] [--runs 1] [--warmup 1] [--threads N] [--kernels fused|reference]
//! ```
//!
//! `--threads N` runs the bench with `RAYON_NUM_THREADS=N` (candle's CPU matmul reads it through
//! `candle_core::utils::get_num_threads`): the process starts itself again with the variable set,
//! as the workspace forbids the `unsafe` `std::env::set_var`.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use model::generation::{GenerationConfig, continue_from, prefill};
use model::ops::Kernels;
use model::{Checkpoint, Llama, LlamaConfig, SaveOptions};

type BenchResult<T> = Result<T, Box<dyn Error>>;

#[derive(Debug)]
struct Args {
    dtype: DType,
    batch: usize,
    prompt: usize,
    new: usize,
    runs: usize,
    warmup: usize,
    threads: Option<usize>,
    kernels: Kernels,
    /// Internal: write the random checkpoint to this directory and exit (the child process).
    write_checkpoint: Option<String>,
}

fn parse_args() -> BenchResult<Args> {
    let mut args = Args {
        dtype: DType::F32,
        batch: 8,
        prompt: 32,
        new: 128,
        runs: 1,
        warmup: 1,
        threads: None,
        kernels: Kernels::Fused,
        write_checkpoint: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        // `cargo bench` passes `--bench` to every bench binary.
        if flag == "--bench" {
            continue;
        }
        let mut value = || iter.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dtype" => {
                args.dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "bf16" => DType::BF16,
                    other => return Err(format!("--dtype f32|bf16, not {other}").into()),
                }
            }
            "--batch" => args.batch = value()?.parse()?,
            "--prompt" => args.prompt = value()?.parse()?,
            "--new" => args.new = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--threads" => args.threads = Some(value()?.parse()?),
            "--kernels" => {
                args.kernels = match value()?.as_str() {
                    "fused" => Kernels::Fused,
                    "reference" => Kernels::Reference,
                    other => return Err(format!("--kernels fused|reference, not {other}").into()),
                }
            }
            "--write-checkpoint" => args.write_checkpoint = Some(value()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.runs == 0 || args.batch == 0 || args.prompt == 0 || args.new < 2 {
        return Err("need --runs ≥ 1, --batch ≥ 1, --prompt ≥ 1, --new ≥ 2".into());
    }
    Ok(args)
}

/// SmolLM2-135M's shape (its `config.json`), without its tokenizer's special ids: no stop token
/// can end a row early.
fn smollm2_135m_shape() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49_152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: 64,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        rope_theta: 100_000.0,
        rope_scaling: None,
        torch_dtype: None,
    }
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

/// The child's work: random weights (seed 0) saved as an HF checkpoint in `dtype`.
fn write_checkpoint(directory: &Path, dtype: DType) -> BenchResult<()> {
    let config = smollm2_135m_shape();
    let (_, var_map) = Llama::from_scratch(&config, 0, &Device::Cpu)?;
    let options = SaveOptions {
        dtype,
        max_shard_bytes: usize::MAX,
    };
    model::save(
        directory,
        &config,
        &model::varmap_tensors(&var_map),
        &options,
    )?;
    Ok(())
}

fn main() -> BenchResult<()> {
    let args = parse_args()?;
    if let Some(directory) = &args.write_checkpoint {
        return write_checkpoint(Path::new(directory), args.dtype);
    }
    run_with_threads(args.threads)?;

    let directory = tempfile::tempdir()?;
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--write-checkpoint")
        .arg(directory.path())
        .arg("--dtype")
        .arg(dtype_name(args.dtype))
        .status()?;
    if !status.success() {
        return Err(format!("writing the random checkpoint failed: {status}").into());
    }

    let device = Device::Cpu;
    let started = Instant::now();
    let mut llama = Checkpoint::load(directory.path(), args.dtype, &device)?.model()?;
    let load_seconds = started.elapsed().as_secs_f64();
    llama.set_kernels(args.kernels);
    let parameters: usize = Llama::parameter_shapes(llama.config())
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();

    let vocab = llama.config().vocab_size as u64;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut prompts = || -> Vec<Vec<u32>> {
        (0..args.batch)
            .map(|_| {
                (0..args.prompt)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        ((state >> 33) % vocab) as u32
                    })
                    .collect()
            })
            .collect()
    };
    // Greedy, and no stop token: every row decodes exactly `new` tokens.
    let generation = GenerationConfig::greedy(args.new, Vec::new());
    let warmup = GenerationConfig::greedy(4, Vec::new());
    for _ in 0..args.warmup {
        let (logits, cache) = prefill(&llama, &prompts())?;
        continue_from(&llama, &logits, cache, &warmup)?;
    }

    let (mut prefill_seconds, mut total_seconds) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let prompts = prompts();
        let started = Instant::now();
        let (logits, cache) = prefill(&llama, &prompts)?;
        let prefilled = started.elapsed().as_secs_f64();
        let generated = continue_from(&llama, &logits, cache, &generation)?;
        let total = started.elapsed().as_secs_f64();
        if let Some(row) = generated.iter().position(|row| row.ids.len() != args.new) {
            return Err(format!(
                "row {row} generated {} tokens, not {}",
                generated[row].ids.len(),
                args.new
            )
            .into());
        }
        prefill_seconds.push(prefilled);
        total_seconds.push(total);
    }

    let new_tokens = (args.batch * args.new) as f64;
    let mut decode_rates: Vec<f64> = total_seconds
        .iter()
        .zip(&prefill_seconds)
        .map(|(total, prefill)| new_tokens / (total - prefill))
        .collect();
    decode_rates.sort_by(f64::total_cmp);
    prefill_seconds.sort_by(f64::total_cmp);
    total_seconds.sort_by(f64::total_cmp);
    let json = serde_json::json!({
        "bench": "generate",
        "impl": "herd",
        "candle": "0.11.1",
        "kernels": match llama.kernels() {
            Kernels::Fused => "fused",
            Kernels::Reference => "reference",
        },
        "threads": candle_core::utils::get_num_threads(),
        "dtype": dtype_name(args.dtype),
        "batch": args.batch,
        "prompt_tokens": args.prompt,
        "new_tokens": args.new,
        "runs": args.runs,
        "params": parameters,
        "load_s": round(load_seconds, 3),
        "prefill_s": round(median(&prefill_seconds), 3),
        "total_s": round(median(&total_seconds), 3),
        "prefill_tokens_per_s": round((args.batch * args.prompt) as f64 / median(&prefill_seconds), 1),
        "decode_tokens_per_s": round(median(&decode_rates), 2),
        "decode_tokens_per_s_min": round(decode_rates[0], 2),
        "decode_tokens_per_s_max": round(decode_rates[decode_rates.len() - 1], 2),
        "peak_rss_mib": round(peak_rss_mib()?, 1),
    });
    println!("{json}");
    Ok(())
}

fn dtype_name(dtype: DType) -> &'static str {
    if dtype == DType::BF16 { "bf16" } else { "f32" }
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
