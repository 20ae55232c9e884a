//! `ops::attention`: the fused (FlashAttention-2 style) op against the reference (transformers'
//! eager attention), values and the gradients of query, key and value, over every layout the model
//! produces — causal, grouped-query ratios, odd head dims, packed documents, right padding, a
//! single token, a long sequence crossing tile edges, left-padded KV-cache steps — plus the
//! layout's rule and errors.

use candle_core::{DType, Device, Tensor, Var};
use model::Positions;
use model::ops::Kernels;
use model::ops::attention::{AttentionLayout, PADDING, attention, fused, reference};

use crate::{max_abs_difference, token_ids};

/// f32 agreement of values and gradients (observed: at most 5e-6, on the value gradient of the
/// 700-token case, whose entries sum 700 products).
const TOLERANCE: f32 = 1e-5;

/// Deterministic pseudo-random values in `[-amplitude, amplitude]`.
fn random(shape: &[usize], salt: u32, amplitude: f32) -> Tensor {
    let count = shape.iter().product();
    let values: Vec<f32> = token_ids(count, 2001, salt)
        .into_iter()
        .map(|id| (id as f32 / 1000.0 - 1.0) * amplitude)
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor")
}

/// The shapes of one comparison.
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    queries: usize,
    keys: usize,
    head_dim: usize,
    /// `(batch * keys)` row-major.
    documents: Vec<u32>,
}

impl Case {
    /// `batch` causal rows of `seq` tokens.
    fn causal(batch: usize, heads: usize, kv_heads: usize, seq: usize, head_dim: usize) -> Self {
        Self {
            batch,
            heads,
            kv_heads,
            queries: seq,
            keys: seq,
            head_dim,
            documents: vec![0; batch * seq],
        }
    }
}

/// `actual` within [`TOLERANCE`] of `expected`.
fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    let difference = max_abs_difference(actual, expected);
    eprintln!("{what}: max |fused - reference| = {difference:.2e}");
    assert!(
        difference <= TOLERANCE,
        "{what}: fused differs from the reference by {difference:e}"
    );
}

/// Output, and gradients of query, key and value under `loss = (output * upstream).sum()`.
fn run(
    implementation: fn(&Tensor, &Tensor, &Tensor, &AttentionLayout) -> model::Result<Tensor>,
    inputs: &[Var; 3],
    layout: &AttentionLayout,
    upstream: &Tensor,
) -> [Tensor; 4] {
    let [query, key, value] = inputs;
    let output = implementation(
        query.as_tensor(),
        key.as_tensor(),
        value.as_tensor(),
        layout,
    )
    .expect("attention");
    let loss = (&output * upstream).expect("mul").sum_all().expect("sum");
    let gradients = loss.backward().expect("backward");
    let gradient = |var: &Var| {
        gradients
            .get(var.as_tensor())
            .expect("a gradient for every input")
            .clone()
    };
    [output, gradient(query), gradient(key), gradient(value)]
}

/// Fused against reference on `case`: values and the three gradients.
fn compare(name: &str, case: &Case) {
    let query_shape = [case.batch, case.heads, case.queries, case.head_dim];
    let key_shape = [case.batch, case.kv_heads, case.keys, case.head_dim];
    let inputs = [
        Var::from_tensor(&random(&query_shape, 1, 1.5)).expect("query"),
        Var::from_tensor(&random(&key_shape, 2, 1.5)).expect("key"),
        Var::from_tensor(&random(&key_shape, 3, 1.0)).expect("value"),
    ];
    let layout =
        AttentionLayout::new(case.batch, case.keys, case.documents.clone()).expect("layout");
    let upstream = random(&query_shape, 4, 1.0);
    let fused_results = run(fused, &inputs, &layout, &upstream);
    let reference_results = run(reference, &inputs, &layout, &upstream);
    for ((what, actual), expected) in ["output", "query grad", "key grad", "value grad"]
        .iter()
        .zip(&fused_results)
        .zip(&reference_results)
    {
        assert_close(&format!("{name}: {what}"), actual, expected);
    }
}

/// `(batch * keys)` documents of a left-padded KV cache: row `r`'s first `padding[r]` slots are
/// padding, the rest one document.
fn left_padded(padding: &[usize], keys: usize) -> Vec<u32> {
    padding
        .iter()
        .flat_map(|&p| (0..keys).map(move |slot| if slot < p { PADDING } else { 0 }))
        .collect()
}

#[test]
fn grouped_query_ratios_1_2_3_match_the_reference() {
    compare("groups 1", &Case::causal(2, 4, 4, 37, 16));
    compare("groups 2", &Case::causal(2, 4, 2, 37, 16));
    compare("groups 3", &Case::causal(2, 6, 2, 37, 16));
}

