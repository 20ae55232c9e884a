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
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use datasets::tokenizer::Llama3Tokenizer;
use model::{Llama, LlamaConfig, SaveOptions};
use serde::{Deserialize, Serialize};
use training::{
    AdamW, Checkpoint, GradientAccumulator, LearningRateSchedule, MetricsLog, Progress, Rng,
    StepMetrics, TrainingConfig, clip_gradient_norm, llama_weight_decay, load_latest, read_metrics,
    save_checkpoint, write_loss_plot,
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
#[expect(
    clippy::too_many_lines,
    reason = "the stage's loop is read top to bottom in one place (STYLE.md, train.rs)"
)]
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
    let (mut optimizer, schedule) = optimizer_and_schedule(training, &var_map)?;

    // Resume: weights, optimizer, step, data position, RNG; the metrics log is cut to the step.
    let checkpoint_root = output_dir.join("checkpoints");
    let metrics_path = output_dir.join("metrics.jsonl");
    let Resumed {
        mut step,
        position,
        rng,
        mut metrics_log,
        elapsed_before,
        from,
    } = resume(
        &checkpoint_root,
        &metrics_path,
        &var_map,
        &mut optimizer,
        training.seed,
        &corpus.index().checksum,
    )?;
    let mut order = WindowOrder::new(training.seed, corpus.windows(Split::Training), position);
    let progress = Progress::new(training.steps, step);
    let started = Instant::now();
    let mut summary = Summary {
        steps: step,
        resumed_from: from,
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

    while step < training.steps.min(stop_after) {
        let step_started = Instant::now();
        let learning_rate = schedule.learning_rate(step);
        let (loss, tokens, grad_norm) = update(
            &llama,
            &corpus,
            &mut order,
            &mut optimizer,
            training,
            learning_rate,
            &device,
        )?;
        step += 1;

        let is_last = step == training.steps;
        let evaluate = !held_out_windows.is_empty()
            && (is_last || (training.eval_every > 0 && step.is_multiple_of(training.eval_every)));
        let held_out_loss = if evaluate {
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
        let seconds = step_started.elapsed().as_secs_f64();
        let mut extra = serde_json::Map::new();
        if let Some(loss) = held_out_loss {
            extra.insert("held_out_perplexity".to_owned(), loss.exp().into());
            summary.held_out_loss = Some(loss);
            summary.held_out_perplexity = Some(loss.exp());
        }
        extra.insert("epoch".to_owned(), order.position().epoch.into());
        let metrics = StepMetrics {
            step,
            loss,
            learning_rate,
            grad_norm,
            tokens,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            elapsed_s: elapsed_before + started.elapsed().as_secs_f64(),
            held_out_loss,
            extra,
        };
        metrics_log.append(&metrics)?;
        progress.update(&metrics);
        summary.first_loss.get_or_insert(loss);
        summary.last_loss = Some(loss);
        summary.tokens += tokens;
        summary.steps = step;

        if is_last || step.is_multiple_of(training.checkpoint_every) {
            let checkpoint = Checkpoint {
                step,
                schedule_step: step,
                var_map: &var_map,
                optimizer: &optimizer,
                data_position: serde_json::to_value(SavedDataPosition {
                    epoch: order.position().epoch,
                    index: order.position().index,
                    corpus_checksum: corpus.index().checksum.clone(),
                })
                .map_err(|source| PretrainError::Json {
                    path: checkpoint_root.clone(),
                    source,
                })?,
                rng: &rng,
                config: resolved_config_toml,
            };
            save_checkpoint(&checkpoint_root, &checkpoint, training.keep_checkpoints)?;
        }
    }
    progress.finish();
    summary.seconds = started.elapsed().as_secs_f64();

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

/// One optimizer update: `gradient_accumulation` micro-batches of `batch_size` windows through
/// the model into the accumulator, clipping, and the `AdamW` step. Returns the step's mean
/// per-token loss, its trained tokens and the gradient norm before clipping.
fn update(
    llama: &Llama,
    corpus: &Corpus,
    order: &mut WindowOrder,
    optimizer: &mut AdamW,
    training: &TrainingConfig,
    learning_rate: f64,
    device: &Device,
) -> Result<(f64, u64, f64)> {
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
    let vars = optimizer.vars();
    let mut step = accumulator.finish(&vars)?;
    let grad_norm = if training.max_grad_norm > 0.0 {
        clip_gradient_norm(&mut step.gradients, &vars, training.max_grad_norm)?
    } else {
        training::global_norm(&step.gradients, &vars)?
    };
    optimizer.step(&step.gradients, learning_rate)?;
    Ok((step.loss, step.tokens, grad_norm))
}

/// `AdamW` over every weight (norms and embeddings undecayed) and the learning-rate schedule.
fn optimizer_and_schedule(
    training: &TrainingConfig,
    var_map: &VarMap,
) -> Result<(AdamW, LearningRateSchedule)> {
    let optimizer = AdamW::from_var_map(var_map, training.adamw(), llama_weight_decay(false))?;
    let schedule = training.schedule()?;
    Ok((optimizer, schedule))
}

/// The data position as a checkpoint holds it: where the order is, in which token stream.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedDataPosition {
    /// Passes over the training windows completed.
    epoch: u64,
    /// Windows of this epoch already served.
    index: usize,
    /// [`crate::data::CorpusIndex::checksum`] of the stream the position indexes.
    corpus_checksum: String,
}

/// Where a run starts: fresh, or from the newest checkpoint under `checkpoint_root`.
struct Resumed {
    step: u64,
    position: DataPosition,
    rng: Rng,
    metrics_log: MetricsLog,
    /// Seconds of training before this process, from the last kept metrics line.
    elapsed_before: f64,
    /// The checkpoint's step, when resuming.
    from: Option<u64>,
}

/// Restores the newest checkpoint into `var_map` and `optimizer` and reopens the metrics log cut
/// to its step; with no checkpoint, starts a fresh log.
fn resume(
    checkpoint_root: &Path,
    metrics_path: &Path,
    var_map: &VarMap,
    optimizer: &mut AdamW,
    seed: u64,
    corpus_checksum: &str,
) -> Result<Resumed> {
    let Some(checkpoint) = load_latest(checkpoint_root)? else {
        return Ok(Resumed {
            step: 0,
            position: DataPosition::default(),
            rng: Rng::from_seed(seed),
            metrics_log: MetricsLog::create(metrics_path)?,
            elapsed_before: 0.0,
            from: None,
        });
    };
    checkpoint.restore(var_map, optimizer)?;
    let state_path = checkpoint.directory.join(training::state::TRAIN_STATE_FILE);
    let saved: SavedDataPosition = serde_json::from_value(checkpoint.data_position.clone())
        .map_err(|source| PretrainError::Json {
            path: state_path.clone(),
            source,
        })?;
    // A position means nothing in a different token stream: refuse rather than train on a
    // silently different order.
    if saved.corpus_checksum != corpus_checksum {
        return Err(PretrainError::Corpus {
            path: state_path,
            reason: format!(
                "the checkpoint was trained on corpus {} but the data now tokenize to {}; \
                 resume with the same files and tokenizer, or use a new output_dir",
                saved.corpus_checksum, corpus_checksum
            ),
        });
    }
    let position = DataPosition {
        epoch: saved.epoch,
        index: saved.index,
    };
    let metrics_log = MetricsLog::resume(metrics_path, checkpoint.step)?;
    let elapsed_before = read_metrics(metrics_path)?
        .last()
        .map_or(0.0, |line| line.elapsed_s);
    Ok(Resumed {
        step: checkpoint.step,
        position,
        rng: checkpoint.rng,
        metrics_log,
        elapsed_before,
        from: Some(checkpoint.step),
    })
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
