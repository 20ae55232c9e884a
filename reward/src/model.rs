//! The reward model: the Llama trunk (`model.*`, final norm included) and a scalar head
//! `score.weight` `(1, hidden)` without bias, read at the last real token of each row — Hugging
//! Face's `LlamaForSequenceClassification` with `num_labels = 1`, which is what TRL's
//! `RewardTrainer` trains and what Llama 3's reward model is (§4.1.2: "trained on top of the
//! pre-trained checkpoint"). A trained directory loads in transformers.
//!
//! Rows are right-padded with `<|finetune_right_pad_id|>` (128004, or the checkpoint's
//! `pad_token_id`), and the read-out index comes from each row's true length, never from searching
//! for a pad or end id: with pad = eos the reward would be read at the wrong token
//! (`shared/research/posttrain.md` §3, pitfalls 3 and 13). transformers picks the rightmost non-pad
//! token, which is the same token for right-padded rows.
//!
//! A fresh head (initialising from a causal-LM checkpoint, whose `lm_head` is dropped) is drawn
//! from normal(0, 0.02) — transformers' `initializer_range`, what
//! `AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1)` gives TRL — seeded
//! per run with herd's deterministic initialiser (`model::init`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use datasets::Dialogue;
use datasets::message::Role;
use datasets::render::Renderer;
use model::{Checkpoint, Llama, LlamaConfig, Positions, SaveOptions, save_parameters};
use serde_json::{Value, json};

use crate::error::RewardError;

/// `<|finetune_right_pad_id|>` of the Llama 3 tokenizer: the pad id when `config.json` has none.
pub const DEFAULT_PAD_TOKEN_ID: u32 = 128_004;
/// The head's tensor name in the checkpoint.
pub const SCORE_WEIGHT: &str = "score.weight";
/// The `architectures` entry of a reward-model directory.
pub const ARCHITECTURE: &str = "LlamaForSequenceClassification";
/// transformers' `initializer_range`: the std of a fresh `score.weight`.
pub const SCORE_INIT_STD: f64 = 0.02;
/// Rows per forward pass in [`RewardModel::score_ids`].
const SCORING_BATCH_SIZE: usize = 8;

/// A Llama trunk with a scalar reward head.
#[derive(Debug, Clone)]
pub struct RewardModel {
    trunk: Llama,
    /// `(1, hidden)`.
    score: Tensor,
    pad_token_id: u32,
}

impl RewardModel {
    /// Loads a trained reward-model directory (a one-label `LlamaForSequenceClassification`:
    /// `config.json`, `model.*` and `score.weight`, no `lm_head`), frozen, in f32.
    pub fn load(directory: &Path, device: &Device) -> Result<RewardModel, RewardError> {
        let head = read_head(directory)?;
        if !head.is_reward_model {
            return Err(RewardError::Checkpoint {
                path: directory.join("config.json"),
                field: "architectures".to_owned(),
                message: format!(
                    "{} is not {ARCHITECTURE}: train a reward model from it with `herd reward \
                     train`",
                    head.architectures
                ),
            });
        }
        let checkpoint =
            Checkpoint::load_parameters(directory, DType::F32, device, &parameter_shapes)?;
        let vb = VarBuilder::from_tensors(checkpoint.tensors, DType::F32, device);
        Self::build(&vb, &checkpoint.config, head.pad_token_id)
    }

