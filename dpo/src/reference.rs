//! Reference log-probs, computed once and stored beside the data (`posttrain.md` §3 pitfall 7: a
//! resident reference model doubles DPO's memory; TRL's `precompute_ref_log_probs`).
//!
//! Before training, every completion of every train and held-out pair is scored by the reference
//! model: the sum of its masked completion log-probs (the same
//! `loss::completion_log_probs_from_hidden` the policy uses). Scores go to
//! `<data file>.reference/<fingerprint>.jsonl`, one per data file:
//!
//! ```text
//! {"format":"herd-dpo reference log-probs v1","fingerprint":"…","reference":"runs/sft/final",
//!  "reference_sha256":"…","tokenizer_sha256":"…","masking":"llama3","data_sha256":"…",
//!  "compute_dtype":"f32"}
//! {"line":1,"completion":"chosen","logp":-41.73}
//! {"line":1,"completion":"rejected","logp":-18.2}
//! ```
//!
//! The fingerprint is the SHA-256 of the reference's config and weight files, the tokenizer file,
//! the masking mode, the data file and the compute dtype (in bf16 also the way log-probs are
//! computed, see `log_probs_suffix`), so a changed input lands in a new file (recomputed) and an
//! unchanged one is reused. Scores are per sequence, not per pair, so the
//! edited policy, strength filter and length limit can change without recomputing. Lines are
//! appended and flushed batch by batch: a killed precompute leaves a valid prefix (a torn last line
//! is cut off) and the next run scores only what is missing.
//!
//! The reference model is a local of [`score_missing`]: it is dropped before the policy is loaded,
//! and the training loop only ever sees the numbers.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use model::Checkpoint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{DpoConfig, RejectedSpan};
use crate::data::{self, Completion, PreferenceData, SequenceKey};
use crate::error::DpoError;
use crate::loss::completion_log_probs_from_hidden;

/// A cache file's scores by (line, completion).
type CacheEntries = HashMap<(usize, String), f32>;

const FORMAT: &str = "herd-dpo reference log-probs v1";

/// What the reference step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReferenceReport {
    /// The cache files, one per data file.
    pub cache_files: Vec<PathBuf>,
    /// Sequences whose reference log-prob was already in a cache file.
    pub reused: usize,
    /// Sequences the reference model scored in this run (0: the reference model was not loaded).
    pub scored: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    format: String,
    fingerprint: String,
    reference: PathBuf,
    reference_sha256: String,
    tokenizer_sha256: String,
    masking: String,
    /// Absent in caches written before the option existed, which are all `whole`.
    #[serde(default = "whole_span")]
    rejected_span: String,
    data_sha256: String,
    compute_dtype: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    line: usize,
    completion: String,
    logp: f32,
}

/// `herd dpo precompute`: reads the data and fills the reference caches, without training.
pub fn precompute(config: &DpoConfig) -> Result<ReferenceReport, DpoError> {
    config.validate()?;
    let device = training::select_device(config.training.device)?;
    let tokenizer_path = data::tokenizer_path(&config.model, config.tokenizer.as_ref());
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path)?;
    let renderer = Renderer::new(&tokenizer)?;
    let mut preference_data = data::load(&config.data, &renderer, config.training.seed)?;
    for reason in &preference_data.skipped {
        eprintln!("skipped {reason}");
    }
    attach(
        config,
        &mut preference_data,
        &tokenizer_path,
        tokenizer.special().finetune_right_pad,
        &device,
    )
}

/// Fills every pair's reference log-probs from the caches, scoring what is missing first.
pub fn attach(
    config: &DpoConfig,
    preference_data: &mut PreferenceData,
    tokenizer_path: &Path,
    pad_id: u32,
    device: &Device,
) -> Result<ReferenceReport, DpoError> {
    let reference = config.reference_model();
    let reference_sha256 = checkpoint_digest(reference)?;
    let tokenizer_sha256 = file_digest(tokenizer_path)?;
    let compute_dtype = format!("{:?}", config.training.compute_dtype).to_lowercase();

    // The distinct sequences, by data file.
    let mut sequences: BTreeMap<PathBuf, BTreeMap<SequenceKey, Completion>> = BTreeMap::new();
    for pair in preference_data.pairs_mut() {
        for completion in [&pair.chosen, &pair.rejected] {
            sequences
                .entry(completion.key.file.clone())
                .or_default()
                .entry(completion.key.clone())
                .or_insert_with(|| completion.clone());
        }
    }
    let mut report = ReferenceReport::default();
    let mut known: HashMap<SequenceKey, f32> = HashMap::new();
    let mut caches = Vec::new();
    let mut missing: Vec<(usize, Completion)> = Vec::new();
    for (file, file_sequences) in &sequences {
        let data_sha256 = file_digest(file)?;
        let fingerprint = hex(&Sha256::digest(
            format!(
                "{FORMAT}\n{reference_sha256}\n{tokenizer_sha256}\n{}\n{data_sha256}\n{compute_dtype}{}{}",
                config.data.masking.as_str(),
                span_suffix(config.data.rejected_span),
                log_probs_suffix(&compute_dtype),
            )
            .as_bytes(),
        ));
        let header = Header {
            format: FORMAT.to_owned(),
            fingerprint: fingerprint.clone(),
            reference: reference.clone(),
            reference_sha256: reference_sha256.clone(),
            tokenizer_sha256: tokenizer_sha256.clone(),
            masking: config.data.masking.as_str().to_owned(),
            rejected_span: config.data.rejected_span.as_str().to_owned(),
            data_sha256,
            compute_dtype: compute_dtype.clone(),
        };
        let path = cache_path(file, &fingerprint);
        let (entries, writer) = open_cache(&path, &header)?;
        for (key, completion) in file_sequences {
            match entries.get(&(key.line, key.completion.to_owned())) {
                Some(&logp) => {
                    known.insert(key.clone(), logp);
                    report.reused += 1;
                }
                None => missing.push((caches.len(), completion.clone())),
            }
        }
        report.cache_files.push(path.clone());
        caches.push((path, writer));
    }
    if !missing.is_empty() {
        report.scored = missing.len();
        score_missing(config, &missing, &mut caches, &mut known, pad_id, device)?;
    }
    for pair in preference_data.pairs_mut() {
        let logp = |completion: &Completion| -> Result<f32, DpoError> {
            known.get(&completion.key).copied().ok_or_else(|| {
                DpoError::Data(format!(
                    "{}:{}: no reference log-prob for {}",
                    completion.key.file.display(),
                    completion.key.line,
                    completion.key.completion
                ))
            })
        };
        pair.reference = Some((logp(&pair.chosen)?, logp(&pair.rejected)?));
    }
    Ok(report)
}

