//! Preference records → pairs of tokenized completions → padded batches.
//!
//! Each record is rendered once (`datasets::encode`): prompt + chosen, prompt + rejected (and
//! prompt + edited). The mask is Llama 3's (§4.1.4: completion bodies only, no header or
//! termination tokens — `dpo_mask`) or TRL's (every completion token after the assistant header,
//! `<|eot_id|>` included — the SFT mask of the completion messages). A batch holds the chosen rows
//! then the rejected rows, right-padded, as TRL's concatenated forward does. Batches are rebuilt per
//! epoch from a permutation seeded by (run seed, epoch), so a resumed run needs only (epoch, batch
//! index) to continue exactly where it stopped.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use datasets::encode::{EncodeOptions, EncodedRecord, EncodedSequence, encode_record};
use datasets::jsonl::JsonlLines;
use datasets::records::Record;
use datasets::render::Renderer;
use model::Positions;
use serde::{Deserialize, Serialize};
use training::Rng;

use crate::config::{DataConfig, EditedPolicy, Masking, RejectedSpan};
use crate::error::DpoError;

/// One tokenized prompt + completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Where it comes from: the file, its 1-based line and which completion (`chosen`,
    /// `rejected`, `edited`) — the key of its reference log-prob.
    pub key: SequenceKey,
    /// Prompt and completion token ids.
    pub ids: Vec<u32>,
    /// 1 on the completion tokens whose log-probs count.
    pub mask: Vec<u8>,
}

/// Names a sequence of a data file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceKey {
    /// The data file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// `chosen`, `rejected` or `edited`.
    pub completion: &'static str,
}

impl Completion {
    /// Tokens the log-prob sums over.
    #[must_use]
    pub fn completion_tokens(&self) -> usize {
        self.mask.iter().map(|&bit| usize::from(bit)).sum()
    }
}

/// A preferred and a dispreferred completion of one prompt, with the reference log-probs once
/// they are known.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The preferred completion.
    pub chosen: Completion,
    /// The dispreferred completion.
    pub rejected: Completion,
    /// Reference log-probs (chosen, rejected), filled by [`crate::reference`].
    pub reference: Option<(f32, f32)>,
}

/// The tokenized pairs.
#[derive(Debug, Clone, Default)]
pub struct PreferenceData {
    /// Training pairs.
    pub train: Vec<Pair>,
    /// Held-out pairs.
    pub held_out: Vec<Pair>,
    /// Records skipped with `skip_invalid` or by the strength filter, each with its reason
    /// (`file:line: ...`).
    pub skipped: Vec<String>,
}

impl PreferenceData {
    /// Every pair, training then held-out.
    pub fn pairs_mut(&mut self) -> impl Iterator<Item = &mut Pair> {
        self.train.iter_mut().chain(self.held_out.iter_mut())
    }
}

/// Where the run is in its data: the epoch and the next batch of that epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Index of the next batch within the epoch.
    pub batch: usize,
}

/// Rows of completions ready for the model.
#[derive(Debug)]
pub struct Rows {
    /// `(rows, sequence)` u32, right-padded.
    pub input_ids: Tensor,
    /// `(rows, sequence)` u8: 1 on the tokens whose log-probs count.
    pub mask: Tensor,
    /// The attention layout (right padding).
    pub positions: Positions,
}

/// Mixed into the seed for the held-out split, so it does not follow epoch 0's order.
const HELD_OUT_SALT: u64 = 0x5eed_0000_4e1d_0000;

/// Reads, filters and tokenizes the training and held-out preference records.
pub fn load(
    config: &DataConfig,
    renderer: &Renderer<'_>,
    seed: u64,
) -> Result<PreferenceData, DpoError> {
    let mut data = PreferenceData::default();
    let mut train = Vec::new();
    for file in &config.train {
        train.extend(read_records(file, config, renderer, &mut data.skipped)?);
    }
    if config.held_out.is_empty() {
        if !(0.0..1.0).contains(&config.held_out_fraction) {
            return Err(DpoError::Config(format!(
                "data.held_out_fraction = {} must be in [0, 1)",
                config.held_out_fraction
            )));
        }
        // A seeded shuffle of the records, then the first fraction is held out.
        let order = Rng::from_seed(seed ^ HELD_OUT_SALT).permutation(train.len());
        let held_out_count = (config.held_out_fraction * train.len() as f64).round() as usize;
        let mut slots: Vec<Option<Vec<Pair>>> = train.into_iter().map(Some).collect();
        let mut train_pairs = Vec::new();
        for (rank, index) in order.into_iter().enumerate() {
            if let Some(pairs) = slots[index].take() {
                if rank < held_out_count {
                    data.held_out.extend(pairs);
                } else {
                    train_pairs.push((index, pairs));
                }
            }
        }
        // Training pairs in file order: the epoch permutation is the only shuffle.
        train_pairs.sort_by_key(|(index, _)| *index);
        data.train = train_pairs
            .into_iter()
            .flat_map(|(_, pairs)| pairs)
            .collect();
    } else {
        data.train = train.into_iter().flatten().collect();
        for file in &config.held_out {
            let records = read_records(file, config, renderer, &mut data.skipped)?;
            data.held_out.extend(records.into_iter().flatten());
        }
    }
    if data.train.is_empty() {
        return Err(DpoError::Config(
            "no training pairs left (check data.train, data.strengths and the skipped lines)"
                .to_owned(),
        ));
    }
    Ok(data)
}

