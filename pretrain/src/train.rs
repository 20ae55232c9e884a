//! The pretraining loop, top to bottom: tokenizer and corpus, model (new or loaded), optimizer and
//! schedule, resume from the newest checkpoint, then for each update: micro-batches through the
//! model into the accumulator, clip, `AdamW` step, a metrics line, held-out loss every
//! `eval_every`, a checkpoint every `checkpoint_every`; at the end the HF checkpoint in `final/`
//! and the loss curve.
//!
//! Resume is exact: weights, optimizer moments, the schedule's step and the data position
//! `(epoch, index)` come back from the checkpoint, so an interrupted and resumed run ends with the
//! same weights, bit for bit, as one that was never stopped (the integration test checks it).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Var};
use candle_nn::VarMap;
use datasets::tokenizer::Llama3Tokenizer;
use model::{Llama, LlamaConfig, SaveOptions};
use serde::{Deserialize, Serialize};
use training::{
    AccumulatedGradients, AdamW, GradientAccumulator, TrainingConfig, TrainingRun,
    llama_weight_decay, write_loss_plot,
};

use crate::config::{ModelSource, PretrainConfig};
use crate::data::{Corpus, DataPosition, Split, WindowOrder};
use crate::error::{PretrainError, Result};
use crate::loss::cross_entropy_sum_from_hidden;

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Updates completed, counting those before a resume.
    pub steps: u64,
    /// The checkpoint step this process resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// Training loss of the first update this process ran.
    pub first_loss: Option<f64>,
    /// Training loss of the last update.
    pub last_loss: Option<f64>,
    /// The last held-out loss measured.
    pub held_out_loss: Option<f64>,
    /// `exp(held_out_loss)`.
    pub held_out_perplexity: Option<f64>,
    /// Trained tokens this process ran over.
    pub tokens: u64,
    /// Seconds this process spent in the loop.
    pub seconds: f64,
    /// The HF checkpoint directory, when the run reached its last step.
    pub final_model: Option<PathBuf>,
    /// `metrics.jsonl`.
    pub metrics: PathBuf,
    /// `loss.svg`, when the run reached its last step.
    pub loss_plot: Option<PathBuf>,
}

/// Runs (or resumes) the pretraining of `config`; `resolved_config_toml` is saved beside every
/// checkpoint.
pub fn run(config: &PretrainConfig, resolved_config_toml: &str) -> Result<Summary> {
    run_until(config, resolved_config_toml, config.training.steps)
}

