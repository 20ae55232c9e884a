//! Scaled dot-product attention over an [`AttentionLayout`]: `softmax(q·kᵀ·head_dim^-0.5 + mask)·v`
//! with grouped-query heads (Ainslie et al. 2023), in two implementations.
//!
//! - [`reference`] follows transformers' eager attention (`eager_attention_forward` of
//!   `LlamaAttention`): `repeat_kv`, the scores, a dense additive bias of 0 / `-inf`
//!   ([`AttentionLayout::bias`]), softmax in f32 (`candle_nn::ops::softmax`, which has a backward;
//!   `softmax_last_dim` has none), the weighted sum of values. It is the composition herd's
//!   attention was first written with, kept as the oracle of the fused op.
//! - [`fused`] follows FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster Attention with Better
//!   Parallelism and Work Partitioning", Algorithms 1 and 2) on the CPU: the scores exist only as
//!   `QUERY_BLOCK × KEY_BLOCK` tiles, the forward keeps a running row maximum and sum (the online
//!   softmax) and the per-row log-sum-exp, and the backward recomputes each tile's probabilities
//!   from that log-sum-exp. Neither direction allocates anything of size `queries × keys`, tiles
//!   that no query of a block may see are skipped, and key/value heads are shared by index
//!   (`kv_head = head / groups`) instead of being repeated in memory.
//!
//! The mask is never a tensor argument: an [`AttentionLayout`] gives the document of every key
//! slot, and one rule ([`AttentionLayout::may_attend`]) covers plain causal rows (one document),
//! right padding, packed documents (Llama 3 paper §3.2: no attention across documents) and the
//! left-padded KV cache (whose padding slots are [`PADDING`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, D, DType, Device, Layout, Shape, Storage, Tensor};
use kernels::{Matrix, MatrixMut, ShapeError, matmul};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::ops::{Kernels, contiguous_f32};

/// Document id of a padding slot: it belongs to no document and, as a query, sees only itself
/// (which keeps its softmax finite without touching real tokens).
pub const PADDING: u32 = u32::MAX;

/// Query rows per tile. At head dim 64 a forward tile touches 32 KiB of scores, 16 KiB of queries,
/// 16 KiB of output and 64 KiB of keys and values; a backward tile about twice that — within a
/// core's L2 cache. Not tuned by measurement yet (the benchmark `ops/attention` is where to do it).
const QUERY_BLOCK: usize = 64;
/// Key rows per tile (see [`QUERY_BLOCK`]).
const KEY_BLOCK: usize = 128;

/// Which key slots each query may see, from each key slot's document: never a dense mask.
///
/// A row has `keys` slots; the queries of a forward occupy its **last** `queries` slots (query `t`
/// is slot `keys - queries + t`), so a training forward has `queries == keys` and a KV-cache step
/// has `keys = cached + new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionLayout {
    batch: usize,
    keys: usize,
    /// `(batch * keys)` row-major: the document of each slot, [`PADDING`] for padding.
    documents: Arc<[u32]>,
    /// `(batch * keys)`: the lowest key slot the slot may see as a query — the first slot of its
    /// document, itself for padding. Computed once, so the fused op finds a query block's first
    /// visible key block without scanning the keys.
    first_visible: Arc<[usize]>,
    /// `(batch * keys)`: one past the last slot of the run of consecutive slots that share this
    /// slot's document, so that a tile of one document is recognised (and left unmasked) in O(1).
    run_end: Arc<[usize]>,
}

impl AttentionLayout {
    /// A layout of `batch` rows of `keys` slots; `documents` is `(batch * keys)` row-major.
    pub fn new(batch: usize, keys: usize, documents: Vec<u32>) -> Result<Self> {
        let slots = batch.checked_mul(keys);
        if slots != Some(documents.len()) {
            return Err(ModelError::Positions(format!(
                "attention layout: {} document ids for {batch} rows of {keys} key slots (expected \
                 {})",
                documents.len(),
                slots.map_or_else(|| "more than usize::MAX".to_owned(), |n| n.to_string())
            )));
        }
        let mut first_visible = Vec::with_capacity(documents.len());
        let mut run_end = vec![0; documents.len()];
        let mut first_slot = HashMap::new();
        for row in 0..batch {
            let row_documents = &documents[row * keys..(row + 1) * keys];
            first_slot.clear();
            for (slot, &document) in row_documents.iter().enumerate() {
                first_visible.push(if document == PADDING {
                    slot
                } else {
                    *first_slot.entry(document).or_insert(slot)
                });
            }
            let mut end = keys;
            for slot in (0..keys).rev() {
                if slot + 1 < keys && row_documents[slot] != row_documents[slot + 1] {
                    end = slot + 1;
                }
                run_end[row * keys + slot] = end;
            }
        }
        Ok(Self {
            batch,
            keys,
            documents: documents.into(),
            first_visible: first_visible.into(),
            run_end: run_end.into(),
        })
    }

