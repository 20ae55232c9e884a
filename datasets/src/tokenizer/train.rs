//! Trains a byte-level BPE tokenizer with the Llama 3 layout on text files.
//!
//! Uses the HF `tokenizers` BPE trainer (Sennrich et al. 2016, byte-level as in GPT-2) behind the
//! Llama 3 pre-tokenizer, starting from all 256 byte symbols, and then appends Meta's 256 special
//! tokens right after the base vocabulary as `llama3/tokenizer.py` does. The result has the same
//! shape as an imported Llama 3 tokenizer, so tests can use a tiny one in place of the real one.

use std::path::PathBuf;

use tokenizers::Tokenizer;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::pipeline::{finish_llama3_tokenizer, llama3_pre_tokenizer};
use super::{Llama3Tokenizer, TokenizerError};

/// Smallest `vocab_size` accepted: the 256 byte symbols and one merge.
pub const MIN_VOCAB_SIZE: usize = 257;

/// Trains byte-level BPE on the corpus files, giving `vocab_size` base tokens (bytes + merges)
/// followed by the 256 Llama 3 special tokens.
///
/// A merge is learnt only while the most frequent pair occurs at least `min_frequency` times, so
/// a small corpus may stop short of `vocab_size` base tokens; the result then simply has fewer
/// (the special tokens still follow the last base token). The same corpus and settings always
/// give the same tokenizer. Each file must be UTF-8 text; it is fed line by line (newlines kept).
pub fn train_bpe(
    corpus: &[PathBuf],
    vocab_size: usize,
    min_frequency: u64,
) -> Result<Llama3Tokenizer, TokenizerError> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(TokenizerError::VocabTooSmall {
            vocab_size,
            minimum: MIN_VOCAB_SIZE,
        });
    }
    if corpus.is_empty() {
        return Err(TokenizerError::EmptyCorpus);
    }
    let mut texts = Vec::with_capacity(corpus.len());
    for path in corpus {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|source| TokenizerError::NotUtf8 {
            path: path.clone(),
            source,
        })?;
        texts.push(text);
    }
    let files = || {
        corpus
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let build_error = |error: tokenizers::Error| TokenizerError::Build {
        component: "empty BPE model",
        message: error.to_string(),
    };

    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .show_progress(false)
        .build()
        .into();
    // The trainer keeps the model's options, so `ignore_merges` set here survives training.
    let model = BPE::builder()
        .ignore_merges(true)
        .build()
        .map_err(build_error)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(llama3_pre_tokenizer()?));
    let lines = texts.iter().flat_map(|text| text.split_inclusive('\n'));
    tokenizer
        .train(&mut trainer, lines)
        .map_err(|error| TokenizerError::Train {
            files: files(),
            message: error.to_string(),
        })?;
    finish_llama3_tokenizer(&mut tokenizer)?;
    Llama3Tokenizer::from_tokenizer(
        tokenizer,
        format!(
            "byte-level BPE trained on {} (vocab_size {vocab_size})",
            files()
        ),
    )
}
