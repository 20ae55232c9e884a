//! Gradient accumulation normalised by the number of trained tokens in the whole step.
//!
//! Each micro-batch's loss is the SUM of its per-token losses over the tokens that are trained on
//! (the mask), its gradients are summed into the step's, and the sum is divided once by the total
//! token count of all the micro-batches. The update is then the gradient of the mean per-token
//! loss over the whole step, however the step is cut into micro-batches: 1×8 and 8×1 agree.
//!
//! Averaging each micro-batch's mean instead — what a naive loop and, until 2024, transformers'
//! Trainer did — over-weights the tokens of short micro-batches; see the TRL/transformers
//! "gradient accumulation bug" write-up (<https://huggingface.co/blog/gradient_accumulation>, October 2024),
//! whose fix (`num_items_in_batch`) is this same division by the global count.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Result, TrainingError};

/// Collects the summed gradients and token counts of one optimizer step's micro-batches.
#[derive(Debug, Default)]
pub struct GradientAccumulator {
    gradients: Option<GradStore>,
    /// Sum over micro-batches of the summed loss, detached, f32 scalar, on the loss's device.
    loss_sum: Option<Tensor>,
    tokens: u64,
    micro_batches: usize,
}

/// The result of a step's accumulation: what the optimizer and the metrics log need.
#[derive(Debug)]
pub struct AccumulatedGradients {
    /// Gradients of the mean per-token loss over the whole step, one per var given to `finish`.
    pub gradients: GradStore,
    /// The mean per-token loss over the step (the value to log).
    pub loss: f64,
    /// Trained tokens in the step.
    pub tokens: u64,
    /// Micro-batches in the step.
    pub micro_batches: usize,
}

impl GradientAccumulator {
    /// An empty accumulator for a new step.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Back-propagates one micro-batch. `loss_sum` is a scalar: the SUM (not the mean) of the
    /// per-token losses over the micro-batch's `tokens` trained tokens.
    pub fn add(&mut self, loss_sum: &Tensor, tokens: u64) -> Result<()> {
        let gradients = loss_sum
            .backward()
            .map_err(TrainingError::tensor("backward of a micro-batch loss"))?;
        match &mut self.gradients {
            Some(accumulated) => accumulated
                .extend(gradients)
                .map_err(TrainingError::tensor("summing micro-batch gradients"))?,
            None => self.gradients = Some(gradients),
        }
        let loss = loss_sum
            .detach()
            .to_dtype(DType::F32)
            .map_err(TrainingError::tensor("micro-batch loss to f32"))?;
        self.loss_sum = Some(match self.loss_sum.take() {
            Some(sum) => {
                (sum + loss).map_err(TrainingError::tensor("summing micro-batch losses"))?
            }
            None => loss,
        });
        self.tokens += tokens;
        self.micro_batches += 1;
        Ok(())
    }