    /// Rows in the batch.
    #[must_use]
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Key slots per row.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Whether the query in slot `query_slot` of row `row` may see key slot `key_slot`: when they
    /// are the same slot, or when the key comes earlier and both belong to the same document (a
    /// padding query sees only itself). Panics when a slot or row is out of range.
    #[must_use]
    pub fn may_attend(&self, row: usize, query_slot: usize, key_slot: usize) -> bool {
        self.row(row).may_attend(query_slot, key_slot)
    }

    /// The dense additive bias the reference uses: `(batch, 1, queries, keys)` f32 of 0 where
    /// [`Self::may_attend`] and `-inf` elsewhere, the queries in the last `queries` slots.
    pub fn bias(&self, queries: usize, device: &Device) -> Result<Tensor> {
        if queries > self.keys {
            return Err(ModelError::Positions(format!(
                "attention layout: {queries} queries but only {} key slots per row",
                self.keys
            )));
        }
        let offset = self.keys - queries;
        let mut bias = Vec::with_capacity(self.batch * queries * self.keys);
        for row in 0..self.batch {
            let layout = self.row(row);
            for query_slot in offset..self.keys {
                bias.extend((0..self.keys).map(|key_slot| {
                    if layout.may_attend(query_slot, key_slot) {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
        Ok(Tensor::from_vec(
            bias,
            (self.batch, 1, queries, self.keys),
            device,
        )?)
    }

    /// Row `row`'s slices.
    fn row(&self, row: usize) -> RowLayout<'_> {
        let slots = row * self.keys..(row + 1) * self.keys;
        RowLayout {
            documents: &self.documents[slots.clone()],
            first_visible: &self.first_visible[slots.clone()],
            run_end: &self.run_end[slots],
        }
    }
}

/// One row of an [`AttentionLayout`].
#[derive(Debug, Clone, Copy)]
struct RowLayout<'a> {
    documents: &'a [u32],
    first_visible: &'a [usize],
    run_end: &'a [usize],
}

/// How much of a tile its queries may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visibility {
    /// Every key of the tile by every query: no mask to apply.
    Full,
    /// Some: mask entry by entry.
    Partial,
}

impl RowLayout<'_> {
    fn may_attend(&self, query_slot: usize, key_slot: usize) -> bool {
        let document = self.documents[query_slot];
        query_slot == key_slot
            || (key_slot < query_slot
                && document != PADDING
                && document == self.documents[key_slot])
    }

    /// The key blocks a block of query slots may see at all: from the block holding the lowest
    /// first-visible slot of its queries to the block holding its last query (causality).
    fn key_blocks(&self, query_slots: &std::ops::Range<usize>) -> std::ops::RangeInclusive<usize> {
        let lowest = query_slots
            .clone()
            .map(|slot| self.first_visible[slot])
            .min()
            .unwrap_or(query_slots.start);
        lowest / KEY_BLOCK..=(query_slots.end - 1) / KEY_BLOCK
    }

    /// [`Visibility::Full`] when every key precedes (or is) every query and all of them lie in one
    /// run of a single real document.
    fn visibility(
        &self,
        query_slots: &std::ops::Range<usize>,
        key_slots: &std::ops::Range<usize>,
    ) -> Visibility {
        if key_slots.end - 1 <= query_slots.start
            && self.documents[key_slots.start] != PADDING
            && self.run_end[key_slots.start] >= query_slots.end
        {
            Visibility::Full
        } else {
            Visibility::Partial
        }
    }

    /// Sets the hidden entries of a `query_slots × key_slots` row-major tile to `-inf`.
    fn mask(
        &self,
        tile: &mut [f32],
        query_slots: &std::ops::Range<usize>,
        key_slots: &std::ops::Range<usize>,
    ) {
        let columns = key_slots.len();
        for (line, query_slot) in tile.chunks_exact_mut(columns).zip(query_slots.clone()) {
            for (score, key_slot) in line.iter_mut().zip(key_slots.clone()) {
                if !self.may_attend(query_slot, key_slot) {
                    *score = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    queries: usize,
    keys: usize,
    head_dim: usize,
}

impl Geometry {
    /// Query heads per key/value head.
    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Slot of query 0.
    fn offset(&self) -> usize {
        self.keys - self.queries
    }

    /// `head_dim^-0.5`, computed as the reference computes it (in f64, applied in f32).
    fn scale(&self) -> f32 {
        (self.head_dim as f64).powf(-0.5) as f32
    }

    fn query_shape(&self) -> (usize, usize, usize, usize) {
        (self.batch, self.heads, self.queries, self.head_dim)
    }

    fn key_shape(&self) -> (usize, usize, usize, usize) {
        (self.batch, self.kv_heads, self.keys, self.head_dim)
    }

    /// Whether the output has no element (then there is nothing to compute).
    fn is_empty(&self) -> bool {
        self.batch == 0 || self.heads == 0 || self.queries == 0 || self.head_dim == 0
    }
}

/// A shape error naming the tensors.
fn shape_error(message: &str) -> ModelError {
    ModelError::Candle(candle_core::Error::msg(format!("attention: {message}")))
}

/// `tensor`'s four dimensions, or an error naming it.
fn dims4(tensor: &Tensor, name: &str) -> Result<(usize, usize, usize, usize)> {
    match *tensor.dims() {
        [a, b, c, d] => Ok((a, b, c, d)),
        _ => Err(shape_error(&format!(
            "{name} must be (batch, heads, seq, head_dim), got shape {:?}",
            tensor.dims()
        ))),
    }
}

/// Checks that the inputs fit each other and the layout.
fn geometry(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    layout: &AttentionLayout,
) -> Result<Geometry> {
    let (batch, heads, queries, head_dim) = dims4(query, "query")?;
    let (key_batch, kv_heads, keys, key_head_dim) = dims4(key, "key")?;
    dims4(value, "value")?;
    if key.dims() != value.dims() {
        return Err(shape_error(&format!(
            "key has shape {:?} but value has shape {:?}",
            key.dims(),
            value.dims()
        )));
    }
    if key_batch != batch || key_head_dim != head_dim {
        return Err(shape_error(&format!(
            "query has shape {:?} but key and value have shape {:?}: batch and head_dim must agree",
            query.dims(),
            key.dims()
        )));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(shape_error(&format!(
            "query has {heads} heads (shape {:?}), not a multiple of key/value's {kv_heads} (shape \
             {:?})",
            query.dims(),
            key.dims()
        )));
    }
    if queries > keys {
        return Err(shape_error(&format!(
            "query has {queries} positions (shape {:?}) but key only {keys} (shape {:?})",
            query.dims(),
            key.dims()
        )));
    }
    if layout.batch_size() != batch || layout.keys() != keys {
        return Err(ModelError::Positions(format!(
            "attention layout of {} rows × {} key slots for key of shape {:?}",
            layout.batch_size(),
            layout.keys(),
            key.dims()
        )));
    }
    if key.dtype() != query.dtype() || value.dtype() != query.dtype() {
        return Err(shape_error(&format!(
            "query, key and value are {:?}, {:?} and {:?}: they must share a dtype",
            query.dtype(),
            key.dtype(),
            value.dtype()
        )));
    }
    Ok(Geometry {
        batch,
        heads,
        kv_heads,
        queries,
        keys,
        head_dim,
    })
}

/// `query`: `(batch, heads, queries, head_dim)`; `key`, `value`: `(batch, kv_heads, keys,
/// head_dim)` with `heads` a multiple of `kv_heads` (query head `h` uses key/value head `h /
/// (heads / kv_heads)`, transformers' `repeat_kv`); the queries occupy the last `queries` slots of
/// `layout`. Scores are scaled by `head_dim^-0.5`. Returns `(batch, heads, queries, head_dim)` in
/// `query`'s dtype, from the implementation `kernels` names.
pub fn attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    layout: &AttentionLayout,
    kernels: Kernels,
) -> Result<Tensor> {
    match kernels {
        Kernels::Reference => reference(query, key, value, layout),
        Kernels::Fused => fused(query, key, value, layout),
    }
}

/// [`attention`] as transformers' eager attention computes it: the key/value heads repeated,
/// `query · keyᵀ · scale`, cast to f32, plus [`AttentionLayout::bias`], softmax over the keys, cast
/// to the value dtype, times the values. Differentiable through candle's autograd; materialises
/// the `(batch, heads, queries, keys)` scores.
pub fn reference(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    layout: &AttentionLayout,
) -> Result<Tensor> {
    let geometry = geometry(query, key, value, layout)?;
    // candle's matmul wants contiguous operands (no-ops for the model's inputs, which are).
    let query = query.contiguous()?;
    let key = repeat_key_value(&key.contiguous()?, geometry.groups())?;
    let value = repeat_key_value(&value.contiguous()?, geometry.groups())?;
    let scale = (geometry.head_dim as f64).powf(-0.5);
    // (batch, heads, queries, head_dim) x (batch, heads, head_dim, keys) -> (batch, heads, queries, keys)
    let scores = (query.matmul(&key.t()?)? * scale)?;
    let bias = layout.bias(geometry.queries, query.device())?;
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(&bias)?;
    let probabilities = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(value.dtype())?;
    // (batch, heads, queries, keys) x (batch, heads, keys, head_dim) -> (batch, heads, queries, head_dim)
    Ok(probabilities.matmul(&value)?)
}

/// transformers' `repeat_kv`: key/value head `h` serves query heads `h * groups .. (h + 1) *
/// groups`.
fn repeat_key_value(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (batch, key_value_heads, seq, head_dim) = x.dims4()?;
    // (batch, kv_heads, seq, head_dim) -> (batch, kv_heads, groups, seq, head_dim)
    //   -> (batch, kv_heads * groups, seq, head_dim)
    Ok(x.unsqueeze(2)?
        .broadcast_as((batch, key_value_heads, groups, seq, head_dim))?
        .contiguous()?
        .reshape((batch, key_value_heads * groups, seq, head_dim))?)
}

/// [`attention`] as one tiled pass per direction (FlashAttention-2), a candle `CustomOp3` with its
/// own backward.
///
/// - f32 on the CPU runs the fused kernel.
/// - bf16 / f16 on the CPU: the inputs are cast to f32, run fused, and the result cast back (the
///   casts carry the gradient). This is at least as precise as the reference, which multiplies in
///   the input dtype and only takes the softmax in f32; there is no half-precision CPU kernel
///   because the CPU computes in f32 anyway.
/// - Any other device falls back to [`reference`] until the CUDA kernel lands.
pub fn fused(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    layout: &AttentionLayout,
) -> Result<Tensor> {
    let geometry = geometry(query, key, value, layout)?;
    if !query.device().is_cpu() {
        return reference(query, key, value, layout);
    }
    let dtype = query.dtype();
    if dtype != DType::F32 {
        let output = fused(
            &query.to_dtype(DType::F32)?,
            &key.to_dtype(DType::F32)?,
            &value.to_dtype(DType::F32)?,
            layout,
        )?;
        return Ok(output.to_dtype(dtype)?);
    }
    let op = FlashAttention {
        geometry,
        layout: layout.clone(),
        log_sum_exp: Mutex::new(None),
    };
    Ok(query
        .contiguous()?
        .apply_op3(&key.contiguous()?, &value.contiguous()?, op)?)
}

/// The fused op. Its forward fills `log_sum_exp`, `(batch, heads, queries)`, which its backward
/// reads.
///
/// Keeping the log-sum-exp instead of recomputing it: FlashAttention-2 stores it too (`L`), it
/// costs one float per query row and head (1/`head_dim` of the output), while recomputing it
/// would repeat the forward's `q·kᵀ` over every visible tile — half the forward's work — inside
/// every backward. Should it be missing (a backward without a forward cannot happen in candle), the
/// backward recomputes it.
#[derive(Debug)]
struct FlashAttention {
    geometry: Geometry,
    layout: AttentionLayout,
    log_sum_exp: Mutex<Option<Vec<f32>>>,
}

impl FlashAttention {
    /// Checks that the inputs the op receives have the sizes it was built for.
    fn check_sizes(&self, query: &[f32], key: &[f32], value: &[f32]) -> candle_core::Result<()> {
        let geometry = &self.geometry;
        let (batch, heads, queries, head_dim) = geometry.query_shape();
        let key_elements = batch * geometry.kv_heads * geometry.keys * head_dim;
        if query.len() != batch * heads * queries * head_dim
            || key.len() != key_elements
            || value.len() != key_elements
        {
            candle_core::bail!(
                "attention: query, key and value hold {}, {} and {} elements, expected shapes \
                 {:?} and {:?}",
                query.len(),
                key.len(),
                value.len(),
                geometry.query_shape(),
                geometry.key_shape()
            );
        }
        Ok(())
    }
}

/// The f32 elements of a contiguous CPU tensor's storage, or an error naming `what`.
fn cpu_f32<'a>(
    storage: &'a Storage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match storage {
        Storage::Cpu(storage) => contiguous_f32(storage, layout, what),
        _ => candle_core::bail!("{what}: the fused attention backward runs on the CPU only"),
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        query_storage: &CpuStorage,
        query_layout: &Layout,
        key_storage: &CpuStorage,
        key_layout: &Layout,
        value_storage: &CpuStorage,
        value_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let query = contiguous_f32(query_storage, query_layout, "attention query")?;
        let key = contiguous_f32(key_storage, key_layout, "attention key")?;
        let value = contiguous_f32(value_storage, value_layout, "attention value")?;
        self.check_sizes(query, key, value)?;
        let inputs = Inputs { query, key, value };
        let (output, log_sum_exp) =
            forward(&self.geometry, &self.layout, &inputs).map_err(candle_core::Error::msg)?;
        *self.log_sum_exp.lock().map_err(|_| {
            candle_core::Error::msg("attention: the log-sum-exp lock is poisoned")
        })? = Some(log_sum_exp);
        Ok((
            CpuStorage::F32(output),
            Shape::from(self.geometry.query_shape()),
        ))
    }

    fn bwd(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        output: &Tensor,
        output_gradient: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let output_gradient = output_gradient.to_dtype(DType::F32)?.contiguous()?;
        let mut stored = self
            .log_sum_exp
            .lock()
            .map_err(|_| candle_core::Error::msg("attention: the log-sum-exp lock is poisoned"))?;
        // The storages stay read-locked while the kernel runs (a backward pass writes to none of
        // them; only an optimizer step writes in place, and it runs after the backward).
        let (query_storage, query_layout) = query.storage_and_layout();
        let (key_storage, key_layout) = key.storage_and_layout();
        let (value_storage, value_layout) = value.storage_and_layout();
        let (output_storage, output_layout) = output.storage_and_layout();
        let (gradient_storage, gradient_layout) = output_gradient.storage_and_layout();
        let inputs = Inputs {
            query: cpu_f32(&query_storage, query_layout, "attention query")?,
            key: cpu_f32(&key_storage, key_layout, "attention key")?,
            value: cpu_f32(&value_storage, value_layout, "attention value")?,
        };
        self.check_sizes(inputs.query, inputs.key, inputs.value)?;
        let output = cpu_f32(&output_storage, output_layout, "attention output")?;
        let output_gradient = cpu_f32(&gradient_storage, gradient_layout, "attention gradient")?;
        if output.len() != inputs.query.len() || output_gradient.len() != inputs.query.len() {
            candle_core::bail!(
                "attention: output and its gradient hold {} and {} elements, expected shape {:?}",
                output.len(),
                output_gradient.len(),
                self.geometry.query_shape()
            );
        }
        if stored.is_none() {
            let (_, log_sum_exp) =
                forward(&self.geometry, &self.layout, &inputs).map_err(candle_core::Error::msg)?;
            *stored = Some(log_sum_exp);
        }
        let log_sum_exp = stored.as_deref().unwrap_or_default();
        let (query_gradient, key_gradient, value_gradient) = backward(
            &self.geometry,
            &self.layout,
            &inputs,
            &Outputs {
                output,
                output_gradient,
                log_sum_exp,
            },
        )
        .map_err(candle_core::Error::msg)?;
        let device = query.device();
        Ok((
            Some(Tensor::from_vec(
                query_gradient,
                self.geometry.query_shape(),
                device,
            )?),
            Some(Tensor::from_vec(
                key_gradient,
                self.geometry.key_shape(),
                device,
            )?),
            Some(Tensor::from_vec(
                value_gradient,
                self.geometry.key_shape(),
                device,
            )?),
        ))
    }
}

/// The op's inputs, contiguous: `query` `(batch, heads, queries, head_dim)`, `key` and `value`
/// `(batch, kv_heads, keys, head_dim)`.
#[derive(Debug, Clone, Copy)]
struct Inputs<'a> {
    query: &'a [f32],
    key: &'a [f32],
    value: &'a [f32],
}

/// What the backward reads of the forward: `output` and `output_gradient` `(batch, heads,
/// queries, head_dim)`, `log_sum_exp` `(batch, heads, queries)`.
#[derive(Debug, Clone, Copy)]
struct Outputs<'a> {
    output: &'a [f32],
    output_gradient: &'a [f32],
    log_sum_exp: &'a [f32],
}

/// One query head's slices for a block of its queries: `query` `(query_slots.len(), head_dim)`
/// holds the block's rows, `key` and `value` `(keys, head_dim)` the whole key/value head it reads.
#[derive(Debug)]
struct HeadBlock<'a> {
    row: RowLayout<'a>,
    /// The block's query slots.
    query_slots: std::ops::Range<usize>,
    query: &'a [f32],
    key: &'a [f32],
    value: &'a [f32],
}

