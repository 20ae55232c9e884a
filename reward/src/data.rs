//! Preference records → tokenized pairs → batches.
//!
//! Each record becomes one pair, chosen > rejected, or with a human edit the three pairs
//! edited > chosen, edited > rejected, chosen > rejected (Llama 3 §4.2.1: "edited > chosen >
//! rejected"; the paper does not say how the ranking becomes loss terms, so all ordered pairs,
//! `shared/research/posttrain.md` §1.2). A pair's margin is the record's `margin`, else its
//! strength's; the edited > chosen pair has margin 0 (the edit's strength is unknown) and
//! edited > rejected the record's (edited ≥ chosen). Margins are used only with `loss.margin`.
//!
//! The strength filter drops whole records; records without a strength (synthetic pairs from
//! rejection sampling) are kept. Each sequence is the rendered prompt + response, ending with the
//! response's end token. Batches are rebuilt per epoch from a permutation seeded by (run seed,
//! epoch), so a resumed run needs only (epoch, batch index) to continue exactly. A batch is laid
//! out as TRL's: the chosen rows, then the rejected rows, right-padded together.

use std::path::Path;

use candle_core::{Device, Tensor};
use datasets::Message;
use datasets::jsonl::JsonlLines;
use datasets::message::join_problems;
use datasets::records::{PreferenceRecord, Record, Strength};
use datasets::render::Renderer;
use serde::{Deserialize, Serialize};
use training::Rng;

use crate::config::DataConfig;
use crate::error::RewardError;
use crate::model::right_pad;

/// One tokenized preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    /// prompt + the better response, rendered.
    pub chosen: Vec<u32>,
    /// prompt + the worse response, rendered.
    pub rejected: Vec<u32>,
    /// The pair's margin (see the module header).
    pub margin: f32,
}

/// The tokenized pairs.
#[derive(Debug, Clone, Default)]
pub struct RewardData {
    /// Training pairs.
    pub train: Vec<PreferencePair>,
    /// Held-out pairs.
    pub held_out: Vec<PreferencePair>,
    /// Records skipped with `skip_invalid`, each with its reason (`file:line: ...`).
    pub skipped: Vec<String>,
    /// Records dropped by the strength filter.
    pub filtered: usize,
}

/// Where the run is in its data: the epoch and the next batch of that epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Index of the next batch within the epoch.
    pub batch: usize,
}

/// One micro-batch, ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// `(2·pairs, sequence)` u32: the chosen rows, then the rejected rows, right-padded.
    pub input_ids: Tensor,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// `(pairs,)` f32.
    pub margins: Tensor,
    /// Pairs in the batch.
    pub pairs: usize,
    /// Real tokens in the batch (both sides).
    pub tokens: u64,
}

/// Mixed into the seed for the held-out split, so it does not follow epoch 0's order.
const HELD_OUT_SALT: u64 = 0x5eed_0000_4e1d_0000;

/// The ordered (better, worse, margin) completions of a record: chosen > rejected, or with an edit
/// edited > chosen, edited > rejected, chosen > rejected.
#[must_use]
pub fn expand(record: &PreferenceRecord) -> Vec<(&[Message], &[Message], f64)> {
    let margin = record_margin(record);
    let (chosen, rejected) = (record.chosen.as_slice(), record.rejected.as_slice());
    match record.edited.as_deref() {
        None => vec![(chosen, rejected, margin)],
        Some(edited) => vec![
            (edited, chosen, 0.0),
            (edited, rejected, margin),
            (chosen, rejected, margin),
        ],
    }
}

/// The record's margin: its `margin`, else its strength's, else 0.
#[must_use]
pub fn record_margin(record: &PreferenceRecord) -> f64 {
    record
        .margin
        .or_else(|| record.strength.map(Strength::margin))
        .unwrap_or(0.0)
}

/// Whether the strength filter keeps `record`: an empty filter keeps all, and a record without a
/// strength is always kept.
#[must_use]
pub fn keeps(strengths: &[Strength], record: &PreferenceRecord) -> bool {
    strengths.is_empty()
        || record
            .strength
            .is_none_or(|strength| strengths.contains(&strength))
}

