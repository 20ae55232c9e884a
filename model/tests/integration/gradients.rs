//! Every trainable parameter receives a non-zero gradient from a language-modelling loss over all
//! positions: the guard against candle ops that silently cut the graph
//! (`shared/research/candle.md` §1.1 — `RmsNorm::forward`, `softmax_last_dim`, `rope`).

use candle_core::{Device, Tensor};
use model::{Llama, LlamaConfig, Positions};

use crate::token_ids;

fn every_var_gets_a_gradient(config: &LlamaConfig, positions: &Positions) {
    let (model, varmap) = Llama::from_scratch(config, 11, &Device::Cpu).expect("model");
    let (batch, seq) = (positions.batch_size(), positions.sequence_length());
    let ids = token_ids(batch * seq, config.vocab_size, 3);
    let input_ids = Tensor::from_vec(ids.clone(), (batch, seq), &Device::Cpu).expect("ids");
    let logits = model
        .forward(&input_ids, positions)
        .expect("forward")
        .logits;
    // Cross-entropy of every position against a shifted copy of the ids (any targets will do).
    let targets: Vec<u32> = ids
        .iter()
        .map(|id| (id + 1) % config.vocab_size as u32)
        .collect();
    let targets = Tensor::from_vec(targets, batch * seq, &Device::Cpu).expect("targets");
    // (batch, seq, vocab) -> (batch * seq, vocab)
    let logits = logits
        .reshape((batch * seq, config.vocab_size))
        .expect("reshape");
    let loss = candle_nn::loss::cross_entropy(&logits, &targets).expect("loss");
    let gradients = loss.backward().expect("backward");

    let vars = varmap.data().lock().expect("lock");
    let expected = Llama::parameter_shapes(config).len();
    assert_eq!(vars.len(), expected, "the VarMap holds every parameter");
    for (name, var) in vars.iter() {
        let gradient = gradients
            .get(var)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let magnitude = gradient
            .abs()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .expect("sum");
        assert!(magnitude > 0.0, "{name} has an all-zero gradient");
    }
}

#[test]
fn untied_grouped_query_model() {
    every_var_gets_a_gradient(&LlamaConfig::tiny(64), &Positions::causal(2, 6));
}

#[test]
fn tied_model_with_packed_documents_and_padding() {
    let mut config = LlamaConfig::tiny(64);
    config.tie_word_embeddings = true;
    config.num_key_value_heads = 1;
    let positions = Positions::packed(
        &[vec![0, 1, 2, 0, 1, 0], vec![0, 1, 2, 3, 4, 5]],
        &[vec![0, 3, 5], vec![0, 6]],
    )
    .expect("positions");
    every_var_gets_a_gradient(&config, &positions);
}

#[test]
fn from_scratch_is_deterministic_per_seed() {
    let config = LlamaConfig::tiny(64);
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).expect("ids");
    let logits = |seed| {
        let (model, _) = Llama::from_scratch(&config, seed, &Device::Cpu).expect("model");
        let logits = model
            .forward(&ids, &Positions::causal(1, 3))
            .expect("forward")
            .logits;
        logits
            .flatten_all()
            .and_then(|l| l.to_vec1::<f32>())
            .expect("values")
    };
    assert_eq!(logits(5), logits(5));
    assert_ne!(logits(5), logits(6));
}
