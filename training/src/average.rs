//! Checkpoint averaging: the weighted mean of every tensor across N checkpoints.
//!
//! The Llama 3 paper averages models at each post-training stage ("we average models obtained
//! from experiments using various versions of data or hyperparameters", §4.1.5, following
//! Izmailov et al. 2019 and Wortsman et al. 2022, "model soups"). Sums are taken in f32 whatever
//! the stored dtype — a bf16 running sum would lose the low bits of every addend — and the result
//! is written back in the input dtype. Inputs are loaded one at a time, so memory holds one f32
//! copy of the model plus one input.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Result, TrainingError};
use crate::state::WEIGHTS_FILE;

/// Files of a checkpoint directory other than its weights, copied from the first input by
/// [`average_into_directory`] so the average loads like any checkpoint.
const COMPANION_FILES: [&str; 5] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Averages the checkpoint directories `inputs` into the directory `output`: `model.safetensors`
/// plus the first input's `config.json`, generation config and tokenizer files (those present),
/// so the result is a checkpoint directory that loads like its inputs.
pub fn average_into_directory(
    inputs: &[PathBuf],
    weights: Option<&[f64]>,
    output: &Path,
) -> Result<()> {
    fs::create_dir_all(output).map_err(TrainingError::io(output))?;
    average_checkpoints(inputs, weights, &output.join(WEIGHTS_FILE))?;
    if let Some(first) = inputs.first().filter(|first| first.is_dir()) {
        for name in COMPANION_FILES {
            let source = first.join(name);
            if source.is_file() {
                fs::copy(&source, output.join(name)).map_err(TrainingError::io(&source))?;
            }
        }
    }
    Ok(())
}

/// Averages the checkpoints at `inputs` into the safetensors file `output`.
///
/// Each input is a `.safetensors` file, or a directory holding `model.safetensors` or, failing
/// that, shards (every `*.safetensors` in it, as HF writes `model-00001-of-00004.safetensors`).
/// `weights`, if given, has one non-negative weight per input and is normalised to sum to 1;
/// otherwise all inputs weigh the same. Every input must have the same tensor names, shapes and
/// dtypes; the error names the first tensor that differs.
pub fn average_checkpoints(
    inputs: &[PathBuf],
    weights: Option<&[f64]>,
    output: &Path,
) -> Result<()> {
    let weights = normalised_weights(inputs.len(), weights)?;
    let mut sums: BTreeMap<String, (Tensor, DType)> = BTreeMap::new();
    for (index, (input, weight)) in inputs.iter().zip(&weights).enumerate() {
        let tensors = load_checkpoint(input)?;
        if index > 0 {
            if let Some(missing) = sums.keys().find(|name| !tensors.contains_key(*name)) {
                return Err(mismatch(
                    input,
                    missing,
                    "missing here but present in the first input",
                ));
            }
            if let Some(extra) = tensors
                .keys()
                .filter(|name| !sums.contains_key(*name))
                .min()
            {
                return Err(mismatch(
                    input,
                    extra,
                    "present here but missing in the first input",
                ));
            }
        }
        for (name, tensor) in tensors {
            let weighted = tensor
                .to_dtype(DType::F32)
                .and_then(|tensor| tensor * *weight)
                .map_err(TrainingError::tensor(format!(
                    "weighting {name} of {}",
                    input.display()
                )))?;
            match sums.get_mut(&name) {
                None => {
                    sums.insert(name, (weighted, tensor.dtype()));
                }
                Some((sum, dtype)) => {
                    if tensor.dtype() != *dtype || tensor.dims() != sum.dims() {
                        let reason = format!(
                            "{:?} {:?} here but {:?} {dtype:?} in the first input",
                            tensor.dims(),
                            tensor.dtype(),
                            sum.dims()
                        );
                        return Err(mismatch(input, &name, &reason));
                    }
                    *sum = (&*sum + weighted).map_err(TrainingError::tensor(format!(
                        "adding {name} of {}",
                        input.display()
                    )))?;
                }
            }
        }
    }
    let averaged = sums
        .into_iter()
        .map(|(name, (sum, dtype))| {
            let tensor = sum.to_dtype(dtype).map_err(TrainingError::tensor(format!(
                "converting the average of {name} to {dtype:?}"
            )))?;
            Ok((name, tensor))
        })
        .collect::<Result<HashMap<_, _>>>()?;
    // Written beside the destination and renamed, so a reader never sees half a file.
    let mut temporary_name = output.as_os_str().to_owned();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary_name);
    candle_core::safetensors::save(&averaged, &temporary).map_err(TrainingError::tensor(
        format!("writing {}", temporary.display()),
    ))?;
    fs::rename(&temporary, output).map_err(TrainingError::io(output))
}

fn normalised_weights(count: usize, weights: Option<&[f64]>) -> Result<Vec<f64>> {
    if count == 0 {
        return Err(TrainingError::InvalidValue {
            field: "inputs",
            value: "[]".to_owned(),
            reason: "at least one checkpoint is needed",
        });
    }
    let Some(weights) = weights else {
        return Ok(vec![1.0 / count as f64; count]);
    };
    if weights.len() != count {
        return Err(TrainingError::InvalidValue {
            field: "weights",
            value: format!("{weights:?}"),
            reason: "needs exactly one weight per input checkpoint",
        });
    }
    let total: f64 = weights.iter().sum();
    if weights
        .iter()
        .any(|weight| !(weight.is_finite() && *weight >= 0.0))
        || total <= 0.0
    {
        return Err(TrainingError::InvalidValue {
            field: "weights",
            value: format!("{weights:?}"),
            reason: "must be finite, non-negative and not all zero",
        });
    }
    Ok(weights.iter().map(|weight| weight / total).collect())
}

