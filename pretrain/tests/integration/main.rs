//! The pretraining stage end to end on a tiny model: loss falls, resume is exact, gradient
//! accumulation is invisible, batches are packed with document masking, and every preset in
//! `configs/` parses.

#![expect(clippy::unwrap_used, reason = "test helpers stop at the first failure")]

mod accumulation;
mod batches;
mod configs;
mod resume;
mod smoke;

use std::path::{Path, PathBuf};

use pretrain::PretrainConfig;

/// The repository root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The tiny preset over committed text (the tiny tokenizer's own 6 kB corpus, which changes only
/// with the tokenizer fixture) with the committed 768-id tokenizer, writing into `output_dir`.
fn tiny_config(output_dir: &Path) -> PretrainConfig {
    let root = repository();
    PretrainConfig::tiny(
        root.join("datasets/tests/fixtures/tiny-tokenizer.json"),
        vec![root.join("datasets/tests/fixtures/tiny-tokenizer-corpus.txt")],
        output_dir.to_owned(),
    )
}

/// The resolved TOML of a config, as the binary would save it.
fn resolved(config: &PretrainConfig) -> String {
    toml::to_string(config).unwrap()
}
