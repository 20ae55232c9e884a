//! Text files → one flat token stream on disk → packed, document-masked batches.
//!
//! **Documents.** Each file, or each blank-line-separated paragraph of a file
//! ([`DocumentSplit`]), is one document, encoded as `<|begin_of_text|> text <|end_of_text|>`.
//! A paragraph is its lines up to a line that is empty or only whitespace, without its final
//! newline; empty documents are skipped.
//!
//! **The stream.** All documents go into `tokens.bin` (u32 little-endian), training documents
//! first and held-out documents after them, with `index.json` holding the document boundaries
//! (`cu_seqlens` over the file), how many documents are for training, and a SHA-256 over
//! everything the stream depends on (the tokenizer file, the file names and contents, the split
//! settings). It is built once, written through a temporary and a rename, and reused when the
//! checksum still matches — by a resumed run, or a new run in the same `output_dir`.
//!
//! **Reading.** The issue asked for a memory map; the workspace forbids `unsafe`, which every
//! mmap crate needs at the call site (`memmap2::Mmap::map` is `unsafe`), so windows are read
//! with positioned reads (`FileExt::read_exact_at`) instead: one `pread` of
//! `sequence_length × 4` bytes per row, which the page cache serves as a map would, and nothing
//! of the stream is held in memory.
//!
//! **Batches.** A split's stream is cut into consecutive windows of `sequence_length` tokens
//! (the last one padded). Within a window the position ids restart at 0 at the window's start
//! and at every document start, and the window's document boundaries feed
//! [`model::Positions::packed`], so no token attends across a document (Llama 3 paper §3.2).
//! The prediction of the first token of the next window is lost: one target in
//! `sequence_length`, the price of windows that do not overlap.
//!
//! **Order.** Epoch `e` visits the training windows in the permutation drawn by
//! `Rng::from_seed(seed ^ e)`; a micro-batch takes the next `batch_size` windows, running on
//! into the next epoch. The position `(epoch, index)` is therefore all a resume needs.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use datasets::tokenizer::Llama3Tokenizer;
use model::Positions;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use training::Rng;

use crate::config::{DataConfig, DocumentSplit};
use crate::error::{PretrainError, Result};
use crate::loss::{next_token_mask, next_token_targets};

/// The token stream inside the corpus directory.
pub const TOKENS_FILE: &str = "tokens.bin";
/// The document index inside the corpus directory.
pub const INDEX_FILE: &str = "index.json";
/// Bumped when the stream's layout or the document rules change, so old streams are rebuilt.
const FORMAT_VERSION: u32 = 1;
const TOKEN_BYTES: u64 = 4;

/// The contents of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusIndex {
    /// The stream layout's version.
    pub format_version: u32,
    /// SHA-256 (hex) of the tokenizer, the files and the settings the stream was built from.
    pub checksum: String,
    /// `cu_seqlens` over `tokens.bin`: document `d` is tokens `[b[d], b[d + 1])`.
    pub document_boundaries: Vec<u64>,
    /// The first this many documents are for training, the rest are held out.
    pub training_documents: usize,
}

/// Which part of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The documents trained on.
    Training,
    /// The documents evaluated on.
    HeldOut,
}

/// A tokenized corpus on disk, read by window.
#[derive(Debug)]
pub struct Corpus {
    path: PathBuf,
    file: File,
    index: CorpusIndex,
    sequence_length: usize,
    padding_id: u32,
}