/// All tensors of one checkpoint (a file, or a directory of one file or of shards), on the CPU.
fn load_checkpoint(input: &Path) -> Result<HashMap<String, Tensor>> {
    let files = checkpoint_files(input)?;
    let mut tensors = HashMap::new();
    for file in &files {
        let shard = candle_core::safetensors::load(file, &Device::Cpu)
            .map_err(TrainingError::tensor(format!("reading {}", file.display())))?;
        for (name, tensor) in shard {
            if tensors.contains_key(&name) {
                return Err(mismatch(file, &name, "appears in more than one shard"));
            }
            tensors.insert(name, tensor);
        }
    }
    Ok(tensors)
}

fn checkpoint_files(input: &Path) -> Result<Vec<PathBuf>> {
    if !input.is_dir() {
        return Ok(vec![input.to_owned()]);
    }
    let single = input.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut shards = Vec::new();
    for entry in fs::read_dir(input).map_err(TrainingError::io(input))? {
        let path = entry.map_err(TrainingError::io(input))?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "safetensors")
        {
            shards.push(path);
        }
    }
    if shards.is_empty() {
        return Err(TrainingError::Io {
            path: input.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no .safetensors file in directory",
            ),
        });
    }
    shards.sort();
    Ok(shards)
}

fn mismatch(path: &Path, tensor: &str, reason: &str) -> TrainingError {
    TrainingError::TensorMismatch {
        path: path.to_owned(),
        tensor: tensor.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(name, tensor)| ((*name).to_owned(), tensor.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    fn tensor(values: &[f32], dtype: DType) -> Tensor {
        Tensor::new(values, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Weights 1 and 3 normalise to 0.25 and 0.75: 0.25·[0, 4] + 0.75·[8, 4] = [6, 4]; the
    /// bf16 tensor stays bf16 (6 and 4 are exact in bf16).
    #[test]
    fn weighted_average_keeps_the_dtype() {
        let directory = tempfile::tempdir().unwrap();
        let first = directory.path().join("a.safetensors");
        let second_directory = directory.path().join("b");
        fs::create_dir(&second_directory).unwrap();
        // The second input is sharded.
        write(
            &first,
            &[
                ("x", tensor(&[0.0, 4.0], DType::BF16)),
                ("y", tensor(&[1.0], DType::F32)),
            ],
        );
        write(
            &second_directory.join("model-00001-of-00002.safetensors"),
            &[("x", tensor(&[8.0, 4.0], DType::BF16))],
        );
        write(
            &second_directory.join("model-00002-of-00002.safetensors"),
            &[("y", tensor(&[5.0], DType::F32))],
        );
        let output = directory.path().join("average.safetensors");
        average_checkpoints(&[first, second_directory], Some(&[1.0, 3.0]), &output).unwrap();
        let averaged = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
        assert_eq!(averaged["x"].dtype(), DType::BF16);
        assert_eq!(
            averaged["x"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            [6.0, 4.0]
        );
        assert_eq!(averaged["y"].to_vec1::<f32>().unwrap(), [4.0]);
    }

    #[test]
    fn uniform_average_of_checkpoint_directories() {
        let directory = tempfile::tempdir().unwrap();
        let inputs: Vec<PathBuf> = (0..3)
            .map(|index| {
                let checkpoint = directory.path().join(format!("step-{index}"));
                fs::create_dir(&checkpoint).unwrap();
                write(
                    &checkpoint.join(WEIGHTS_FILE),
                    &[("w", tensor(&[index as f32 * 3.0], DType::F32))],
                );
                checkpoint
            })
            .collect();
        let output = directory.path().join("average.safetensors");
        average_checkpoints(&inputs, None, &output).unwrap();
        let averaged = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
        assert!((averaged["w"].to_vec1::<f32>().unwrap()[0] - 3.0).abs() < 1e-6);
    }

    #[test]
    fn mismatches_name_the_tensor() {
        let directory = tempfile::tempdir().unwrap();
        let first = directory.path().join("a.safetensors");
        let second = directory.path().join("b.safetensors");
        let third = directory.path().join("c.safetensors");
        write(&first, &[("layer.weight", tensor(&[1.0, 2.0], DType::F32))]);
        write(
            &second,
            &[("layer.weight", tensor(&[1.0, 2.0, 3.0], DType::F32))],
        );
        write(&third, &[("layer.bias", tensor(&[1.0, 2.0], DType::F32))]);
        let output = directory.path().join("out.safetensors");
        let shape = average_checkpoints(&[first.clone(), second], None, &output)
            .unwrap_err()
            .to_string();
        assert!(
            shape.contains("tensor layer.weight in") && shape.contains("[3] F32 here but [2] F32"),
            "{shape}"
        );
        let name = average_checkpoints(&[first, third], None, &output)
            .unwrap_err()
            .to_string();
        assert!(
            name.contains("tensor layer.weight in") && name.contains("c.safetensors: missing here"),
            "{name}"
        );
        let weights = average_checkpoints(std::slice::from_ref(&output), Some(&[0.0]), &output)
            .unwrap_err()
            .to_string();
        assert!(weights.starts_with("weights = [0.0]"), "{weights}");
    }
}
