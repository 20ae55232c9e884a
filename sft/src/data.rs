//! Conversations → tokenized examples → batches.
//!
//! Each conversation is rendered once with the SFT mask (`datasets::encode`). Batches are rebuilt
//! per epoch from a permutation seeded by (run seed, epoch), so a resumed run needs only
//! (epoch, batch index) to continue exactly where it stopped. Packed rows go through
//! `datasets::packing` (document boundaries, restarting positions) into `Positions::packed`; padded
//! rows through `datasets::packing::pad` into `Positions::right_padded`.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use datasets::encode::encode_dialogue;
use datasets::jsonl::JsonlLines;
use datasets::packing::{Example, pack, pad};
use datasets::records::Record;
use datasets::render::Renderer;
use model::Positions;
use serde::{Deserialize, Serialize};
use training::Rng;

use crate::config::{DataConfig, Layout};
use crate::error::SftError;

/// The tokenized conversations.
#[derive(Debug, Clone, Default)]
pub struct SftData {
    /// Training examples.
    pub train: Vec<Example>,
    /// Held-out examples.
    pub held_out: Vec<Example>,
    /// Lines skipped with `skip_invalid`, each with its reason (`file:line: ...`).
    pub skipped: Vec<String>,
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
    /// `(rows, sequence)` u32.
    pub input_ids: Tensor,
    /// `(rows, sequence)` u8: 1 on trained tokens.
    pub mask: Tensor,
    /// The attention layout.
    pub positions: Positions,
}

/// Mixed into the seed for the held-out split, so it does not follow epoch 0's order.
const HELD_OUT_SALT: u64 = 0x5eed_0000_4e1d_0000;

/// Reads, validates and tokenizes the training and held-out conversations.
pub fn load(config: &DataConfig, renderer: &Renderer<'_>, seed: u64) -> Result<SftData, SftError> {
    let mut data = SftData::default();
    let mut train = Vec::new();
    for file in &config.train {
        train.extend(read_examples(file, config, renderer, &mut data.skipped)?);
    }
    if config.held_out.is_empty() {
        if !(0.0..1.0).contains(&config.held_out_fraction) {
            return Err(SftError::Config(format!(
                "data.held_out_fraction = {} must be in [0, 1)",
                config.held_out_fraction
            )));
        }
        // A seeded shuffle, then the first fraction is held out.
        let order = Rng::from_seed(seed ^ HELD_OUT_SALT).permutation(train.len());
        let held_out_count = (config.held_out_fraction * train.len() as f64).round() as usize;
        let mut slots: Vec<Option<Example>> = train.into_iter().map(Some).collect();
        for (rank, index) in order.into_iter().enumerate() {
            if let Some(example) = slots[index].take() {
                if rank < held_out_count {
                    data.held_out.push(example);
                } else {
                    data.train.push(example);
                }
            }
        }
    } else {
        data.train = train;
        for file in &config.held_out {
            let examples = read_examples(file, config, renderer, &mut data.skipped)?;
            data.held_out.extend(examples);
        }
    }
    if data.train.is_empty() {
        return Err(SftError::Config(
            "no training conversations left (check data.train and the skipped lines)".to_owned(),
        ));
    }
    Ok(data)
}

fn read_examples(
    file: &Path,
    config: &DataConfig,
    renderer: &Renderer<'_>,
    skipped: &mut Vec<String>,
) -> Result<Vec<Example>, SftError> {
    let name = file.display().to_string();
    let lines = JsonlLines::open(&name).map_err(|error| SftError::Data(error.to_string()))?;
    let mut examples = Vec::new();
    for item in lines.records() {
        let outcome = match item {
            Err(problems) => Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")),
            Ok((line, Record::Preference(_))) => Err(format!(
                "{name}:{line}: a preference record; SFT reads conversations ({{\"messages\": [...]}})"
            )),
            Ok((line, Record::Conversation(conversation))) => {
                let sequence = encode_dialogue(
                    renderer,
                    &conversation.dialogue,
                    config.train_on.into(),
                    false,
                )
                .map_err(|error| SftError::Data(format!("{name}:{line}: {error}")))?;
                if sequence.len() > config.sequence_length {
                    Err(format!(
                        "{name}:{line}: {} tokens, longer than data.sequence_length = {}",
                        sequence.len(),
                        config.sequence_length
                    ))
                } else if sequence.trained_tokens() == 0 {
                    Err(format!("{name}:{line}: no assistant token to train on"))
                } else {
                    Ok(Example {
                        ids: sequence.ids,
                        mask: sequence.mask,
                    })
                }
            }
        };
        match outcome {
            Ok(example) => examples.push(example),
            Err(reason) if config.skip_invalid => skipped.push(reason),
            Err(reason) => return Err(SftError::Data(reason)),
        }
    }
    Ok(examples)
}