/// FlashAttention-2's forward (Algorithm 1): returns the output `(batch, heads, queries,
/// head_dim)` and the log-sum-exp of every query row `(batch, heads, queries)`.
///
/// Parallel over (batch, head, query block): every task owns its block of the output, and even a
/// decode step (one query) has `batch × heads` tasks.
fn forward(
    geometry: &Geometry,
    layout: &AttentionLayout,
    inputs: &Inputs<'_>,
) -> std::result::Result<(Vec<f32>, Vec<f32>), ShapeError> {
    let Geometry {
        heads,
        kv_heads,
        queries,
        keys,
        head_dim,
        ..
    } = *geometry;
    let mut output = vec![0.0; inputs.query.len()];
    let mut log_sum_exp = vec![0.0; geometry.batch * heads * queries];
    if geometry.is_empty() {
        return Ok((output, log_sum_exp));
    }
    let (head_queries, head_keys) = (queries * head_dim, keys * head_dim);
    output
        .par_chunks_mut(head_queries)
        .zip(log_sum_exp.par_chunks_mut(queries))
        .enumerate()
        .try_for_each(|(head_index, (head_output, head_log_sum_exp))| {
            // head_index = batch_row * heads + head
            let batch_row = head_index / heads;
            let kv_index = batch_row * kv_heads + (head_index % heads) / geometry.groups();
            let query = &inputs.query[head_index * head_queries..][..head_queries];
            let key = &inputs.key[kv_index * head_keys..][..head_keys];
            let value = &inputs.value[kv_index * head_keys..][..head_keys];
            head_output
                .par_chunks_mut(QUERY_BLOCK * head_dim)
                .zip(head_log_sum_exp.par_chunks_mut(QUERY_BLOCK))
                .enumerate()
                .try_for_each(|(block, (block_output, block_log_sum_exp))| {
                    let first = block * QUERY_BLOCK;
                    let rows = block_log_sum_exp.len();
                    let slot = geometry.offset() + first;
                    let head = HeadBlock {
                        row: layout.row(batch_row),
                        query_slots: slot..slot + rows,
                        query: &query[first * head_dim..(first + rows) * head_dim],
                        key,
                        value,
                    };
                    forward_block(geometry, &head, block_output, block_log_sum_exp)
                })
        })?;
    Ok((output, log_sum_exp))
}

