//! Where a stage trains and in which dtype its forward pass computes.
//!
//! CUDA needs herd built with `--features cuda` (`../shared/cuda/README.md`). bf16 compute keeps f32
//! master weights: the `Var`s and `AdamW`'s moments stay f32 and the model casts them inside the
//! forward (`Llama::set_compute_dtype`; the cast has a backward), which avoids bf16's lost small
//! updates (`shared/research/candle.md` §1.4).

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// The device setting of a stage config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// The first CUDA GPU when herd is built with `cuda` and one is present, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; an error when there is none or herd lacks the `cuda` feature.
    Cuda,
}

/// The dtype the forward pass computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    /// f32 throughout (CPU default; exact parity with the references).
    #[default]
    F32,
    /// bf16 matmuls over f32 master weights.
    Bf16,
}

impl ComputeDtype {
    /// The dtype to cast weights to inside the forward; `None` for f32.
    #[must_use]
    pub fn cast(self) -> Option<DType> {
        match self {
            ComputeDtype::F32 => None,
            ComputeDtype::Bf16 => Some(DType::BF16),
        }
    }
}

/// Opens the device `choice` names.
pub fn select_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => {
            Device::cuda_if_available(0).map_err(TrainingError::tensor("opening CUDA device 0"))
        }
        DeviceChoice::Cuda => Device::new_cuda(0).map_err(|source| TrainingError::Tensor {
            context: "training.device = \"cuda\" (needs a GPU and herd built with --features cuda)"
                .to_owned(),
            source,
        }),
    }
}

/// Where a model runs and in which dtype, for every command that runs one without training it
/// (`generate`, `chat`, `synth`, `reward eval|score`, evaluation): the `--device`/`--dtype` flags,
/// or `device`/`compute_dtype` in a config. With bf16 the frozen weights are loaded in bf16 and
/// live in it at rest (half the memory of f32); logits still come back in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// The device.
    pub device: DeviceChoice,
    /// The dtype weights are kept and computed in.
    pub dtype: ComputeDtype,
}

impl Placement {
    /// Opens the device; `setting` names the flag or config field the choice came from, so that
    /// asking for CUDA on a CPU-only build (or without a GPU) says which setting to change.
    pub fn open(&self, setting: &str) -> Result<(Device, DType)> {
        let device = match self.device {
            DeviceChoice::Cuda => Device::new_cuda(0).map_err(|source| TrainingError::Tensor {
                context: format!(
                    "{setting} = cuda: needs an NVIDIA GPU and herd built with --features cuda"
                ),
                source,
            })?,
            choice => select_device(choice)?,
        };
        let dtype = self.dtype.cast().unwrap_or(DType::F32);
        Ok((device, dtype))
    }
}
