//! Where each token of a batch sits: its `RoPE` position and the tokens it may attend to.
//!
//! Three layouts cover herd's batches: plain causal; right padding (an attention mask of 1s then
//! 0s, as `datasets::packing::PaddedBatch` makes); and packed documents (position ids that restart
//! per document plus `cu_seqlens`-style `document_boundaries`, as `datasets::packing::pack` makes),
//! which Llama 3 uses so "self-attention between different documents" never happens (Llama 3
//! paper, §3.2). All three reduce to one rule: query `i` sees key `j` when `j <= i` and both belong
//! to the same document; padding belongs to no document and sees only itself, which keeps its
//! softmax finite without affecting real tokens.

use crate::error::{ModelError, Result};
use crate::ops::attention::{AttentionLayout, PADDING};

/// Position ids and document membership of every token of a `(batch, seq)` batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions {
    batch_size: usize,
    sequence_length: usize,
    /// `(batch * seq)`, row-major.
    position_ids: Vec<u32>,
    /// `(batch * seq)`: the document of each token; `None` for padding.
    documents: Vec<Option<u32>>,
}

impl Positions {
    /// Every row one causal document with positions `0..sequence_length`.
    #[must_use]
    pub fn causal(batch_size: usize, sequence_length: usize) -> Self {
        let row: Vec<u32> = (0..sequence_length as u32).collect();
        Self {
            batch_size,
            sequence_length,
            position_ids: row.repeat(batch_size),
            documents: vec![Some(0); batch_size * sequence_length],
        }
    }

    /// Right-padded rows: `attention_mask[row]` is 1 on real tokens, then 0 on padding.
    pub fn right_padded(attention_mask: &[Vec<u8>]) -> Result<Self> {
        let sequence_length = attention_mask.first().map_or(0, Vec::len);
        let mut documents = Vec::with_capacity(attention_mask.len() * sequence_length);
        for (row, mask) in attention_mask.iter().enumerate() {
            if mask.len() != sequence_length {
                return Err(ModelError::Positions(format!(
                    "attention_mask row {row} has {} tokens, row 0 has {sequence_length}",
                    mask.len()
                )));
            }
            let length = mask.iter().take_while(|&&m| m == 1).count();
            if let Some(bad) = mask[length..].iter().position(|&m| m != 0) {
                return Err(ModelError::Positions(format!(
                    "attention_mask row {row} is not 1s then 0s: value {} at token {}",
                    mask[length + bad],
                    length + bad
                )));
            }
            documents.extend((0..sequence_length).map(|t| (t < length).then_some(0)));
        }
        let mut positions = Self::causal(attention_mask.len(), sequence_length);
        positions.documents = documents;
        Ok(positions)
    }

    /// Packed rows: `position_ids[row]` per token, and `document_boundaries[row]` the start of each
    /// document followed by the end of the last one (`cu_seqlens`); tokens after it are padding.
    pub fn packed(position_ids: &[Vec<u32>], document_boundaries: &[Vec<u32>]) -> Result<Self> {
        if position_ids.len() != document_boundaries.len() {
            return Err(ModelError::Positions(format!(
                "{} rows of position_ids but {} of document_boundaries",
                position_ids.len(),
                document_boundaries.len()
            )));
        }
        let sequence_length = position_ids.first().map_or(0, Vec::len);
        let mut documents = Vec::with_capacity(position_ids.len() * sequence_length);
        for (row, (ids, boundaries)) in position_ids.iter().zip(document_boundaries).enumerate() {
            if ids.len() != sequence_length {
                return Err(ModelError::Positions(format!(
                    "position_ids row {row} has {} tokens, row 0 has {sequence_length}",
                    ids.len()
                )));
            }
            let ordered = boundaries.first() == Some(&0)
                && boundaries.windows(2).all(|pair| pair[0] < pair[1])
                && boundaries
                    .last()
                    .is_some_and(|&end| end as usize <= sequence_length);
            if !ordered {
                return Err(ModelError::Positions(format!(
                    "document_boundaries row {row} = {boundaries:?} must rise strictly from 0 to at \
                     most {sequence_length}"
                )));
            }
            let mut row_documents = vec![None; sequence_length];
            for (document, pair) in boundaries.windows(2).enumerate() {
                for slot in &mut row_documents[pair[0] as usize..pair[1] as usize] {
                    *slot = Some(document as u32);
                }
            }
            documents.extend(row_documents);
        }
        Ok(Self {
            batch_size: position_ids.len(),
            sequence_length,
            position_ids: position_ids.concat(),
            documents,
        })
    }

    /// Rows in the batch.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Tokens per row.
    #[must_use]
    pub fn sequence_length(&self) -> usize {
        self.sequence_length
    }

    /// The `RoPE` position of every token, `(batch * seq)` row-major.
    #[must_use]
    pub fn position_ids(&self) -> &[u32] {
        &self.position_ids
    }

    /// Whether query token `query` may attend to key token `key` of row `row`.
    #[must_use]
    pub fn may_attend(&self, row: usize, query: usize, key: usize) -> bool {
        let base = row * self.sequence_length;
        let query_document = self.documents[base + query];
        query == key
            || (key < query
                && query_document.is_some()
                && query_document == self.documents[base + key])
    }

    /// The layout the attention op takes: each token's document, padding as
    /// [`crate::ops::attention::PADDING`]; keys and queries are the same `seq` tokens. Never a
    /// dense mask: the fused attention reads the documents directly.
    pub fn attention_layout(&self) -> Result<AttentionLayout> {
        let documents = self
            .documents
            .iter()
            .map(|document| document.unwrap_or(PADDING))
            .collect();
        AttentionLayout::new(self.batch_size, self.sequence_length, documents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_documents_see_only_themselves() {
        let positions = Positions::packed(&[vec![0, 1, 2, 0, 1, 0]], &[vec![0, 3, 5]]).unwrap();
        let seen: Vec<Vec<bool>> = (0..6)
            .map(|q| (0..6).map(|k| positions.may_attend(0, q, k)).collect())
            .collect();
        assert_eq!(seen[2], [true, true, true, false, false, false]);
        assert_eq!(seen[4], [false, false, false, true, true, false]);
        // The padding token sees only itself.
        assert_eq!(seen[5], [false, false, false, false, false, true]);
    }

    #[test]
    fn right_padding_hides_padding_keys() {
        let positions = Positions::right_padded(&[vec![1, 1, 1], vec![1, 0, 0]]).unwrap();
        assert!(positions.may_attend(0, 2, 1));
        assert!(!positions.may_attend(1, 2, 0));
        assert!(positions.may_attend(1, 2, 2));
        assert_eq!(positions.position_ids(), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn malformed_layouts_are_rejected_with_the_row() {
        let error = Positions::right_padded(&[vec![1, 0, 1]]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("row 0 is not 1s then 0s: value 1 at token 2")
        );
        let error = Positions::packed(&[vec![0, 1]], &[vec![0, 3]]).unwrap_err();
        assert!(error.to_string().contains("[0, 3]"));
    }
}