/// One query block of one head: `output` `(rows, head_dim)`, `log_sum_exp` `(rows)`.
fn forward_block(
    geometry: &Geometry,
    head: &HeadBlock<'_>,
    output: &mut [f32],
    log_sum_exp: &mut [f32],
) -> std::result::Result<(), ShapeError> {
    let head_dim = geometry.head_dim;
    let rows = head.query_slots.len();
    // The running row maximum m and sum ℓ of the online softmax; `output` accumulates the
    // unnormalised Σ exp(s − m)·v, rescaled whenever m grows.
    let mut maximum = vec![f32::NEG_INFINITY; rows];
    let mut sum = vec![0.0_f32; rows];
    // (rows, KEY_BLOCK): the scores, then the unnormalised probabilities, of one tile.
    let mut tile = vec![0.0_f32; rows * KEY_BLOCK];
    output.fill(0.0);
    for key_block in head.row.key_blocks(&head.query_slots) {
        let key_slots =
            key_block * KEY_BLOCK..(key_block * KEY_BLOCK + KEY_BLOCK).min(geometry.keys);
        let columns = key_slots.len();
        let tile = &mut tile[..rows * columns];
        let key = &head.key[key_slots.start * head_dim..key_slots.end * head_dim];
        let value = &head.value[key_slots.start * head_dim..key_slots.end * head_dim];
        // (rows, head_dim) x (head_dim, columns) -> (rows, columns), scaled
        matmul(
            MatrixMut::new(tile, rows, columns, columns),
            Matrix::new(head.query, rows, head_dim, head_dim),
            Matrix::new(key, columns, head_dim, head_dim).transpose(),
            false,
            geometry.scale(),
            1,
        )?;
        if head.row.visibility(&head.query_slots, &key_slots) == Visibility::Partial {
            head.row.mask(tile, &head.query_slots, &key_slots);
        }
        for (r, line) in tile.chunks_exact_mut(columns).enumerate() {
            let tile_maximum = line.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let new_maximum = maximum[r].max(tile_maximum);
            if new_maximum.is_infinite() {
                // Nothing visible to this row yet: its probabilities in this tile are zero.
                line.fill(0.0);
                continue;
            }
            // exp(−inf) = 0 on the row's first visible tile, where the accumulator is still zero.
            let correction = (maximum[r] - new_maximum).exp();
            let mut tile_sum = 0.0;
            for score in line.iter_mut() {
                *score = (*score - new_maximum).exp();
                tile_sum += *score;
            }
            sum[r] = sum[r] * correction + tile_sum;
            maximum[r] = new_maximum;
            for x in &mut output[r * head_dim..(r + 1) * head_dim] {
                *x *= correction;
            }
        }
        // (rows, columns) x (columns, head_dim) -> (rows, head_dim), accumulated
        matmul(
            MatrixMut::new(output, rows, head_dim, head_dim),
            Matrix::new(tile, rows, columns, columns),
            Matrix::new(value, columns, head_dim, head_dim),
            true,
            1.0,
            1,
        )?;
    }
    // Every query sees at least its own slot, so every sum is positive.
    for (r, line) in output.chunks_exact_mut(head_dim).enumerate() {
        let inverse = sum[r].recip();
        for x in line {
            *x *= inverse;
        }
        log_sum_exp[r] = maximum[r] + sum[r].ln();
    }
    Ok(())
}