/// The pairs of each usable record of `file`.
fn read_records(
    file: &Path,
    config: &DataConfig,
    renderer: &Renderer<'_>,
    skipped: &mut Vec<String>,
) -> Result<Vec<Vec<Pair>>, DpoError> {
    let name = file.display().to_string();
    let strengths = config.strengths()?;
    let lines = JsonlLines::open(&name).map_err(|error| DpoError::Data(error.to_string()))?;
    let mut records = Vec::new();
    for item in lines.records() {
        let outcome = match item {
            Err(problems) => Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
            Ok((line, Record::Conversation(_))) => Err(format!(
                "{name}:{line}: a conversation; DPO reads preference records \
                 ({{\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]}})"
            )),
            Ok((line, Record::Preference(preference))) => {
                if let Some(strength) = preference.strength
                    && !strengths.is_empty()
                    && !strengths.contains(&strength)
                {
                    // Filtered by choice, not invalid: reported, never an error.
                    skipped.push(format!(
                        "{name}:{line}: strength {strength} is not in data.strengths"
                    ));
                    continue;
                }
                let record = Record::Preference(preference);
                match encode_record(renderer, &record, EncodeOptions::default()) {
                    Ok(encoded) => pairs_of(file, line, &encoded, config),
                    Err(error) => Err(format!("{name}:{line}: {error}")),
                }
            }
        };
        match outcome {
            Ok(pairs) => records.push(pairs),
            Err(reason) if config.skip_invalid => skipped.push(reason),
            Err(reason) => return Err(DpoError::Data(reason)),
        }
    }
    Ok(records)
}

/// The pairs one encoded record gives under the edited policy, or why it cannot be used.
fn pairs_of(
    file: &Path,
    line: usize,
    encoded: &EncodedRecord,
    config: &DataConfig,
) -> Result<Vec<Pair>, String> {
    let EncodedRecord::Preference {
        chosen,
        rejected,
        edited,
    } = encoded
    else {
        return Err(format!("{}:{line}: not a preference", file.display()));
    };
    let completion =
        |name: &'static str, sequence: &EncodedSequence| -> Result<Completion, String> {
            if sequence.len() > config.sequence_length {
                return Err(format!(
                    "{}:{line}: {name} is {} tokens, longer than data.sequence_length = {}",
                    file.display(),
                    sequence.len(),
                    config.sequence_length
                ));
            }
            let mask = match config.masking {
                Masking::Llama3 => sequence.dpo_mask.clone(),
                Masking::Trl => sequence.mask.clone(),
            };
            // Position 0 has no prediction; a completion token there cannot be scored.
            if mask.first() == Some(&1) || !mask.contains(&1) {
                return Err(format!(
                    "{}:{line}: {name} has no completion token to score",
                    file.display()
                ));
            }
            Ok(Completion {
                key: SequenceKey {
                    file: file.to_path_buf(),
                    line,
                    completion: name,
                },
                ids: sequence.ids.clone(),
                mask,
            })
        };
    let pair = |better: &Completion, worse: &Completion| Pair {
        chosen: better.clone(),
        rejected: match config.rejected_span {
            RejectedSpan::Whole => worse.clone(),
            RejectedSpan::ToFirstDifference => to_first_difference(better, worse),
        },
        reference: None,
    };
    let chosen = completion("chosen", chosen)?;
    let rejected = completion("rejected", rejected)?;
    let edited = match (edited, config.edited_policy) {
        (Some(edited), EditedPolicy::Expand | EditedPolicy::ReplaceChosen) => {
            Some(completion("edited", edited)?)
        }
        _ => None,
    };
    Ok(match (edited, config.edited_policy) {
        (Some(edited), EditedPolicy::Expand) => vec![
            pair(&edited, &chosen),
            pair(&edited, &rejected),
            pair(&chosen, &rejected),
        ],
        (Some(edited), _) => vec![pair(&edited, &rejected)],
        (None, _) => vec![pair(&chosen, &rejected)],
    })
}

/// `rejected` with its mask cut after its first token that departs from `chosen` (both share the
/// prompt, so the first difference lies in the completion). A rejected completion that never
/// departs (a prefix of the chosen one) keeps its mask. The key names the completion it was cut
/// against, since under the edited expansion one completion is cut against two others.
fn to_first_difference(chosen: &Completion, rejected: &Completion) -> Completion {
    let first_difference = rejected
        .ids
        .iter()
        .zip(chosen.ids.iter().chain(std::iter::repeat(&u32::MAX)))
        .position(|(rejected_id, chosen_id)| rejected_id != chosen_id);
    let mut cut = rejected.clone();
    if let Some(index) = first_difference {
        for bit in &mut cut.mask[index + 1..] {
            *bit = 0;
        }
    }
    cut.key.completion = match (chosen.key.completion, rejected.key.completion) {
        ("edited", "chosen") => "chosen_cut_at_edited",
        ("edited", _) => "rejected_cut_at_edited",
        _ => "rejected_cut_at_chosen",
    };
    cut
}