#[test]
fn odd_head_dims_match_the_reference() {
    for head_dim in [3, 17, 64] {
        compare(
            &format!("head_dim {head_dim}"),
            &Case::causal(1, 3, 1, 70, head_dim),
        );
    }
}

#[test]
fn packed_documents_with_trailing_padding_match_the_reference() {
    // 150 slots: the documents cross query-block (64) and key-block (128) edges.
    let mut first_row = Vec::new();
    for (document, length) in [(0, 40), (1, 70), (2, 25)] {
        first_row.extend(std::iter::repeat_n(document, length));
    }
    first_row.extend(std::iter::repeat_n(PADDING, 15));
    let mut second_row = Vec::new();
    for (document, length) in [(0, 3), (1, 130), (2, 1), (3, 10)] {
        second_row.extend(std::iter::repeat_n(document, length));
    }
    second_row.extend(std::iter::repeat_n(PADDING, 6));
    compare(
        "packed",
        &Case {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            queries: 150,
            keys: 150,
            head_dim: 8,
            documents: [first_row, second_row].concat(),
        },
    );
}

#[test]
fn interleaved_document_ids_follow_the_rule_too() {
    // The rule compares ids, it does not assume a document is contiguous: slot 4 sees 0..2 and 4.
    let documents = vec![0, 0, 1, 1, 0, PADDING, 1, 0];
    compare(
        "interleaved",
        &Case {
            batch: 1,
            heads: 2,
            kv_heads: 1,
            queries: 8,
            keys: 8,
            head_dim: 5,
            documents,
        },
    );
}

#[test]
fn right_padding_matches_the_reference() {
    let seq = 90;
    let documents: Vec<u32> = [90, 61, 1]
        .iter()
        .flat_map(|&length| (0..seq).map(move |t| if t < length { 0 } else { PADDING }))
        .collect();
    compare(
        "right padding",
        &Case {
            batch: 3,
            heads: 2,
            kv_heads: 2,
            queries: seq,
            keys: seq,
            head_dim: 12,
            documents,
        },
    );
}

#[test]
fn a_single_token_matches_the_reference() {
    compare("length 1", &Case::causal(2, 3, 3, 1, 8));
}

#[test]
fn a_long_sequence_across_tile_edges_matches_the_reference() {
    // 700 = 10·64 + 60 = 5·128 + 60: partial last tiles in both directions.
    compare("seq 700", &Case::causal(1, 2, 1, 700, 16));
}

#[test]
fn kv_cache_steps_with_left_padding_match_the_reference() {
    for new in [1, 3] {
        let keys = 40 + new;
        compare(
            &format!("cache 40 + {new}"),
            &Case {
                batch: 3,
                heads: 6,
                kv_heads: 2,
                queries: new,
                keys,
                head_dim: 16,
                documents: left_padded(&[0, 7, 25], keys),
            },
        );
    }
}

#[test]
fn a_decode_step_over_many_keys_matches_the_reference() {
    // Keys span several key blocks; the query block is a single row.
    let keys = 300;
    compare(
        "decode over 300 keys",
        &Case {
            batch: 2,
            heads: 4,
            kv_heads: 2,
            queries: 1,
            keys,
            head_dim: 32,
            documents: left_padded(&[0, 130], keys),
        },
    );
}

#[test]
fn rows_with_different_layouts_in_one_batch_match_the_reference() {
    let seq = 70;
    let causal = vec![0; seq];
    let packed: Vec<u32> = (0..seq as u32).map(|t| t / 20).collect();
    let right_padded: Vec<u32> = (0..seq).map(|t| if t < 33 { 0 } else { PADDING }).collect();
    let left_padded = left_padded(&[9], seq);
    compare(
        "mixed rows",
        &Case {
            batch: 4,
            heads: 6,
            kv_heads: 3,
            queries: seq,
            keys: seq,
            head_dim: 17,
            documents: [causal, packed, right_padded, left_padded].concat(),
        },
    );
}

#[test]
fn strided_inputs_are_accepted() {
    // A query made by a transpose, as the projections produce before `.contiguous()`.
    let layout = AttentionLayout::new(2, 9, vec![0; 18]).expect("layout");
    let query = random(&[2, 9, 4, 8], 5, 1.0)
        .transpose(1, 2)
        .expect("transpose");
    let key = random(&[2, 2, 9, 8], 6, 1.0);
    let value = random(&[2, 2, 9, 8], 7, 1.0);
    let fused_output = fused(&query, &key, &value, &layout).expect("fused");
    let reference_output = reference(&query, &key, &value, &layout).expect("reference");
    assert_close("strided query", &fused_output, &reference_output);
}