/// The gradients of query, key and value, shaped as they are.
type Gradients = (Vec<f32>, Vec<f32>, Vec<f32>);

/// FlashAttention-2's backward (Algorithm 2): the gradients of query, key and value.
///
/// Parallel over (batch, key/value head): each task owns that head's key and value gradients and
/// the query gradients of the `groups` query heads that share it, so the tasks never write to the
/// same element (FlashAttention-2 accumulates dQ with atomics instead; here a task holds all the
/// tiles that touch its dQ rows, so plain adds suffice).
fn backward(
    geometry: &Geometry,
    layout: &AttentionLayout,
    inputs: &Inputs<'_>,
    outputs: &Outputs<'_>,
) -> std::result::Result<Gradients, ShapeError> {
    let Geometry {
        kv_heads,
        queries,
        keys,
        head_dim,
        ..
    } = *geometry;
    let groups = geometry.groups();
    let mut query_gradient = vec![0.0; inputs.query.len()];
    let mut key_gradient = vec![0.0; inputs.key.len()];
    let mut value_gradient = vec![0.0; inputs.value.len()];
    if geometry.is_empty() {
        return Ok((query_gradient, key_gradient, value_gradient));
    }
    let (head_queries, head_keys) = (queries * head_dim, keys * head_dim);
    query_gradient
        .par_chunks_mut(groups * head_queries)
        .zip(key_gradient.par_chunks_mut(head_keys))
        .zip(value_gradient.par_chunks_mut(head_keys))
        .enumerate()
        .try_for_each(
            |(kv_index, ((group_query_gradient, key_gradient), value_gradient))| {
                // kv_index = batch_row * kv_heads + kv_head; its query heads are kv_index * groups + g
                let row = layout.row(kv_index / kv_heads);
                let key = &inputs.key[kv_index * head_keys..][..head_keys];
                let value = &inputs.value[kv_index * head_keys..][..head_keys];
                let mut buffers = BackwardBuffers::new(queries);
                for (group, query_gradient) in group_query_gradient
                    .chunks_exact_mut(head_queries)
                    .enumerate()
                {
                    let head_index = kv_index * groups + group;
                    let range = head_index * head_queries..(head_index + 1) * head_queries;
                    let head_outputs = Outputs {
                        output: &outputs.output[range.clone()],
                        output_gradient: &outputs.output_gradient[range.clone()],
                        log_sum_exp: &outputs.log_sum_exp
                            [head_index * queries..(head_index + 1) * queries],
                    };
                    backward_head(
                        geometry,
                        &HeadBlock {
                            row,
                            query_slots: geometry.offset()..keys,
                            query: &inputs.query[range],
                            key,
                            value,
                        },
                        &head_outputs,
                        &mut HeadGradients {
                            query: query_gradient,
                            key: key_gradient,
                            value: value_gradient,
                        },
                        &mut buffers,
                    )?;
                }
                Ok(())
            },
        )?;
    Ok((query_gradient, key_gradient, value_gradient))
}