/// The pair indices of each batch of one epoch, in the order the epoch's seed gives.
#[must_use]
pub fn epoch_batches(pairs: usize, epoch: u64, seed: u64, batch_size: usize) -> Vec<Vec<usize>> {
    let order = Rng::from_seed(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)).permutation(pairs);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Right-pads completions into one batch of rows (`pad_id` after each row's end; padding is
/// masked out of attention and of the log-probs).
pub fn to_rows(rows: &[&Completion], pad_id: u32, device: &Device) -> Result<Rows, DpoError> {
    let width = rows.iter().map(|row| row.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len());
    let mut mask = Vec::with_capacity(rows.len());
    let mut attention = Vec::with_capacity(rows.len());
    for row in rows {
        let padding = width - row.ids.len();
        let mut row_ids = row.ids.clone();
        row_ids.extend(std::iter::repeat_n(pad_id, padding));
        let mut row_mask = row.mask.clone();
        row_mask.extend(std::iter::repeat_n(0, padding));
        let mut row_attention = vec![1u8; row.ids.len()];
        row_attention.extend(std::iter::repeat_n(0, padding));
        ids.push(row_ids);
        mask.push(row_mask);
        attention.push(row_attention);
    }
    Ok(Rows {
        input_ids: Tensor::new(ids, device)?,
        mask: Tensor::new(mask, device)?,
        positions: Positions::right_padded(&attention)?,
    })
}

/// A batch of pairs as TRL's concatenated forward lays it out: the chosen rows, then the rejected
/// rows (`2·pairs` rows).
pub fn to_pair_rows(pairs: &[&Pair], pad_id: u32, device: &Device) -> Result<Rows, DpoError> {
    let rows: Vec<&Completion> = pairs
        .iter()
        .map(|pair| &pair.chosen)
        .chain(pairs.iter().map(|pair| &pair.rejected))
        .collect();
    to_rows(&rows, pad_id, device)
}

/// The tokenizer file to use: the configured one, or the model directory's.
#[must_use]
pub fn tokenizer_path(model: &Path, configured: Option<&PathBuf>) -> PathBuf {
    configured
        .cloned()
        .unwrap_or_else(|| model.join("tokenizer.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(name: &'static str, ids: &[u32], mask: &[u8]) -> Completion {
        Completion {
            key: SequenceKey {
                file: PathBuf::from("p.jsonl"),
                line: 1,
                completion: name,
            },
            ids: ids.to_vec(),
            mask: mask.to_vec(),
        }
    }

    #[test]
    fn rejected_cut_after_its_first_departure_from_chosen() {
        // Prompt [1, 2], then "8 2 <eot>" against "7 2 <eot>": the rejected tens digit is wrong,
        // its units digit continues the mistake and is not blamed; the termination token stays
        // masked as the masking mode says.
        let chosen = completion("chosen", &[1, 2, 8, 2, 9], &[0, 0, 1, 1, 0]);
        let rejected = completion("rejected", &[1, 2, 7, 2, 9], &[0, 0, 1, 1, 0]);
        let cut = to_first_difference(&chosen, &rejected);
        assert_eq!(cut.ids, rejected.ids);
        assert_eq!(cut.mask, [0, 0, 1, 0, 0]);
        assert_eq!(cut.key.completion, "rejected_cut_at_chosen");
        // Departing at the last digit: the whole body counts, as before.
        let late = completion("rejected", &[1, 2, 8, 3, 9], &[0, 0, 1, 1, 0]);
        assert_eq!(to_first_difference(&chosen, &late).mask, [0, 0, 1, 1, 0]);
        // Longer than the chosen completion: it departs where the chosen one ends.
        let longer = completion("rejected", &[1, 2, 8, 2, 5, 5], &[0, 0, 1, 1, 1, 1]);
        assert_eq!(
            to_first_difference(&chosen, &longer).mask,
            [0, 0, 1, 1, 1, 0]
        );
        // A prefix of the chosen completion never departs: its mask is kept.
        let prefix = completion("rejected", &[1, 2, 8], &[0, 0, 1]);
        assert_eq!(to_first_difference(&chosen, &prefix).mask, [0, 0, 1]);
        // Under the edited expansion the chosen completion is cut against the edited one.
        let edited = completion("edited", &[1, 2, 8, 2, 9], &[0, 0, 1, 1, 0]);
        assert_eq!(
            to_first_difference(&edited, &chosen).key.completion,
            "chosen_cut_at_edited"
        );
    }

    #[test]
    fn epoch_order_depends_on_seed_and_epoch_only() {
        let first = epoch_batches(10, 0, 3, 4);
        assert_eq!(first, epoch_batches(10, 0, 3, 4));
        assert_ne!(first, epoch_batches(10, 1, 3, 4));
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = first.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
