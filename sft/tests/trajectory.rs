//! Training-trajectory parity through the fused path: 8 full-batch SFT steps on a small random
//! checkpoint follow transformers + `torch.optim.AdamW` on the same masked tokens.
//!
//! The fixture (`tests/fixtures/trajectory/`, made by `dev/trajectory_fixture.py`) is a random
//! `LlamaForCausalLM` (vocab 96, hidden 64, 2 layers, 4 query heads over 2 key/value heads), a
//! right-padded batch of 3 rows of 24 tokens with a per-token loss mask, and what torch computed
//! per step: the masked mean next-token loss and the global gradient norm before clipping at 1.0,
//! then `AdamW` (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 except on norms and
//! embeddings). herd runs the same steps the way the trainers do: `Llama::hidden_states`, the
//! masked positions' log-probabilities from the chunked LM-head op (never the full logits),
//! backward, `clip_gradient_norm`, `AdamW::step`. Every step's loss and gradient norm, the loss
//! after the last step and per-parameter summaries of the final weights and of the update must
//! agree within 1e-4 (relative); the fused and the reference kernels must give the same
//! trajectory within 1e-5.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use model::ops::Kernels;
use model::ops::linear_cross_entropy::next_token_log_probs;
use model::{Checkpoint, Llama, Positions, varmap_tensors};
use serde::Deserialize;
use training::{AdamW, AdamWConfig, clip_gradient_norm, llama_weight_decay};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// Tolerance between herd and torch: per step, on the loss relative to max(1, |loss|) and on the
/// gradient norm relative to it; on the final parameter summaries as [`summary_differences`]
/// describes.
const TORCH_TOLERANCE: f64 = 1e-4;
/// Tolerance between herd's fused and reference kernels, in the same measures.
const KERNELS_TOLERANCE: f64 = 1e-5;

/// `trajectory.json`, as `dev/trajectory_fixture.py` writes it.
#[derive(Debug, Deserialize)]
struct Fixture {
    input_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u8>>,
    loss_mask: Vec<Vec<u8>>,
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    weight_decay: f64,
    max_grad_norm: f64,
    /// The parameters torch put in the weight-decay group.
    decaying: Vec<String>,
    steps: Vec<Step>,
    final_loss: f64,
    final_parameters: BTreeMap<String, ParameterSummary>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Step {
    loss: f64,
    grad_norm: f64,
}

/// Sums over one parameter's elements, in f64, of the final values and of the update
/// (final − initial).
#[derive(Debug, Clone, Copy, Deserialize)]
struct ParameterSummary {
    sum: f64,
    sum_squares: f64,
    update_sum: f64,
    update_sum_squares: f64,
    update_abs_sum: f64,
}

/// What one herd run produced, in the fixture's terms.
#[derive(Debug)]
struct Trajectory {
    steps: Vec<Step>,
    final_loss: f64,
    final_parameters: BTreeMap<String, ParameterSummary>,
}

fn fixture_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trajectory")
}

