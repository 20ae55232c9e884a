use pretrain::run;
use training::read_metrics;

use crate::{resolved, tiny_config};

/// 50 updates of 8 × 64 tokens: the training loss falls by more than 30% from ln(768) ≈ 6.64,
/// held-out loss is measured, and the run ends with an HF checkpoint and a loss plot.
#[test]
fn training_loss_falls_and_the_run_exports_a_checkpoint() {
    let output = tempfile::tempdir().unwrap();
    let config = tiny_config(output.path());
    let summary = run(&config, &resolved(&config)).unwrap();

    let first = summary.first_loss.unwrap();
    let last = summary.last_loss.unwrap();
    assert!((first - 768f64.ln()).abs() < 0.5, "first loss {first}");
    assert!(last < 0.7 * first, "loss {first} → {last}");
    let metrics = read_metrics(&summary.metrics).unwrap();
    assert_eq!(metrics.len(), 50);
    let held_out: Vec<f64> = metrics
        .iter()
        .filter_map(|line| line.held_out_loss)
        .collect();
    assert_eq!(held_out.len(), 5, "every 10 updates");
    assert!(held_out[4] < held_out[0], "held-out {held_out:?}");
    eprintln!(
        "loss {first:.4} → {last:.4}, held-out {held_out:?}, {:.1} steps/s",
        summary.steps as f64 / summary.seconds
    );

    let final_model = summary.final_model.unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
    ] {
        assert!(final_model.join(file).is_file(), "final/{file}");
    }
    let reloaded = model::Checkpoint::load(
        &final_model,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(reloaded.config.vocab_size, 768);
    assert!(summary.loss_plot.unwrap().is_file());
    let saved_config =
        std::fs::read_to_string(output.path().join("checkpoints/step-00000050/config.toml"))
            .unwrap();
    assert_eq!(saved_config, resolved(&config));
}
