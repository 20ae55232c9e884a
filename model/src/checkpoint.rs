//! Loading a Hugging Face Llama checkpoint directory: `config.json` plus either one
//! `model.safetensors` or shards listed in `model.safetensors.index.json` (the layout of
//! transformers' `save_pretrained`). Every tensor is checked against the names and shapes the
//! config implies ([`Llama::parameter_shapes`]); a missing, extra, mis-shaped or non-float tensor
//! is an error naming it, its file and both shapes. Weights stored as f32, bf16 or f16 are
//! converted to the requested dtype.
//!
//! Files are memory-mapped (`kernels::MappedSafetensors`, the one crate where herd allows `unsafe`)
//! and each tensor is copied out, converted and placed before the next: a sharded checkpoint never
//! needs a file's bytes in an anonymous buffer beside its tensors, so peak memory stays near the
//! model's own size plus one tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use kernels::MappedSafetensors;
use serde::Deserialize;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::Llama;

/// The parameters a config implies, by HF name and shape ([`Llama::parameter_shapes`] for a causal
/// LM): what [`Checkpoint::load_parameters`] checks a directory against.
pub type ParameterShapes = dyn Fn(&LlamaConfig) -> Vec<(String, Vec<usize>)>;

/// A checkpoint in memory: its config and every parameter, by HF name.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The resolved `config.json`.
    pub config: LlamaConfig,
    /// Every parameter of the model, in the dtype it was loaded as.
    pub tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: Device,
}

#[derive(Debug, Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl Checkpoint {
    /// Reads `directory`, converting the weights to `dtype` on `device`.
    pub fn load(directory: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_parameters(directory, dtype, device, &Llama::parameter_shapes)
    }

    /// Reads `directory` holding exactly the tensors `parameter_shapes(config)` lists: a checkpoint
    /// of another head on the Llama trunk, e.g. `LlamaForSequenceClassification`'s
    /// [`Llama::trunk_parameter_shapes`] plus `score.weight`.
    pub fn load_parameters(
        directory: &Path,
        dtype: DType,
        device: &Device,
        parameter_shapes: &ParameterShapes,
    ) -> Result<Self> {
        let config = LlamaConfig::read(&directory.join("config.json"))?;
        let expected: HashMap<String, Vec<usize>> = parameter_shapes(&config).into_iter().collect();
        let mut tensors = HashMap::new();
        for file in weight_files(directory)? {
            let safetensors_error = |source| ModelError::Safetensors {
                file: file.clone(),
                source: Box::new(source),
            };
            let mapped = MappedSafetensors::open(&file).map_err(safetensors_error)?;
            let mut names = mapped.names();
            names.sort();
            for name in names {
                let tensor = mapped
                    .load(&name, &Device::Cpu)
                    .map_err(safetensors_error)?;
                check_tensor(&file, &name, &tensor, expected.get(&name))?;
                let placed = tensor.to_dtype(dtype)?.to_device(device)?;
                tensors.insert(name, placed);
            }
        }
        for (name, shape) in parameter_shapes(&config) {
            if !tensors.contains_key(&name) {
                return Err(ModelError::MissingTensor {
                    directory: directory.to_path_buf(),
                    name,
                    expected: shape,
                });
            }
        }
        Ok(Self {
            config,
            tensors,
            dtype,
            device: device.clone(),
        })
    }

    /// A frozen model over the loaded tensors (no `Var`s: nothing records a gradient graph).
    pub fn model(&self) -> Result<Llama> {
        let vb = VarBuilder::from_tensors(self.tensors.clone(), self.dtype, &self.device);
        Llama::new(&vb, &self.config)
    }

    /// A trainable model: every tensor copied into a `Var` of a new `VarMap`.
    pub fn trainable_model(&self) -> Result<(Llama, VarMap)> {
        let varmap = VarMap::new();
        {
            let mut vars = varmap
                .data()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (name, tensor) in &self.tensors {
                vars.insert(name.clone(), Var::from_tensor(tensor)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, self.dtype, &self.device);
        Ok((Llama::new(&vb, &self.config)?, varmap))
    }
}

/// The safetensors files of `directory`: the shards named by the index when there is one,
/// otherwise `model.safetensors`.
fn weight_files(directory: &Path) -> Result<Vec<PathBuf>> {
    let index_path = directory.join("model.safetensors.index.json");
    if !index_path.exists() {
        return Ok(vec![directory.join("model.safetensors")]);
    }
    let text = std::fs::read_to_string(&index_path).map_err(|source| ModelError::Io {
        path: index_path.clone(),
        source,
    })?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: index_path.clone(),
        source,
    })?;
    let files: BTreeSet<String> = index.weight_map.into_values().collect();
    Ok(files.into_iter().map(|file| directory.join(file)).collect())
}

fn check_tensor(
    file: &Path,
    name: &str,
    tensor: &Tensor,
    expected: Option<&Vec<usize>>,
) -> Result<()> {
    let Some(expected) = expected else {
        return Err(ModelError::UnexpectedTensor {
            file: file.to_path_buf(),
            name: name.to_owned(),
            found: tensor.dims().to_vec(),
        });
    };
    if tensor.dims() != expected.as_slice() {
        return Err(ModelError::TensorShape {
            file: file.to_path_buf(),
            name: name.to_owned(),
            expected: expected.clone(),
            found: tensor.dims().to_vec(),
        });
    }
    if !matches!(tensor.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        return Err(ModelError::TensorDtype {
            file: file.to_path_buf(),
            name: name.to_owned(),
            dtype: tensor.dtype(),
        });
    }
    Ok(())
}

/// Every parameter of a `VarMap` by name, e.g. to [`crate::save`] a trained model.
#[must_use]
pub fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let vars = varmap
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    vars.iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect()
}
