//! The SFT loop, top to bottom: load the checkpoint and conversations, resume if a checkpoint
//! exists, then per step accumulate micro-batches, clip, step AdamW on the schedule, log, evaluate
//! the held-out loss, checkpoint; at the end write an HF checkpoint directory and the loss plot.

use std::path::PathBuf;

use candle_core::{DType, Device};
use datasets::render::Renderer;
use datasets::tokenizer::{Llama3Tokenizer, SpecialTokenIds};
use model::lora::set_dropout_seed;
use model::{
    Checkpoint, Llama, LoraConfig, apply_lora, copy_tokenizer_files, save, varmap_tensors,
};
use serde::Serialize;
use training::{AdamW, GradientAccumulator, TrainingRun, llama_weight_decay, write_loss_plot};

use crate::config::SftConfig;
use crate::data::{self, DataPosition, SftData};
use crate::error::SftError;
use crate::loss::masked_next_token_loss_from_hidden;

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Optimizer updates done in total (resumed ones included).
    pub steps: u64,
    /// Training conversations and held-out conversations.
    pub train_conversations: usize,
    /// Held-out conversations.
    pub held_out_conversations: usize,
    /// Lines skipped (with `skip_invalid`).
    pub skipped: usize,
    /// Held-out loss before the first update of this run (`None` without held-out data).
    pub held_out_loss_before: Option<f64>,
    /// Held-out loss at the end.
    pub held_out_loss_after: Option<f64>,
    /// The final HF checkpoint directory.
    pub final_model: PathBuf,
}

/// Runs (or resumes) the fine-tuning `config` describes; `resolved_config` is saved with each
/// checkpoint.
#[expect(
    clippy::too_many_lines,
    reason = "the whole loop, readable top to bottom, as every stage's train.rs (STYLE.md)"
)]
pub fn run(config: &SftConfig, resolved_config: &str) -> Result<Summary, SftError> {
    let training = &config.training;
    let device = training::select_device(training.device)?;
    training.validate()?;
    let tokenizer_path = data::tokenizer_path(&config.model, config.tokenizer.as_ref());
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path)?;
    let renderer = Renderer::new(&tokenizer)?;
    let special = *tokenizer.special();
    let sft_data = data::load(&config.data, &renderer, training.seed)?;
    for reason in &sft_data.skipped {
        eprintln!("skipped {reason}");
    }

    // Full fine-tuning trains every weight; with LoRA the base is frozen and only the adapters are
    // Vars, so the optimizer, its state and the resumable checkpoints hold the adapters alone.
    let checkpoint = Checkpoint::load(&config.model, DType::F32, &device)?;
    let (mut model, var_map) = match &config.lora {
        None => checkpoint.trainable_model()?,
        Some(lora) => {
            let mut model = checkpoint.model()?;
            let adapters = apply_lora(
                &mut model,
                &LoraConfig {
                    rank: lora.rank,
                    alpha: lora.alpha,
                    dropout: lora.dropout,
                    target_modules: lora.target_modules.clone(),
                    seed: training.seed,
                },
            )?;
            (model, adapters)
        }
    };
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

    let held_out_loss_before = evaluate(&mut model, &sft_data, config, &special, &device)?;
    // An epoch's batches follow from (seed, epoch) alone: what makes resuming exact.
    let rows_for_epoch = |epoch| {
        data::epoch_batches(
            &sft_data.train,
            epoch,
            training.seed,
            &config.data,
            training.batch_size,
            special.finetune_right_pad,
        )
    };
    let mut epoch_rows = rows_for_epoch(position.epoch)?;
    let mut held_out_loss_after = held_out_loss_before;
    while run.step() < training.steps {
        run.begin_step();
        if config.lora.is_some() {
            // Dropout masks depend on (seed, step) only, so a resumed run draws the same ones.
            set_dropout_seed(
                &mut model,
                Some(training.seed ^ run.step().wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            );
        }
        let mut accumulator = GradientAccumulator::new();
        for _ in 0..training.gradient_accumulation.max(1) {
            if position.batch >= epoch_rows.len() {
                position = DataPosition {
                    epoch: position.epoch + 1,
                    batch: 0,
                };
                epoch_rows = rows_for_epoch(position.epoch)?;
            }
            let batch = data::to_batch(
                &epoch_rows[position.batch],
                config.data.layout,
                special.begin_of_text,
                special.finetune_right_pad,
                &device,
            )?;
            position.batch += 1;
            // The LM head runs on the trained positions only, in chunks: no (tokens, vocab) logits.
            let hidden_states = model.hidden_states(&batch.input_ids, &batch.positions)?;
            let (loss_sum, tokens) = masked_next_token_loss_from_hidden(
                &hidden_states,
                model.lm_head_weight()?,
                &batch.input_ids,
                &batch.mask,
                model.kernels(),
            )?;
            if tokens > 0 {
                accumulator.add(&loss_sum, tokens)?;
            }
        }
        let update = run.update(accumulator.finish(&run.vars())?)?;
        let held_out_loss = if run.evaluates_now() {
            let loss = evaluate(&mut model, &sft_data, config, &special, &device)?;
            held_out_loss_after = loss;
            loss
        } else {
            None
        };
        let mut extra = serde_json::Map::new();
        if let Some(loss) = held_out_loss {
            extra.insert("held_out_perplexity".to_owned(), loss.exp().into());
        }
        run.record(
            &update,
            update.normalised_by,
            held_out_loss,
            extra,
            &position,
        )?;
    }
    let (steps, metrics_path) = (run.step(), run.metrics_path());
    run.finish();

    let final_model = config.output_dir.join("final");
    let weights = if config.lora.is_some() {
        // W + (alpha / r)·B·A for every adapted projection, under the HF names.
        model.merged_tensors()?
    } else {
        varmap_tensors(&var_map)
    };
    save(
        &final_model,
        model.config(),
        &weights,
        &training.final_save_options(),
    )?;
    copy_tokenizer_files(&config.model, &final_model)?;
    if config.tokenizer.is_some() {
        tokenizer.save(&final_model.join("tokenizer.json"))?;
    }
    write_loss_plot(&metrics_path, &config.output_dir.join("loss.svg"), "SFT")?;
    Ok(Summary {
        steps,
        train_conversations: sft_data.train.len(),
        held_out_conversations: sft_data.held_out.len(),
        skipped: sft_data.skipped.len(),
        held_out_loss_before,
        held_out_loss_after,
        final_model,
    })
}

