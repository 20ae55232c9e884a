//! `herd generate --model DIR --input FILE --output FILE`: one generation per input line.
//!
//! Input lines are `{"messages": [...]}` (rendered in the Llama 3.1 protocol with an open assistant
//! header), `{"text": "..."}` (`<|begin_of_text|>` + the text, for base models) or `{"ids": [...]}`
//! (used as they are; works with a model directory that has no tokenizer). Each output line holds
//! the generated `ids` (stop token excluded), why it stopped, the `text` where a tokenizer exists,
//! and for dialogue input the decoded assistant `message` (content, tool call, end).

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device};
use datasets::Dialogue;
use datasets::decode::decode_assistant;
use datasets::jsonl::JsonlLines;
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use model::generation::{Generated, GenerationConfig, StopReason, generate};
use model::{Checkpoint, Llama};
use serde_json::{Value, json};

use crate::error::SynthError;

/// Sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus sampling threshold.
    pub top_p: Option<f64>,
    /// Sample among the k most likely tokens.
    pub top_k: Option<usize>,
    /// Seeds the sampling; batch `b`'s row `r` draws from its own stream.
    pub seed: u64,
    /// Upper bound on each generation's length.
    pub max_new_tokens: usize,
    /// Prompts generated together.
    pub batch_size: usize,
}

/// A model with its tokenizer, when the directory has one.
#[derive(Debug)]
pub struct Policy {
    /// The model.
    pub model: Llama,
    /// The tokenizer (`tokenizer.json` in the model directory).
    pub tokenizer: Option<Llama3Tokenizer>,
    stop_tokens: Vec<u32>,
}

impl Policy {
    /// Loads an HF checkpoint directory on the CPU in f32, and its `tokenizer.json` if present.
    pub fn load(directory: &Path) -> Result<Policy, SynthError> {
        Self::load_on(directory, &Device::Cpu, DType::F32)
    }

    /// Loads an HF checkpoint directory on `device` with its weights in `dtype` (frozen, so they
    /// stay in `dtype` at rest; logits come back in f32), and its `tokenizer.json` if present.
    pub fn load_on(directory: &Path, device: &Device, dtype: DType) -> Result<Policy, SynthError> {
        let mut model = Checkpoint::load(directory, dtype, device)?.model()?;
        if dtype != DType::F32 {
            model.set_compute_dtype(Some(dtype))?;
        }
        let tokenizer_path = directory.join("tokenizer.json");
        let tokenizer = if tokenizer_path.is_file() {
            Some(Llama3Tokenizer::from_file(&tokenizer_path)?)
        } else {
            None
        };
        // Llama 3.1 stops on <|eot_id|>, <|eom_id|> and <|end_of_text|>; without a tokenizer, on
        // the config's eos ids.
        let stop_tokens = tokenizer.as_ref().map_or_else(
            || model.config().eos_token_ids.clone(),
            |tokenizer| {
                let special = tokenizer.special();
                vec![special.eot, special.eom, special.end_of_text]
            },
        );
        Ok(Policy {
            model,
            tokenizer,
            stop_tokens,
        })
    }

    /// The ids generation stops at.
    #[must_use]
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop_tokens
    }

    /// Generates for a batch of prompts.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
        seed: u64,
    ) -> Result<Vec<Generated>, SynthError> {
        let config = GenerationConfig {
            max_new_tokens: options.max_new_tokens,
            temperature: options.temperature,
            top_k: options.top_k,
            top_p: options.top_p,
            seed,
            stop_tokens: self.stop_tokens.clone(),
        };
        Ok(generate(&self.model, prompts, &config)?)
    }
}

/// One parsed input line.
struct Prompt {
    line: usize,
    ids: Vec<u32>,
    dialogue: bool,
}

