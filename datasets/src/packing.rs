//! Packing tokenized examples into fixed-length sequences, or padding them.
//!
//! Llama 3 pretrains with "an attention mask that prevents self-attention between different
//! documents within the same sequence"; herd packs the same way for SFT: each pack records where
//! its documents start (cumulative lengths, as varlen attention kernels take them) and position ids
//! that restart at 0 for every document, so a document attends only to itself and sees the same
//! positions it would see alone. Padding uses `<|finetune_right_pad_id|>` — never an end token,
//! which would teach the model to stop (TRL issue reports in `shared/research/posttrain.md`).
//!
//! Packing is greedy in input order (torchtune's `PackedDataset` does the same): deterministic, and
//! an example never moves far from its neighbours, so resuming by position stays meaningful.

use serde::Serialize;

/// One example to pack: ids and the loss mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Loss mask, one 0/1 per id.
    pub mask: Vec<u8>,
}

/// A packed sequence of exactly `sequence_length` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackedSequence {
    /// Token ids, padded at the end.
    pub ids: Vec<u32>,
    /// Loss mask; 0 on padding.
    pub mask: Vec<u8>,
    /// Position of each token inside its own document.
    pub position_ids: Vec<u32>,
    /// Start offset of each document, then the end of the last one (`cu_seqlens`); padding is not a
    /// document.
    pub document_boundaries: Vec<u32>,
    /// Padding tokens at the end.
    pub padding: usize,
}

impl PackedSequence {
    /// The document each token belongs to (`None` for padding): two tokens may attend to each
    /// other only when this is equal and `Some`.
    #[must_use]
    pub fn document_of(&self, position: usize) -> Option<usize> {
        let end = *self.document_boundaries.last()? as usize;
        if position >= end {
            return None;
        }
        Some(
            self.document_boundaries
                .partition_point(|&start| start as usize <= position)
                - 1,
        )
    }
}

/// Why examples could not be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackingError {
    /// An example does not fit in one sequence (herd never truncates silently).
    #[error(
        "example {index} is {length} tokens, longer than the sequence length {sequence_length}"
    )]
    TooLong {
        /// The example's index in the input.
        index: usize,
        /// Its length.
        length: usize,
        /// The sequence length.
        sequence_length: usize,
    },
    /// The ids and mask of an example differ in length.
    #[error("example {index} has {ids} ids but {mask} mask values")]
    MaskLength {
        /// The example's index.
        index: usize,
        /// Number of ids.
        ids: usize,
        /// Number of mask values.
        mask: usize,
    },
    /// An example has no tokens.
    #[error("example {index} is empty")]
    Empty {
        /// The example's index.
        index: usize,
    },
}

fn check(index: usize, example: &Example, limit: usize) -> Result<(), PackingError> {
    if example.ids.len() != example.mask.len() {
        return Err(PackingError::MaskLength {
            index,
            ids: example.ids.len(),
            mask: example.mask.len(),
        });
    }
    if example.ids.is_empty() {
        return Err(PackingError::Empty { index });
    }
    if example.ids.len() > limit {
        return Err(PackingError::TooLong {
            index,
            length: example.ids.len(),
            sequence_length: limit,
        });
    }
    Ok(())
}

/// Packs `examples` in order into sequences of `sequence_length` tokens, padding each with `pad_id`.
pub fn pack(
    examples: &[Example],
    sequence_length: usize,
    pad_id: u32,
) -> Result<Vec<PackedSequence>, PackingError> {
    let mut packs = Vec::new();
    let mut current = empty_pack(sequence_length);
    for (index, example) in examples.iter().enumerate() {
        check(index, example, sequence_length)?;
        if current.ids.len() + example.ids.len() > sequence_length {
            packs.push(finish(current, sequence_length, pad_id));
            current = empty_pack(sequence_length);
        }
        current.ids.extend_from_slice(&example.ids);
        current.mask.extend_from_slice(&example.mask);
        current.position_ids.extend(0..example.ids.len() as u32);
        current.document_boundaries.push(current.ids.len() as u32);
    }
    if !current.ids.is_empty() {
        packs.push(finish(current, sequence_length, pad_id));
    }
    Ok(packs)
}

fn empty_pack(sequence_length: usize) -> PackedSequence {
    PackedSequence {
        ids: Vec::with_capacity(sequence_length),
        mask: Vec::with_capacity(sequence_length),
        position_ids: Vec::with_capacity(sequence_length),
        document_boundaries: vec![0],
        padding: 0,
    }
}