/// Reads, filters and tokenizes the training and held-out preferences.
pub fn load(
    config: &DataConfig,
    renderer: &Renderer<'_>,
    seed: u64,
) -> Result<RewardData, RewardError> {
    let mut data = RewardData::default();
    let mut train = Vec::new();
    for file in &config.train {
        train.extend(read_records(file, config, renderer, &mut data)?);
    }
    if config.held_out.is_empty() {
        if !(0.0..1.0).contains(&config.held_out_fraction) {
            return Err(RewardError::Config(format!(
                "data.held_out_fraction = {} must be in [0, 1)",
                config.held_out_fraction
            )));
        }
        // A seeded shuffle of the records, then the first fraction is held out.
        let order = Rng::from_seed(seed ^ HELD_OUT_SALT).permutation(train.len());
        let held_out_count = (config.held_out_fraction * train.len() as f64).round() as usize;
        let mut slots: Vec<Option<Vec<PreferencePair>>> = train.into_iter().map(Some).collect();
        for (rank, index) in order.into_iter().enumerate() {
            if let Some(pairs) = slots[index].take() {
                if rank < held_out_count {
                    data.held_out.extend(pairs);
                } else {
                    data.train.extend(pairs);
                }
            }
        }
    } else {
        data.train = train.into_iter().flatten().collect();
        for file in &config.held_out {
            let records = read_records(file, config, renderer, &mut data)?;
            data.held_out.extend(records.into_iter().flatten());
        }
    }
    if data.train.is_empty() {
        return Err(RewardError::Config(
            "no training pairs left (check data.train, data.strengths and the skipped lines)"
                .to_owned(),
        ));
    }
    Ok(data)
}

/// The pairs of every kept record of `file`, one group per record.
fn read_records(
    file: &Path,
    config: &DataConfig,
    renderer: &Renderer<'_>,
    data: &mut RewardData,
) -> Result<Vec<Vec<PreferencePair>>, RewardError> {
    let strengths: Vec<Strength> = config.strengths.iter().map(|&s| s.into()).collect();
    let mut groups = Vec::new();
    for outcome in read_preferences(file, renderer, Some(config.sequence_length)) {
        match outcome {
            Ok(Tokenized { record, pairs, .. }) => {
                if keeps(&strengths, &record) {
                    groups.push(pairs);
                } else {
                    data.filtered += 1;
                }
            }
            Err(reason) if config.skip_invalid => data.skipped.push(reason),
            Err(reason) => return Err(RewardError::Data(reason)),
        }
    }
    Ok(groups)
}

/// A preference record of a file with its pairs.
#[derive(Debug)]
pub struct Tokenized {
    /// The 1-based line.
    pub line: usize,
    /// The record.
    pub record: PreferenceRecord,
    /// Its pairs, as [`expand`] orders them.
    pub pairs: Vec<PreferencePair>,
}

/// Every line of a preference file, tokenized, or the reason it cannot be used (`file:line: ...`):
/// a conversation record, invalid JSON or fields, or (with `max_length`) a side over the limit.
/// An unreadable file is one error.
#[must_use]
pub fn read_preferences<'a>(
    file: &Path,
    renderer: &'a Renderer<'_>,
    max_length: Option<usize>,
) -> Box<dyn Iterator<Item = Result<Tokenized, String>> + 'a> {
    let name = file.display().to_string();
    let lines = match JsonlLines::open(&name) {
        Ok(lines) => lines,
        Err(error) => return Box::new(std::iter::once(Err(error.to_string()))),
    };
    Box::new(lines.records().map(move |item| {
        let (line, record) = item.map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let Record::Preference(record) = record else {
            return Err(format!(
                "{name}:{line}: a conversation record; reward models read preference records \
                 ({{\"prompt\", \"chosen\", \"rejected\"}})"
            ));
        };
        let mut pairs = Vec::new();
        for (better, worse, margin) in expand(&record) {
            let encode = |completion: &[Message]| -> Result<Vec<u32>, String> {
                let dialogue = record
                    .full_dialogue(completion)
                    .map_err(|problems| format!("{name}:{line}: {}", join_problems(&problems)))?;
                let ids = renderer
                    .render(&dialogue, false)
                    .map_err(|error| format!("{name}:{line}: {error}"))?
                    .ids;
                match max_length {
                    Some(limit) if ids.len() > limit => Err(format!(
                        "{name}:{line}: a response is {} tokens with its prompt, longer than \
                         data.sequence_length = {limit}",
                        ids.len()
                    )),
                    _ => Ok(ids),
                }
            };
            pairs.push(PreferencePair {
                chosen: encode(better)?,
                rejected: encode(worse)?,
                margin: margin as f32,
            });
        }
        Ok(Tokenized {
            line,
            record,
            pairs,
        })
    }))
}

/// The batches of one epoch (indices into the pairs), in the order the epoch's seed gives.
#[must_use]
pub fn epoch_batches(pairs: usize, epoch: u64, seed: u64, batch_size: usize) -> Vec<Vec<usize>> {
    let order = Rng::from_seed(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)).permutation(pairs);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// The chosen rows then the rejected rows of `pairs`, right-padded with `pad_id`.