/// Generates for every line of `input` and writes one JSON line per input line to `output`.
/// Returns the number of lines written.
pub fn generate_file(
    policy: &Policy,
    input: &str,
    output: &mut dyn Write,
    options: &GenerateOptions,
) -> Result<usize, SynthError> {
    let renderer = policy.tokenizer.as_ref().map(Renderer::new).transpose()?;
    let mut prompts = Vec::new();
    for item in JsonlLines::open(input).map_err(|error| SynthError::Input(error.to_string()))? {
        let (line, value) = item.map_err(|problem| SynthError::Input(problem.to_string()))?;
        prompts.push(parse_prompt(
            &value,
            line,
            input,
            policy,
            renderer.as_ref(),
        )?);
    }
    let mut written = 0;
    for (batch_index, batch) in prompts.chunks(options.batch_size.max(1)).enumerate() {
        let ids: Vec<Vec<u32>> = batch.iter().map(|prompt| prompt.ids.clone()).collect();
        let generations = policy.generate(&ids, options, options.seed ^ batch_index as u64)?;
        for (prompt, generated) in batch.iter().zip(generations) {
            let record = output_record(policy, prompt, &generated, input)?;
            serde_json::to_writer(&mut *output, &record).map_err(std::io::Error::from)?;
            output.write_all(b"\n")?;
            written += 1;
        }
    }
    output.flush()?;
    Ok(written)
}

fn parse_prompt(
    value: &Value,
    line: usize,
    input: &str,
    policy: &Policy,
    renderer: Option<&Renderer<'_>>,
) -> Result<Prompt, SynthError> {
    let at = |message: String| SynthError::Input(format!("{input}:{line}: {message}"));
    let needs_tokenizer =
        || at("this input needs a tokenizer.json in the model directory".to_owned());
    let ids = if let Some(messages) = value.get("messages") {
        let dialogue = Dialogue::from_json(messages, "messages")
            .map_err(|problems| at(datasets::message::join_problems(&problems)))?;
        let renderer = renderer.ok_or_else(needs_tokenizer)?;
        let ids = renderer.render(&dialogue, true)?.ids;
        return check_length(
            Prompt {
                line,
                ids,
                dialogue: true,
            },
            policy,
            input,
        );
    } else if let Some(text) = value.get("text") {
        let text = text
            .as_str()
            .ok_or_else(|| at("text must be a string".to_owned()))?;
        let tokenizer = policy.tokenizer.as_ref().ok_or_else(needs_tokenizer)?;
        let mut ids = vec![tokenizer.special().begin_of_text];
        ids.extend(tokenizer.encode_text(text)?);
        ids
    } else if let Some(Value::Array(items)) = value.get("ids") {
        let vocabulary = policy.model.config().vocab_size;
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                item.as_u64()
                    .filter(|&id| (id as usize) < vocabulary)
                    .map(|id| id as u32)
                    .ok_or_else(|| at(format!("ids[{index}] = {item} is not a token id below the vocabulary size {vocabulary}")))
            })
            .collect::<Result<Vec<u32>, SynthError>>()?
    } else {
        return Err(at(
            "expected {\"messages\": [...]}, {\"text\": \"...\"} or {\"ids\": [...]}".to_owned(),
        ));
    };
    check_length(
        Prompt {
            line,
            ids,
            dialogue: false,
        },
        policy,
        input,
    )
}

fn check_length(prompt: Prompt, policy: &Policy, input: &str) -> Result<Prompt, SynthError> {
    if prompt.ids.is_empty() {
        return Err(SynthError::Input(format!(
            "{input}:{}: the prompt is empty",
            prompt.line
        )));
    }
    let limit = policy.model.config().max_position_embeddings;
    if prompt.ids.len() >= limit {
        return Err(SynthError::Input(format!(
            "{input}:{}: the prompt is {} tokens; the model's context is {limit}",
            prompt.line,
            prompt.ids.len()
        )));
    }
    Ok(prompt)
}

fn output_record(
    policy: &Policy,
    prompt: &Prompt,
    generated: &Generated,
    input: &str,
) -> Result<Value, SynthError> {
    let (stop, stop_id) = match generated.stop {
        StopReason::MaxTokens => ("max_new_tokens".to_owned(), None),
        StopReason::StopToken(id) => (
            policy
                .tokenizer
                .as_ref()
                .and_then(|tokenizer| tokenizer.id_to_token(id))
                .unwrap_or_else(|| id.to_string()),
            Some(id),
        ),
    };
    let mut record = json!({"line": prompt.line, "ids": generated.ids, "stop": stop});
    if let Some(tokenizer) = &policy.tokenizer {
        record["text"] = tokenizer.decode(&generated.ids)?.into();
        if prompt.dialogue {
            let mut ids = generated.ids.clone();
            ids.extend(stop_id);
            match decode_assistant(tokenizer, &ids) {
                Ok(decoded) => record["message"] = decoded.message.to_json(),
                Err(error) => {
                    record["decode_error"] = format!("{input}:{}: {error}", prompt.line).into();
                }
            }
        }
    }
    Ok(record)
}
