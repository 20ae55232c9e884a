//! Rendering a dialogue into Llama 3.1 tokens, every token tagged with the span it belongs to.
//!
//! Follows Meta's `ChatFormat.encode_message` / `encode_dialog_prompt`
//! (`llama_models/llama3/chat_format.py`) piece for piece, because token boundaries depend on how
//! the text is cut before tokenizing: `<|begin_of_text|>`, then per message
//! `<|start_header_id|>` + tokens("role") + `<|end_header_id|>` + tokens("\n\n") + body +
//! `<|eot_id|>` (or `<|eom_id|>` for an assistant message that waits for a tool). The content and
//! the tool-call text are tokenized as separate pieces, content is never stripped, and
//! special-token text inside content stays plain text.
//!
//! One deliberate difference from `encode_message`: `<|python_tag|>` starts EVERY assistant message
//! that calls a tool, as Meta's prompt-format document (`llama3_1/prompt_format.md`) shows for
//! `brave_search`, `wolfram_alpha` and JSON tool calls; the encoder adds it only for `code_interpreter`.
//! A model trained without the tag on search calls would not produce what the document (and
//! Meta's own decoder, which keys tool parsing on the tag) expects.

use serde::Serialize;

use crate::dialogue::Dialogue;
use crate::message::{Message, MessageEnd, Role, Tool};
use crate::python_json;
use crate::special_tokens;
use crate::tokenizer::{Llama3Tokenizer, TokenizerError};

/// Which part of the rendering a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// `<|begin_of_text|>`.
    BeginOfText,
    /// `<|start_header_id|>`, `<|end_header_id|>` and the `\n\n` after it.
    Header,
    /// The role name between the header tokens.
    RoleName,
    /// Message content or tool-call text.
    Body,
    /// `<|python_tag|>`, opening a tool call.
    PythonTag,
    /// `<|eot_id|>`.
    EndOfTurn,
    /// `<|eom_id|>`.
    EndOfMessage,
}

/// The tag of one rendered token: its span kind and the index of the message it belongs to
/// (`None` for `<|begin_of_text|>` and the open assistant header of a generation prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTag {
    /// The span kind.
    pub kind: SpanKind,
    /// Index into the dialogue's messages.
    pub message: Option<u32>,
}

/// Token ids with one tag per token, and the role of each message.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedDialogue {
    /// The token ids.
    pub ids: Vec<u32>,
    /// One tag per id.
    pub tags: Vec<TokenTag>,
    /// The role of each message, by index.
    pub roles: Vec<Role>,
}

impl RenderedDialogue {
    /// Number of tokens.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing was rendered (never the case for a dialogue: it starts with BOS).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn push(&mut self, id: u32, kind: SpanKind, message: Option<u32>) {
        self.ids.push(id);
        self.tags.push(TokenTag { kind, message });
    }

    fn extend(&mut self, ids: &[u32], kind: SpanKind, message: Option<u32>) {
        self.ids.extend_from_slice(ids);
        self.tags
            .extend(std::iter::repeat_n(TokenTag { kind, message }, ids.len()));
    }
}

/// Renders dialogues with one tokenizer; caches the header pieces that every message repeats.
#[derive(Debug)]
pub struct Renderer<'t> {
    tokenizer: &'t Llama3Tokenizer,
    role_name_ids: [Vec<u32>; 4],
    header_newlines: Vec<u32>,
}

impl<'t> Renderer<'t> {
    /// A renderer over `tokenizer`.
    pub fn new(tokenizer: &'t Llama3Tokenizer) -> Result<Renderer<'t>, TokenizerError> {
        let mut role_name_ids: [Vec<u32>; 4] = Default::default();
        for (slot, role) in role_name_ids.iter_mut().zip(Role::ALL) {
            *slot = tokenizer.encode_text(role.header_name())?;
        }
        Ok(Renderer {
            tokenizer,
            role_name_ids,
            header_newlines: tokenizer.encode_text("\n\n")?,
        })
    }

    /// The tokenizer this renderer uses.
    #[must_use]
    pub fn tokenizer(&self) -> &'t Llama3Tokenizer {
        self.tokenizer
    }

    /// Renders a whole dialogue; with `generation_prompt` it ends with an open assistant header for
    /// the model to complete (Meta's `encode_dialog_prompt` always adds it).
    pub fn render(
        &self,
        dialogue: &Dialogue,
        generation_prompt: bool,
    ) -> Result<RenderedDialogue, TokenizerError> {
        let messages = dialogue.messages();
        let mut rendered = RenderedDialogue {
            ids: Vec::with_capacity(64 * messages.len()),
            tags: Vec::with_capacity(64 * messages.len()),
            roles: messages.iter().map(|message| message.role).collect(),
        };
        let special = self.tokenizer.special();
        rendered.push(special.begin_of_text, SpanKind::BeginOfText, None);
        for (index, message) in messages.iter().enumerate() {
            self.render_message(&mut rendered, message, Some(index as u32))?;
        }
        if generation_prompt {
            self.render_header(&mut rendered, Role::Assistant, None);
        }
        Ok(rendered)
    }