/// Mean per-token loss over the held-out conversations (`None` when there are none), with LoRA
/// dropout switched off.
fn evaluate(
    model: &mut Llama,
    data: &SftData,
    config: &SftConfig,
    special: &SpecialTokenIds,
    device: &Device,
) -> Result<Option<f64>, SftError> {
    set_dropout_seed(model, None);
    let (begin_of_text, pad_id) = (special.begin_of_text, special.finetune_right_pad);
    if data.held_out.is_empty() {
        return Ok(None);
    }
    // Epoch 0 of the held-out set: a fixed order, so every evaluation sees the same batches.
    let rows = data::epoch_batches(
        &data.held_out,
        0,
        0,
        &config.data,
        config.training.batch_size,
        pad_id,
    )?;
    let (mut loss, mut tokens) = (0.0, 0u64);
    for batch_rows in &rows {
        let batch = data::to_batch(
            batch_rows,
            config.data.layout,
            begin_of_text,
            pad_id,
            device,
        )?;
        // Detached: nothing of the graph is kept for a backward that never comes.
        let hidden_states = model
            .hidden_states(&batch.input_ids, &batch.positions)?
            .detach();
        let (loss_sum, count) = masked_next_token_loss_from_hidden(
            &hidden_states,
            &model.lm_head_weight()?.detach(),
            &batch.input_ids,
            &batch.mask,
            model.kernels(),
        )?;
        loss += f64::from(loss_sum.to_scalar::<f32>()?);
        tokens += count;
    }
    Ok((tokens > 0).then(|| loss / tokens as f64))
}
