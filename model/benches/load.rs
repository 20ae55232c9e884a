//! Loading a sharded checkpoint of a real model's shape: peak memory against the checkpoint's size.
//!
//! A child process writes an HF checkpoint of Llama 3.1 8B's shape (or 3.2 1B's) with random bf16
//! weights into `--dir`, sharded as transformers' `save_pretrained` shards (files of at most
//! 5 GB and `model.safetensors.index.json`), unless the directory already holds one. The parent
//! then loads it as a frozen bf16 model — `Checkpoint::load` (memory-mapped shards, each tensor
//! copied out and its pages handed back) and `Checkpoint::model` — and prints one JSON line: the
//! checkpoint's bytes, the seconds, and the process's peak resident set (`VmHWM`), its anonymous
//! and file-backed parts at the end, and peak ÷ checkpoint size. Reading the file whole beside
//! the tensors made from it would put that ratio at 2 or more.
//!
//! ```text
//! cargo bench -p herd-model --bench load -- --dir /path/with/room [--shape 8b|1b]
//! ```
//!
//! The 8B shape needs 16 GB of disk and as much RAM.

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use model::{Checkpoint, Llama, LlamaConfig};
use serde_json::{Map, Value, json};

type BenchResult<T> = Result<T, Box<dyn Error>>;

/// transformers' default shard size (`max_shard_size="5GB"`).
const SHARD_BYTES: usize = 5_000_000_000;

fn shape(name: &str) -> BenchResult<LlamaConfig> {
    let base = LlamaConfig {
        vocab_size: 128_256,
        hidden_size: 4096,
        intermediate_size: 14_336,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 128,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 131_072,
        tie_word_embeddings: false,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001, 128_008, 128_009],
        rope_theta: 500_000.0,
        rope_scaling: None,
        torch_dtype: Some("bfloat16".to_owned()),
    };
    match name {
        "8b" => Ok(base),
        "1b" => Ok(LlamaConfig {
            hidden_size: 2048,
            intermediate_size: 8192,
            num_hidden_layers: 16,
            head_dim: 64,
            tie_word_embeddings: true,
            ..base
        }),
        other => Err(format!("--shape {other}: expected 8b or 1b").into()),
    }
}

/// Writes `config`'s parameters as bf16 safetensors shards, streaming (never a shard in memory).
fn write_checkpoint(directory: &Path, config: &LlamaConfig) -> BenchResult<()> {
    std::fs::create_dir_all(directory)?;
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut shard_bytes = 0;
    for (name, dims) in Llama::parameter_shapes(config) {
        let bytes = 2 * dims.iter().product::<usize>();
        if shard_bytes + bytes > SHARD_BYTES && shard_bytes > 0 {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shard_bytes += bytes;
        shards.last_mut().ok_or("no shard")?.push((name, dims));
    }
    let count = shards.len();
    let mut weight_map = Map::new();
    let mut total = 0;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for (index, tensors) in shards.iter().enumerate() {
        let file_name = format!("model-{:05}-of-{count:05}.safetensors", index + 1);
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0;
        for (name, dims) in tensors {
            let bytes = 2 * dims.iter().product::<usize>();
            header.insert(
                name.clone(),
                json!({"dtype": "BF16", "shape": dims, "data_offsets": [offset, offset + bytes]}),
            );
            weight_map.insert(name.clone(), Value::String(file_name.clone()));
            offset += bytes;
        }
        total += offset;
        let mut header = serde_json::to_vec(&Value::Object(header))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = BufWriter::with_capacity(1 << 22, File::create(directory.join(&file_name))?);
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        let mut block = vec![0_u8; 1 << 20];
        let mut left = offset;
        while left > 0 {
            let take = left.min(block.len());
            for pair in block[..take].chunks_exact_mut(2) {
                // xorshift64: bf16 values of magnitude 2^-7 .. 2^-6, either sign.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let bits = 0x3c00_u16 | (state as u16 & 0x807f);
                pair.copy_from_slice(&bits.to_le_bytes());
            }
            out.write_all(&block[..take])?;
            left -= take;
        }
        out.flush()?;
        eprintln!("wrote {file_name} ({:.2} GB)", offset as f64 / 1e9);
    }
    std::fs::write(
        directory.join("model.safetensors.index.json"),
        serde_json::to_vec_pretty(
            &json!({"metadata": {"total_size": total}, "weight_map": weight_map}),
        )?,
    )?;
    std::fs::write(
        directory.join("config.json"),
        serde_json::to_vec_pretty(&config.to_hf_json())?,
    )?;
    Ok(())
}

/// A line of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> BenchResult<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("no {field} line in /proc/self/status"))?
        .parse()?;
    Ok(kib / 1024.0)
}

fn main() -> BenchResult<()> {
    let mut directory: Option<PathBuf> = None;
    let mut shape_name = "8b".to_owned();
    let mut write_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--dir" => directory = Some(args.next().ok_or("--dir needs a path")?.into()),
            "--shape" => shape_name = args.next().ok_or("--shape needs 8b or 1b")?,
            "--write-only" => write_only = true,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let directory = directory.ok_or("--dir DIR is required (16 GB free for the 8B shape)")?;
    let config = shape(&shape_name)?;
    if write_only {
        return write_checkpoint(&directory, &config);
    }
    if !directory.join("model.safetensors.index.json").is_file() {
        // A child writes it, so this process's peak is the load's alone.
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["--dir", directory.to_str().ok_or("non-UTF-8 --dir")?])
            .args(["--shape", &shape_name, "--write-only"])
            .status()?;
        if !status.success() {
            return Err(format!("writing the checkpoint failed: {status}").into());
        }
    }
    let mut checkpoint_bytes = 0_u64;
    for entry in std::fs::read_dir(&directory)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".safetensors")
        {
            checkpoint_bytes += entry.metadata()?.len();
        }
    }
    let before_mib = status_mib("VmRSS:")?;
    let started = Instant::now();
    let checkpoint = Checkpoint::load(&directory, DType::BF16, &Device::Cpu)?;
    let llama = checkpoint.model()?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_mib = status_mib("VmHWM:")?;
    let checkpoint_mib = checkpoint_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}",
        json!({
            "bench": "load",
            "shape": shape_name,
            "parameters": Llama::parameter_shapes(&config)
                .iter()
                .map(|(_, dims)| dims.iter().product::<usize>())
                .sum::<usize>(),
            "checkpoint_mib": checkpoint_mib.round(),
            "seconds": (seconds * 10.0).round() / 10.0,
            "rss_before_mib": before_mib.round(),
            "peak_rss_mib": peak_mib.round(),
            "rss_anonymous_mib": status_mib("RssAnon:")?.round(),
            "rss_file_mib": status_mib("RssFile:")?.round(),
            "peak_over_checkpoint": (peak_mib / checkpoint_mib * 1000.0).round() / 1000.0,
        })
    );
    drop(llama);
    Ok(())
}
