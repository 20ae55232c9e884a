//! The DPO loop, top to bottom: load the pairs, fill their reference log-probs from the caches
//! beside the data (scoring what is missing, then dropping the reference model), load the policy,
//! resume if a checkpoint exists, then per step accumulate micro-batches, clip, step AdamW on the
//! schedule, log TRL's metrics, evaluate the held-out pairs, checkpoint; at the end write an HF
//! checkpoint directory and the loss plot.

use std::path::PathBuf;

use candle_core::{DType, Device, Var};
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use model::{Checkpoint, Llama, copy_tokenizer_files, save, varmap_tensors};
use serde::Serialize;
use training::{
    AccumulatedGradients, AdamW, GradientAccumulator, TrainingRun, llama_weight_decay,
    write_loss_plot,
};

use crate::config::{DpoConfig, DpoSettings};
use crate::data::{self, DataPosition, Pair};
use crate::error::DpoError;
use crate::loss::{MetricSums, PairLogProbs, completion_log_probs_from_hidden, micro_batch_loss};
use crate::reference::{self, ReferenceReport};

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Optimizer updates done in total (resumed ones included).
    pub steps: u64,
    /// Training pairs.
    pub train_pairs: usize,
    /// Held-out pairs.
    pub held_out_pairs: usize,
    /// Records skipped (with `skip_invalid`, or by the strength filter).
    pub skipped: usize,
    /// The reference log-prob caches and how many sequences were scored in this run.
    pub reference: ReferenceReport,
    /// Held-out loss before the first update of this run (`None` without held-out data).
    pub held_out_loss_before: Option<f64>,
    /// Held-out loss at the end.
    pub held_out_loss_after: Option<f64>,
    /// Held-out `rewards/accuracies` before the first update of this run.
    pub held_out_accuracy_before: Option<f64>,
    /// Held-out `rewards/accuracies` at the end.
    pub held_out_accuracy_after: Option<f64>,
    /// Held-out `rewards/margins` at the end.
    pub held_out_margin_after: Option<f64>,
    /// The final HF checkpoint directory.
    pub final_model: PathBuf,
}

/// Runs (or resumes) the DPO training `config` describes; `resolved_config` is saved with each
/// checkpoint.
#[expect(
    clippy::too_many_lines,
    reason = "the whole loop, readable top to bottom, as every stage's train.rs (STYLE.md)"
)]
pub fn run(config: &DpoConfig, resolved_config: &str) -> Result<Summary, DpoError> {
    let training = &config.training;
    let device = training::select_device(training.device)?;
    config.validate()?;
    let tokenizer_path = data::tokenizer_path(&config.model, config.tokenizer.as_ref());
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path)?;
    let renderer = Renderer::new(&tokenizer)?;
    let pad_id = tokenizer.special().finetune_right_pad;
    let mut preference_data = data::load(&config.data, &renderer, training.seed)?;
    for reason in &preference_data.skipped {
        eprintln!("skipped {reason}");
    }

    // The reference model lives only inside this call: afterwards each pair carries its two
    // reference log-probs, and only the policy is in memory (pitfall 7).
    let reference_report = reference::attach(
        config,
        &mut preference_data,
        &tokenizer_path,
        pad_id,
        &device,
    )?;
    let preference_data = preference_data;

    let checkpoint = Checkpoint::load(&config.model, DType::F32, &device)?;
    let (mut model, var_map) = checkpoint.trainable_model()?;
    drop(checkpoint);
    model.set_compute_dtype(training.compute_dtype.cast())?;
    let optimizer = AdamW::from_var_map(&var_map, training.adamw(), llama_weight_decay(false))?;
    let (mut run, mut position) = TrainingRun::start::<DataPosition>(
        &config.output_dir,
        training,
        &var_map,
        optimizer,
        resolved_config,
    )?;

    let held_out_before = evaluate(&model, &preference_data.held_out, config, pad_id, &device)?;
    // An epoch's batches follow from (seed, epoch) alone: what makes resuming exact.
    let batches_for_epoch = |epoch| {
        data::epoch_batches(
            preference_data.train.len(),
            epoch,
            training.seed,
            training.batch_size,
        )
    };
    let mut epoch_batches = batches_for_epoch(position.epoch);
    let mut held_out_after = held_out_before;
    while run.step() < training.steps {
        run.begin_step();
        let mut micro_batches = Vec::with_capacity(training.gradient_accumulation);
        for _ in 0..training.gradient_accumulation.max(1) {
            if position.batch >= epoch_batches.len() {
                position = DataPosition {
                    epoch: position.epoch + 1,
                    batch: 0,
                };
                epoch_batches = batches_for_epoch(position.epoch);
            }
            let pairs: Vec<&Pair> = epoch_batches[position.batch]
                .iter()
                .map(|&index| &preference_data.train[index])
                .collect();
            micro_batches.push(pairs);
            position.batch += 1;
        }
        let (accumulated, sums) = accumulate_step(
            &model,
            &run.vars(),
            &micro_batches,
            &config.dpo,
            pad_id,
            &device,
        )?;
        let update = run.update(accumulated)?;

        let held_out = if run.evaluates_now() {
            let evaluation = evaluate(&model, &preference_data.held_out, config, pad_id, &device)?;
            held_out_after = evaluation;
            evaluation
        } else {
            None
        };
        // TRL's names; held-out values with the transformers Trainer's `eval_` prefix.
        let mut extra = sums.to_map("");
        extra.insert("pairs".to_owned(), sums.pairs.into());
        if let Some(evaluation) = held_out {
            extra.extend(evaluation.to_map("eval_"));
        }
        let tokens = micro_batches
            .iter()
            .flatten()
            .map(|pair| pair.chosen.completion_tokens() + pair.rejected.completion_tokens())
            .sum::<usize>() as u64;
        run.record(
            &update,
            tokens,
            held_out.map(|evaluation| evaluation.loss(&config.dpo)),
            extra,
            &position,
        )?;
    }
    let (steps, metrics_path) = (run.step(), run.metrics_path());
    run.finish();

    let final_model = config.output_dir.join("final");
    save(
        &final_model,
        model.config(),
        &varmap_tensors(&var_map),
        &training.final_save_options(),
    )?;
    copy_tokenizer_files(&config.model, &final_model)?;
    if config.tokenizer.is_some() {
        tokenizer.save(&final_model.join("tokenizer.json"))?;
    }
    write_loss_plot(&metrics_path, &config.output_dir.join("loss.svg"), "DPO")?;
    let loss = |evaluation: Option<MetricSums>| evaluation.map(|sums| sums.loss(&config.dpo));
    let accuracy = |evaluation: Option<MetricSums>| {
        evaluation.map(|sums| sums.correct as f64 / sums.pairs.max(1) as f64)
    };
    Ok(Summary {
        steps,
        train_pairs: preference_data.train.len(),
        held_out_pairs: preference_data.held_out.len(),
        skipped: preference_data.skipped.len(),
        reference: reference_report,
        held_out_loss_before: loss(held_out_before),
        held_out_loss_after: loss(held_out_after),
        held_out_accuracy_before: accuracy(held_out_before),
        held_out_accuracy_after: accuracy(held_out_after),
        held_out_margin_after: held_out_after
            .map(|sums| (sums.rewards_chosen - sums.rewards_rejected) / sums.pairs.max(1) as f64),
        final_model,
    })
}