impl Corpus {
    /// Opens the stream in `directory` if it was built from exactly these inputs, otherwise
    /// tokenizes `config`'s files into it. `tokenizer_path` is hashed, so a new tokenizer
    /// rebuilds the stream.
    pub fn prepare(
        config: &DataConfig,
        tokenizer: &Llama3Tokenizer,
        tokenizer_path: &Path,
        directory: &Path,
    ) -> Result<Self> {
        let checksum = checksum(config, tokenizer_path)?;
        let index_path = directory.join(INDEX_FILE);
        let tokens_path = directory.join(TOKENS_FILE);
        let existing = match fs::read(&index_path) {
            Ok(json) => serde_json::from_slice::<CorpusIndex>(&json).ok(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(PretrainError::io(&index_path)(error)),
        };
        let index = match existing {
            Some(index) if index.format_version == FORMAT_VERSION && index.checksum == checksum => {
                index
            }
            _ => build(config, tokenizer, directory, checksum)?,
        };
        let file = File::open(&tokens_path).map_err(PretrainError::io(&tokens_path))?;
        let length = file
            .metadata()
            .map_err(PretrainError::io(&tokens_path))?
            .len();
        let expected = index.document_boundaries.last().copied().unwrap_or(0) * TOKEN_BYTES;
        if length != expected {
            return Err(PretrainError::Corpus {
                path: tokens_path,
                reason: format!("{length} bytes but {INDEX_FILE} describes {expected}"),
            });
        }
        Ok(Self {
            path: tokens_path,
            file,
            index,
            sequence_length: config.sequence_length,
            padding_id: tokenizer.special().finetune_right_pad,
        })
    }

    /// The index as read or built.
    #[must_use]
    pub fn index(&self) -> &CorpusIndex {
        &self.index
    }

    /// Tokens in a split.
    #[must_use]
    pub fn tokens(&self, split: Split) -> u64 {
        let (start, end) = self.range(split);
        end - start
    }

    /// Windows of `sequence_length` tokens in a split (the last one possibly padded).
    #[must_use]
    pub fn windows(&self, split: Split) -> usize {
        self.tokens(split).div_ceil(self.sequence_length as u64) as usize
    }

    /// The micro-batch of the given windows of `split`, in that order.
    pub fn batch(&self, split: Split, windows: &[usize]) -> Result<Batch> {
        let sequence_length = self.sequence_length;
        let (split_start, split_end) = self.range(split);
        let boundaries = self.boundaries(split);
        let mut batch = Batch {
            sequence_length,
            ..Batch::default()
        };
        for &window in windows {
            let start = split_start + (window * sequence_length) as u64;
            let length = (split_end.saturating_sub(start)).min(sequence_length as u64) as usize;
            if length == 0 {
                return Err(PretrainError::Corpus {
                    path: self.path.clone(),
                    reason: format!("window {window} lies beyond the end of the {split:?} split"),
                });
            }
            let mut row = self.read(start, length)?;
            row.resize(sequence_length, self.padding_id);
            // Document starts strictly inside the window, relative to it, between 0 and the end.
            let first = boundaries.partition_point(|&boundary| boundary <= start);
            let mut row_boundaries = vec![0u32];
            row_boundaries.extend(
                boundaries[first..]
                    .iter()
                    .take_while(|&&boundary| boundary < start + length as u64)
                    .map(|&boundary| (boundary - start) as u32),
            );
            row_boundaries.push(length as u32);
            let mut position_ids = vec![0u32; sequence_length];
            for pair in row_boundaries.windows(2) {
                for (offset, slot) in position_ids[pair[0] as usize..pair[1] as usize]
                    .iter_mut()
                    .enumerate()
                {
                    *slot = offset as u32;
                }
            }
            batch.targets.extend(next_token_targets(&row));
            batch
                .target_mask
                .extend(next_token_mask(&row_boundaries, sequence_length));
            batch.input_ids.extend(row);
            batch.position_ids.push(position_ids);
            batch.document_boundaries.push(row_boundaries);
        }
        Ok(batch)
    }

    /// `[start, end)` of a split in the stream, in tokens.
    fn range(&self, split: Split) -> (u64, u64) {
        let boundaries = &self.index.document_boundaries;
        let middle = boundaries
            .get(self.index.training_documents)
            .copied()
            .unwrap_or(0);
        let end = boundaries.last().copied().unwrap_or(0);
        match split {
            Split::Training => (0, middle),
            Split::HeldOut => (middle, end),
        }
    }

    /// The document starts of a split, in stream offsets.
    fn boundaries(&self, split: Split) -> &[u64] {
        let boundaries = &self.index.document_boundaries;
        let documents = boundaries.len().saturating_sub(1);
        let training = self.index.training_documents.min(documents);
        match split {
            Split::Training => &boundaries[..training],
            Split::HeldOut => &boundaries[training..documents],
        }
    }

    /// `count` tokens from stream offset `start`.
    fn read(&self, start: u64, count: usize) -> Result<Vec<u32>> {
        let mut bytes = vec![0u8; count * TOKEN_BYTES as usize];
        self.file
            .read_exact_at(&mut bytes, start * TOKEN_BYTES)
            .map_err(PretrainError::io(&self.path))?;
        Ok(bytes
            .chunks_exact(TOKEN_BYTES as usize)
            .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }
}

/// One micro-batch of packed rows, flattened row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Tokens per row.
    pub sequence_length: usize,
    /// `(batch · seq)`: the input tokens, padded with `<|finetune_right_pad_id|>`.
    pub input_ids: Vec<u32>,
    /// `(batch · seq)`: the token each position predicts.
    pub targets: Vec<u32>,
    /// `(batch · seq)`: 1 where the position is trained.
    pub target_mask: Vec<f32>,
    /// Per row: position ids restarting at each document.
    pub position_ids: Vec<Vec<u32>>,
    /// Per row: `cu_seqlens` of its documents.
    pub document_boundaries: Vec<Vec<u32>>,
}

/// A batch as the model and the loss take it.
#[derive(Debug)]
pub struct BatchTensors {
    /// `(batch, seq)` u32.
    pub input_ids: Tensor,
    /// `(batch, seq)` u32.
    pub targets: Tensor,
    /// `(batch, seq)` f32.
    pub target_mask: Tensor,
    /// Positions and document masking for the forward.
    pub positions: Positions,
}

impl Batch {
    /// Rows in the batch.
    #[must_use]
    pub fn rows(&self) -> usize {
        self.position_ids.len()
    }

