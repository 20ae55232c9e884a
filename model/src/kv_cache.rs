//! The key/value cache of incremental decoding: every layer's keys (after `RoPE`) and values of the
//! tokens seen so far, so that a step over new tokens computes only their queries, keys and values.
//!
//! Layout: rows of different prompt lengths are **left-padded** to a common length, so every row's
//! next token goes into the same slot and one `(batch, 1)` step serves the whole batch. Row `r`
//! has `padding[r]` padding slots first; its real token in slot `s` has `RoPE` position
//! `s - padding[r]`, so a padded row computes exactly what the same prompt alone computes (the
//! padding keys are masked out with `-inf`, which contributes exact zeros to the softmax). A
//! padding query sees only itself, as in [`crate::positions`], which keeps its softmax finite.
//!
//! Keys and values are stored per key/value head, before `repeat_kv`: `(batch, kv_heads, slots,
//! head_dim)`. Each step appends with `Tensor::cat` (a copy of the cache per step, as
//! candle-transformers' llama does); a preallocated cache is the optimisation to make when decoding
//! speed matters.
//!
//! For rejection sampling (Llama 3 paper §4.2.2: K samples per prompt), [`KvCache::repeat`] turns
//! one prompt's cache into K rows without recomputing the prompt, and [`KvCache::select_rows`]
//! drops rows that have finished.

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::ops::attention::{AttentionLayout, PADDING};

/// One layer's cached keys and values, `(batch, kv_heads, slots, head_dim)` each.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    key_value: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Appends `key`/`value` of the new tokens, `(batch, kv_heads, new, head_dim)`, and returns the
    /// keys and values of every slot, old then new.
    pub fn append(&mut self, key: &Tensor, value: &Tensor) -> Result<(Tensor, Tensor)> {
        let (key, value) = match &self.key_value {
            None => (key.clone(), value.clone()),
            Some((cached_key, cached_value)) => (
                Tensor::cat(&[cached_key, key], 2)?,
                Tensor::cat(&[cached_value, value], 2)?,
            ),
        };
        self.key_value = Some((key.clone(), value.clone()));
        Ok((key, value))
    }

    fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let key_value = match &self.key_value {
            None => None,
            Some((key, value)) => Some((f(key)?, f(value)?)),
        };
        Ok(Self { key_value })
    }
}

/// Every layer's [`LayerCache`] plus where each row's padding ends.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    /// Per row: the number of left-padding slots before its first real token.
    padding: Vec<usize>,
    /// Slots filled so far (padding included), the same for every row.
    length: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers and one row per entry of `padding`, each row's first
    /// `padding[r]` slots to be filled with padding.
    #[must_use]
    pub fn new(num_layers: usize, padding: Vec<usize>) -> Self {
        Self {
            layers: vec![LayerCache::default(); num_layers],
            padding,
            length: 0,
        }
    }

    /// Rows in the batch.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.padding.len()
    }

    /// Slots filled so far, padding included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.length
    }

    /// Whether no token has been cached yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Per row, the number of left-padding slots.
    #[must_use]
    pub fn padding(&self) -> &[usize] {
        &self.padding
    }

    /// The cache of layer `index`, for the attention of that layer.
    pub(crate) fn layer_mut(&mut self, index: usize) -> &mut LayerCache {
        &mut self.layers[index]
    }

    /// The layer count the cache was made for.
    #[must_use]
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// `RoPE` position of each of `new` tokens about to be appended, `(batch * new)` row-major;
    /// padding slots get position 0.
    #[must_use]
    pub fn position_ids(&self, new: usize) -> Vec<u32> {
        self.padding
            .iter()
            .flat_map(|&padding| {
                (self.length..self.length + new)
                    .map(move |slot| slot.saturating_sub(padding) as u32)
            })
            .collect()
    }

    /// The attention layout of `new` tokens about to be appended: `len + new` key slots per row,
    /// the row's left padding as [`PADDING`] and every real slot one document, so the query in
    /// slot `q` sees key slot `k` when `k <= q` and `k` is not padding; a padding query sees only
    /// itself.
    pub fn attention_layout(&self, new: usize) -> Result<AttentionLayout> {
        let total = self.length + new;
        let documents = self
            .padding
            .iter()
            .flat_map(|&padding| {
                (0..total).map(move |slot| if slot < padding { PADDING } else { 0 })
            })
            .collect();
        AttentionLayout::new(self.batch_size(), total, documents)
    }

    /// Records that `new` slots were appended to every layer.
    pub(crate) fn advance(&mut self, new: usize) {
        self.length += new;
    }

    /// Each row repeated `times` times in place: row `r` becomes rows `r * times .. (r + 1) *
    /// times`. K samples of one prompt share its prefill this way.
    pub fn repeat(&self, times: usize) -> Result<Self> {
        if times == 0 {
            return Err(ModelError::Generation(
                "cannot repeat a KV cache 0 times".to_owned(),
            ));
        }
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer.map(|x| {
                    let (batch, heads, slots, head_dim) = x.dims4()?;
                    // (batch, heads, slots, head_dim) -> (batch, times, heads, slots, head_dim)
                    //   -> (batch * times, heads, slots, head_dim)
                    Ok(x.unsqueeze(1)?
                        .broadcast_as((batch, times, heads, slots, head_dim))?
                        .contiguous()?
                        .reshape((batch * times, heads, slots, head_dim))?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let padding = self
            .padding
            .iter()
            .flat_map(|&padding| std::iter::repeat_n(padding, times))
            .collect();
        Ok(Self {
            layers,
            padding,
            length: self.length,
        })
    }

    /// Only the rows `rows` (in that order), e.g. to stop computing rows that finished.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Self> {
        if let Some(&bad) = rows.iter().find(|&&row| row >= self.batch_size()) {
            return Err(ModelError::Generation(format!(
                "row {bad} selected from a KV cache of {} rows",
                self.batch_size()
            )));
        }
        let padding = rows.iter().map(|&row| self.padding[row]).collect();
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer.map(|x| {
                    let index = Tensor::from_iter(rows.iter().map(|&row| row as u32), x.device())?;
                    Ok(x.index_select(&index, 0)?)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            padding,
            length: self.length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_shifts_positions_and_hides_padding_keys() {
        let mut cache = KvCache::new(1, vec![0, 2]);
        assert_eq!(cache.position_ids(3), [0, 1, 2, 0, 0, 0]);
        let layout = cache.attention_layout(3).unwrap();
        // (batch * new) queries, each over the 3 key slots.
        let seen: Vec<Vec<bool>> = (0..2)
            .flat_map(|row| (0..3).map(move |query| (row, query)))
            .map(|(row, query)| {
                (0..3)
                    .map(|key| layout.may_attend(row, query, key))
                    .collect()
            })
            .collect();
        assert_eq!(seen[2], [true, true, true]);
        // Row 1: slots 0 and 1 are padding and see only themselves; slot 2 sees only itself.
        assert_eq!(seen[3], [true, false, false]);
        assert_eq!(seen[4], [false, true, false]);
        assert_eq!(seen[5], [false, false, true]);
        cache.advance(3);
        assert_eq!(cache.position_ids(1), [3, 1]);
    }
}
