//! The reward-model loop, top to bottom: load the checkpoint (dropping `lm_head`, adding the score
//! head) and the preference pairs, resume if a checkpoint exists, then per step accumulate
//! micro-batches, clip, step AdamW on the schedule, log, evaluate held-out accuracy and margin,
//! checkpoint; at the end write a `LlamaForSequenceClassification` directory and the loss plot.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use model::{copy_tokenizer_files, varmap_tensors};
use serde::Serialize;
use training::{AdamW, GradientAccumulator, TrainingRun, llama_weight_decay, write_loss_plot};

use crate::config::RewardConfig;
use crate::data::{self, DataPosition, PreferencePair, RewardData};
use crate::error::RewardError;
use crate::loss::bradley_terry_loss_sum;
use crate::model::{self as reward_model, RewardModel};

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Optimizer updates done in total (resumed ones included).
    pub steps: u64,
    /// Training pairs (an edited record gives three).
    pub train_pairs: usize,
    /// Held-out pairs.
    pub held_out_pairs: usize,
    /// Records skipped (with `skip_invalid`).
    pub skipped: usize,
    /// Records dropped by `data.strengths`.
    pub filtered: usize,
    /// Held-out metrics before the first update of this run (`None` without held-out data).
    pub held_out_before: Option<HeldOut>,
    /// Held-out metrics at the end.
    pub held_out_after: Option<HeldOut>,
    /// The final reward-model directory.
    pub final_model: PathBuf,
}

/// Held-out loss, accuracy and mean margin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HeldOut {
    /// Mean loss per pair (with the run's loss settings).
    pub loss: f64,
    /// Fraction of pairs with r⁺ > r⁻.
    pub accuracy: f64,
    /// Mean r⁺ − r⁻.
    pub margin: f64,
}

/// Runs (or resumes) the reward-model training `config` describes; `resolved_config` is saved with
/// each checkpoint.
#[expect(
    clippy::too_many_lines,
    reason = "the whole loop, readable top to bottom, as every stage's train.rs (STYLE.md)"
)]
pub fn run(config: &RewardConfig, resolved_config: &str) -> Result<Summary, RewardError> {
    let training = &config.training;
    let device = training::select_device(training.device)?;
    config.validate()?;
    let tokenizer_path = config
        .tokenizer
        .clone()
        .unwrap_or_else(|| config.model.join("tokenizer.json"));
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path)?;
    let renderer = Renderer::new(&tokenizer)?;
    let pad_id = tokenizer.special().finetune_right_pad;
    let reward_data = data::load(&config.data, &renderer, training.seed)?;
    for reason in &reward_data.skipped {
        eprintln!("skipped {reason}");
    }
    if reward_data.filtered > 0 {
        eprintln!("data.strengths dropped {} records", reward_data.filtered);
    }

    // Every weight trains, the score head included; the causal LM's lm_head is gone.
    let (mut model, var_map) =
        RewardModel::trainable(&config.model, pad_id, training.seed, &device)?;
    model.set_compute_dtype(training.compute_dtype.cast())?;
    let optimizer = AdamW::from_var_map(&var_map, training.adamw(), llama_weight_decay(false))?;
    let (mut run, mut position) = TrainingRun::start::<DataPosition>(
        &config.output_dir,
        training,
        &var_map,
        optimizer,
        resolved_config,
    )?;

    let held_out_before = evaluate(&model, &reward_data, config, &device)?;
    // An epoch's batches follow from (seed, epoch) alone: what makes resuming exact.
    let batches_for_epoch = |epoch| {
        data::epoch_batches(
            reward_data.train.len(),
            epoch,
            training.seed,
            training.batch_size,
        )
    };
    let mut epoch_batches = batches_for_epoch(position.epoch);
    let mut held_out_after = held_out_before;
    while run.step() < training.steps {
        run.begin_step();
        let mut accumulator = GradientAccumulator::new();
        let mut tokens = 0;
        let (mut chosen_rewards, mut rejected_rewards) = (Vec::new(), Vec::new());
        for _ in 0..training.gradient_accumulation.max(1) {
            if position.batch >= epoch_batches.len() {
                position = DataPosition {
                    epoch: position.epoch + 1,
                    batch: 0,
                };
                epoch_batches = batches_for_epoch(position.epoch);
            }
            let pairs: Vec<&PreferencePair> = epoch_batches[position.batch]
                .iter()
                .map(|&index| &reward_data.train[index])
                .collect();
            let batch = data::to_batch(&pairs, pad_id, &device)?;
            position.batch += 1;
            let (chosen, rejected) = pair_rewards(&model, &batch)?;
            let loss_sum = bradley_terry_loss_sum(
                &chosen,
                &rejected,
                config.loss.margin.then_some(&batch.margins),
                config.loss.center_rewards_coefficient,
            )?;
            // "tokens" of the accumulator are pairs here: the loss is a mean over pairs (TRL).
            accumulator.add(&loss_sum, batch.pairs as u64)?;
            tokens += batch.tokens;
            chosen_rewards.extend(chosen.detach().to_vec1::<f32>()?);
            rejected_rewards.extend(rejected.detach().to_vec1::<f32>()?);
        }
        let accumulated = accumulator.finish(&run.vars())?;
        let update = run.update(accumulated)?;

        let held_out = if run.evaluates_now() {
            let held_out = evaluate(&model, &reward_data, config, &device)?;
            held_out_after = held_out;
            held_out
        } else {
            None
        };
        let mut extra = serde_json::Map::new();
        let step_metrics = PairMetrics::of(&chosen_rewards, &rejected_rewards);
        extra.insert("pairs".to_owned(), update.normalised_by.into());
        extra.insert("accuracy".to_owned(), step_metrics.accuracy.into());
        extra.insert("margin".to_owned(), step_metrics.margin.into());
        extra.insert("rewards/chosen".to_owned(), step_metrics.chosen.into());
        extra.insert("rewards/rejected".to_owned(), step_metrics.rejected.into());
        if let Some(held_out) = held_out {
            extra.insert("held_out_accuracy".to_owned(), held_out.accuracy.into());
            extra.insert("held_out_margin".to_owned(), held_out.margin.into());
        }
        run.record(
            &update,
            tokens,
            held_out.map(|held_out| held_out.loss),
            extra,
            &position,
        )?;
    }
    let (steps, metrics_path) = (run.step(), run.metrics_path());
    run.finish();

    let final_model = config.output_dir.join("final");
    reward_model::save(
        &final_model,
        model.config(),
        pad_id,
        &varmap_tensors(&var_map),
        &training.final_save_options(),
    )?;
    copy_tokenizer_files(&config.model, &final_model)?;
    if config.tokenizer.is_some() {
        tokenizer.save(&final_model.join("tokenizer.json"))?;
    }
    write_loss_plot(
        &metrics_path,
        &config.output_dir.join("loss.svg"),
        "reward model",
    )?;
    Ok(Summary {
        steps,
        train_pairs: reward_data.train.len(),
        held_out_pairs: reward_data.held_out.len(),
        skipped: reward_data.skipped.len(),
        filtered: reward_data.filtered,
        held_out_before,
        held_out_after,
        final_model,
    })
}

