//! Exact resume: a tiny MLP trained with `AdamW`, a warmup-cosine schedule, shuffled data,
//! RNG-driven dropout, two micro-batches per step and clipping, run 20 steps straight through
//! versus 10 steps (checkpoints at 3, 6 and 9, so step 10 is lost work) and then a fresh start
//! that resumes from the step-9 checkpoint on disk. Final weights must be bitwise identical, and
//! the metrics log must hold steps 1..=20 once each with the same values.
//!
//! Each `run` call builds every object from scratch, so nothing survives between the two halves
//! except the files.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde_json::json;
use training::{
    AdamW, AdamWConfig, Checkpoint, Decay, GradientAccumulator, LearningRateSchedule, MetricsLog,
    Rng, StepMetrics, clip_gradient_norm, list_checkpoints, llama_weight_decay, load_latest,
    named_vars, read_metrics, save_checkpoint,
};

const TOTAL_STEPS: u64 = 20;
const SAMPLES: usize = 12;
const MICRO_BATCH: usize = 2;
const MICRO_BATCHES_PER_STEP: usize = 2;
const CHECKPOINT_EVERY: u64 = 3;
const SEED: u64 = 1234;
const KEEP_DROPOUT: f32 = 0.9;

struct Model {
    hidden: Linear,
    output: Linear,
}

