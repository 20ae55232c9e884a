//! The real Llama 3 tokenizer, imported once per test binary from Meta's `tokenizer.model`.
//!
//! The file is not committed; `bash dev/fetch-llama3-tokenizer.sh` puts it at
//! `.cache/llama3/tokenizer.model` (the `HERD_LLAMA3_TOKENIZER_MODEL` variable points elsewhere).
//! A missing file fails the tests that need it: parity is never skipped silently.

use std::path::PathBuf;
use std::sync::OnceLock;

use datasets::tokenizer::{Llama3Tokenizer, import_tiktoken};

/// Where Meta's `tokenizer.model` is read from.
pub fn tokenizer_model_path() -> PathBuf {
    std::env::var_os("HERD_LLAMA3_TOKENIZER_MODEL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/llama3/tokenizer.model"),
        PathBuf::from,
    )
}

/// The imported Llama 3 tokenizer, shared by every test of the binary.
pub fn llama3_tokenizer() -> &'static Llama3Tokenizer {
    static TOKENIZER: OnceLock<Llama3Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = tokenizer_model_path();
        assert!(
            path.is_file(),
            "Meta's Llama 3 tokenizer.model is missing at {}: run `bash dev/fetch-llama3-tokenizer.sh` \
             (or set HERD_LLAMA3_TOKENIZER_MODEL to its path)",
            path.display()
        );
        let imported = import_tiktoken(&path)
            .unwrap_or_else(|error| panic!("cannot import {}: {error}", path.display()));
        Llama3Tokenizer::from_tokenizer(imported, path.display().to_string())
            .unwrap_or_else(|error| panic!("cannot wrap {}: {error}", path.display()))
    })
}
