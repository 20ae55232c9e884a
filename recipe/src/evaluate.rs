//! Held-out accuracy: greedy answers to questions no stage trained on, checked against the
//! question's reference answer by the same rule as rejection sampling's reference-answer verifier
//! (`synth::verifier::answer_matches`: the reply's last number for a numeric answer).
//!
//! Questions are prompt lines (`{"messages": [...], "metadata": {"answer": "85", "text_prompt":
//! "47 + 38 ="}}`). A chat model is asked in the Llama 3.1 protocol (the dialogue, an open
//! assistant header); a base model, which has never seen the protocol, completes
//! `metadata.text_prompt` as in its pretraining text, and its first line is its answer.

use std::path::Path;

use datasets::Dialogue;
use datasets::decode::decode_assistant;
use datasets::jsonl::JsonlLines;
use datasets::records::Record;
use datasets::render::Renderer;
use model::generation::StopReason;
use serde::{Deserialize, Serialize};
use synth::verifier::answer_matches;
use synth::{GenerateOptions, Policy};
use training::Placement;

use crate::error::RecipeError;

/// A held-out question with its reference answer.
#[derive(Debug, Clone)]
pub struct Question {
    /// The dialogue to answer (ends with a user message).
    pub dialogue: Dialogue,
    /// The same question as plain text for a base model (`metadata.text_prompt`), if given.
    pub text_prompt: Option<String>,
    /// The reference answer (`metadata.answer`).
    pub answer: String,
}

/// Reads questions from a prompt JSONL file; every line needs `metadata.answer`.
pub fn read_questions(path: &Path) -> Result<Vec<Question>, RecipeError> {
    let name = path.display().to_string();
    let lines = JsonlLines::open(&name).map_err(|error| RecipeError::Config(error.to_string()))?;
    let mut questions = Vec::new();
    for item in lines.records() {
        let (line, record) = item.map_err(|problems| {
            RecipeError::Config(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let Record::Conversation(conversation) = record else {
            return Err(RecipeError::Config(format!(
                "{name}:{line}: a preference record; questions are {{\"messages\": [...]}} lines"
            )));
        };
        let metadata = conversation.metadata.unwrap_or_default();
        let field = |key: &str| {
            metadata
                .get(key)
                .and_then(|value| value.as_str())
                .map(str::to_owned)
        };
        let answer = field("answer").ok_or_else(|| {
            RecipeError::Config(format!(
                "{name}:{line}: metadata.answer: missing (a string)"
            ))
        })?;
        questions.push(Question {
            dialogue: conversation.dialogue,
            text_prompt: field("text_prompt"),
            answer,
        });
    }
    Ok(questions)
}

/// How a model is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// A user message in the dialogue protocol; the assistant's reply is the answer.
    Chat,
    /// `<|begin_of_text|>a + b =`; the completion's first line is the answer.
    Text,
}

/// How many held-out problems a model answers right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Right answers.
    pub correct: usize,
    /// Problems asked.
    pub total: usize,
}

impl Accuracy {
    /// The fraction right (0 when nothing was asked).
    #[must_use]
    pub fn fraction(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// The binomial standard error of [`Accuracy::fraction`], for telling a real change from noise.
    #[must_use]
    pub fn standard_error(self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let p = self.fraction();
        (p * (1.0 - p) / self.total as f64).sqrt()
    }
}

/// Greedy accuracy of the checkpoint in `model_dir` (with its tokenizer.json) on `questions`,
/// the model loaded where `placement` says (`setting` names the config field or flag it came
/// from, for the error when that device cannot be opened).
pub fn accuracy(
    model_dir: &Path,
    placement: Placement,
    setting: &str,
    questions: &[Question],
    style: PromptStyle,
    max_new_tokens: usize,
    batch_size: usize,
) -> Result<Accuracy, RecipeError> {
    let (device, dtype) = placement
        .open(setting)
        .map_err(RecipeError::stage("evaluation"))?;
    let policy =
        Policy::load_on(model_dir, &device, dtype).map_err(RecipeError::stage("evaluation"))?;
    let tokenizer = policy.tokenizer.as_ref().ok_or_else(|| {
        RecipeError::Config(format!(
            "{}: no tokenizer.json to evaluate with",
            model_dir.display()
        ))
    })?;
    let renderer = Renderer::new(tokenizer).map_err(RecipeError::stage("evaluation"))?;
    let mut prompts = Vec::with_capacity(questions.len());
    for question in questions {
        let ids = match style {
            PromptStyle::Chat => {
                renderer
                    .render(&question.dialogue, true)
                    .map_err(RecipeError::stage("evaluation"))?
                    .ids
            }
            PromptStyle::Text => {
                let text = question.text_prompt.as_deref().ok_or_else(|| {
                    RecipeError::Config(
                        "a base model is asked metadata.text_prompt, which a question lacks"
                            .to_owned(),
                    )
                })?;
                let mut ids = vec![tokenizer.special().begin_of_text];
                ids.extend(
                    tokenizer
                        .encode_text(text)
                        .map_err(RecipeError::stage("evaluation"))?,
                );
                ids
            }
        };
        prompts.push(ids);
    }
    let options = GenerateOptions {
        temperature: 0.0,
        top_p: None,
        top_k: None,
        seed: 0,
        max_new_tokens,
        batch_size,
    };
    let mut correct = 0;
    for (batch, chunk) in prompts
        .chunks(batch_size.max(1))
        .zip(questions.chunks(batch_size.max(1)))
    {
        let generations = policy
            .generate(batch, &options, 0)
            .map_err(RecipeError::stage("evaluation"))?;
        for (generated, question) in generations.iter().zip(chunk) {
            let answer = match style {
                PromptStyle::Chat => {
                    let StopReason::StopToken(stop) = generated.stop else {
                        continue; // never ended its turn
                    };
                    let mut ids = generated.ids.clone();
                    ids.push(stop);
                    match decode_assistant(tokenizer, &ids) {
                        Ok(decoded) => decoded.message.content.clone(),
                        Err(_) => continue,
                    }
                }
                PromptStyle::Text => {
                    let text = tokenizer
                        .decode(&generated.ids)
                        .map_err(RecipeError::stage("evaluation"))?;
                    text.lines().next().unwrap_or_default().to_owned()
                }
            };
            if answer_matches(&question.answer, &answer) {
                correct += 1;
            }
        }
    }
    Ok(Accuracy {
        correct,
        total: questions.len(),
    })
}