/// Loads the reference model, scores `missing` (shortest first, to pad little), appends each
/// batch's scores to its cache file, and drops the model on return.
fn score_missing(
    config: &DpoConfig,
    missing: &[(usize, Completion)],
    caches: &mut [(PathBuf, File)],
    known: &mut HashMap<SequenceKey, f32>,
    pad_id: u32,
    device: &Device,
) -> Result<(), DpoError> {
    let reference = config.reference_model();
    eprintln!(
        "reference log-probs: scoring {} sequences with {}",
        missing.len(),
        reference.display()
    );
    let mut model = Checkpoint::load(reference, DType::F32, device)?.model()?;
    model.set_compute_dtype(config.training.compute_dtype.cast())?;
    let mut order: Vec<&(usize, Completion)> = missing.iter().collect();
    order.sort_by_key(|(_, completion)| completion.ids.len());
    let rows_per_batch = 2 * config.training.batch_size.max(1);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut done = 0usize;
    for batch in order.chunks(rows_per_batch) {
        let completions: Vec<&Completion> =
            batch.iter().map(|(_, completion)| completion).collect();
        let rows = data::to_rows(&completions, pad_id, device)?;
        // The reference model is frozen (loaded tensors, not Vars): no graph is built, and the LM
        // head runs on the completion positions only, in chunks.
        let hidden_states = model.hidden_states(&rows.input_ids, &rows.positions)?;
        let sums = completion_log_probs_from_hidden(
            &hidden_states,
            model.lm_head_weight()?,
            &rows.input_ids,
            &rows.mask,
            model.kernels(),
        )?
        .sums
        .to_vec1::<f32>()?;
        for ((cache, completion), logp) in batch.iter().zip(sums) {
            let (path, writer) = &mut caches[*cache];
            let entry = Entry {
                line: completion.key.line,
                completion: completion.key.completion.to_owned(),
                logp,
            };
            let mut line = serde_json::to_string(&entry)
                .map_err(|error| cache_error(path, &error.to_string()))?;
            line.push('\n');
            writer
                .write_all(line.as_bytes())
                .map_err(|error| cache_error(path, &error.to_string()))?;
            known.insert(completion.key.clone(), logp);
        }
        for (path, writer) in caches.iter_mut() {
            writer
                .flush()
                .map_err(|error| cache_error(path, &error.to_string()))?;
        }
        done += batch.len();
        if last_report.elapsed() >= Duration::from_secs(2) || done == order.len() {
            last_report = Instant::now();
            let elapsed = started.elapsed().as_secs_f64();
            let eta = elapsed / done as f64 * (order.len() - done) as f64;
            eprintln!(
                "reference log-probs: {done}/{} sequences, {:.1}/s, ETA {}:{:02}",
                order.len(),
                done as f64 / elapsed.max(1e-9),
                (eta / 60.0) as u64,
                (eta % 60.0) as u64
            );
        }
    }
    for (path, writer) in caches.iter_mut() {
        writer
            .sync_all()
            .map_err(|error| cache_error(path, &error.to_string()))?;
    }
    Ok(())
}

fn whole_span() -> String {
    RejectedSpan::Whole.as_str().to_owned()
}

/// What the rejected span adds to the fingerprint: nothing for `whole`, so caches written before
/// the option existed keep their names and stay valid.
fn span_suffix(span: RejectedSpan) -> String {
    match span {
        RejectedSpan::Whole => String::new(),
        RejectedSpan::ToFirstDifference => format!(
            "\nrejected_span={}",
            RejectedSpan::ToFirstDifference.as_str()
        ),
    }
}

