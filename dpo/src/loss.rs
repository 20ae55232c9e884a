//! The DPO losses (Rafailov et al. 2023; `posttrain.md` §4), pure functions over summed completion
//! log-probs.
//!
//! With h = (π(c) − ref(c)) − (π(r) − ref(r)), per pair:
//! - `sigmoid`: −(1−ε)·log σ(βh) − ε·log σ(−βh) (cDPO's label smoothing ε; ε = 0 is DPO and is
//!   TRL's `"sigmoid"`);
//! - `ipo`: (h′ − 1/(2β))² with h′ = (π(c) − ref(c))/|c| − (π(r) − ref(r))/|r|, each log-ratio divided
//!   by its completion length as TRL does (its comment: confirmed with the IPO authors; the paper's
//!   results use that form). `OpenRLHF` uses the unnormalised h; we follow TRL for parity.
//! - `hinge`: relu(1 − βh).
//!
//! The Llama 3 NLL term (§4.1.4, weight 0.2) is TRL's `"sft"` loss: the token MEAN of −log p over
//! every chosen completion token of the step (not a per-sequence mean). A step's loss is
//! `mean over pairs (preference) + w · Σ chosen NLL / chosen tokens`. A micro-batch contributes
//! `Σ_pairs preference + w · (P / T) · Σ chosen NLL` with the STEP's pair count P and chosen-token
//! count T, and the accumulator divides by P once — so 1×N and N×1 micro-batching give the same
//! update, and one micro-batch is exactly TRL's loss.
//!
//! The summed completion log-probs come in two forms: [`completion_log_probs`] over full logits
//! (the reference; the TRL parity test checks it), and [`completion_log_probs_from_hidden`] over
//! the final hidden states and the LM head weight through the chunked op of
//! `model::ops::linear_cross_entropy`, which projects only the completion positions and never
//! holds the `(rows, sequence, vocab)` logits: what training, evaluation and the reference
//! scoring run.

use candle_core::{D, DType, Tensor};
use model::ops::Kernels;
use model::ops::linear_cross_entropy::next_token_log_probs;
use serde_json::{Map, Value};

use crate::config::{DpoSettings, LossKind};

/// Log-probs of a batch of rows: the sum over each row's masked completion tokens, and how many
/// tokens each sum has.
#[derive(Debug, Clone)]
pub struct RowLogProbs {
    /// `(rows)` f32: Σ over counted tokens of log p(token | prefix).
    pub sums: Tensor,
    /// `(rows)` f32: counted tokens per row.
    pub tokens: Tensor,
}