    /// The tensors on `device`.
    pub fn tensors(&self, device: &Device) -> Result<BatchTensors> {
        let shape = (self.rows(), self.sequence_length);
        let tensor = |context: &str, result: candle_core::Result<Tensor>| {
            result.map_err(PretrainError::tensor(context))
        };
        Ok(BatchTensors {
            input_ids: tensor(
                "input ids",
                Tensor::from_slice(&self.input_ids, shape, device),
            )?,
            targets: tensor("targets", Tensor::from_slice(&self.targets, shape, device))?,
            target_mask: tensor(
                "target mask",
                Tensor::from_slice(&self.target_mask, shape, device),
            )?,
            positions: Positions::packed(&self.position_ids, &self.document_boundaries)?,
        })
    }
}

/// Where the training data order is: the epoch and the next index into its permutation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPosition {
    /// Passes over the training windows completed.
    pub epoch: u64,
    /// Windows of this epoch already served.
    pub index: usize,
}

/// The order of training windows: a fresh permutation each epoch, from the seed and the epoch.
#[derive(Debug, Clone)]
pub struct WindowOrder {
    seed: u64,
    position: DataPosition,
    permutation: Vec<usize>,
}

impl WindowOrder {
    /// The order over `windows` windows, continuing at `position`.
    #[must_use]
    pub fn new(seed: u64, windows: usize, position: DataPosition) -> Self {
        Self {
            seed,
            position,
            permutation: Rng::from_seed(seed ^ position.epoch).permutation(windows),
        }
    }

    /// The next `count` windows, running on into the next epoch.
    pub fn take(&mut self, count: usize) -> Vec<usize> {
        let mut taken = Vec::with_capacity(count);
        while taken.len() < count && !self.permutation.is_empty() {
            if self.position.index == self.permutation.len() {
                self.position = DataPosition {
                    epoch: self.position.epoch + 1,
                    index: 0,
                };
                self.permutation = Rng::from_seed(self.seed ^ self.position.epoch)
                    .permutation(self.permutation.len());
            }
            taken.push(self.permutation[self.position.index]);
            self.position.index += 1;
        }
        taken
    }

    /// Where the order is now (what a checkpoint saves).
    #[must_use]
    pub fn position(&self) -> DataPosition {
        self.position
    }
}

/// Tokenizes the files into `directory`, returning the index.
fn build(
    config: &DataConfig,
    tokenizer: &Llama3Tokenizer,
    directory: &Path,
    checksum: String,
) -> Result<CorpusIndex> {
    fs::create_dir_all(directory).map_err(PretrainError::io(directory))?;
    let tokens_path = directory.join(TOKENS_FILE);
    let temporary = directory.join(format!("{TOKENS_FILE}.tmp-{}", std::process::id()));
    let mut writer =
        BufWriter::new(File::create(&temporary).map_err(PretrainError::io(&temporary))?);
    let special = tokenizer.special();
    let mut document_boundaries = vec![0u64];
    // Held-out documents are written after all training ones; they are few, so kept in memory.
    let mut held_out: Vec<Vec<u32>> = Vec::new();
    let mut document_number = 0usize;
    let fraction = config.held_out_fraction;
    let files = config
        .files
        .iter()
        .map(|path| (path, false))
        .chain(config.held_out_files.iter().map(|path| (path, true)));
    for (path, held_out_file) in files {
        let text = read_text(path)?;
        for document in documents(&text, config.documents) {
            let mut ids = vec![special.begin_of_text];
            ids.extend(tokenizer.encode_text(document)?);
            ids.push(special.end_of_text);
            let by_fraction = ((document_number + 1) as f64 * fraction).floor()
                > (document_number as f64 * fraction).floor();
            document_number += 1;
            if held_out_file || by_fraction {
                held_out.push(ids);
            } else {
                write_tokens(&mut writer, &ids, &temporary)?;
                let end = document_boundaries.last().copied().unwrap_or(0) + ids.len() as u64;
                document_boundaries.push(end);
            }
        }
    }
    let training_documents = document_boundaries.len() - 1;
    if training_documents == 0 {
        return Err(PretrainError::Corpus {
            path: config.files[0].clone(),
            reason: "the training files hold no document".to_owned(),
        });
    }
    for ids in &held_out {
        write_tokens(&mut writer, ids, &temporary)?;
        let end = document_boundaries.last().copied().unwrap_or(0) + ids.len() as u64;
        document_boundaries.push(end);
    }
    let file = writer
        .into_inner()
        .map_err(|error| PretrainError::io(&temporary)(error.into_error()))?;
    file.sync_all().map_err(PretrainError::io(&temporary))?;
    fs::rename(&temporary, &tokens_path).map_err(PretrainError::io(&temporary))?;

    let index = CorpusIndex {
        format_version: FORMAT_VERSION,
        checksum,
        document_boundaries,
        training_documents,
    };
    // The index is written last: an index on disk always describes a complete stream.
    let index_path = directory.join(INDEX_FILE);
    let json = serde_json::to_vec(&index).map_err(|source| PretrainError::Json {
        path: index_path.clone(),
        source,
    })?;
    let temporary = directory.join(format!("{INDEX_FILE}.tmp-{}", std::process::id()));
    fs::write(&temporary, json).map_err(PretrainError::io(&temporary))?;
    fs::rename(&temporary, &index_path).map_err(PretrainError::io(&temporary))?;
    Ok(index)
}