/// The rewards of a batch's chosen rows and rejected rows, `(pairs,)` each (TRL's `chunk(2)`).
fn pair_rewards(model: &RewardModel, batch: &data::Batch) -> Result<(Tensor, Tensor), RewardError> {
    let rewards = model.rewards(&batch.input_ids, &batch.lengths)?;
    Ok((
        rewards.narrow(0, 0, batch.pairs)?,
        rewards.narrow(0, batch.pairs, batch.pairs)?,
    ))
}

/// Means over pairs, as TRL logs them.
#[derive(Debug, Clone, Copy)]
struct PairMetrics {
    accuracy: f64,
    margin: f64,
    chosen: f64,
    rejected: f64,
}

impl PairMetrics {
    fn of(chosen: &[f32], rejected: &[f32]) -> PairMetrics {
        let count = chosen.len().max(1) as f64;
        let mean = |values: &[f32]| values.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
        PairMetrics {
            accuracy: chosen.iter().zip(rejected).filter(|(c, r)| c > r).count() as f64 / count,
            margin: mean(chosen) - mean(rejected),
            chosen: mean(chosen),
            rejected: mean(rejected),
        }
    }
}

/// Loss, accuracy and mean margin over the held-out pairs (`None` when there are none), in a
/// fixed order so every evaluation sees the same batches.
fn evaluate(
    model: &RewardModel,
    data: &RewardData,
    config: &RewardConfig,
    device: &Device,
) -> Result<Option<HeldOut>, RewardError> {
    if data.held_out.is_empty() {
        return Ok(None);
    }
    let pad_id = model.pad_token_id();
    let (mut loss, mut chosen_rewards, mut rejected_rewards) = (0.0, Vec::new(), Vec::new());
    for pairs in data.held_out.chunks(config.training.batch_size.max(1)) {
        let pairs: Vec<&PreferencePair> = pairs.iter().collect();
        let batch = data::to_batch(&pairs, pad_id, device)?;
        let (chosen, rejected) = pair_rewards(model, &batch)?;
        let (chosen, rejected) = (chosen.detach(), rejected.detach());
        let loss_sum = bradley_terry_loss_sum(
            &chosen,
            &rejected,
            config.loss.margin.then_some(&batch.margins),
            config.loss.center_rewards_coefficient,
        )?;
        loss += f64::from(loss_sum.to_scalar::<f32>()?);
        chosen_rewards.extend(chosen.to_vec1::<f32>()?);
        rejected_rewards.extend(rejected.to_vec1::<f32>()?);
    }
    let metrics = PairMetrics::of(&chosen_rewards, &rejected_rewards);
    Ok(Some(HeldOut {
        loss: loss / data.held_out.len() as f64,
        accuracy: metrics.accuracy,
        margin: metrics.margin,
    }))
}