/// What the log-prob computation adds to the fingerprint. Nothing in f32: the chunked op
/// (`model::ops::linear_cross_entropy`) reproduces the full-logits scores to float rounding, so
/// those caches stay valid. In bf16 a marker: caches written before it hold scores of bf16-rounded
/// logits, while the policy's log-probs now come from f32 logits, and mixing the two would offset
/// every log-ratio (the initial policy would no longer score as the reference).
fn log_probs_suffix(compute_dtype: &str) -> &'static str {
    if compute_dtype == "f32" {
        ""
    } else {
        "\nlog_probs=f32_logits_from_hidden_states"
    }
}

/// `<data file>.reference/<first 16 hex digits of the fingerprint>.jsonl`.
#[must_use]
pub fn cache_path(data_file: &Path, fingerprint: &str) -> PathBuf {
    let mut directory = data_file.as_os_str().to_owned();
    directory.push(".reference");
    PathBuf::from(directory).join(format!("{}.jsonl", &fingerprint[..16]))
}

/// Reads a cache file's entries (cutting off a torn last line) and opens it for appending;
/// creates it, header first, written atomically, when absent.
fn open_cache(path: &Path, header: &Header) -> Result<(CacheEntries, File), DpoError> {
    let error = |message: String| cache_error(path, &message);
    if !path.exists() {
        let directory = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(directory)
            .map_err(|e| error(format!("creating {}: {e}", directory.display())))?;
        let temporary = path.with_extension("jsonl.tmp");
        let mut text = serde_json::to_string(header).map_err(|e| error(e.to_string()))?;
        text.push('\n');
        let mut file = File::create(&temporary).map_err(|e| error(e.to_string()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| error(e.to_string()))?;
        std::fs::rename(&temporary, path).map_err(|e| error(e.to_string()))?;
    }
    let mut text = String::new();
    File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .map_err(|e| error(e.to_string()))?;
    // A kill mid-write leaves a line without its newline: drop it, it is scored again.
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    let mut lines = text[..complete].lines();
    let found: Header = lines
        .next()
        .ok_or_else(|| error("empty file (no header)".to_owned()))
        .and_then(|line| {
            serde_json::from_str(line).map_err(|e| error(format!("line 1: header: {e}")))
        })?;
    if found.fingerprint != header.fingerprint || found.format != header.format {
        return Err(error(format!(
            "line 1: fingerprint {} does not match {} (delete the file to recompute)",
            found.fingerprint, header.fingerprint
        )));
    }
    let mut entries = HashMap::new();
    for (index, line) in lines.enumerate() {
        let entry: Entry =
            serde_json::from_str(line).map_err(|e| error(format!("line {}: {e}", index + 2)))?;
        entries.insert((entry.line, entry.completion), entry.logp);
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| error(e.to_string()))?;
    file.set_len(complete as u64)
        .map_err(|e| error(e.to_string()))?;
    drop(file);
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| error(e.to_string()))?;
    Ok((entries, file))
}

fn cache_error(path: &Path, message: &str) -> DpoError {
    DpoError::ReferenceCache {
        path: path.to_path_buf(),
        message: message.to_owned(),
    }
}

/// SHA-256 of a checkpoint directory's config and weights (names and bytes, in name order).
fn checkpoint_digest(directory: &Path) -> Result<String, DpoError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .map_err(|error| DpoError::Config(format!("reference {}: {error}", directory.display())))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().is_some_and(|name| {
                let name = name.to_string_lossy();
                name == "config.json"
                    || name.ends_with(".safetensors")
                    || name.ends_with(".safetensors.index.json")
            })
        })
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hash_file(&mut hasher, file)?;
    }
    Ok(hex(&hasher.finalize()))
}

fn file_digest(path: &Path) -> Result<String, DpoError> {
    let mut hasher = Sha256::new();
    hash_file(&mut hasher, path)?;
    Ok(hex(&hasher.finalize()))
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<(), DpoError> {
    let mut file =
        File::open(path).map_err(|error| DpoError::Data(format!("{}: {error}", path.display())))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|error| DpoError::Data(format!("{}: {error}", path.display())))?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_from_before_the_rejected_span_stay_valid() {
        // A header as written before `rejected_span` existed reads as `whole`, and `whole` adds
        // nothing to the fingerprint, so such a cache keeps its name and its scores.
        let old = r#"{"format":"herd-dpo reference log-probs v1","fingerprint":"ab","reference":"m","reference_sha256":"r","tokenizer_sha256":"t","masking":"llama3","data_sha256":"d","compute_dtype":"f32"}"#;
        let header: Header = serde_json::from_str(old).unwrap();
        assert_eq!(header.rejected_span, "whole");
        assert_eq!(span_suffix(RejectedSpan::Whole), "");
        assert_ne!(span_suffix(RejectedSpan::ToFirstDifference), "");
        // Nor does the chunked log-prob computation in f32; bf16 caches are recomputed.
        assert_eq!(log_probs_suffix("f32"), "");
        assert_ne!(log_probs_suffix("bf16"), "");
    }
}