/// One optimizer step's gradients over its micro-batches of pairs (which carry their reference
/// log-probs), normalised by the step's pair count, and the step's metric sums.
pub fn accumulate_step(
    model: &Llama,
    vars: &[Var],
    micro_batches: &[Vec<&Pair>],
    settings: &DpoSettings,
    pad_id: u32,
    device: &Device,
) -> Result<(AccumulatedGradients, MetricSums), DpoError> {
    // The step's totals, known before any forward: each micro-batch's loss is scaled by them so
    // that the accumulated update is the whole step's mean (loss.rs).
    let step_pairs: usize = micro_batches.iter().map(Vec::len).sum();
    let step_chosen_tokens: usize = micro_batches
        .iter()
        .flatten()
        .map(|pair| pair.chosen.completion_tokens())
        .sum();
    let mut accumulator = GradientAccumulator::new();
    let mut sums = MetricSums::default();
    for pairs in micro_batches.iter().filter(|pairs| !pairs.is_empty()) {
        let logps = pair_log_probs(model, pairs, pad_id, device)?;
        let loss = micro_batch_loss(settings, &logps, step_pairs, step_chosen_tokens as f64)?;
        accumulator.add(&loss, pairs.len() as u64)?;
        sums.add(settings, &logps)?;
    }
    Ok((accumulator.finish(vars)?, sums))
}

/// The policy's log-probs of a batch of pairs, with their reference log-probs.
fn pair_log_probs(
    model: &Llama,
    pairs: &[&Pair],
    pad_id: u32,
    device: &Device,
) -> Result<PairLogProbs, DpoError> {
    let reference = pairs
        .iter()
        .map(|pair| {
            pair.reference.ok_or_else(|| {
                DpoError::Data(format!(
                    "{}:{}: pair without reference log-probs",
                    pair.chosen.key.file.display(),
                    pair.chosen.key.line
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = data::to_pair_rows(pairs, pad_id, device)?;
    // The LM head runs on the completion positions only, in chunks: no (rows, seq, vocab) logits.
    let hidden_states = model.hidden_states(&rows.input_ids, &rows.positions)?;
    let row_logps = completion_log_probs_from_hidden(
        &hidden_states,
        model.lm_head_weight()?,
        &rows.input_ids,
        &rows.mask,
        model.kernels(),
    )?;
    Ok(PairLogProbs::from_rows(&row_logps, &reference)?)
}

/// TRL's metrics and the loss over the held-out pairs in file order (`None` when there are none).
fn evaluate(
    model: &Llama,
    pairs: &[Pair],
    config: &DpoConfig,
    pad_id: u32,
    device: &Device,
) -> Result<Option<MetricSums>, DpoError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut sums = MetricSums::default();
    for batch in pairs.chunks(config.training.batch_size.max(1)) {
        let batch: Vec<&Pair> = batch.iter().collect();
        let logps = pair_log_probs(model, &batch, pad_id, device)?;
        sums.add(&config.dpo, &logps)?;
    }
    Ok(Some(sums))
}