    /// A trainable reward model (every parameter a `Var` of the returned `VarMap`) from
    /// `directory`: a reward-model directory continues with its head; a causal-LM checkpoint (SFT
    /// or pretrained) loses `lm_head` and gets a fresh `score.weight` drawn from `seed`.
    /// `pad_token_id` is the tokenizer's `<|finetune_right_pad_id|>`.
    pub fn trainable(
        directory: &Path,
        pad_token_id: u32,
        seed: u64,
        device: &Device,
    ) -> Result<(RewardModel, VarMap), RewardError> {
        let head = read_head(directory)?;
        let var_map = VarMap::new();
        let config = if head.is_reward_model {
            let checkpoint =
                Checkpoint::load_parameters(directory, DType::F32, device, &parameter_shapes)?;
            insert_vars(&var_map, &checkpoint.tensors)?;
            checkpoint.config
        } else {
            let mut checkpoint = Checkpoint::load(directory, DType::F32, device)?;
            checkpoint.tensors.remove("lm_head.weight");
            insert_vars(&var_map, &checkpoint.tensors)?;
            // The head alone in a VarMap, so the initialiser touches nothing else.
            let head_map = VarMap::new();
            head_map.get(
                (1, checkpoint.config.hidden_size),
                SCORE_WEIGHT,
                candle_nn::Init::Const(0.0),
                DType::F32,
                device,
            )?;
            model::init::initialize(&head_map, seed, SCORE_INIT_STD)?;
            insert_vars(&var_map, &model::varmap_tensors(&head_map))?;
            checkpoint.config
        };
        let vb = VarBuilder::from_varmap(&var_map, DType::F32, device);
        let model = Self::build(&vb, &config, pad_token_id)?;
        Ok((model, var_map))
    }

    fn build(
        vb: &VarBuilder,
        config: &LlamaConfig,
        pad_token_id: u32,
    ) -> Result<RewardModel, RewardError> {
        if pad_token_id as usize >= config.vocab_size {
            return Err(RewardError::Config(format!(
                "pad token id {pad_token_id} is outside the model's vocabulary of {}",
                config.vocab_size
            )));
        }
        let trunk = Llama::trunk(vb, config)?;
        let score = vb.get((1, config.hidden_size), SCORE_WEIGHT)?;
        Ok(RewardModel {
            trunk,
            score,
            pad_token_id,
        })
    }

    /// The trunk's config.
    #[must_use]
    pub fn config(&self) -> &LlamaConfig {
        self.trunk.config()
    }

    /// The id rows are right-padded with.
    #[must_use]
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// The device the parameters live on.
    #[must_use]
    pub fn device(&self) -> Device {
        self.trunk.device()
    }

    /// Runs the trunk in `dtype` over f32 master weights (`Llama::set_compute_dtype`); the head
    /// always reads f32 hidden states.
    pub fn set_compute_dtype(&mut self, dtype: Option<DType>) -> Result<(), RewardError> {
        Ok(self.trunk.set_compute_dtype(dtype)?)
    }

    /// Rewards `(batch,)` f32, differentiable, of right-padded `input_ids` `(batch, sequence)` u32
    /// whose row `i` has `lengths[i]` real tokens; the reward is read at token `lengths[i] − 1`.
    pub fn rewards(&self, input_ids: &Tensor, lengths: &[usize]) -> Result<Tensor, RewardError> {
        let (batch, sequence) = input_ids.dims2()?;
        if lengths.len() != batch {
            return Err(RewardError::Config(format!(
                "{} lengths for a batch of {batch} rows",
                lengths.len()
            )));
        }
        if let Some(row) = lengths.iter().position(|&l| l == 0 || l > sequence) {
            return Err(RewardError::Sequence {
                index: row,
                message: format!(
                    "length {} outside 1..={sequence} of the batch",
                    lengths[row]
                ),
            });
        }
        let attention: Vec<Vec<u8>> = lengths
            .iter()
            .map(|&length| (0..sequence).map(|t| u8::from(t < length)).collect())
            .collect();
        let positions = Positions::right_padded(&attention)?;
        let hidden = self
            .trunk
            .hidden_states(input_ids, &positions)?
            .to_dtype(DType::F32)?;
        let hidden_size = hidden.dim(2)?;
        // (batch, sequence, hidden) → (batch·sequence, hidden): row r's last real token is
        // r·sequence + length − 1.
        let flat = hidden.reshape((batch * sequence, hidden_size))?;
        let last: Vec<u32> = lengths
            .iter()
            .enumerate()
            .map(|(row, &length)| (row * sequence + length - 1) as u32)
            .collect();
        let pooled = flat.index_select(&Tensor::new(last, input_ids.device())?, 0)?;
        // (batch, hidden) · (1, hidden) summed over hidden → (batch,)
        Ok(pooled.broadcast_mul(&self.score)?.sum(1)?)
    }