/// The batches of one epoch, in the order the epoch's seed gives.
pub fn epoch_batches(
    examples: &[Example],
    epoch: u64,
    seed: u64,
    config: &DataConfig,
    batch_size: usize,
    pad_id: u32,
) -> Result<Vec<Vec<Example>>, SftError> {
    let order = Rng::from_seed(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .permutation(examples.len());
    let ordered: Vec<Example> = order
        .into_iter()
        .map(|index| examples[index].clone())
        .collect();
    let rows: Vec<Example> = match config.layout {
        Layout::Padded => ordered,
        // A packed row is kept as one Example; its layout is re-derived when it becomes a batch.
        Layout::Packed => pack(&ordered, config.sequence_length, pad_id)
            .map_err(|error| SftError::Data(error.to_string()))?
            .into_iter()
            .map(|packed| Example {
                ids: packed.ids,
                mask: packed.mask,
            })
            .collect(),
    };
    Ok(rows
        .chunks(batch_size.max(1))
        .map(<[Example]>::to_vec)
        .collect())
}

/// Turns rows into tensors and the attention layout. Packed rows are re-split into documents at
/// each `<|begin_of_text|>`; padded rows are right-padded with `pad_id`.
pub fn to_batch(
    rows: &[Example],
    layout: Layout,
    begin_of_text: u32,
    pad_id: u32,
    device: &Device,
) -> Result<Batch, SftError> {
    let (ids, mask, positions) = match layout {
        Layout::Padded => {
            let padded =
                pad(rows, None, pad_id).map_err(|error| SftError::Data(error.to_string()))?;
            let positions = Positions::right_padded(&padded.attention_mask)?;
            (padded.ids, padded.mask, positions)
        }
        Layout::Packed => {
            let mut position_ids = Vec::with_capacity(rows.len());
            let mut boundaries = Vec::with_capacity(rows.len());
            for row in rows {
                let (positions, row_boundaries) = document_layout(&row.ids, begin_of_text, pad_id);
                position_ids.push(positions);
                boundaries.push(row_boundaries);
            }
            let positions = Positions::packed(&position_ids, &boundaries)?;
            (
                rows.iter().map(|row| row.ids.clone()).collect(),
                rows.iter().map(|row| row.mask.clone()).collect(),
                positions,
            )
        }
    };
    let input_ids = Tensor::new(ids, device)?;
    let mask = Tensor::new(mask, device)?;
    Ok(Batch {
        input_ids,
        mask,
        positions,
    })
}

/// Position ids restarting at every `<|begin_of_text|>`, and the document boundaries
/// (cumulative offsets) up to the trailing padding.
fn document_layout(ids: &[u32], begin_of_text: u32, pad_id: u32) -> (Vec<u32>, Vec<u32>) {
    let content = ids.len() - ids.iter().rev().take_while(|&&id| id == pad_id).count();
    let mut positions = Vec::with_capacity(ids.len());
    let mut boundaries = vec![0u32];
    let mut position = 0u32;
    for (index, &id) in ids[..content].iter().enumerate() {
        if id == begin_of_text && index > 0 {
            boundaries.push(index as u32);
            position = 0;
        }
        positions.push(position);
        position += 1;
    }
    boundaries.push(content as u32);
    positions.extend(0..(ids.len() - content) as u32);
    (positions, boundaries)
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

    #[test]
    fn documents_are_found_at_each_begin_of_text() {
        let (positions, boundaries) = document_layout(&[9, 5, 6, 9, 7, 0, 0], 9, 0);
        assert_eq!(positions, [0, 1, 2, 0, 1, 0, 1]);
        assert_eq!(boundaries, [0, 3, 5]);
    }
}