/// One head's gradients: `query` `(queries, head_dim)` of this head, `key` and `value` `(keys,
/// head_dim)` of its key/value head (shared with the other heads of its group, which add to them).
#[derive(Debug)]
struct HeadGradients<'a> {
    query: &'a mut [f32],
    key: &'a mut [f32],
    value: &'a mut [f32],
}

/// Scratch of one backward task, reused across its heads and tiles.
#[derive(Debug)]
struct BackwardBuffers {
    /// `(queries)`: D = rowsum(dO ∘ O) of the current head.
    delta: Vec<f32>,
    /// `(QUERY_BLOCK, KEY_BLOCK)`: the probabilities P of a tile.
    probabilities: Vec<f32>,
    /// `(QUERY_BLOCK, KEY_BLOCK)`: dP, then dS, of a tile.
    score_gradient: Vec<f32>,
}

impl BackwardBuffers {
    fn new(queries: usize) -> Self {
        Self {
            delta: vec![0.0; queries],
            probabilities: vec![0.0; QUERY_BLOCK * KEY_BLOCK],
            score_gradient: vec![0.0; QUERY_BLOCK * KEY_BLOCK],
        }
    }
}

/// The backward of one query head over all its queries (`head.query_slots`), adding into
/// `gradients`: per visible tile, P = exp(S·scale − lse), dV += Pᵀ·dO, dP = dO·Vᵀ,
/// dS = P ∘ (dP − D), dQ += scale·dS·K, dK += scale·dSᵀ·Q.
fn backward_head(
    geometry: &Geometry,
    head: &HeadBlock<'_>,
    outputs: &Outputs<'_>,
    gradients: &mut HeadGradients<'_>,
    buffers: &mut BackwardBuffers,
) -> std::result::Result<(), ShapeError> {
    let head_dim = geometry.head_dim;
    let scale = geometry.scale();
    // D = rowsum(dO ∘ O): the softmax backward's Σⱼ Pᵢⱼ·dPᵢⱼ, from the output instead of the tiles.
    for ((delta, output), output_gradient) in buffers
        .delta
        .iter_mut()
        .zip(outputs.output.chunks_exact(head_dim))
        .zip(outputs.output_gradient.chunks_exact(head_dim))
    {
        *delta = output.iter().zip(output_gradient).map(|(o, d)| o * d).sum();
    }
    let first_slot = head.query_slots.start;
    for block_start in (0..head.query_slots.len()).step_by(QUERY_BLOCK) {
        let block_end = (block_start + QUERY_BLOCK).min(head.query_slots.len());
        let rows = block_end - block_start;
        let query_slots = first_slot + block_start..first_slot + block_end;
        let block_rows = block_start * head_dim..block_end * head_dim;
        let query = &head.query[block_rows.clone()];
        let output_gradient = &outputs.output_gradient[block_rows.clone()];
        let log_sum_exp = &outputs.log_sum_exp[block_start..block_end];
        let delta = &buffers.delta[block_start..block_end];
        for key_block in head.row.key_blocks(&query_slots) {
            let key_slots =
                key_block * KEY_BLOCK..(key_block * KEY_BLOCK + KEY_BLOCK).min(geometry.keys);
            let columns = key_slots.len();
            let key_rows = key_slots.start * head_dim..key_slots.end * head_dim;
            let key = &head.key[key_rows.clone()];
            let value = &head.value[key_rows.clone()];
            let probabilities = &mut buffers.probabilities[..rows * columns];
            let score_gradient = &mut buffers.score_gradient[..rows * columns];
            // S·scale: (rows, head_dim) x (head_dim, columns) -> (rows, columns), the forward's
            // product on the same tile, so P below is the forward's probability to the last bit.
            matmul(
                MatrixMut::new(probabilities, rows, columns, columns),
                Matrix::new(query, rows, head_dim, head_dim),
                Matrix::new(key, columns, head_dim, head_dim).transpose(),
                false,
                scale,
                1,
            )?;
            if head.row.visibility(&query_slots, &key_slots) == Visibility::Partial {
                head.row.mask(probabilities, &query_slots, &key_slots);
            }
            // P = exp(S·scale − lse); masked entries give exp(−inf) = 0.
            for (line, &lse) in probabilities.chunks_exact_mut(columns).zip(log_sum_exp) {
                for p in line {
                    *p = (*p - lse).exp();
                }
            }
            // dV += Pᵀ·dO: (columns, rows) x (rows, head_dim) -> (columns, head_dim)
            matmul(
                MatrixMut::new(
                    &mut gradients.value[key_rows.clone()],
                    columns,
                    head_dim,
                    head_dim,
                ),
                Matrix::new(probabilities, rows, columns, columns).transpose(),
                Matrix::new(output_gradient, rows, head_dim, head_dim),
                true,
                1.0,
                1,
            )?;
            // dP = dO·Vᵀ: (rows, head_dim) x (head_dim, columns) -> (rows, columns)
            matmul(
                MatrixMut::new(score_gradient, rows, columns, columns),
                Matrix::new(output_gradient, rows, head_dim, head_dim),
                Matrix::new(value, columns, head_dim, head_dim).transpose(),
                false,
                1.0,
                1,
            )?;
            // dS = P ∘ (dP − D)
            for ((line, p_line), &d) in score_gradient
                .chunks_exact_mut(columns)
                .zip(probabilities.chunks_exact(columns))
                .zip(delta)
            {
                for (ds, &p) in line.iter_mut().zip(p_line) {
                    *ds = p * (*ds - d);
                }
            }
            // dQ += scale·dS·K: (rows, columns) x (columns, head_dim) -> (rows, head_dim)
            matmul(
                MatrixMut::new(
                    &mut gradients.query[block_rows.clone()],
                    rows,
                    head_dim,
                    head_dim,
                ),
                Matrix::new(score_gradient, rows, columns, columns),
                Matrix::new(key, columns, head_dim, head_dim),
                true,
                scale,
                1,
            )?;
            // dK += scale·dSᵀ·Q: (columns, rows) x (rows, head_dim) -> (columns, head_dim)
            matmul(
                MatrixMut::new(&mut gradients.key[key_rows], columns, head_dim, head_dim),
                Matrix::new(score_gradient, rows, columns, columns).transpose(),
                Matrix::new(query, rows, head_dim, head_dim),
                true,
                scale,
                1,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout of `keys` slots over documents {0, 1, PADDING} in a few shapes, from a seed.
    fn layouts() -> Vec<AttentionLayout> {
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut layouts = Vec::new();
        for keys in [1, 5, 130, 300] {
            for _ in 0..6 {
                // Runs of random length and document, the way packing and padding produce them.
                let mut documents = Vec::with_capacity(keys);
                while documents.len() < keys {
                    let document = match next() % 3 {
                        0 => PADDING,
                        n => n,
                    };
                    let run = 1 + next() as usize % 90;
                    documents.extend(std::iter::repeat_n(
                        document,
                        run.min(keys - documents.len()),
                    ));
                }
                layouts.extend(AttentionLayout::new(1, keys, documents));
            }
        }
        layouts
    }

    /// The block skipping and the unmasked fast path never hide a visible key nor show a hidden
    /// one: `key_blocks` covers every key a block's queries may see, and a `Full` tile is visible
    /// entry by entry.
    #[test]
    fn skipped_and_unmasked_tiles_agree_with_the_rule() {
        for layout in layouts() {
            let row = layout.row(0);
            let keys = layout.keys();
            for queries in [1, 3, keys].into_iter().filter(|&queries| queries <= keys) {
                let offset = keys - queries;
                for start in (offset..keys).step_by(QUERY_BLOCK) {
                    let query_slots = start..(start + QUERY_BLOCK).min(keys);
                    let blocks = row.key_blocks(&query_slots);
                    for key_block in 0..keys.div_ceil(KEY_BLOCK) {
                        let key_slots =
                            key_block * KEY_BLOCK..(key_block * KEY_BLOCK + KEY_BLOCK).min(keys);
                        let visible: Vec<bool> = query_slots
                            .clone()
                            .flat_map(|q| key_slots.clone().map(move |k| (q, k)))
                            .map(|(q, k)| layout.may_attend(0, q, k))
                            .collect();
                        if !blocks.contains(&key_block) {
                            assert!(!visible.contains(&true), "skipped a visible tile");
                        } else if row.visibility(&query_slots, &key_slots) == Visibility::Full {
                            assert!(!visible.contains(&false), "unmasked a hidden entry");
                        }
                    }
                }
            }
        }
    }
}