impl Model {
    /// (b, 4) → (b,), with a dropout mask on the 8 hidden units drawn from the run's RNG.
    fn forward(&self, inputs: &Tensor, rng: &mut Rng) -> Tensor {
        let hidden = self.hidden.forward(inputs).unwrap().tanh().unwrap(); // (b, 8)
        let (batch, width) = hidden.dims2().unwrap();
        let mask: Vec<f32> = (0..batch * width)
            .map(|_| {
                if rng.next_f32() < KEEP_DROPOUT {
                    1.0 / KEEP_DROPOUT
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (batch, width), &Device::Cpu).unwrap();
        let hidden = (hidden * mask).unwrap();
        self.output.forward(&hidden).unwrap().squeeze(1).unwrap() // (b,)
    }
}

/// Sample `i`: inputs `x[i][j] = sin(i + j)`, target `Σ_j x[i][j]² − 0.5` (a smooth function).
fn dataset() -> (Tensor, Tensor) {
    let inputs: Vec<f32> = (0..SAMPLES * 4)
        .map(|index| ((index / 4 + index % 4) as f32).sin())
        .collect();
    let targets: Vec<f32> = inputs
        .chunks(4)
        .map(|row| row.iter().map(|x| x * x).sum::<f32>() - 0.5)
        .collect();
    (
        Tensor::from_vec(inputs, (SAMPLES, 4), &Device::Cpu).unwrap(),
        Tensor::from_vec(targets, SAMPLES, &Device::Cpu).unwrap(),
    )
}

/// The order of epoch `epoch`: a pure function of the seed and the epoch, so a resumed run
/// recomputes it instead of storing it.
fn epoch_order(epoch: u64) -> Vec<usize> {
    Rng::from_seed(SEED ^ (epoch + 1).wrapping_mul(0x9e37_79b9)).permutation(SAMPLES)
}

fn config_text() -> String {
    format!("# resolved config\nseed = {SEED}\ntotal_steps = {TOTAL_STEPS}\n")
}

/// Where the data loader is: epoch and index into that epoch's order. Saved in the checkpoint.
struct DataCursor {
    epoch: u64,
    index: usize,
}

impl DataCursor {
    /// The next micro-batch's sample indices, starting a new epoch when this one runs out.
    fn next_batch(&mut self) -> Tensor {
        if self.index + MICRO_BATCH > SAMPLES {
            self.epoch += 1;
            self.index = 0;
        }
        let order: Vec<u32> = epoch_order(self.epoch)[self.index..self.index + MICRO_BATCH]
            .iter()
            .map(|&sample| sample as u32)
            .collect();
        self.index += MICRO_BATCH;
        Tensor::new(order.as_slice(), &Device::Cpu).unwrap()
    }
}

/// Sets fresh weights from the run's RNG: candle's initialisers draw from a thread RNG, which
/// would make the two runs start from different points.
fn initialise(var_map: &VarMap, rng: &mut Rng) {
    for (_, var) in named_vars(var_map) {
        let values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.next_f32() - 0.5)
            .collect();
        var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// Trains until step `stop_after` (or the end), resuming from `root` if it holds a checkpoint.
/// Returns the final weights as bit patterns, by name.
fn run(root: &Path, stop_after: u64) -> Vec<(String, Vec<u32>)> {
    let var_map = VarMap::new();
    let builder = VarBuilder::from_varmap(&var_map, DType::F32, &Device::Cpu);
    let model = Model {
        hidden: candle_nn::linear(4, 8, builder.pp("hidden")).unwrap(),
        output: candle_nn::linear(8, 1, builder.pp("output")).unwrap(),
    };
    let adamw = AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        epsilon: 1e-8,
        weight_decay: 0.1,
    };
    let mut optimizer = AdamW::from_var_map(&var_map, adamw, llama_weight_decay(false)).unwrap();
    let schedule = LearningRateSchedule {
        peak: 3e-2,
        warmup_steps: 3,
        total_steps: TOTAL_STEPS,
        decay: Decay::Cosine { min_ratio: 0.1 },
    };
    let metrics_path = root.join("metrics.jsonl");

    let (mut step, mut rng, mut cursor, mut metrics) =
        if let Some(checkpoint) = load_latest(&root.join("checkpoints")).unwrap() {
            checkpoint.restore(&var_map, &mut optimizer).unwrap();
            assert_eq!(checkpoint.config, config_text());
            let cursor = DataCursor {
                epoch: checkpoint.data_position["epoch"].as_u64().unwrap(),
                index: checkpoint.data_position["index"].as_u64().unwrap() as usize,
            };
            let metrics = MetricsLog::resume(&metrics_path, checkpoint.step).unwrap();
            (checkpoint.step, checkpoint.rng, cursor, metrics)
        } else {
            let mut rng = Rng::from_seed(SEED);
            initialise(&var_map, &mut rng);
            let cursor = DataCursor { epoch: 0, index: 0 };
            (0, rng, cursor, MetricsLog::create(&metrics_path).unwrap())
        };

    let (inputs, targets) = dataset();
    let vars = optimizer.vars();
    while step < stop_after.min(TOTAL_STEPS) {
        let mut accumulator = GradientAccumulator::new();
        for _ in 0..MICRO_BATCHES_PER_STEP {
            let batch = cursor.next_batch();
            let predictions = model.forward(&inputs.index_select(&batch, 0).unwrap(), &mut rng);
            let errors = (predictions - targets.index_select(&batch, 0).unwrap()).unwrap();
            let loss_sum = errors.sqr().unwrap().sum_all().unwrap();
            accumulator.add(&loss_sum, MICRO_BATCH as u64).unwrap();
        }
        let mut accumulated = accumulator.finish(&vars).unwrap();
        let grad_norm = clip_gradient_norm(&mut accumulated.gradients, &vars, 1.0).unwrap();
        let learning_rate = schedule.learning_rate(step);
        optimizer
            .step(&accumulated.gradients, learning_rate)
            .unwrap();
        step += 1;
        let record = StepMetrics {
            step,
            loss: accumulated.loss,
            learning_rate,
            grad_norm,
            tokens: accumulated.tokens,
            tokens_per_s: 0.0,
            elapsed_s: 0.0,
            held_out_loss: None,
            extra: serde_json::Map::new(),
        };
        metrics.append(&record).unwrap();
        if step % CHECKPOINT_EVERY == 0 {
            let checkpoint = Checkpoint {
                step,
                schedule_step: step,
                var_map: &var_map,
                optimizer: &optimizer,
                data_position: json!({"epoch": cursor.epoch, "index": cursor.index}),
                rng: &rng,
                config: &config_text(),
            };
            save_checkpoint(&root.join("checkpoints"), &checkpoint, 2).unwrap();
        }
    }
    weight_bits(&var_map)
}

fn weight_bits(var_map: &VarMap) -> Vec<(String, Vec<u32>)> {
    named_vars(var_map)
        .into_iter()
        .map(|(name, var)| {
            let values = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name, values.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

#[test]
fn resumed_run_is_bitwise_identical_to_an_uninterrupted_one() {
    let straight = tempfile::tempdir().unwrap();
    let interrupted = tempfile::tempdir().unwrap();

    let expected = run(straight.path(), TOTAL_STEPS);
    run(interrupted.path(), 10);
    let checkpoints: Vec<u64> = list_checkpoints(&interrupted.path().join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    assert_eq!(checkpoints, [6, 9], "keep_last = 2 keeps the newest two");
    let resumed = run(interrupted.path(), TOTAL_STEPS);

    assert_eq!(resumed, expected, "final weights differ bitwise");
    let straight_log = read_metrics(&straight.path().join("metrics.jsonl")).unwrap();
    let resumed_log = read_metrics(&interrupted.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        resumed_log.iter().map(|m| m.step).collect::<Vec<_>>(),
        (1..=TOTAL_STEPS).collect::<Vec<_>>()
    );
    assert_eq!(resumed_log, straight_log);
    // The loss fell: the loop trains, so identical weights are not identical by doing nothing.
    assert!(
        straight_log[19].loss < straight_log[0].loss,
        "{} → {}",
        straight_log[0].loss,
        straight_log[19].loss
    );
}
