use std::path::Path;

use pretrain::{run, run_until};
use training::{StepMetrics, read_metrics};

use crate::{resolved, tiny_config};

/// What must agree between two runs: everything but the timings.
fn deterministic(metrics: &[StepMetrics]) -> Vec<String> {
    metrics
        .iter()
        .map(|line| {
            let mut line = line.clone();
            line.tokens_per_s = 0.0;
            line.elapsed_s = 0.0;
            serde_json::to_string(&line).unwrap()
        })
        .collect()
}

fn file(run: &Path, name: &str) -> Vec<u8> {
    std::fs::read(run.join("checkpoints/step-00000012").join(name)).unwrap()
}

/// 12 updates straight ≡ 7 updates, a "kill" (checkpoint at 6, so update 7 is lost and its
/// metrics line dropped), a fresh process state resuming from disk, then the rest: the weights
/// and optimizer moments are bitwise equal and so is every metrics line but its timings.
#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    let straight_dir = tempfile::tempdir().unwrap();
    let interrupted_dir = tempfile::tempdir().unwrap();
    let configure = |directory: &Path| {
        let mut config = tiny_config(directory);
        config.training.steps = 12;
        config.training.checkpoint_every = 3;
        config.training.eval_every = 4;
        config.training.batch_size = 4;
        config.training.gradient_accumulation = 2;
        config
    };

    let straight = configure(straight_dir.path());
    run(&straight, &resolved(&straight)).unwrap();

    let interrupted = configure(interrupted_dir.path());
    let first = run_until(&interrupted, &resolved(&interrupted), 7).unwrap();
    assert_eq!((first.steps, first.final_model), (7, None));
    let second = run(&interrupted, &resolved(&interrupted)).unwrap();
    assert_eq!((second.resumed_from, second.steps), (Some(6), 12));

    for name in [
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "train_state.json",
    ] {
        assert!(
            file(straight_dir.path(), name) == file(interrupted_dir.path(), name),
            "{name} differs"
        );
    }
    let straight_metrics = read_metrics(&straight_dir.path().join("metrics.jsonl")).unwrap();
    let resumed_metrics = read_metrics(&interrupted_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(straight_metrics.len(), 12);
    assert_eq!(
        deterministic(&straight_metrics),
        deterministic(&resumed_metrics)
    );
}

/// A checkpoint's data position indexes one token stream: resuming after the corpus changed is
/// refused, naming the checkpoint.
#[test]
fn resuming_on_a_changed_corpus_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let text = directory.path().join("text.txt");
    let corpus = std::fs::read_to_string(
        crate::repository().join("datasets/tests/fixtures/tiny-tokenizer-corpus.txt"),
    )
    .unwrap();
    std::fs::write(&text, &corpus).unwrap();
    let mut config = tiny_config(&directory.path().join("run"));
    config.data.files = vec![text.clone()];
    config.training.steps = 2;
    config.training.warmup_steps = 0;
    config.training.checkpoint_every = 1;
    run_until(&config, &resolved(&config), 1).unwrap();

    std::fs::write(&text, corpus + "\nOne more paragraph.\n").unwrap();
    let error = run(&config, &resolved(&config)).unwrap_err().to_string();
    assert!(
        error.contains("step-00000001/train_state.json: the checkpoint was trained on corpus"),
        "{error}"
    );
}