/// Summed masked next-token log-probs per row. `logits` is `(rows, sequence, vocab)`, `input_ids`
/// `(rows, sequence)` u32, `mask` `(rows, sequence)` of 0/1 per input token; token i counts when
/// `mask[i] = 1`, predicted by position i − 1 (as TRL's shifted completion mask).
pub fn completion_log_probs(
    logits: &Tensor,
    input_ids: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<RowLogProbs> {
    let (rows, sequence, vocabulary) = logits.dims3()?;
    // (rows, sequence − 1, vocab) → (rows·(sequence − 1), vocab): position i predicts i + 1.
    let predictions = logits
        .narrow(1, 0, sequence - 1)?
        .reshape((rows * (sequence - 1), vocabulary))?
        .to_dtype(DType::F32)?;
    // (rows, sequence − 1) → (rows·(sequence − 1), 1)
    let targets = input_ids
        .narrow(1, 1, sequence - 1)?
        .reshape((rows * (sequence - 1), 1))?;
    let weights = mask.narrow(1, 1, sequence - 1)?.to_dtype(DType::F32)?;
    let log_probabilities = candle_nn::ops::log_softmax(&predictions, D::Minus1)?;
    // (rows·(sequence − 1), 1) → (rows, sequence − 1)
    let target_log_probabilities = log_probabilities
        .gather(&targets, 1)?
        .reshape((rows, sequence - 1))?;
    Ok(RowLogProbs {
        sums: (target_log_probabilities * &weights)?.sum(1)?,
        tokens: weights.sum(1)?,
    })
}

/// [`completion_log_probs`] from the final hidden states, without full logits: the same per-row
/// sums over the same tokens (token i counts when `mask[i] = 1`, predicted by position i − 1) and
/// the same token counts, with log p computed in f32.
///
/// `hidden_states` is `(rows, sequence, hidden)` ([`model::Llama::hidden_states`]),
/// `lm_head_weight` `(vocab, hidden)` ([`model::Llama::lm_head_weight`]), `input_ids` and `mask`
/// as for [`completion_log_probs`] (the mask 0/1).
pub fn completion_log_probs_from_hidden(
    hidden_states: &Tensor,
    lm_head_weight: &Tensor,
    input_ids: &Tensor,
    mask: &Tensor,
    kernels: Kernels,
) -> model::Result<RowLogProbs> {
    let (_, sequence) = input_ids.dims2()?;
    let selected = next_token_log_probs(hidden_states, lm_head_weight, input_ids, mask, kernels)?;
    Ok(RowLogProbs {
        sums: selected.row_sums()?,
        // (rows, sequence − 1) → (rows): token 0 is never predicted.
        tokens: mask
            .narrow(1, 1, sequence.saturating_sub(1))?
            .to_dtype(DType::F32)?
            .sum(1)?,
    })
}

/// The four log-probs of each pair and the completion lengths, each `(pairs)` f32.
#[derive(Debug, Clone)]
pub struct PairLogProbs {
    /// Policy log-prob of chosen.
    pub chosen: Tensor,
    /// Policy log-prob of rejected.
    pub rejected: Tensor,
    /// Reference log-prob of chosen (a constant).
    pub reference_chosen: Tensor,
    /// Reference log-prob of rejected (a constant).
    pub reference_rejected: Tensor,
    /// Counted tokens of chosen.
    pub chosen_tokens: Tensor,
    /// Counted tokens of rejected.
    pub rejected_tokens: Tensor,
}

impl PairLogProbs {
    /// Splits the log-probs of `[chosen rows; rejected rows]` (TRL's concatenated layout) and adds
    /// the reference log-probs `(chosen, rejected)` of each pair.
    pub fn from_rows(rows: &RowLogProbs, reference: &[(f32, f32)]) -> candle_core::Result<Self> {
        let pairs = reference.len();
        let device = rows.sums.device();
        let (reference_chosen, reference_rejected): (Vec<f32>, Vec<f32>) =
            reference.iter().copied().unzip();
        Ok(PairLogProbs {
            chosen: rows.sums.narrow(0, 0, pairs)?,
            rejected: rows.sums.narrow(0, pairs, pairs)?,
            reference_chosen: Tensor::new(reference_chosen, device)?,
            reference_rejected: Tensor::new(reference_rejected, device)?,
            chosen_tokens: rows.tokens.narrow(0, 0, pairs)?,
            rejected_tokens: rows.tokens.narrow(0, pairs, pairs)?,
        })
    }

    /// π(c) − ref(c) per pair.
    pub fn chosen_logratios(&self) -> candle_core::Result<Tensor> {
        &self.chosen - &self.reference_chosen
    }

    /// π(r) − ref(r) per pair.
    pub fn rejected_logratios(&self) -> candle_core::Result<Tensor> {
        &self.rejected - &self.reference_rejected
    }
}

/// log σ(x), stably: −(relu(−x) + log(1 + e^(−|x|))); every op has a backward.
fn log_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    let tail = ((x.abs()?.neg()?.exp()? + 1.0)?).log()?;
    (x.neg()?.relu()? + tail)?.neg()
}

/// The preference loss of each pair, `(pairs)`.
pub fn preference_losses(
    settings: &DpoSettings,
    logps: &PairLogProbs,
) -> candle_core::Result<Tensor> {
    let beta = settings.beta;
    let chosen = logps.chosen_logratios()?;
    let rejected = logps.rejected_logratios()?;
    match settings.loss {
        LossKind::Sigmoid => {
            let scaled = ((chosen - rejected)? * beta)?;
            let clean = (log_sigmoid(&scaled)? * (-(1.0 - settings.label_smoothing)))?;
            if settings.label_smoothing == 0.0 {
                return Ok(clean);
            }
            clean - (log_sigmoid(&scaled.neg()?)? * settings.label_smoothing)?
        }
        LossKind::Ipo => {
            // TRL clamps lengths at 1; data.rs refuses completions without a counted token.
            let chosen = (chosen / logps.chosen_tokens.clamp(1f32, f32::MAX)?)?;
            let rejected = (rejected / logps.rejected_tokens.clamp(1f32, f32::MAX)?)?;
            ((chosen - rejected)? - 1.0 / (2.0 * beta))?.sqr()
        }
        LossKind::Hinge => (((chosen - rejected)? * (-beta))? + 1.0)?.relu(),
    }
}