    /// One reward per sequence; each a full rendered dialogue (prompt + response, ending with the
    /// response's end token). Sequences are sorted by length and right-padded in batches of 8, so
    /// little is padding; rewards come back in the given order.
    pub fn score_ids(&self, sequences: &[Vec<u32>]) -> Result<Vec<f32>, RewardError> {
        let vocabulary = self.config().vocab_size;
        for (index, sequence) in sequences.iter().enumerate() {
            if sequence.is_empty() {
                return Err(RewardError::Sequence {
                    index,
                    message: "no tokens to score".to_owned(),
                });
            }
            if let Some(&id) = sequence.iter().find(|&&id| id as usize >= vocabulary) {
                return Err(RewardError::Sequence {
                    index,
                    message: format!("token id {id} is outside the vocabulary of {vocabulary}"),
                });
            }
        }
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&index| sequences[index].len());
        let mut rewards = vec![0.0; sequences.len()];
        let device = self.device();
        for chunk in order.chunks(SCORING_BATCH_SIZE) {
            let rows: Vec<&[u32]> = chunk
                .iter()
                .map(|&index| sequences[index].as_slice())
                .collect();
            let (input_ids, lengths) = right_pad(&rows, self.pad_token_id, &device)?;
            let values = self
                .rewards(&input_ids, &lengths)?
                .detach()
                .to_vec1::<f32>()?;
            for (&index, value) in chunk.iter().zip(values) {
                rewards[index] = value;
            }
        }
        Ok(rewards)
    }

    /// Renders each dialogue (its last message must be the assistant's response) and scores it.
    pub fn score_dialogues(
        &self,
        renderer: &Renderer<'_>,
        dialogues: &[Dialogue],
    ) -> Result<Vec<f32>, RewardError> {
        let mut sequences = Vec::with_capacity(dialogues.len());
        for (index, dialogue) in dialogues.iter().enumerate() {
            match dialogue.messages().last().map(|message| message.role) {
                Some(Role::Assistant) => {}
                other => {
                    return Err(RewardError::Sequence {
                        index,
                        message: format!(
                            "the last message is {other:?}; a reward scores an assistant response"
                        ),
                    });
                }
            }
            sequences.push(renderer.render(dialogue, false)?.ids);
        }
        self.score_ids(&sequences)
    }
}

/// Right-pads `rows` with `pad_token_id` to the longest: `(rows, longest)` u32 and each row's
/// length.
pub fn right_pad(
    rows: &[&[u32]],
    pad_token_id: u32,
    device: &Device,
) -> Result<(Tensor, Vec<usize>), RewardError> {
    let longest = rows.iter().map(|row| row.len()).max().unwrap_or(0);
    let lengths: Vec<usize> = rows.iter().map(|row| row.len()).collect();
    let mut ids = Vec::with_capacity(rows.len() * longest);
    for row in rows {
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(pad_token_id, longest - row.len()));
    }
    Ok((
        Tensor::from_vec(ids, (rows.len(), longest), device)?,
        lengths,
    ))
}

/// The parameters of a reward model: the trunk's and `score.weight` `(1, hidden)`.
#[must_use]
pub fn parameter_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let mut shapes = Llama::trunk_parameter_shapes(config);
    shapes.push((SCORE_WEIGHT.to_owned(), vec![1, config.hidden_size]));
    shapes
}

