//! Records to token ids and masks: the one path from a JSONL line to what a trainer reads.
//!
//! A conversation becomes one sequence; a preference becomes prompt+chosen and prompt+rejected
//! (and prompt+edited), each trained only on its completion.

use serde::Serialize;

use crate::Dialogue;
use crate::mask::{TrainOn, dpo_mask, sft_mask};
use crate::records::Record;
use crate::render::Renderer;
use crate::tokenizer::TokenizerError;

/// One tokenized sequence with its masks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncodedSequence {
    /// Token ids.
    pub ids: Vec<u32>,
    /// SFT loss mask, one 0/1 per id.
    pub mask: Vec<u8>,
    /// DPO loss mask (no header or termination tokens), one 0/1 per id.
    pub dpo_mask: Vec<u8>,
}

impl EncodedSequence {
    /// Number of tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for an empty sequence.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of tokens the SFT loss counts.
    #[must_use]
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().map(|&bit| usize::from(bit)).sum()
    }
}

/// A record's sequences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EncodedRecord {
    /// A conversation's one sequence.
    Conversation(EncodedSequence),
    /// A preference's sequences.
    Preference {
        /// prompt + chosen.
        chosen: EncodedSequence,
        /// prompt + rejected.
        rejected: EncodedSequence,
        /// prompt + edited.
        #[serde(skip_serializing_if = "Option::is_none")]
        edited: Option<EncodedSequence>,
    },
}

impl EncodedRecord {
    /// Every sequence with its name (`messages`, `chosen`, `rejected`, `edited`).
    #[must_use]
    pub fn sequences(&self) -> Vec<(&'static str, &EncodedSequence)> {
        match self {
            EncodedRecord::Conversation(sequence) => vec![("messages", sequence)],
            EncodedRecord::Preference {
                chosen,
                rejected,
                edited,
            } => {
                let mut sequences = vec![("chosen", chosen), ("rejected", rejected)];
                if let Some(edited) = edited {
                    sequences.push(("edited", edited));
                }
                sequences
            }
        }
    }
}

/// How to encode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Which assistant messages of a conversation are trained on.
    pub train_on: TrainOn,
    /// End conversations with an open assistant header (for generation; not for training).
    pub generation_prompt: bool,
    /// Refuse sequences longer than this many tokens.
    pub max_length: Option<usize>,
}

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A sequence is over the length limit (herd never truncates silently).
    #[error("{field} is {length} tokens, over the limit of {limit}")]
    TooLong {
        /// Which sequence (`messages`, `chosen`, …).
        field: &'static str,
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// The completion does not extend the prompt into a valid dialogue.
    #[error("{0}")]
    Dialogue(String),
    /// Tokenization failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Encodes one record.
pub fn encode_record(
    renderer: &Renderer<'_>,
    record: &Record,
    options: EncodeOptions,
) -> Result<EncodedRecord, EncodeError> {
    let encoded = match record {
        Record::Conversation(conversation) => EncodedRecord::Conversation(encode_dialogue(
            renderer,
            &conversation.dialogue,
            options.train_on,
            options.generation_prompt,
        )?),
        Record::Preference(preference) => {
            let completion = TrainOn::FromMessage(preference.prompt.messages().len());
            let encode_completion =
                |messages: &[crate::Message]| -> Result<EncodedSequence, EncodeError> {
                    let dialogue = preference.full_dialogue(messages).map_err(|problems| {
                        EncodeError::Dialogue(crate::message::join_problems(&problems))
                    })?;
                    Ok(encode_dialogue(renderer, &dialogue, completion, false)?)
                };
            EncodedRecord::Preference {
                chosen: encode_completion(&preference.chosen)?,
                rejected: encode_completion(&preference.rejected)?,
                edited: preference
                    .edited
                    .as_deref()
                    .map(encode_completion)
                    .transpose()?,
            }
        }
    };
    if let Some(limit) = options.max_length {
        for (field, sequence) in encoded.sequences() {
            if sequence.len() > limit {
                return Err(EncodeError::TooLong {
                    field,
                    length: sequence.len(),
                    limit,
                });
            }
        }
    }
    Ok(encoded)
}

/// Encodes one dialogue with both masks.
pub fn encode_dialogue(
    renderer: &Renderer<'_>,
    dialogue: &Dialogue,
    train_on: TrainOn,
    generation_prompt: bool,
) -> Result<EncodedSequence, TokenizerError> {
    let rendering = renderer.render(dialogue, generation_prompt)?;
    Ok(EncodedSequence {
        mask: sft_mask(&rendering, train_on),
        dpo_mask: dpo_mask(&rendering, train_on),
        ids: rendering.ids,
    })
}