fn read_fixture() -> TestResult<Fixture> {
    let text = std::fs::read_to_string(fixture_directory().join("trajectory.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// The batch in herd's terms.
struct Batch {
    /// `(batch, seq)` u32.
    input_ids: Tensor,
    positions: Positions,
    /// `(batch, seq)` u8: token `t` counts when `loss_mask[t] = 1`, predicted by position `t − 1`.
    loss_mask: Tensor,
    /// Counted tokens, from the fixture's mask.
    count: usize,
}

impl Batch {
    fn new(fixture: &Fixture, device: &Device) -> TestResult<Self> {
        let batch = fixture.input_ids.len();
        let sequence = fixture.input_ids[0].len();
        let input_ids =
            Tensor::new(fixture.input_ids.concat(), device)?.reshape((batch, sequence))?;
        let loss_mask =
            Tensor::new(fixture.loss_mask.concat(), device)?.reshape((batch, sequence))?;
        let positions = Positions::right_padded(&fixture.attention_mask)?;
        let count = fixture
            .loss_mask
            .iter()
            .map(|row| row[1..].iter().map(|&m| usize::from(m)).sum::<usize>())
            .sum();
        Ok(Self {
            input_ids,
            positions,
            loss_mask,
            count,
        })
    }

    /// Mean negative log-likelihood of the counted tokens, as the SFT trainer computes it: the
    /// final hidden states of the predicting positions only, through the chunked LM-head op.
    fn loss(&self, model: &Llama) -> TestResult<Tensor> {
        let hidden = model.hidden_states(&self.input_ids, &self.positions)?;
        let selected = next_token_log_probs(
            &hidden,
            model.lm_head_weight()?,
            &self.input_ids,
            &self.loss_mask,
            model.kernels(),
        )?;
        assert_eq!(selected.count, self.count, "counted tokens");
        Ok((selected.sum()?.neg()? / self.count as f64)?)
    }
}

/// Sums in f64 over the elements of `tensor` and of `tensor − initial`.
fn summarize(tensor: &Tensor, initial: &Tensor) -> TestResult<ParameterSummary> {
    let values = tensor.flatten_all()?.to_vec1::<f32>()?;
    let initial = initial.flatten_all()?.to_vec1::<f32>()?;
    let mut summary = ParameterSummary {
        sum: 0.0,
        sum_squares: 0.0,
        update_sum: 0.0,
        update_sum_squares: 0.0,
        update_abs_sum: 0.0,
    };
    for (&value, &start) in values.iter().zip(&initial) {
        let value = f64::from(value);
        let update = value - f64::from(start);
        summary.sum += value;
        summary.sum_squares += value * value;
        summary.update_sum += update;
        summary.update_sum_squares += update * update;
        summary.update_abs_sum += update.abs();
    }
    Ok(summary)
}

/// The fixture's steps, run by herd with `kernels`.
fn train(fixture: &Fixture, kernels: Kernels) -> TestResult<Trajectory> {
    let device = Device::Cpu;
    let checkpoint = Checkpoint::load(&fixture_directory(), DType::F32, &device)?;
    let initial: HashMap<String, Tensor> = checkpoint.tensors.clone();
    let (mut model, var_map) = checkpoint.trainable_model()?;
    model.set_kernels(kernels);
    let config = AdamWConfig {
        beta1: fixture.beta1,
        beta2: fixture.beta2,
        epsilon: fixture.epsilon,
        weight_decay: fixture.weight_decay,
    };
    let mut optimizer = AdamW::from_var_map(&var_map, config, llama_weight_decay(false))?;
    assert_eq!(
        optimizer.groups().0,
        fixture.decaying,
        "herd's weight-decay group differs from the one torch used"
    );
    let vars = optimizer.vars();
    let batch = Batch::new(fixture, &device)?;

    let mut steps = Vec::new();
    for _ in &fixture.steps {
        let loss = batch.loss(&model)?;
        let mut gradients = loss.backward()?;
        let grad_norm = clip_gradient_norm(&mut gradients, &vars, fixture.max_grad_norm)?;
        optimizer.step(&gradients, fixture.learning_rate)?;
        steps.push(Step {
            loss: f64::from(loss.to_scalar::<f32>()?),
            grad_norm,
        });
    }
    let final_loss = f64::from(batch.loss(&model)?.to_scalar::<f32>()?);
    let final_parameters = varmap_tensors(&var_map)
        .iter()
        .map(|(name, tensor)| Ok((name.clone(), summarize(tensor, &initial[name])?)))
        .collect::<TestResult<_>>()?;
    Ok(Trajectory {
        steps,
        final_loss,
        final_parameters,
    })
}

/// |got − want| relative to max(1, |want|): losses, whose scale is that of a few nats.
fn loss_difference(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1.0)
}

/// |got − want| relative to |want|.
fn relative_difference(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// The measures of [`ParameterSummary`], in the order [`summary_differences`] returns them.
const SUMMARY_MEASURES: [&str; 5] = [
    "sum",
    "sum_squares",
    "update_sum",
    "update_sum_squares",
    "update_abs_sum",
];

/// The differences between two parameter summaries, each relative to its scale. Both runs start
/// from the same values, so the final sums differ exactly as the updates' sums do; signed sums can
/// cancel to near zero, so both are measured against how far the parameter moved in all (the
/// update's absolute sum). Sums of squares and of absolute values are measured against themselves.
///
/// Why not relative to the sum itself: `AdamW` divides each gradient by its own running RMS, so an
/// element whose gradient is small moves by about the learning rate however its gradient was
/// rounded, and over thousands of elements the f32 rounding adds up to a few 1e-5 in absolute
/// terms (measured: 4e-5 between herd's two kernel sets on a 10,240-element weight whose sum
/// cancels to −0.52), about 1e-6 of the distance the parameter moved.
fn summary_differences(got: &ParameterSummary, want: &ParameterSummary) -> [f64; 5] {
    let moved = want.update_abs_sum.max(f64::MIN_POSITIVE);
    [
        (got.sum - want.sum).abs() / moved,
        relative_difference(got.sum_squares, want.sum_squares),
        (got.update_sum - want.update_sum).abs() / moved,
        (got.update_sum_squares - want.update_sum_squares).abs()
            / want.update_sum_squares.max(f64::MIN_POSITIVE),
        (got.update_abs_sum - want.update_abs_sum).abs() / moved,
    ]
}

/// Asserts that `got` follows `want` within `tolerance` and prints the largest differences.
fn assert_trajectories_agree(
    got: &Trajectory,
    want_steps: &[Step],
    want_final_loss: f64,
    want_parameters: &BTreeMap<String, ParameterSummary>,
    tolerance: f64,
    what: &str,
) {
    assert_eq!(got.steps.len(), want_steps.len());
    let (mut worst_loss, mut worst_norm) = (0.0f64, 0.0f64);
    for (index, (got, want)) in got.steps.iter().zip(want_steps).enumerate() {
        let loss = loss_difference(got.loss, want.loss);
        let norm = relative_difference(got.grad_norm, want.grad_norm);
        eprintln!(
            "{what} step {index}: loss {:.7} vs {:.7} ({loss:.1e}), grad norm {:.7} vs {:.7} \
             ({norm:.1e})",
            got.loss, want.loss, got.grad_norm, want.grad_norm
        );
        assert!(
            loss <= tolerance,
            "{what} step {index}: loss {} vs {} (difference {loss:.2e} > {tolerance:.0e})",
            got.loss,
            want.loss
        );
        assert!(
            norm <= tolerance,
            "{what} step {index}: grad norm {} vs {} (relative difference {norm:.2e} > \
             {tolerance:.0e})",
            got.grad_norm,
            want.grad_norm
        );
        worst_loss = worst_loss.max(loss);
        worst_norm = worst_norm.max(norm);
    }
    let final_loss = loss_difference(got.final_loss, want_final_loss);
    assert!(
        final_loss <= tolerance,
        "{what}: loss after the last step {} vs {want_final_loss} ({final_loss:.2e} > \
         {tolerance:.0e})",
        got.final_loss
    );
    worst_loss = worst_loss.max(final_loss);
    assert_eq!(
        got.final_parameters.keys().collect::<Vec<_>>(),
        want_parameters.keys().collect::<Vec<_>>(),
        "{what}: parameter names"
    );
    let mut worst_measures = [0.0f64; 5];
    for (name, want) in want_parameters {
        let got = &got.final_parameters[name];
        let differences = summary_differences(got, want);
        for ((worst, difference), measure) in worst_measures
            .iter_mut()
            .zip(differences)
            .zip(SUMMARY_MEASURES)
        {
            assert!(
                difference <= tolerance,
                "{what}: final {name}: {measure} differs by {difference:.2e} > {tolerance:.0e}: \
                 {got:?} vs {want:?}"
            );
            *worst = worst.max(difference);
        }
    }
    eprintln!("{what}: largest differences: loss {worst_loss:.2e}, grad norm {worst_norm:.2e}");
    for (measure, worst) in SUMMARY_MEASURES.iter().zip(worst_measures) {
        eprintln!("{what}: largest difference of the final parameters' {measure}: {worst:.2e}");
    }
}

#[test]
fn eight_sft_steps_follow_transformers_and_torch_adamw() -> TestResult {
    let fixture = read_fixture()?;
    assert_eq!(fixture.steps.len(), 8);
    let fused = train(&fixture, Kernels::Fused)?;
    assert_trajectories_agree(
        &fused,
        &fixture.steps,
        fixture.final_loss,
        &fixture.final_parameters,
        TORCH_TOLERANCE,
        "fused vs torch",
    );
    let reference = train(&fixture, Kernels::Reference)?;
    assert_trajectories_agree(
        &reference,
        &fixture.steps,
        fixture.final_loss,
        &fixture.final_parameters,
        TORCH_TOLERANCE,
        "reference vs torch",
    );
    assert_trajectories_agree(
        &fused,
        &reference.steps,
        reference.final_loss,
        &reference.final_parameters,
        KERNELS_TOLERANCE,
        "fused vs reference",
    );
    Ok(())
}