/// A micro-batch's share of the step loss, a scalar to hand to the accumulator with the
/// micro-batch's pair count: `Σ preference + w · (step_pairs / step_chosen_tokens) · Σ chosen
/// NLL`. Divided by `step_pairs` (the accumulator does it) this sums, over the step's
/// micro-batches, to the mean preference loss plus w times the token-mean chosen NLL.
pub fn micro_batch_loss(
    settings: &DpoSettings,
    logps: &PairLogProbs,
    step_pairs: usize,
    step_chosen_tokens: f64,
) -> candle_core::Result<Tensor> {
    let preference = preference_losses(settings, logps)?.sum_all()?;
    if settings.nll_weight == 0.0 {
        return Ok(preference);
    }
    let nll = logps.chosen.sum_all()?.neg()?;
    preference + (nll * (settings.nll_weight * step_pairs as f64 / step_chosen_tokens))?
}

/// Running sums of TRL's logged quantities over pairs (its `_compute_loss` metrics), turned into
/// means by [`MetricSums::to_map`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricSums {
    /// Pairs seen.
    pub pairs: usize,
    /// Σ β·(π(c) − ref(c)).
    pub rewards_chosen: f64,
    /// Σ β·(π(r) − ref(r)).
    pub rewards_rejected: f64,
    /// Pairs whose chosen reward is strictly above the rejected one.
    pub correct: usize,
    /// Σ π(c).
    pub logps_chosen: f64,
    /// Σ π(r).
    pub logps_rejected: f64,
    /// Σ −log p over every chosen completion token.
    pub chosen_nll: f64,
    /// Chosen completion tokens.
    pub chosen_tokens: f64,
    /// Σ of the per-pair preference loss.
    pub preference_loss: f64,
}

impl MetricSums {
    /// Adds a micro-batch's pairs (values read off the graph, nothing back-propagates).
    pub fn add(&mut self, settings: &DpoSettings, logps: &PairLogProbs) -> candle_core::Result<()> {
        let read = |tensor: &Tensor| -> candle_core::Result<Vec<f32>> {
            tensor.detach().to_dtype(DType::F32)?.to_vec1::<f32>()
        };
        let chosen_ratio = read(&logps.chosen_logratios()?)?;
        let rejected_ratio = read(&logps.rejected_logratios()?)?;
        let losses = read(&preference_losses(settings, logps)?)?;
        let (chosen, rejected) = (read(&logps.chosen)?, read(&logps.rejected)?);
        let tokens = read(&logps.chosen_tokens)?;
        for index in 0..chosen.len() {
            let reward_chosen = settings.beta * f64::from(chosen_ratio[index]);
            let reward_rejected = settings.beta * f64::from(rejected_ratio[index]);
            self.pairs += 1;
            self.rewards_chosen += reward_chosen;
            self.rewards_rejected += reward_rejected;
            self.correct += usize::from(reward_chosen > reward_rejected);
            self.logps_chosen += f64::from(chosen[index]);
            self.logps_rejected += f64::from(rejected[index]);
            self.chosen_nll -= f64::from(chosen[index]);
            self.chosen_tokens += f64::from(tokens[index]);
            self.preference_loss += f64::from(losses[index]);
        }
        Ok(())
    }

    /// The step loss these sums describe: mean preference loss + w · token-mean chosen NLL.
    #[must_use]
    pub fn loss(&self, settings: &DpoSettings) -> f64 {
        self.preference_loss / self.pairs.max(1) as f64 + settings.nll_weight * self.nll()
    }

    /// Token-mean NLL of the chosen completions.
    #[must_use]
    pub fn nll(&self) -> f64 {
        if self.chosen_tokens > 0.0 {
            self.chosen_nll / self.chosen_tokens
        } else {
            0.0
        }
    }