#[test]
fn bf16_runs_fused_in_f32_and_returns_bf16() {
    let layout = AttentionLayout::new(1, 20, vec![0; 20]).expect("layout");
    let bf16 = |t: Tensor| t.to_dtype(DType::BF16).expect("bf16");
    let query = bf16(random(&[1, 4, 20, 16], 8, 1.0));
    let key = bf16(random(&[1, 2, 20, 16], 9, 1.0));
    let value = bf16(random(&[1, 2, 20, 16], 10, 1.0));
    let output = attention(&query, &key, &value, &layout, Kernels::Fused).expect("fused");
    assert_eq!(output.dtype(), DType::BF16);
    let expected = attention(&query, &key, &value, &layout, Kernels::Reference).expect("reference");
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).expect("f32");
    // bf16 keeps 8 bits of mantissa; the reference also multiplies in bf16.
    let difference = max_abs_difference(&f32(&output), &f32(&expected));
    assert!(difference < 2e-2, "bf16 fused vs reference: {difference}");
}

#[test]
fn the_layout_rejects_a_wrong_number_of_documents() {
    let error = AttentionLayout::new(2, 5, vec![0; 9]).expect_err("9 ids for 2 × 5 slots");
    let message = error.to_string();
    assert!(
        message.contains("9 document ids")
            && message.contains("2 rows of 5")
            && message.contains("10"),
        "{message}"
    );
}

#[test]
fn may_attend_follows_the_rule() {
    // Row 0: two documents then padding; row 1: a left-padded cache row.
    let layout = AttentionLayout::new(
        2,
        6,
        vec![0, 0, 0, 1, 1, PADDING, PADDING, PADDING, 0, 0, 0, 0],
    )
    .expect("layout");
    let seen = |row: usize, query: usize| -> Vec<bool> {
        (0..6)
            .map(|key| layout.may_attend(row, query, key))
            .collect()
    };
    assert_eq!(seen(0, 0), [true, false, false, false, false, false]);
    assert_eq!(seen(0, 2), [true, true, true, false, false, false]);
    assert_eq!(seen(0, 4), [false, false, false, true, true, false]);
    // A padding query sees only itself; nobody sees a padding key but itself.
    assert_eq!(seen(0, 5), [false, false, false, false, false, true]);
    assert_eq!(seen(1, 1), [false, true, false, false, false, false]);
    assert_eq!(seen(1, 5), [false, false, true, true, true, true]);
    assert_eq!(layout.batch_size(), 2);
    assert_eq!(layout.keys(), 6);
}

#[test]
fn the_bias_puts_the_queries_in_the_last_slots() {
    let layout = AttentionLayout::new(1, 4, vec![PADDING, 0, 0, 0]).expect("layout");
    let bias = layout.bias(2, &Device::Cpu).expect("bias");
    assert_eq!(bias.dims(), [1, 1, 2, 4]);
    let inf = f32::NEG_INFINITY;
    assert_eq!(
        bias.flatten_all()
            .expect("flatten")
            .to_vec1::<f32>()
            .expect("vec"),
        [inf, 0.0, 0.0, inf, inf, 0.0, 0.0, 0.0]
    );
    assert!(layout.bias(5, &Device::Cpu).is_err());
}

#[test]
fn the_rule_equals_the_packed_positions_rule() {
    let positions =
        Positions::packed(&[vec![0, 1, 2, 0, 1, 0, 0]], &[vec![0, 3, 5, 6]]).expect("positions");
    let layout = AttentionLayout::new(1, 7, vec![0, 0, 0, 1, 1, 2, PADDING]).expect("layout");
    for query in 0..7 {
        for key in 0..7 {
            assert_eq!(
                layout.may_attend(0, query, key),
                positions.may_attend(0, query, key),
                "query {query}, key {key}"
            );
        }
    }
}

#[test]
fn mismatched_shapes_are_errors_naming_the_tensors() {
    let layout = AttentionLayout::new(1, 4, vec![0; 4]).expect("layout");
    let query = random(&[1, 3, 4, 8], 1, 1.0);
    let key = random(&[1, 2, 4, 8], 2, 1.0);
    let value = random(&[1, 2, 4, 8], 3, 1.0);
    for implementation in [Kernels::Fused, Kernels::Reference] {
        let error = attention(&query, &key, &value, &layout, implementation)
            .expect_err("3 heads over 2 kv heads");
        assert!(error.to_string().contains("3 heads"), "{error}");
        let error = attention(
            &key,
            &key,
            &random(&[1, 2, 5, 8], 3, 1.0),
            &layout,
            implementation,
        )
        .expect_err("value longer than key");
        assert!(
            error.to_string().contains("value has shape [1, 2, 5, 8]"),
            "{error}"
        );
        let other = AttentionLayout::new(1, 5, vec![0; 5]).expect("layout");
        let error =
            attention(&key, &key, &value, &other, implementation).expect_err("layout of 5 keys");
        assert!(
            error.to_string().contains("1 rows × 5 key slots"),
            "{error}"
        );
    }
}
