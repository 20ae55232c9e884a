//! bf16 compute over f32 master weights (`Llama::set_compute_dtype`): logits close to the f32
//! forward, and every f32 `Var` receives an f32 gradient through the casts.

use candle_core::{DType, Device, Tensor};
use model::{Llama, LlamaConfig, Positions};

use crate::{max_abs_difference, token_ids};

#[test]
fn bf16_compute_is_close_and_trains_the_f32_master_weights() {
    let config = LlamaConfig::tiny(64);
    let (model, varmap) = Llama::from_scratch(&config, 51, &Device::Cpu).expect("model");
    model::init::initialize(&varmap, 51, 0.1).expect("init");
    let mut bf16 = model.clone();
    bf16.set_compute_dtype(Some(DType::BF16))
        .expect("compute dtype");
    let ids = Tensor::from_vec(token_ids(16, 64, 13), (2, 8), &Device::Cpu).expect("ids");
    let positions = Positions::causal(2, 8);

    let full = model.forward(&ids, &positions).expect("f32").logits;
    let output = bf16.forward(&ids, &positions).expect("bf16");
    assert_eq!(output.logits.dtype(), DType::F32);
    assert_eq!(output.hidden_states.dtype(), DType::BF16);
    let scale = full
        .abs()
        .and_then(|l| l.flatten_all())
        .and_then(|l| l.max(0))
        .and_then(|l| l.to_scalar::<f32>())
        .expect("scale");
    let difference = max_abs_difference(&full, &output.logits);
    eprintln!("bf16 compute: max |bf16 - f32| = {difference:.2e} (max |logit| {scale:.2})");
    // bf16 keeps 8 bits of mantissa: a relative error of a few 2^-8 through two layers.
    assert!(difference <= 0.05 * scale, "{difference} vs {scale}");

    // (2, 8, vocab) -> (16, vocab)
    let logits = output.logits.reshape((16, 64)).expect("reshape");
    let targets = ids.flatten_all().expect("targets");
    let loss = candle_nn::loss::cross_entropy(&logits, &targets).expect("loss");
    let gradients = loss.backward().expect("backward");
    for (name, var) in varmap.data().lock().expect("lock").iter() {
        let gradient = gradients
            .get(var)
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        assert_eq!(gradient.dtype(), DType::F32, "{name}");
        let magnitude = gradient
            .abs()
            .and_then(|g| g.sum_all())
            .and_then(|g| g.to_scalar::<f32>())
            .expect("sum");
        assert!(magnitude > 0.0, "{name} has an all-zero gradient");
    }
}
