//! `LoRA` (Hu et al. 2021): a frozen base weight `W` plus a trainable low-rank update, `h = x Wᵀ +
//! (alpha / r) · dropout(x) Aᵀ Bᵀ`, with `A` `(r, in)` and `B` `(out, r)`, as PEFT's `lora.Linear`.
//!
//! - Init as PEFT's default (`init_lora_weights=True`): `A` from `kaiming_uniform_(a=√5)`, i.e.
//!   uniform(±1/√in), and `B = 0`, so the adapted model starts equal to the base. `A` is drawn from
//!   `SplitMix64` seeded by the seed and the parameter name, as [`crate::init`] does.
//! - Names as in PEFT's `adapter_model.safetensors`:
//!   `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (and `lora_B`); these are
//!   the only `Var`s of the returned `VarMap`. The base model is frozen ([`Llama::freeze`]).
//! - Dropout on the adapter input (PEFT's `lora_dropout`) applies only while a dropout seed is set
//!   ([`set_dropout_seed`]): the mask is a function of that seed and the module name, so a trainer
//!   that sets `hash(seed, step)` before each step gets the same masks after a resume. Masks are
//!   drawn on the host; without a seed (evaluation, generation) there is no dropout.
//! - [`Llama::merged_tensors`] folds `W + scale · B A` into the base weights for export.

use std::sync::PoisonError;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarMap};

use crate::error::{ModelError, Result};
use crate::init::{SplitMix64, fnv1a};
use crate::llama::Llama;
use crate::sampling::Xoshiro256;

/// The module names `LoRA` can target, as PEFT's `target_modules` spells them.
pub const TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Which projections get adapters and how large they are (PEFT's `LoraConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Probability of zeroing an adapter input element while training.
    pub dropout: f64,
    /// Names from [`TARGET_MODULES`]; every layer's module of that name gets an adapter.
    pub target_modules: Vec<String>,
    /// Seed of the `A` initialization.
    pub seed: u64,
}

/// One projection's adapter.
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `(rank, in)`.
    a: Tensor,
    /// `(out, rank)`.
    b: Tensor,
    scale: f64,
    dropout: f64,
    /// Set while training: the dropout masks derive from it and `stream`.
    dropout_seed: Option<u64>,
    /// Distinguishes this module's masks from the other modules'.
    stream: u64,
}

impl LoraAdapter {
    /// `scale · dropout(x) Aᵀ Bᵀ`, `(..., in) -> (..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = match self.dropout_seed {
            Some(seed) if self.dropout > 0.0 => self.drop(x, seed)?,
            _ => x.clone(),
        };
        let down = Linear::new(self.a.clone(), None).forward(&x)?;
        let up = Linear::new(self.b.clone(), None).forward(&down)?;
        Ok((up * self.scale)?)
    }

    /// `scale · B A`, `(out, in)`: what merging adds to the base weight.
    pub fn delta_weight(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }

    /// `alpha / rank`.
    #[must_use]
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Replaces `A` and `B` by `f(A)`, `f(B)` (a cast keeps the gradient path to the `Var`s).
    pub(crate) fn map(&mut self, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        self.a = f(&self.a)?;
        self.b = f(&self.b)?;
        Ok(())
    }

    /// Inverted dropout, as `torch.nn.Dropout` in training: kept elements are divided by `1 - p`.
    fn drop(&self, x: &Tensor, seed: u64) -> Result<Tensor> {
        let mut rng = Xoshiro256::new(seed ^ self.stream);
        let keep = (1.0 / (1.0 - self.dropout)) as f32;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if rng.uniform() < self.dropout {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}

/// Freezes `model` and attaches an adapter to every targeted projection; returns the `VarMap` of
/// the adapters (`lora_A` initialized, `lora_B` zero), in the dtype of the base weights.
pub fn apply_lora(model: &mut Llama, config: &LoraConfig) -> Result<VarMap> {
    if config.rank == 0 {
        return Err(ModelError::Lora("rank must be at least 1".to_owned()));
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return Err(ModelError::Lora(format!(
            "dropout {} is not in [0, 1)",
            config.dropout
        )));
    }
    if let Some(unknown) = config
        .target_modules
        .iter()
        .find(|name| !TARGET_MODULES.contains(&name.as_str()))
    {
        return Err(ModelError::Lora(format!(
            "target module `{unknown}` is not one of {TARGET_MODULES:?}"
        )));
    }
    if config.target_modules.is_empty() {
        return Err(ModelError::Lora("no target modules".to_owned()));
    }
    model.freeze()?;
    let varmap = VarMap::new();
    let mut vars = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    for (module, projection) in model.projections_mut() {
        let targeted = module
            .rsplit('.')
            .next()
            .is_some_and(|name| config.target_modules.iter().any(|t| t == name));
        if !targeted {
            continue;
        }
        let (out_features, in_features) = projection.weight().dims2()?;
        let (dtype, device) = (projection.weight().dtype(), projection.weight().device());
        let a_name = format!("base_model.model.{module}.lora_A.weight");
        let b_name = format!("base_model.model.{module}.lora_B.weight");
        let a = Var::from_tensor(&kaiming_uniform(
            (config.rank, in_features),
            config.seed ^ fnv1a(a_name.as_bytes()),
            dtype,
            device,
        )?)?;
        let b = Var::zeros((out_features, config.rank), dtype, device)?;
        projection.set_adapter(LoraAdapter {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: config.alpha / config.rank as f64,
            dropout: config.dropout,
            dropout_seed: None,
            stream: fnv1a(module.as_bytes()),
        });
        vars.insert(a_name, a);
        vars.insert(b_name, b);
    }
    drop(vars);
    Ok(varmap)
}

/// `Some(seed)`: training, adapters drop inputs with masks drawn from `seed`; `None`: no dropout.
pub fn set_dropout_seed(model: &mut Llama, seed: Option<u64>) {
    for (_, projection) in model.projections_mut() {
        if let Some(adapter) = projection.adapter_mut() {
            adapter.dropout_seed = seed;
        }
    }
}

/// PEFT's `kaiming_uniform_(a=√5)` for a `(rows, fan_in)` matrix: `uniform(±1/√fan_in)`.
fn kaiming_uniform(
    (rows, fan_in): (usize, usize),
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    // gain = √(2 / (1 + a²)) = √(1/3); bound = √3 · gain / √fan_in = 1 / √fan_in.
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut generator = SplitMix64::new(seed);
    let values: Vec<f32> = (0..rows * fan_in)
        .map(|_| ((2.0 * generator.uniform() - 1.0) * bound) as f32)
        .collect();
    Ok(Tensor::from_vec(values, (rows, fan_in), device)?.to_dtype(dtype)?)
}