    /// Means under TRL's names, each prefixed (`""` for training steps, `"eval_"` for held-out,
    /// as the transformers Trainer prefixes evaluation logs): `rewards/chosen`,
    /// `rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `logps/chosen`,
    /// `logps/rejected`, and `nll` (the chosen token-mean NLL).
    #[must_use]
    pub fn to_map(&self, prefix: &str) -> Map<String, Value> {
        let pairs = self.pairs.max(1) as f64;
        let mut map = Map::new();
        for (name, value) in [
            ("rewards/chosen", self.rewards_chosen / pairs),
            ("rewards/rejected", self.rewards_rejected / pairs),
            ("rewards/accuracies", self.correct as f64 / pairs),
            (
                "rewards/margins",
                (self.rewards_chosen - self.rewards_rejected) / pairs,
            ),
            ("logps/chosen", self.logps_chosen / pairs),
            ("logps/rejected", self.logps_rejected / pairs),
            ("nll", self.nll()),
        ] {
            map.insert(format!("{prefix}{name}"), value.into());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// One pair: π(c) = −1, π(r) = −3, ref(c) = ref(r) = −2, so the log-ratios are +1 and −1 and
    /// h = 2; chosen has 2 counted tokens, rejected 4.
    fn pair() -> PairLogProbs {
        let scalar = |value: f32| Tensor::new(&[value], &Device::Cpu).unwrap();
        PairLogProbs {
            chosen: scalar(-1.0),
            rejected: scalar(-3.0),
            reference_chosen: scalar(-2.0),
            reference_rejected: scalar(-2.0),
            chosen_tokens: scalar(2.0),
            rejected_tokens: scalar(4.0),
        }
    }

    fn loss(kind: LossKind, beta: f64, label_smoothing: f64) -> f32 {
        let settings = DpoSettings {
            loss: kind,
            beta,
            nll_weight: 0.0,
            label_smoothing,
        };
        preference_losses(&settings, &pair())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    }

    /// β = 0.5, h = 2: βh = 1, −log σ(1) = ln(1 + e^−1) = 0.3132617.
    /// With ε = 0.1: 0.9·ln(1 + e^−1) + 0.1·ln(1 + e) = 0.3132617 + 0.1·1 = 0.4132617
    /// (ln(1 + e) − ln(1 + e^−1) = 1).
    #[test]
    fn sigmoid_hand_values() {
        assert!((loss(LossKind::Sigmoid, 0.5, 0.0) - 0.313_261_7).abs() < 1e-6);
        assert!((loss(LossKind::Sigmoid, 0.5, 0.1) - 0.413_261_7).abs() < 1e-6);
        // Large margins stay finite: βh = 200 → loss ≈ e^−200 ≈ 0; βh = −200 → 200.
        assert!(loss(LossKind::Sigmoid, 100.0, 0.0).abs() < 1e-6);
    }

    /// h′ = 1/2 − (−1)/4 = 0.75; β = 0.5: (0.75 − 1)² = 0.0625; β = 0.1: (0.75 − 5)² = 18.0625.
    #[test]
    fn ipo_hand_values() {
        assert!((loss(LossKind::Ipo, 0.5, 0.0) - 0.0625).abs() < 1e-6);
        assert!((loss(LossKind::Ipo, 0.1, 0.0) - 18.0625).abs() < 1e-5);
    }

    /// β = 0.5: relu(1 − 1) = 0; β = 0.1: relu(1 − 0.2) = 0.8; β = 0.25: relu(0.5) = 0.5.
    #[test]
    fn hinge_hand_values() {
        assert!(loss(LossKind::Hinge, 0.5, 0.0).abs() < 1e-6);
        assert!((loss(LossKind::Hinge, 0.1, 0.0) - 0.8).abs() < 1e-6);
        assert!((loss(LossKind::Hinge, 0.25, 0.0) - 0.5).abs() < 1e-6);
    }

    /// Two rows of 3 tokens `[0, 1, 1]` over a vocabulary of 2; row 0 puts logit ln 3 on token 1
    /// at position 0, so p(1 | pos 0) = 3/4, p(1 | pos 1) = 1/2; row 1 is uniform.
    /// Row 0 mask `[0, 1, 1]`: ln(3/4) + ln(1/2) = −0.980829, 2 tokens.
    /// Row 1 mask `[0, 0, 1]`: ln(1/2) = −0.693147, 1 token.
    /// As a pair (row 0 chosen, row 1 rejected) with reference log-probs (−2, −2), sigmoid loss
    /// β = 0.1 plus NLL weight 0.2: h = 1.019171 − 1.306853 = −0.287682,
    /// −log σ(−0.0287682) = 0.707635, NLL = 0.980829 / 2 = 0.490415 → 0.707635 + 0.2·0.490415.
    #[test]
    fn log_probs_and_nll_hand_values() {
        let device = Device::Cpu;
        let logits = Tensor::new(
            &[
                [[0.0f32, 3f32.ln()], [0.0, 0.0], [5.0, -5.0]],
                [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
            ],
            &device,
        )
        .unwrap();
        let ids = Tensor::new(&[[0u32, 1, 1], [0, 1, 1]], &device).unwrap();
        let mask = Tensor::new(&[[0u8, 1, 1], [0, 0, 1]], &device).unwrap();
        let rows = completion_log_probs(&logits, &ids, &mask).unwrap();
        let sums = rows.sums.to_vec1::<f32>().unwrap();
        assert!((sums[0] + 0.980_829).abs() < 1e-5, "{sums:?}");
        assert!((sums[1] + std::f32::consts::LN_2).abs() < 1e-5, "{sums:?}");
        assert_eq!(rows.tokens.to_vec1::<f32>().unwrap(), [2.0, 1.0]);
        let logps = PairLogProbs::from_rows(&rows, &[(-2.0, -2.0)]).unwrap();
        let settings = DpoSettings::default();
        let total = micro_batch_loss(&settings, &logps, 1, 2.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((total - (0.707_635 + 0.098_083)).abs() < 1e-5, "{total}");
        let mut sums = MetricSums::default();
        sums.add(&settings, &logps).unwrap();
        assert!((sums.loss(&settings) - f64::from(total)).abs() < 1e-5);
        let map = sums.to_map("eval_");
        assert_eq!(map["eval_rewards/accuracies"], 0.0);
        let margin = map["eval_rewards/margins"].as_f64().unwrap();
        assert!((margin + 0.028_768_2).abs() < 1e-6, "{margin}");
    }

    /// The hidden-state form equals the logits form on the same inputs: row sums, token counts
    /// and the gradients (of the hidden states and the head) of a per-row weighted sum, with both
    /// kernels.
    #[test]
    fn the_hidden_state_form_equals_the_logits_form() {
        let device = Device::Cpu;
        let (rows, sequence, hidden, vocabulary) = (3, 5, 8, 13);
        let values = |count: usize, salt: f32| -> Vec<f32> {
            (0..count)
                .map(|i| (i as f32 * 0.613 + salt).sin())
                .collect()
        };
        let hidden_states = Var::from_vec(
            values(rows * sequence * hidden, 0.5),
            (rows, sequence, hidden),
            &device,
        )
        .unwrap();
        let weight = Var::from_vec(
            values(vocabulary * hidden, 2.1),
            (vocabulary, hidden),
            &device,
        )
        .unwrap();
        let ids: Vec<u32> = (0..rows * sequence)
            .map(|i| (i * 5 % vocabulary) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (rows, sequence), &device).unwrap();
        let mask = Tensor::new(
            &[[0u8, 0, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 0, 0, 1]],
            &device,
        )
        .unwrap();
        let row_weights = Tensor::new(&[1f32, -2.0, 0.5], &device).unwrap();
        let logits = hidden_states
            .broadcast_matmul(&weight.t().unwrap())
            .unwrap();
        let expected = completion_log_probs(&logits, &ids, &mask).unwrap();
        let expected_gradients = (&expected.sums * &row_weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let largest = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        for kernels in [Kernels::Fused, Kernels::Reference] {
            let got =
                completion_log_probs_from_hidden(&hidden_states, &weight, &ids, &mask, kernels)
                    .unwrap();
            assert!(largest(&got.sums, &expected.sums) < 1e-5, "{kernels:?}");
            assert_eq!(
                got.tokens.to_vec1::<f32>().unwrap(),
                expected.tokens.to_vec1::<f32>().unwrap()
            );
            let gradients = (&got.sums * &row_weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for var in [&hidden_states, &weight] {
                let difference = largest(
                    gradients.get(var).unwrap(),
                    expected_gradients.get(var).unwrap(),
                );
                assert!(difference < 1e-5, "{kernels:?}: gradient {difference}");
            }
        }
    }
}
