//! Logits of herd's Llama against transformers 5.23 on the committed fixtures
//! (`dev/model_fixtures.py`): every case within 1e-4 in f32.

use candle_core::{DType, Device, IndexOp, Tensor};
use model::{Checkpoint, Positions};

use crate::{fixture, max_abs_difference};

const TOLERANCE: f32 = 1e-4;

/// Loads fixture `name`, runs its `input_ids` and returns the max-abs logit difference against
/// transformers at the stored positions.
fn logits_difference(name: &str) -> f32 {
    let directory = fixture(name);
    let checkpoint = Checkpoint::load(&directory, DType::F32, &Device::Cpu).expect("checkpoint");
    let model = checkpoint.model().expect("model");
    let expected =
        candle_core::safetensors::load(directory.join("expected.safetensors"), &Device::Cpu)
            .expect("expected.safetensors");
    let input_ids = expected["input_ids"].to_dtype(DType::U32).expect("ids");
    let positions = expected["positions"]
        .to_dtype(DType::U32)
        .expect("positions");
    let (batch, seq) = input_ids.dims2().expect("dims");
    let output = model
        .forward(&input_ids, &Positions::causal(batch, seq))
        .expect("forward");
    let logits = output.logits.index_select(&positions, 1).expect("select");
    let difference = max_abs_difference(&logits, &expected["logits"]);
    eprintln!("parity {name}: max |herd - transformers| = {difference:.3e}");
    difference
}

#[test]
fn grouped_query_4_to_1_untied() {
    assert!(logits_difference("gqa4_untied") <= TOLERANCE);
}

#[test]
fn grouped_query_2_to_1_tied_with_explicit_head_dim() {
    assert!(logits_difference("gqa2_tied") <= TOLERANCE);
}

#[test]
fn multi_head_with_classic_rope_theta_layout() {
    assert!(logits_difference("mha_classic") <= TOLERANCE);
}

#[test]
fn llama3_rope_scaling_over_2048_tokens() {
    assert!(logits_difference("llama3_long") <= TOLERANCE);
}

#[test]
fn llama3_rope_scaling_changes_the_fixture() {
    // Guard that the fixture is sensitive: without the scaling the logits move far beyond tolerance.
    let directory = fixture("llama3_long");
    let mut checkpoint =
        Checkpoint::load(&directory, DType::F32, &Device::Cpu).expect("checkpoint");
    checkpoint.config.rope_scaling = None;
    let model = checkpoint.model().expect("model");
    let expected =
        candle_core::safetensors::load(directory.join("expected.safetensors"), &Device::Cpu)
            .expect("expected.safetensors");
    let input_ids = expected["input_ids"].to_dtype(DType::U32).expect("ids");
    let output = model
        .forward(&input_ids, &Positions::causal(1, 2048))
        .expect("forward");
    let last = output.logits.i((.., 2047..2048, ..)).expect("last");
    let expected_last = expected["logits"]
        .i((.., 29..30, ..))
        .expect("last expected");
    let difference = max_abs_difference(&last, &expected_last);
    assert!(
        difference > 0.1,
        "unscaled RoPE differs by only {difference}"
    );
}

#[test]
fn bf16_checkpoint_upcast_to_f32() {
    assert!(logits_difference("bf16") <= TOLERANCE);
}

#[test]
fn sharded_checkpoint() {
    assert!(logits_difference("sharded") <= TOLERANCE);
}

#[test]
fn hidden_states_are_the_input_of_lm_head() {
    let checkpoint =
        Checkpoint::load(&fixture("gqa2_tied"), DType::F32, &Device::Cpu).expect("checkpoint");
    let model = checkpoint.model().expect("model");
    let ids = Tensor::new(&[[5u32, 9, 200, 3]], &Device::Cpu).expect("ids");
    let output = model
        .forward(&ids, &Positions::causal(1, 4))
        .expect("forward");
    assert_eq!(output.hidden_states.dims(), [1, 4, 64]);
    assert_eq!(output.logits.dims(), [1, 4, 256]);
    // Tied: logits = hidden · embed_tokensᵀ.
    let embedding = &checkpoint.tensors["model.embed_tokens.weight"];
    let by_hand = output
        .hidden_states
        .broadcast_matmul(&embedding.t().expect("t"))
        .expect("matmul");
    assert!(max_abs_difference(&by_hand, &output.logits) < 1e-5);
}