/// [`run`], stopping after update `stop_after` as if killed there (no final export): the seam the
/// resume test uses.
pub fn run_until(
    config: &PretrainConfig,
    resolved_config_toml: &str,
    stop_after: u64,
) -> Result<Summary> {
    config.validate()?;
    let training = &config.training;
    let output_dir = &config.output_dir;
    std::fs::create_dir_all(output_dir).map_err(PretrainError::io(output_dir))?;
    let device = training::select_device(training.device)?;

    // Tokenizer and corpus: tokenized once into output_dir/data, reused on resume.
    let tokenizer = Llama3Tokenizer::from_file(&config.tokenizer)?;
    let corpus = Corpus::prepare(
        &config.data,
        &tokenizer,
        &config.tokenizer,
        &output_dir.join("data"),
    )?;
    let held_out_windows: Vec<usize> = (0..corpus.windows(Split::HeldOut)).collect();

    // The model (new, or a checkpoint to continue from; f32), its optimizer and the schedule.
    let (mut llama, var_map) = build_model(config, &tokenizer, &device)?;
    llama.set_compute_dtype(training.compute_dtype.cast())?;
    let optimizer = AdamW::from_var_map(&var_map, training.adamw(), llama_weight_decay(false))?;

    // Resume: weights, optimizer, step, data position, RNG; the metrics log is cut to the step.
    let (mut run, saved) = TrainingRun::start::<SavedDataPosition>(
        output_dir,
        training,
        &var_map,
        optimizer,
        resolved_config_toml,
    )?;
    let position = match run.resumed_from() {
        None => DataPosition::default(),
        Some(checkpoint) => saved.position_in(&corpus.index().checksum, checkpoint)?,
    };
    let mut order = WindowOrder::new(training.seed, corpus.windows(Split::Training), position);
    let metrics_path = run.metrics_path();
    let mut summary = Summary {
        steps: run.step(),
        resumed_from: run.resumed_from().map(|_| run.step()),
        first_loss: None,
        last_loss: None,
        held_out_loss: None,
        held_out_perplexity: None,
        tokens: 0,
        seconds: 0.0,
        final_model: None,
        metrics: metrics_path.clone(),
        loss_plot: None,
    };

    while run.step() < training.steps.min(stop_after) {
        run.begin_step();
        let accumulated = accumulate(&llama, &corpus, &mut order, &run.vars(), training, &device)?;
        let update = run.update(accumulated)?;
        let held_out_loss = if run.evaluates_now() && !held_out_windows.is_empty() {
            Some(held_out_loss(
                &llama,
                &corpus,
                &held_out_windows,
                training.batch_size,
                &device,
            )?)
        } else {
            None
        };
        let mut extra = serde_json::Map::new();
        if let Some(loss) = held_out_loss {
            extra.insert("held_out_perplexity".to_owned(), loss.exp().into());
            summary.held_out_loss = Some(loss);
            summary.held_out_perplexity = Some(loss.exp());
        }
        extra.insert("epoch".to_owned(), order.position().epoch.into());
        let saved = SavedDataPosition {
            epoch: order.position().epoch,
            index: order.position().index,
            corpus_checksum: corpus.index().checksum.clone(),
        };
        run.record(&update, update.normalised_by, held_out_loss, extra, &saved)?;
        summary.first_loss.get_or_insert(update.loss);
        summary.last_loss = Some(update.loss);
        summary.tokens += update.normalised_by;
        summary.steps = update.step;
    }
    let step = run.step();
    summary.seconds = run.seconds();
    run.finish();

    if step == training.steps {
        let final_dir = output_dir.join("final");
        export(
            &final_dir,
            &llama,
            &var_map,
            &config.tokenizer,
            &training.final_save_options(),
        )?;
        let plot = output_dir.join("loss.svg");
        write_loss_plot(&metrics_path, &plot, "pretraining loss")?;
        summary.final_model = Some(final_dir);
        summary.loss_plot = Some(plot);
    }
    Ok(summary)
}

/// One optimizer update's gradients: `gradient_accumulation` micro-batches of `batch_size` windows
/// through the model into the accumulator, normalised by the step's trained tokens.
fn accumulate(
    llama: &Llama,
    corpus: &Corpus,
    order: &mut WindowOrder,
    vars: &[Var],
    training: &TrainingConfig,
    device: &Device,
) -> Result<AccumulatedGradients> {
    let mut accumulator = GradientAccumulator::new();
    for _ in 0..training.gradient_accumulation {
        let batch = corpus
            .batch(Split::Training, &order.take(training.batch_size))?
            .tensors(device)?;
        // (b, s, hidden): the LM head runs in chunks inside the loss, no (b, s, V) logits.
        let hidden_states = llama.hidden_states(&batch.input_ids, &batch.positions)?;
        let (loss_sum, tokens) = cross_entropy_sum_from_hidden(
            &hidden_states,
            llama.lm_head_weight()?,
            &batch.targets,
            &batch.target_mask,
            llama.kernels(),
        )?;
        accumulator.add(&loss_sum, tokens)?;
    }
    Ok(accumulator.finish(vars)?)
}

/// The data position as a checkpoint holds it: where the order is, in which token stream.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedDataPosition {
    /// Passes over the training windows completed.
    epoch: u64,
    /// Windows of this epoch already served.
    index: usize,
    /// [`crate::data::CorpusIndex::checksum`] of the stream the position indexes.
    corpus_checksum: String,
}