    /// The tokens of an assistant message after its header: what a model generates for it, and
    /// what [`crate::decode::decode_assistant`] turns back into a message.
    pub fn render_assistant_body(&self, message: &Message) -> Result<Vec<u32>, TokenizerError> {
        let mut rendered = RenderedDialogue {
            ids: Vec::new(),
            tags: Vec::new(),
            roles: Vec::new(),
        };
        self.render_body(&mut rendered, message, None)?;
        Ok(rendered.ids)
    }

    fn render_header(&self, rendered: &mut RenderedDialogue, role: Role, message: Option<u32>) {
        let special = self.tokenizer.special();
        rendered.push(special.start_header, SpanKind::Header, message);
        let role_index = Role::ALL
            .iter()
            .position(|candidate| *candidate == role)
            .unwrap_or(0);
        rendered.extend(&self.role_name_ids[role_index], SpanKind::RoleName, message);
        rendered.push(special.end_header, SpanKind::Header, message);
        rendered.extend(&self.header_newlines, SpanKind::Header, message);
    }

    fn render_message(
        &self,
        rendered: &mut RenderedDialogue,
        message: &Message,
        index: Option<u32>,
    ) -> Result<(), TokenizerError> {
        self.render_header(rendered, message.role, index);
        self.render_body(rendered, message, index)
    }

    fn render_body(
        &self,
        rendered: &mut RenderedDialogue,
        message: &Message,
        index: Option<u32>,
    ) -> Result<(), TokenizerError> {
        let special = self.tokenizer.special();
        if message.tool_call.is_some() {
            rendered.push(special.python_tag, SpanKind::PythonTag, index);
        }
        rendered.extend(
            &self.tokenizer.encode_text(&message.content)?,
            SpanKind::Body,
            index,
        );
        if let Some(call) = &message.tool_call {
            rendered.extend(
                &self.tokenizer.encode_text(&tool_call_text(&call.tool))?,
                SpanKind::Body,
                index,
            );
        }
        if message.role == Role::Assistant && message.end == MessageEnd::EndOfMessage {
            rendered.push(special.eom, SpanKind::EndOfMessage, index);
        } else {
            rendered.push(special.eot, SpanKind::EndOfTurn, index);
        }
        Ok(())
    }
}

/// The text of a tool call as Meta's `ToolUtils.encode_tool_call` writes it (JSON format for custom
/// tools): `brave_search.call(query="...")`, `wolfram_alpha.call(query="...")`, the code itself, or
/// `{"type": "function", "name": ..., "parameters": ...}` exactly as Python's `json.dumps`.
#[must_use]
pub fn tool_call_text(tool: &Tool) -> String {
    match tool {
        Tool::BraveSearch { query } => format!("brave_search.call(query=\"{query}\")"),
        Tool::WolframAlpha { query } => format!("wolfram_alpha.call(query=\"{query}\")"),
        Tool::CodeInterpreter { code } => code.clone(),
        Tool::Custom { name, arguments } => {
            let mut call = serde_json::Map::new();
            call.insert("type".to_owned(), "function".into());
            call.insert("name".to_owned(), name.as_str().into());
            call.insert(
                "parameters".to_owned(),
                serde_json::Value::Object(arguments.clone()),
            );
            python_json::dumps(&serde_json::Value::Object(call))
        }
    }
}

/// The rendering as text, special tokens written by name — what `tokenizer.decode` of the rendered
/// ids gives. Needs no tokenizer.
#[must_use]
pub fn render_text(dialogue: &Dialogue, generation_prompt: bool) -> String {
    let mut text = String::from(special_tokens::BEGIN_OF_TEXT);
    for message in dialogue.messages() {
        push_header_text(&mut text, message.role);
        if message.tool_call.is_some() {
            text.push_str(special_tokens::PYTHON_TAG);
        }
        text.push_str(&message.content);
        if let Some(call) = &message.tool_call {
            text.push_str(&tool_call_text(&call.tool));
        }
        text.push_str(
            if message.role == Role::Assistant && message.end == MessageEnd::EndOfMessage {
                special_tokens::EOM
            } else {
                special_tokens::EOT
            },
        );
    }
    if generation_prompt {
        push_header_text(&mut text, Role::Assistant);
    }
    text
}

fn push_header_text(text: &mut String, role: Role) {
    text.push_str(special_tokens::START_HEADER);
    text.push_str(role.header_name());
    text.push_str(special_tokens::END_HEADER);
    text.push_str("\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rendering_of_a_tool_call() {
        let dialogue = Dialogue::new(vec![
            Message::new(Role::User, "Gold price?"),
            Message::tool_call(Tool::BraveSearch {
                query: "gold price".into(),
            }),
        ])
        .unwrap();
        assert_eq!(
            render_text(&dialogue, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nGold price?<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>brave_search.call(query=\"gold price\")<|eom_id|>"
        );
    }

    #[test]
    fn custom_tool_call_text_is_pythons_json_dumps() {
        let arguments = serde_json::from_str(r#"{"city": "Zürich", "days": 2}"#).unwrap();
        let tool = Tool::Custom {
            name: "weather".into(),
            arguments,
        };
        assert_eq!(
            tool_call_text(&tool),
            r#"{"type": "function", "name": "weather", "parameters": {"city": "Z\u00fcrich", "days": 2}}"#
        );
    }
}