/// `config.json` of a one-label `LlamaForSequenceClassification` as transformers writes it.
#[must_use]
pub fn config_json(config: &LlamaConfig, pad_token_id: u32) -> Value {
    let mut value = config.to_hf_json();
    value["architectures"] = json!([ARCHITECTURE]);
    value["id2label"] = json!({"0": "LABEL_0"});
    value["label2id"] = json!({"LABEL_0": 0});
    value["pad_token_id"] = json!(pad_token_id);
    value
}

/// Writes a reward-model directory: `config.json` ([`config_json`]) and the weights (`model.*` and
/// `score.weight`, exactly [`parameter_shapes`]).
pub fn save<S: std::hash::BuildHasher>(
    directory: &Path,
    config: &LlamaConfig,
    pad_token_id: u32,
    tensors: &HashMap<String, Tensor, S>,
    options: &SaveOptions,
) -> Result<(), RewardError> {
    save_parameters(
        directory,
        &config_json(config, pad_token_id),
        &parameter_shapes(config),
        tensors,
        options,
    )?;
    Ok(())
}

/// What `config.json` says about the head.
#[derive(Debug)]
struct Head {
    is_reward_model: bool,
    architectures: String,
    pad_token_id: u32,
}

fn read_head(directory: &Path) -> Result<Head, RewardError> {
    let path = directory.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| RewardError::Io {
        path: path.clone(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|error| RewardError::Checkpoint {
        path: path.clone(),
        field: "(file)".to_owned(),
        message: format!("invalid JSON: {error}"),
    })?;
    let problem = |field: &str, message: String| RewardError::Checkpoint {
        path: path.clone(),
        field: field.to_owned(),
        message,
    };
    let architectures = value.get("architectures").cloned().unwrap_or(Value::Null);
    let is_reward_model = architectures
        .as_array()
        .is_some_and(|names| names.iter().any(|name| name == ARCHITECTURE));
    if is_reward_model {
        // transformers writes id2label; a hand-written config may say num_labels.
        let labels = value
            .get("num_labels")
            .and_then(Value::as_u64)
            .or_else(|| {
                value
                    .get("id2label")
                    .and_then(Value::as_object)
                    .map(|labels| labels.len() as u64)
            })
            .unwrap_or(2);
        if labels != 1 {
            return Err(problem(
                "num_labels",
                format!("{labels} labels (2 when unset, as transformers); a reward model has 1"),
            ));
        }
    }
    let pad_token_id = match value.get("pad_token_id") {
        None | Some(Value::Null) => DEFAULT_PAD_TOKEN_ID,
        Some(id) => id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| problem("pad_token_id", format!("{id} is not a token id")))?,
    };
    Ok(Head {
        is_reward_model,
        architectures: architectures.to_string(),
        pad_token_id,
    })
}

fn insert_vars<S: std::hash::BuildHasher>(
    var_map: &VarMap,
    tensors: &HashMap<String, Tensor, S>,
) -> Result<(), RewardError> {
    let mut vars = var_map
        .data()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (name, tensor) in tensors {
        vars.insert(name.clone(), Var::from_tensor(tensor)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_padding_keeps_each_rows_length() {
        let (ids, lengths) = right_pad(&[&[5, 6, 7], &[8]], 0, &Device::Cpu).unwrap();
        assert_eq!(lengths, [3, 1]);
        assert_eq!(ids.to_vec2::<u32>().unwrap(), [[5, 6, 7], [8, 0, 0]]);
    }

    #[test]
    fn the_config_names_the_head_and_the_pad() {
        let value = config_json(&LlamaConfig::tiny(300), 7);
        assert_eq!(value["architectures"], json!([ARCHITECTURE]));
        assert_eq!(value["id2label"], json!({"0": "LABEL_0"}));
        assert_eq!(value["pad_token_id"], 7);
        let shapes = parameter_shapes(&LlamaConfig::tiny(300));
        assert!(
            shapes
                .iter()
                .any(|(name, shape)| name == SCORE_WEIGHT && shape == &[1, 32])
        );
        assert!(!shapes.iter().any(|(name, _)| name == "lm_head.weight"));
    }
}