fn finish(mut pack: PackedSequence, sequence_length: usize, pad_id: u32) -> PackedSequence {
    let padding = sequence_length - pack.ids.len();
    pack.ids.resize(sequence_length, pad_id);
    pack.mask.resize(sequence_length, 0);
    // Padding positions continue from 0 so they stay within any RoPE table; they attend to nothing.
    pack.position_ids.extend(0..padding as u32);
    pack.padding = padding;
    pack
}

/// A right-padded batch: every row `length` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaddedBatch {
    /// Token ids, one row per example.
    pub ids: Vec<Vec<u32>>,
    /// Loss mask; 0 on padding.
    pub mask: Vec<Vec<u8>>,
    /// Attention mask: 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<Vec<u8>>,
}

/// Right-pads each example to `length` (or to the longest example when `None`) with `pad_id`.
pub fn pad(
    examples: &[Example],
    length: Option<usize>,
    pad_id: u32,
) -> Result<PaddedBatch, PackingError> {
    let longest = examples
        .iter()
        .map(|example| example.ids.len())
        .max()
        .unwrap_or(0);
    let length = length.unwrap_or(longest);
    let mut batch = PaddedBatch {
        ids: Vec::with_capacity(examples.len()),
        mask: Vec::with_capacity(examples.len()),
        attention_mask: Vec::with_capacity(examples.len()),
    };
    for (index, example) in examples.iter().enumerate() {
        check(index, example, length)?;
        let mut ids = example.ids.clone();
        ids.resize(length, pad_id);
        let mut mask = example.mask.clone();
        mask.resize(length, 0);
        let mut attention = vec![1; example.ids.len()];
        attention.resize(length, 0);
        batch.ids.push(ids);
        batch.mask.push(mask);
        batch.attention_mask.push(attention);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(length: usize, first: u32) -> Example {
        Example {
            ids: (first..first + length as u32).collect(),
            mask: vec![1; length],
        }
    }

    #[test]
    fn packs_in_order_with_restarting_positions() {
        let examples = [
            example(3, 10),
            example(4, 20),
            example(2, 30),
            example(5, 40),
        ];
        let packs = pack(&examples, 8, 0).unwrap();
        assert_eq!(packs.len(), 2);
        assert_eq!(packs[0].ids, [10, 11, 12, 20, 21, 22, 23, 0]);
        assert_eq!(packs[0].position_ids, [0, 1, 2, 0, 1, 2, 3, 0]);
        assert_eq!(packs[0].document_boundaries, [0, 3, 7]);
        assert_eq!(packs[0].mask, [1, 1, 1, 1, 1, 1, 1, 0]);
        assert_eq!(packs[0].padding, 1);
        assert_eq!(packs[1].document_boundaries, [0, 2, 7]);
        assert_eq!(packs[1].ids, [30, 31, 40, 41, 42, 43, 44, 0]);
        assert_eq!(packs[1].position_ids, [0, 1, 0, 1, 2, 3, 4, 0]);
        assert_eq!(
            (0..8)
                .map(|position| packs[0].document_of(position))
                .collect::<Vec<_>>(),
            [
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                None
            ]
        );
    }

    #[test]
    fn every_token_is_kept_exactly_once() {
        let examples: Vec<Example> = (0..50)
            .map(|index| example(1 + index % 7, index as u32 * 100))
            .collect();
        let packs = pack(&examples, 16, u32::MAX).unwrap();
        let packed: Vec<u32> = packs
            .iter()
            .flat_map(|pack| pack.ids[..16 - pack.padding].iter().copied())
            .collect();
        let original: Vec<u32> = examples
            .iter()
            .flat_map(|example| example.ids.iter().copied())
            .collect();
        assert_eq!(packed, original);
    }

    #[test]
    fn too_long_is_an_error_not_a_truncation() {
        let error = pack(&[example(2, 0), example(9, 0)], 8, 0).unwrap_err();
        assert_eq!(
            error,
            PackingError::TooLong {
                index: 1,
                length: 9,
                sequence_length: 8
            }
        );
    }

    #[test]
    fn padding_uses_the_pad_id_and_masks_it() {
        let batch = pad(&[example(2, 5), example(3, 7)], None, 128_004).unwrap();
        assert_eq!(batch.ids, [vec![5, 6, 128_004], vec![7, 8, 9]]);
        assert_eq!(batch.mask[0], [1, 1, 0]);
        assert_eq!(batch.attention_mask[0], [1, 1, 0]);
    }
}