    /// Trained tokens added so far.
    #[must_use]
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Divides the summed gradients of `vars` by the step's token count. Gradients of tensors that
    /// are not in `vars` are dropped. Errors if no token was trained on: dividing by zero would
    /// write NaN into every weight.
    pub fn finish(self, vars: &[Var]) -> Result<AccumulatedGradients> {
        let (Some(mut summed), Some(loss_sum)) = (self.gradients, self.loss_sum) else {
            return Err(TrainingError::InvalidValue {
                field: "micro_batches",
                value: "0".to_owned(),
                reason: "a step needs at least one micro-batch",
            });
        };
        if self.tokens == 0 {
            return Err(TrainingError::InvalidValue {
                field: "tokens",
                value: "0".to_owned(),
                reason: "a step needs at least one trained token",
            });
        }
        let count = self.tokens as f64;
        let mut gradients = GradStore::default();
        for var in vars {
            if let Some(gradient) = summed.remove(var.as_tensor()) {
                let mean = (gradient / count).map_err(TrainingError::tensor(
                    "dividing gradients by the token count",
                ))?;
                gradients.insert(var.as_tensor(), mean);
            }
        }
        let loss = loss_sum
            .to_scalar::<f32>()
            .map_err(TrainingError::tensor("reading the step loss"))?;
        Ok(AccumulatedGradients {
            gradients,
            loss: f64::from(loss) / count,
            tokens: self.tokens,
            micro_batches: self.micro_batches,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module};
    use candle_nn::{Linear, VarBuilder, VarMap};

    use super::*;

    /// 8 "sequences" of 4 positions with 3 features, and how many leading positions of each are
    /// trained on (1 to 4, deliberately unequal so a mean of means would differ).
    fn batch() -> (Tensor, Tensor, Tensor, Vec<u64>) {
        let device = Device::Cpu;
        let inputs: Vec<f32> = (0..8 * 4 * 3)
            .map(|index| ((index * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let targets: Vec<f32> = (0..8 * 4 * 2)
            .map(|index| ((index * 17 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let lengths: Vec<u64> = vec![1, 4, 2, 3, 4, 1, 2, 3];
        let mask: Vec<f32> = lengths
            .iter()
            .flat_map(|&length| {
                (0..4).map(move |position| if position < length { 1.0 } else { 0.0 })
            })
            .collect();
        (
            Tensor::from_vec(inputs, (8, 4, 3), &device).unwrap(),
            Tensor::from_vec(targets, (8, 4, 2), &device).unwrap(),
            Tensor::from_vec(mask, (8, 4), &device).unwrap(),
            lengths,
        )
    }

    /// Sum over trained positions of the squared error summed over the 2 outputs.
    fn loss_sum(model: &Linear, inputs: &Tensor, targets: &Tensor, mask: &Tensor) -> Tensor {
        let predictions = model.forward(inputs).unwrap(); // (b, 4, 2)
        let per_token = (predictions - targets)
            .unwrap()
            .sqr()
            .unwrap()
            .sum(2)
            .unwrap(); // (b, 4)
        (per_token * mask).unwrap().sum_all().unwrap()
    }

    fn model() -> (VarMap, Linear) {
        let var_map = VarMap::new();
        let builder = VarBuilder::from_varmap(&var_map, DType::F32, &Device::Cpu);
        let model = candle_nn::linear(3, 2, builder.pp("proj")).unwrap();
        (var_map, model)
    }

    #[test]
    fn one_micro_batch_of_eight_equals_eight_micro_batches_of_one() {
        let (inputs, targets, mask, lengths) = batch();
        let (var_map, model) = model();
        let vars = var_map.all_vars();

        let mut whole = GradientAccumulator::new();
        let tokens: u64 = lengths.iter().sum();
        whole
            .add(&loss_sum(&model, &inputs, &targets, &mask), tokens)
            .unwrap();
        let whole = whole.finish(&vars).unwrap();

        let mut split = GradientAccumulator::new();
        for (index, &length) in lengths.iter().enumerate() {
            let row = |tensor: &Tensor| tensor.narrow(0, index, 1).unwrap();
            split
                .add(
                    &loss_sum(&model, &row(&inputs), &row(&targets), &row(&mask)),
                    length,
                )
                .unwrap();
        }
        let split = split.finish(&vars).unwrap();

        assert_eq!((whole.tokens, split.tokens), (20, 20));
        assert_eq!((whole.micro_batches, split.micro_batches), (1, 8));
        // Relative: the loss (~13.9) is summed in f32 in a different order in each case, and
        // f32's spacing at 13.9 is 9.5e-7, so an absolute 1e-6 failed on a 2-ulp difference
        // (13.865052795 vs 13.865051270) in CI.
        assert!(
            (whole.loss - split.loss).abs() < 1e-6 * whole.loss.abs().max(1.0),
            "{} vs {}",
            whole.loss,
            split.loss
        );
        for var in &vars {
            let left = whole
                .gradients
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap();
            let right = split
                .gradients
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap();
            let difference = (left - right)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(difference < 1e-6, "max difference {difference}");
        }
    }

    #[test]
    fn finishing_without_tokens_is_an_error() {
        let (var_map, _) = model();
        let error = GradientAccumulator::new()
            .finish(&var_map.all_vars())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "micro_batches = 0: a step needs at least one micro-batch"
        );
    }
}