impl SavedDataPosition {
    /// The position, when the checkpoint in `checkpoint` indexes the token stream with
    /// `corpus_checksum`: a position means nothing in a different stream, so a mismatch is refused
    /// rather than trained on in a silently different order.
    fn position_in(self, corpus_checksum: &str, checkpoint: &Path) -> Result<DataPosition> {
        if self.corpus_checksum != corpus_checksum {
            return Err(PretrainError::Corpus {
                path: checkpoint.join(training::state::TRAIN_STATE_FILE),
                reason: format!(
                    "the checkpoint was trained on corpus {} but the data now tokenize to {}; \
                     resume with the same files and tokenizer, or use a new output_dir",
                    self.corpus_checksum, corpus_checksum
                ),
            });
        }
        Ok(DataPosition {
            epoch: self.epoch,
            index: self.index,
        })
    }
}

/// A new model of the configured shape (seeded), or the checkpoint's, as trainable f32 vars.
fn build_model(
    config: &PretrainConfig,
    tokenizer: &Llama3Tokenizer,
    device: &Device,
) -> Result<(Llama, VarMap)> {
    let (llama, var_map) = match &config.model {
        ModelSource::FromScratch(architecture) => {
            let special = tokenizer.special();
            let llama_config = LlamaConfig {
                vocab_size: architecture.vocab_size.unwrap_or(tokenizer.vocab_size()),
                hidden_size: architecture.hidden_size,
                intermediate_size: architecture.intermediate_size,
                num_hidden_layers: architecture.num_hidden_layers,
                num_attention_heads: architecture.num_attention_heads,
                num_key_value_heads: architecture.num_key_value_heads,
                head_dim: architecture.hidden_size / architecture.num_attention_heads,
                rms_norm_eps: architecture.rms_norm_eps,
                max_position_embeddings: architecture.max_position_embeddings,
                tie_word_embeddings: architecture.tie_word_embeddings,
                bos_token_id: Some(special.begin_of_text),
                eos_token_ids: vec![special.end_of_text],
                rope_theta: architecture.rope_theta,
                rope_scaling: None,
                torch_dtype: None,
            };
            Llama::from_scratch(&llama_config, config.training.seed, device)?
        }
        ModelSource::Checkpoint(directory) => {
            model::Checkpoint::load(directory, DType::F32, device)?.trainable_model()?
        }
    };
    let vocab_size = llama.config().vocab_size;
    if vocab_size < tokenizer.vocab_size() {
        return Err(PretrainError::InvalidConfig {
            field: "model",
            value: format!("vocab_size {vocab_size}"),
            reason: format!(
                "below the vocabulary of {} ({} ids)",
                config.tokenizer.display(),
                tokenizer.vocab_size()
            ),
        });
    }
    Ok((llama, var_map))
}

/// Mean per-token loss over every held-out window, in micro-batches of `batch_size`.
fn held_out_loss(
    llama: &Llama,
    corpus: &Corpus,
    windows: &[usize],
    batch_size: usize,
    device: &Device,
) -> Result<f64> {
    let (mut loss_sum, mut tokens) = (0.0f64, 0u64);
    for chunk in windows.chunks(batch_size) {
        let batch = corpus.batch(Split::HeldOut, chunk)?.tensors(device)?;
        // Detached: nothing of the graph is kept for a backward that never comes.
        let hidden_states = llama
            .hidden_states(&batch.input_ids, &batch.positions)?
            .detach(); // (b, s, hidden)
        let (sum, count) = cross_entropy_sum_from_hidden(
            &hidden_states,
            &llama.lm_head_weight()?.detach(),
            &batch.targets,
            &batch.target_mask,
            llama.kernels(),
        )?;
        loss_sum += f64::from(
            sum.to_scalar::<f32>()
                .map_err(PretrainError::tensor("reading the held-out loss"))?,
        );
        tokens += count;
    }
    Ok(if tokens == 0 {
        f64::NAN
    } else {
        loss_sum / tokens as f64
    })
}

/// Writes the HF checkpoint (config, weights, generation config) and the tokenizer to `directory`.
fn export(
    directory: &Path,
    llama: &Llama,
    var_map: &VarMap,
    tokenizer: &Path,
    options: &SaveOptions,
) -> Result<()> {
    model::save(
        directory,
        llama.config(),
        &model::varmap_tensors(var_map),
        options,
    )?;
    let target = directory.join("tokenizer.json");
    std::fs::copy(tokenizer, &target).map_err(PretrainError::io(&target))?;
    Ok(())
}