pub fn to_batch(
    pairs: &[&PreferencePair],
    pad_id: u32,
    device: &Device,
) -> Result<Batch, RewardError> {
    let rows: Vec<&[u32]> = pairs
        .iter()
        .map(|pair| pair.chosen.as_slice())
        .chain(pairs.iter().map(|pair| pair.rejected.as_slice()))
        .collect();
    let (input_ids, lengths) = right_pad(&rows, pad_id, device)?;
    let margins: Vec<f32> = pairs.iter().map(|pair| pair.margin).collect();
    Ok(Batch {
        input_ids,
        tokens: lengths.iter().sum::<usize>() as u64,
        lengths,
        margins: Tensor::new(margins, device)?,
        pairs: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(value: &serde_json::Value) -> PreferenceRecord {
        match Record::from_json(value).unwrap() {
            Record::Preference(record) => record,
            Record::Conversation(_) => panic!("not a preference"),
        }
    }

    fn answer(text: &str) -> serde_json::Value {
        json!([{"role": "assistant", "content": text}])
    }

    fn text(messages: &[Message]) -> String {
        serde_json::to_string(&messages[0]).unwrap()
    }

    #[test]
    fn an_edit_expands_to_three_ordered_pairs() {
        let plain = record(&json!({
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": answer("c"), "rejected": answer("r"), "strength": "better",
        }));
        let pairs = expand(&plain);
        assert_eq!(pairs.len(), 1);
        assert!(text(pairs[0].0).contains("\"c\"") && text(pairs[0].1).contains("\"r\""));
        assert!(
            (pairs[0].2 - 2.0 / 3.0).abs() < 1e-12,
            "the strength's margin"
        );

        let edited = record(&json!({
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": answer("c"), "rejected": answer("r"), "edited": answer("e"),
            "margin": 0.5,
        }));
        let order: Vec<(String, String, f64)> = expand(&edited)
            .into_iter()
            .map(|(better, worse, margin)| (text(better), text(worse), margin))
            .collect();
        let names: Vec<(bool, bool)> = order
            .iter()
            .map(|(better, worse, _)| (better.contains("\"e\""), worse.contains("\"r\"")))
            .collect();
        // edited > chosen, edited > rejected, chosen > rejected.
        assert_eq!(names, [(true, false), (true, true), (false, true)]);
        assert!(order[1].1.contains("\"r\"") && order[0].1.contains("\"c\""));
        let margins: Vec<f64> = order.iter().map(|pair| pair.2).collect();
        assert_eq!(margins, [0.0, 0.5, 0.5]);
    }

    #[test]
    fn the_strength_filter_keeps_unlabelled_records() {
        let with = |strength: Option<&str>| {
            let mut value = json!({
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": answer("c"), "rejected": answer("r"),
            });
            if let Some(strength) = strength {
                value["strength"] = json!(strength);
            }
            record(&value)
        };
        let llama3 = [Strength::SignificantlyBetter, Strength::Better];
        assert!(keeps(&llama3, &with(Some("better"))));
        assert!(!keeps(&llama3, &with(Some("slightly_better"))));
        assert!(!keeps(&llama3, &with(Some("marginally_better"))));
        assert!(
            keeps(&llama3, &with(None)),
            "synthetic pairs have no strength"
        );
        assert!(keeps(&[], &with(Some("marginally_better"))));
        assert!((record_margin(&with(None))).abs() < 1e-12);
    }

    #[test]
    fn epochs_are_permutations_fixed_by_seed_and_epoch() {
        let first = epoch_batches(10, 0, 3, 4);
        assert_eq!(first, epoch_batches(10, 0, 3, 4));
        assert_ne!(first, epoch_batches(10, 1, 3, 4));
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = first.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_is_chosen_rows_then_rejected_rows() {
        let pair = |chosen: Vec<u32>, rejected: Vec<u32>| PreferencePair {
            chosen,
            rejected,
            margin: 1.0,
        };
        let (a, b) = (pair(vec![1, 2, 3], vec![4]), pair(vec![5], vec![6, 7]));
        let batch = to_batch(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(
            batch.input_ids.to_vec2::<u32>().unwrap(),
            [[1, 2, 3], [5, 0, 0], [4, 0, 0], [6, 7, 0]]
        );
        assert_eq!(batch.lengths, [3, 1, 1, 2]);
        assert_eq!((batch.pairs, batch.tokens), (2, 7));
    }
}
