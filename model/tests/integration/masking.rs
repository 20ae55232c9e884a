//! Packed documents and right padding change nothing for the real tokens: each document's logits
//! equal those of the document run alone.

use candle_core::{Device, IndexOp, Tensor};
use model::{Llama, LlamaConfig, Positions};

use crate::{max_abs_difference, row, token_ids};

const TOLERANCE: f32 = 1e-5;

fn model() -> Llama {
    let mut config = LlamaConfig::tiny(96);
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    // A larger init than 0.02 so that leaking attention would show in the logits.
    let (model, varmap) = Llama::from_scratch(&config, 21, &Device::Cpu).expect("model");
    model::init::initialize(&varmap, 21, 0.2).expect("init");
    model
}

fn alone(model: &Llama, ids: &[u32]) -> Tensor {
    model
        .forward(&row(ids), &Positions::causal(1, ids.len()))
        .expect("forward")
        .logits
}

#[test]
fn packed_documents_equal_each_document_alone() {
    let model = model();
    let first = token_ids(5, 96, 1);
    let second = token_ids(7, 96, 2);
    let packed_ids = [first.as_slice(), &second, &[0, 0]].concat();
    let positions = Positions::packed(
        &[vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 1]],
        &[vec![0, 5, 12]],
    )
    .expect("positions");
    let packed = model
        .forward(&row(&packed_ids), &positions)
        .expect("forward")
        .logits;

    let first_difference = max_abs_difference(
        &packed.i((.., 0..5, ..)).expect("first"),
        &alone(&model, &first),
    );
    let second_difference = max_abs_difference(
        &packed.i((.., 5..12, ..)).expect("second"),
        &alone(&model, &second),
    );
    eprintln!("packed vs alone: {first_difference:.2e}, {second_difference:.2e}");
    assert!(first_difference <= TOLERANCE && second_difference <= TOLERANCE);

    // Without the document mask the second document would see the first: the test can fail.
    let leaking = model
        .forward(&row(&packed_ids), &Positions::causal(1, 14))
        .expect("forward")
        .logits;
    let leak = max_abs_difference(
        &leaking.i((.., 5..12, ..)).expect("second"),
        &alone(&model, &second),
    );
    assert!(
        leak > 1e-2,
        "cross-document attention changes logits by only {leak}"
    );
}

#[test]
fn right_padded_batch_equals_unpadded_rows() {
    let model = model();
    let short = token_ids(4, 96, 3);
    let long = token_ids(9, 96, 4);
    let padded_short = [short.as_slice(), &[0; 5]].concat();
    let input_ids =
        Tensor::from_vec([padded_short, long.clone()].concat(), (2, 9), &Device::Cpu).expect("ids");
    let positions =
        Positions::right_padded(&[vec![1, 1, 1, 1, 0, 0, 0, 0, 0], vec![1; 9]]).expect("positions");
    let logits = model
        .forward(&input_ids, &positions)
        .expect("forward")
        .logits;
    let short_difference = max_abs_difference(
        &logits.i((0..1, 0..4, ..)).expect("short"),
        &alone(&model, &short),
    );
    let long_difference = max_abs_difference(
        &logits.i((1..2, .., ..)).expect("long"),
        &alone(&model, &long),
    );
    eprintln!("padded vs alone: {short_difference:.2e}, {long_difference:.2e}");
    assert!(short_difference <= TOLERANCE && long_difference <= TOLERANCE);
    let finite = logits
        .abs()
        .and_then(|l| l.max_keepdim(2))
        .and_then(|l| l.flatten_all());
    let finite: Vec<f32> = finite.and_then(|l| l.to_vec1()).expect("values");
    assert!(
        finite.iter().all(|v| v.is_finite()),
        "padding rows must stay finite"
    );
}
