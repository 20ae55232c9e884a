//! Saving a model as a Hugging Face checkpoint directory that transformers' `from_pretrained`
//! loads: `config.json` (classic layout), `model.safetensors` or, above a size threshold, shards
//! `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` (the names and index
//! format of `save_pretrained`), each file tagged `{"format": "pt"}`, and `generation_config.json`.
//! Tokenizer files are the caller's; [`copy_tokenizer_files`] copies them from a source checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::Llama;

/// Llama 3.1 Instruct's end ids (`<|end_of_text|>`, `<|eom_id|>`, `<|eot_id|>`): generation stops
/// at any of them, so a post-trained model's `generation_config.json` lists those its vocabulary has.
const LLAMA3_END_IDS: [u32; 3] = [128_001, 128_008, 128_009];

/// The files `save_pretrained` writes for a tokenizer, copied by [`copy_tokenizer_files`].
const TOKENIZER_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// How [`save`] writes the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// `DType::F32` or `DType::BF16`.
    pub dtype: DType,
    /// Above this many bytes of weights, split into shards of at most this size (a tensor larger
    /// than the limit gets a shard of its own).
    pub max_shard_bytes: usize,
}

impl Default for SaveOptions {
    /// bf16 in shards of at most 5 GB, as released Llama 3.1 checkpoints.
    fn default() -> Self {
        Self {
            dtype: DType::BF16,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// Writes `tensors` (every parameter of `config`, by HF name) and `config` to `directory`.
pub fn save<S: std::hash::BuildHasher>(
    directory: &Path,
    config: &LlamaConfig,
    tensors: &HashMap<String, Tensor, S>,
    options: &SaveOptions,
) -> Result<()> {
    save_parameters(
        directory,
        &config.to_hf_json(),
        &Llama::parameter_shapes(config),
        tensors,
        options,
    )?;
    write_json(
        &directory.join("generation_config.json"),
        &generation_config(config),
    )
}

/// Writes `tensors` — exactly those `parameter_shapes` lists, in its order — and `config_json`
/// (with `torch_dtype` set to the saved dtype) as `config.json`: the checkpoint of another head on
/// the Llama trunk, e.g. `LlamaForSequenceClassification`. No `generation_config.json`.
pub fn save_parameters<S: std::hash::BuildHasher>(
    directory: &Path,
    config_json: &Value,
    parameter_shapes: &[(String, Vec<usize>)],
    tensors: &HashMap<String, Tensor, S>,
    options: &SaveOptions,
) -> Result<()> {
    let torch_dtype = match options.dtype {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        other => {
            return Err(ModelError::Config {
                path: directory.to_path_buf(),
                field: "dtype".to_owned(),
                message: format!("cannot save weights as {other:?}; use f32 or bf16"),
            });
        }
    };
    check_complete(directory, parameter_shapes, tensors)?;
    std::fs::create_dir_all(directory).map_err(|source| io(directory, source))?;

    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let (mut shard_bytes, mut total_bytes) = (0, 0);
    for (name, _) in parameter_shapes {
        let tensor = tensors[name]
            .to_dtype(options.dtype)?
            .to_device(&Device::Cpu)?
            .contiguous()?;
        let bytes = tensor.elem_count() * options.dtype.size_in_bytes();
        if shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shard_bytes += bytes;
        total_bytes += bytes;
        if let Some(shard) = shards.last_mut() {
            shard.push((name.clone(), tensor));
        }
    }

    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.into_iter().enumerate() {
        let file_name = if count == 1 {
            "model.safetensors".to_owned()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        };
        let path = directory.join(&file_name);
        for (name, _) in &shard {
            weight_map.insert(name.clone(), file_name.clone());
        }
        let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        safetensors::serialize_to_file(shard, Some(metadata), &path).map_err(|source| {
            ModelError::Safetensors {
                file: path.clone(),
                source: Box::new(source),
            }
        })?;
    }
    if count > 1 {
        let index = json!({"metadata": {"total_size": total_bytes}, "weight_map": weight_map});
        write_json(&directory.join("model.safetensors.index.json"), &index)?;
    }
    let mut saved_config = config_json.clone();
    if let Some(fields) = saved_config.as_object_mut() {
        fields.insert("torch_dtype".to_owned(), json!(torch_dtype));
    }
    write_json(&directory.join("config.json"), &saved_config)
}

/// `generation_config.json`: the config's bos id and its end ids plus those of
/// [`LLAMA3_END_IDS`] inside the vocabulary.
#[must_use]
pub fn generation_config(config: &LlamaConfig) -> Value {
    let mut eos = config.eos_token_ids.clone();
    for id in LLAMA3_END_IDS {
        if (id as usize) < config.vocab_size && !eos.contains(&id) {
            eos.push(id);
        }
    }
    let eos = if eos.is_empty() {
        Value::Null
    } else {
        json!(eos)
    };
    json!({"bos_token_id": config.bos_token_id, "eos_token_id": eos})
}

/// Copies the tokenizer files present in `from` to `to`; returns the copies.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<Vec<PathBuf>> {
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let source = from.join(name);
        if source.exists() {
            let target = to.join(name);
            std::fs::copy(&source, &target).map_err(|error| io(&target, error))?;
            copied.push(target);
        }
    }
    Ok(copied)
}

/// Every parameter present with its shape, nothing else.
fn check_complete<S: std::hash::BuildHasher>(
    directory: &Path,
    parameter_shapes: &[(String, Vec<usize>)],
    tensors: &HashMap<String, Tensor, S>,
) -> Result<()> {
    let expected: std::collections::HashSet<&String> =
        parameter_shapes.iter().map(|(name, _)| name).collect();
    for (name, shape) in parameter_shapes {
        match tensors.get(name) {
            None => {
                return Err(ModelError::MissingTensor {
                    directory: directory.to_path_buf(),
                    name: name.clone(),
                    expected: shape.clone(),
                });
            }
            Some(tensor) if tensor.dims() != shape.as_slice() => {
                return Err(ModelError::TensorShape {
                    file: directory.to_path_buf(),
                    name: name.clone(),
                    expected: shape.clone(),
                    found: tensor.dims().to_vec(),
                });
            }
            Some(_) => {}
        }
    }
    if let Some((name, tensor)) = tensors.iter().find(|(name, _)| !expected.contains(name)) {
        return Err(ModelError::UnexpectedTensor {
            file: directory.to_path_buf(),
            name: name.clone(),
            found: tensor.dims().to_vec(),
        });
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::write(path, text + "\n").map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}