fn write_tokens(writer: &mut impl Write, ids: &[u32], path: &Path) -> Result<()> {
    for id in ids {
        writer
            .write_all(&id.to_le_bytes())
            .map_err(PretrainError::io(path))?;
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(PretrainError::io(path))?;
    String::from_utf8(bytes).map_err(|error| PretrainError::Corpus {
        path: path.to_owned(),
        reason: format!("not UTF-8: {error}"),
    })
}

/// The documents of one file's text.
#[must_use]
pub fn documents(text: &str, split: DocumentSplit) -> Vec<&str> {
    match split {
        DocumentSplit::File => [text.trim_end_matches(['\r', '\n'])]
            .into_iter()
            .filter(|document| !document.trim().is_empty())
            .collect(),
        DocumentSplit::Paragraph => {
            let mut paragraphs = Vec::new();
            let mut start: Option<usize> = None;
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                if line.trim().is_empty() {
                    if let Some(begin) = start.take() {
                        paragraphs.push(text[begin..offset].trim_end_matches(['\r', '\n']));
                    }
                } else if start.is_none() {
                    start = Some(offset);
                }
                offset += line.len();
            }
            if let Some(begin) = start {
                paragraphs.push(text[begin..].trim_end_matches(['\r', '\n']));
            }
            paragraphs
        }
    }
}

/// SHA-256 over everything the stream depends on.
fn checksum(config: &DataConfig, tokenizer_path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT_VERSION.to_le_bytes());
    let tokenizer = fs::read(tokenizer_path).map_err(PretrainError::io(tokenizer_path))?;
    hash_field(&mut hasher, &tokenizer);
    hash_field(&mut hasher, format!("{:?}", config.documents).as_bytes());
    hasher.update(config.held_out_fraction.to_le_bytes());
    for (role, files) in [
        ("train", &config.files),
        ("held_out", &config.held_out_files),
    ] {
        for path in files {
            hash_field(&mut hasher, role.as_bytes());
            hash_field(&mut hasher, path.as_os_str().as_encoded_bytes());
            hash_field(
                &mut hasher,
                &fs::read(path).map_err(PretrainError::io(path))?,
            );
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Length-prefixed, so that no two different inputs hash the same bytes.
fn hash_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_are_split_on_blank_lines() {
        let text = "one\ntwo\n\n  \nthree\n\nfour";
        assert_eq!(
            documents(text, DocumentSplit::Paragraph),
            ["one\ntwo", "three", "four"]
        );
        assert_eq!(documents(text, DocumentSplit::File), [text]);
        assert!(documents("\n \n", DocumentSplit::File).is_empty());
    }

    #[test]
    fn the_order_is_a_permutation_per_epoch_and_resumes_from_its_position() {
        let mut order = WindowOrder::new(7, 5, DataPosition::default());
        let first: Vec<usize> = order.take(5);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4]);
        let mut uninterrupted = order.clone();
        let straight: Vec<usize> = uninterrupted.take(7);
        let _ = order.take(3);
        let mut resumed = WindowOrder::new(7, 5, order.position());
        let mut rest = straight[..3].to_vec();
        rest.extend(resumed.take(4));
        assert_eq!(rest, straight);
        assert_eq!(resumed.position(), DataPosition { epoch: 2, index: 2 });
    }
}
