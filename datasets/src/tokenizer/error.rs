//! Errors of the tokenizer module: loading, importing, training, encoding and decoding.
//!
//! Every message names the file (and line, for Meta's `tokenizer.model`) and the offending value,
//! following the ripgrep/uv convention in STYLE.md.

use std::path::PathBuf;

/// What can go wrong while loading, importing, training or running a Llama 3 tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying IO error.
        source: std::io::Error,
    },
    /// A file was not valid UTF-8 text.
    #[error("{} is not UTF-8 text: {source}", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where decoding failed.
        source: std::string::FromUtf8Error,
    },
    /// The `tokenizers` crate rejected a `tokenizer.json`.
    #[error("cannot load tokenizer {}: {message}", path.display())]
    Load {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// The `tokenizers` crate's message.
        message: String,
    },
    /// A `tokenizer.json` could not be written.
    #[error("cannot save tokenizer to {}: {message}", path.display())]
    Save {
        /// The destination file.
        path: PathBuf,
        /// The `tokenizers` crate's message.
        message: String,
    },
    /// A tokenizer lacks one of the special tokens herd needs.
    #[error("tokenizer {source_name} has no special token {token:?}")]
    MissingSpecialToken {
        /// Where the tokenizer came from (its file, or how it was built).
        source_name: String,
        /// The missing token's text.
        token: String,
    },
    /// A tokenizer's ids do not run contiguously from 0.
    #[error(
        "tokenizer {source_name} has no token for id {id}, below its vocabulary size {vocab_size}"
    )]
    IdGap {
        /// Where the tokenizer came from.
        source_name: String,
        /// The first id without a token.
        id: u32,
        /// The vocabulary size (added tokens included).
        vocab_size: usize,
    },
    /// A line of a tiktoken `tokenizer.model` is not `<base64 token bytes> <rank>`.
    #[error("{}:{line}: expected `<base64 token bytes> <rank>`, found {content:?}", path.display())]
    MalformedLine {
        /// The `tokenizer.model` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line's text.
        content: String,
    },
    /// The token column of a tiktoken line is not valid base64.
    #[error("{}:{line}: token {value:?} is not valid base64: {message}", path.display())]
    InvalidBase64 {
        /// The `tokenizer.model` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The base64 text.
        value: String,
        /// The decoder's message.
        message: String,
    },
    /// The rank column of a tiktoken line is not an unsigned 32-bit integer.
    #[error("{}:{line}: rank {value:?} is not a non-negative integer", path.display())]
    InvalidRank {
        /// The `tokenizer.model` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The rank text.
        value: String,
    },
    /// Ranks must be 0, 1, 2, … in file order.
    #[error("{}:{line}: rank {rank} is {kind}; expected rank {expected} (ranks must run 0, 1, 2, … in file order)", path.display())]
    RankOutOfOrder {
        /// The `tokenizer.model` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The rank found.
        rank: u32,
        /// The rank the line should carry.
        expected: u32,
        /// "a duplicate" or "not contiguous".
        kind: &'static str,
    },
    /// The same token bytes appear twice.
    #[error("{}:{line}: token {value:?} already has rank {first_rank}", path.display())]
    DuplicateToken {
        /// The `tokenizer.model` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The base64 text of the token.
        value: String,
        /// The rank it was first given.
        first_rank: u32,
    },
    /// A tiktoken file lacks a single-byte token, so byte-level BPE could not encode every text.
    #[error("{}: no rank for the single byte 0x{byte:02x}; byte-level BPE needs all 256", path.display())]
    MissingByte {
        /// The `tokenizer.model` file.
        path: PathBuf,
        /// The missing byte.
        byte: u8,
    },
    /// A special token did not land on the id Meta's layout gives it.
    #[error(
        "special token {token:?} got id {actual}, expected {expected} (right after the base vocabulary)"
    )]
    SpecialTokenId {
        /// The token's text.
        token: String,
        /// Its expected id.
        expected: u32,
        /// The id it received.
        actual: u32,
    },
    /// Building a `tokenizers` component failed.
    #[error("cannot build the {component}: {message}")]
    Build {
        /// What was being built.
        component: &'static str,
        /// The `tokenizers` crate's message.
        message: String,
    },
    /// `train_bpe` was asked for a vocabulary too small to hold the byte alphabet and a merge.
    #[error(
        "vocab_size {vocab_size} is too small: byte-level BPE needs at least {minimum} (256 bytes and one merge)"
    )]
    VocabTooSmall {
        /// The requested size.
        vocab_size: usize,
        /// The smallest size accepted.
        minimum: usize,
    },
    /// `train_bpe` was given no corpus files.
    #[error("train_bpe needs at least one corpus file")]
    EmptyCorpus,
    /// The BPE trainer failed.
    #[error("cannot train BPE on {files}: {message}")]
    Train {
        /// The corpus files, comma-separated.
        files: String,
        /// The `tokenizers` crate's message.
        message: String,
    },
    /// Encoding text failed inside the `tokenizers` crate.
    #[error("cannot encode text starting {prefix:?} with tokenizer {source_name}: {message}")]
    Encode {
        /// Where the tokenizer came from.
        source_name: String,
        /// The first characters of the text.
        prefix: String,
        /// The `tokenizers` crate's message.
        message: String,
    },
    /// A token id outside the vocabulary was given to `decode`.
    #[error(
        "token id {id} (position {position}) is not in tokenizer {source_name} (vocabulary size {vocab_size})"
    )]
    UnknownId {
        /// Where the tokenizer came from.
        source_name: String,
        /// The unknown id.
        id: u32,
        /// Its index in the ids passed to `decode`.
        position: usize,
        /// The vocabulary size (added tokens included).
        vocab_size: usize,
    },
    /// Decoding failed inside the `tokenizers` crate.
    #[error("cannot decode {count} ids with tokenizer {source_name}: {message}")]
    Decode {
        /// Where the tokenizer came from.
        source_name: String,
        /// How many ids were given.
        count: usize,
        /// The `tokenizers` crate's message.
        message: String,
    },
}
