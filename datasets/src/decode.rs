//! Generated assistant tokens back into a message: the inverse of rendering an assistant message.
//!
//! Mirrors Meta's `ChatFormat.decode_assistant_message_from_content`
//! (`llama_models/llama3/chat_format.py`) but is exact rather than forgiving, so that
//! `decode(render(message)) == message` for every valid message: a body that starts with
//! `<|python_tag|>` is a tool call — `brave_search.call(query="…")`, `wolfram_alpha.call(query="…")`,
//! a JSON call (`{"type": "function", "name", "parameters"}` or `{"name", "parameters"}`), or else
//! code for `code_interpreter`; without the tag the body is plain content. Meta's decoder also strips
//! spaces around the content; herd keeps them, because rendering keeps them.

use serde_json::Value;

use crate::message::{Message, MessageEnd, Role, Tool, ToolCall, join_problems};
use crate::tokenizer::{Llama3Tokenizer, TokenizerError};

/// Why generation of the message stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `<|eot_id|>`: the turn is over.
    EndOfTurn,
    /// `<|eom_id|>`: the model waits for a tool result.
    EndOfMessage,
    /// `<|end_of_text|>`.
    EndOfText,
    /// The tokens ran out before any stop token (`max_new_tokens` reached).
    OutOfTokens,
}

/// A decoded assistant message.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAssistant {
    /// The message (for `OutOfTokens` and `EndOfText` it ends with `EndOfTurn`).
    pub message: Message,
    /// Why it stopped.
    pub stop: StopReason,
    /// How many ids were read, the stop token included; ids after it are not part of the message.
    pub consumed: usize,
}

/// Tokens that do not form an assistant message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A special token (other than a leading `<|python_tag|>` or a final stop token) in the body.
    #[error(
        "unexpected special token {name} (id {id}) at position {position} of the assistant message"
    )]
    UnexpectedSpecialToken {
        /// Index into the decoded ids.
        position: usize,
        /// The token id.
        id: u32,
        /// The token's text.
        name: String,
    },
    /// A JSON tool call whose arguments do not fit the tool.
    #[error("invalid tool call {text:?}: {reason}")]
    InvalidToolCall {
        /// The call text after `<|python_tag|>`.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer failed (an id outside the vocabulary).
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Decodes the ids a model generated after an open assistant header.
pub fn decode_assistant(
    tokenizer: &Llama3Tokenizer,
    ids: &[u32],
) -> Result<DecodedAssistant, DecodeError> {
    let special = tokenizer.special();
    let (body, stop, consumed) = match ids
        .iter()
        .position(|id| [special.eot, special.eom, special.end_of_text].contains(id))
    {
        Some(position) => {
            let stop = match ids[position] {
                id if id == special.eot => StopReason::EndOfTurn,
                id if id == special.eom => StopReason::EndOfMessage,
                _ => StopReason::EndOfText,
            };
            (&ids[..position], stop, position + 1)
        }
        None => (ids, StopReason::OutOfTokens, ids.len()),
    };
    let (calls_tool, body) = match body.split_first() {
        Some((first, rest)) if *first == special.python_tag => (true, rest),
        _ => (false, body),
    };
    let offset = usize::from(calls_tool);
    // Llama 3 places all 256 special tokens after the base vocabulary, from `<|begin_of_text|>` on
    // (Meta's tokenizer.py; herd's trained tokenizers keep that layout).
    if let Some(position) = body.iter().position(|id| *id >= special.begin_of_text) {
        let id = body[position];
        return Err(DecodeError::UnexpectedSpecialToken {
            position: position + offset,
            id,
            name: tokenizer.id_to_token(id).unwrap_or_default(),
        });
    }
    let text = tokenizer.decode(body)?;
    let end = if stop == StopReason::EndOfMessage {
        MessageEnd::EndOfMessage
    } else {
        MessageEnd::EndOfTurn
    };
    let message = if calls_tool {
        Message {
            role: Role::Assistant,
            content: String::new(),
            tool_call: Some(ToolCall {
                id: None,
                tool: parse_tool_call_text(&text)?,
            }),
            end,
            tool_call_id: None,
            name: None,
        }
    } else {
        Message {
            end,
            ..Message::new(Role::Assistant, text)
        }
    };
    Ok(DecodedAssistant {
        message,
        stop,
        consumed,
    })
}

/// The tool call written after `<|python_tag|>`.
pub fn parse_tool_call_text(text: &str) -> Result<Tool, DecodeError> {
    for (name, prefix) in [
        ("brave_search", "brave_search.call(query=\""),
        ("wolfram_alpha", "wolfram_alpha.call(query=\""),
    ] {
        if let Some(query) = text
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("\")"))
            .filter(|query| !query.contains('"'))
        {
            let query = query.to_owned();
            return Ok(if name == "brave_search" {
                Tool::BraveSearch { query }
            } else {
                Tool::WolframAlpha { query }
            });
        }
    }
    if text.starts_with('{')
        && let Ok(Value::Object(call)) = serde_json::from_str::<Value>(text)
    {
        let keys: Vec<&str> = call.keys().map(String::as_str).collect();
        let is_call = keys == ["type", "name", "parameters"]
            && call.get("type").and_then(Value::as_str) == Some("function")
            || keys == ["name", "parameters"];
        if is_call
            && let (Some(Value::String(name)), Some(Value::Object(parameters))) =
                (call.get("name"), call.get("parameters"))
        {
            let mut problems = Vec::new();
            return Tool::from_name_and_arguments(name, parameters.clone(), "", &mut problems)
                .ok_or_else(|| DecodeError::InvalidToolCall {
                    text: text.to_owned(),
                    reason: join_problems(&problems),
                });
        }
    }
    Ok(Tool::CodeInterpreter {
        code: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_calls_parse() {
        assert_eq!(
            parse_tool_call_text("wolfram_alpha.call(query=\"100th decimal of pi\")").unwrap(),
            Tool::WolframAlpha {
                query: "100th decimal of pi".into()
            }
        );
        // A quote inside the query is not the call syntax: it is code.
        assert!(matches!(
            parse_tool_call_text("brave_search.call(query=\"a\"b\")").unwrap(),
            Tool::CodeInterpreter { .. }
        ));
    }

    #[test]
    fn json_calls_parse_in_both_shapes() {
        let tool =
            parse_tool_call_text(r#"{"type": "function", "name": "f", "parameters": {"x": 1}}"#)
                .unwrap();
        assert_eq!(tool.name(), "f");
        let tool =
            parse_tool_call_text(r#"{"name": "brave_search", "parameters": {"query": "q"}}"#)
                .unwrap();
        assert_eq!(tool, Tool::BraveSearch { query: "q".into() });
        assert!(
            parse_tool_call_text(r#"{"name": "brave_search", "parameters": {"q": 1}}"#).is_err()
        );
    }

    #[test]
    fn other_text_is_code() {
        let code = "import math\nprint(math.pi)";
        assert_eq!(
            parse_tool_call_text(code).unwrap(),
            Tool::CodeInterpreter { code: code.into() }
        );
    }
}
