//! Trains the tiny Llama 3-layout tokenizer used by fast tests and the fuzz target.
//!
//! Run by `dev/make-tiny-tokenizer.sh`:
//! `cargo run -p herd-datasets --example train_tiny_tokenizer -- <corpus.txt>... <tokenizer.json>`.
//! 512 base tokens (the 256 bytes and 256 merges of frequency ≥ 2), then Meta's 256 special tokens.

use std::error::Error;
use std::path::{Path, PathBuf};

use datasets::tokenizer::train_bpe;

/// Base vocabulary size of the tiny tokenizer.
const VOCAB_SIZE: usize = 512;
/// A merge must occur at least this often in the corpus.
const MIN_FREQUENCY: u64 = 2;

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let output = paths
        .pop()
        .ok_or("usage: train_tiny_tokenizer <corpus.txt>... <tokenizer.json>")?;
    if paths.is_empty() {
        return Err("usage: train_tiny_tokenizer <corpus.txt>... <tokenizer.json>".into());
    }
    let tokenizer = train_bpe(&paths, VOCAB_SIZE, MIN_FREQUENCY)?;
    tokenizer.save(Path::new(&output))?;
    println!(
        "wrote {}: {} base tokens + 256 special tokens",
        output.display(),
        tokenizer.inner().get_vocab_size(false)
    );
    Ok(())
}
