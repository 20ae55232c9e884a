//! A dialogue: messages that together form a valid Llama 3.1 conversation.
//!
//! The rules are the ones Meta's prompt-format document (`llama3_1/prompt_format.md`) relies on:
//! one optional system message, first; a tool result (ipython) only right after the assistant
//! message whose call it answers. Consecutive user messages are allowed (the document's JSON tool
//! example sends the function list and the question as two user messages).

use serde_json::Value;

use crate::message::{FieldProblem, Message, Role, json_kind};

/// Messages checked to form a valid dialogue. Construct with [`Dialogue::new`] or
/// [`Dialogue::from_json`]; the messages cannot be changed afterwards without checking again.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialogue {
    messages: Vec<Message>,
}

impl Dialogue {
    /// Checks `messages` and wraps them. Problems name the message by index (`messages[i]`).
    pub fn new(messages: Vec<Message>) -> Result<Dialogue, Vec<FieldProblem>> {
        let problems = dialogue_problems(&messages, "messages");
        if problems.is_empty() {
            Ok(Dialogue { messages })
        } else {
            Err(problems)
        }
    }

    /// Parses a JSON list of messages at `path` (e.g. `messages` or `prompt`), reporting every
    /// problem of every message and of their order.
    pub fn from_json(value: &Value, path: &str) -> Result<Dialogue, Vec<FieldProblem>> {
        let messages = messages_from_json(value, path)?;
        let problems = dialogue_problems(&messages, path);
        if problems.is_empty() {
            Ok(Dialogue { messages })
        } else {
            Err(problems)
        }
    }

    /// The messages, in order.
    #[must_use]
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Gives the messages back.
    #[must_use]
    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }

    /// This dialogue followed by `completion` (a preference record's prompt + chosen), checked.
    /// Problems in the completion are named `{path}[i]`, counting from the completion's start.
    pub fn extended(
        &self,
        completion: &[Message],
        path: &str,
    ) -> Result<Dialogue, Vec<FieldProblem>> {
        let mut messages = self.messages.clone();
        messages.extend_from_slice(completion);
        let prompt_length = self.messages.len();
        let problems = ordering_problems(&messages, path, &|index| {
            index.checked_sub(prompt_length).map_or_else(
                || format!("prompt[{index}]"),
                |offset| format!("{path}[{offset}]"),
            )
        });
        if problems.is_empty() {
            Ok(Dialogue { messages })
        } else {
            Err(problems)
        }
    }

    /// Index of the first message of the last assistant turn: the assistant messages after the last
    /// user message (a tool-use turn is assistant → ipython → assistant, so it spans several
    /// messages). `None` if no assistant message follows the last user message.
    #[must_use]
    pub fn last_assistant_turn_start(&self) -> Option<usize> {
        let after_user = self
            .messages
            .iter()
            .rposition(|message| matches!(message.role, Role::User | Role::System))
            .map_or(0, |index| index + 1);
        self.messages[after_user..]
            .iter()
            .position(|message| message.role == Role::Assistant)
            .map(|offset| after_user + offset)
    }
}

/// Parses a JSON list of messages without checking their order.
pub fn messages_from_json(value: &Value, path: &str) -> Result<Vec<Message>, Vec<FieldProblem>> {
    let (parsed, mut problems) = parse_each(value, path);
    if problems.is_empty() {
        Ok(parsed.into_iter().flatten().collect())
    } else {
        // Order problems among the messages that did parse are reported too, so one bad role does
        // not hide a misplaced tool result further on.
        problems.extend(partial_ordering_problems(&parsed, path));
        Err(problems)
    }
}

/// Each message parsed on its own (`None` where it failed), and the problems found.
fn parse_each(value: &Value, path: &str) -> (Vec<Option<Message>>, Vec<FieldProblem>) {
    let Value::Array(items) = value else {
        return (
            Vec::new(),
            vec![FieldProblem::new(
                path.to_owned(),
                format!("must be a list of messages, got {}", json_kind(value)),
            )],
        );
    };
    let mut problems = Vec::new();
    let parsed = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            Message::from_json(item, &format!("{path}[{index}]"))
                .map_err(|mut found| problems.append(&mut found))
                .ok()
        })
        .collect();
    (parsed, problems)
}

/// Ordering problems among parsed messages, skipping any rule whose neighbour failed to parse.
fn partial_ordering_problems(parsed: &[Option<Message>], path: &str) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    for (index, message) in parsed.iter().enumerate() {
        let Some(message) = message else { continue };
        if message.role == Role::System && index > 0 {
            problems.push(FieldProblem::new(
                format!("{path}[{index}]"),
                SYSTEM_FIRST.to_owned(),
            ));
        }
        if message.role == Role::Ipython {
            let previous = index.checked_sub(1).map(|before| parsed[before].as_ref());
            let misplaced = match previous {
                None => true,
                Some(None) => false,
                Some(Some(previous)) => !answers_a_call(previous),
            };
            if misplaced {
                problems.push(FieldProblem::new(
                    format!("{path}[{index}]"),
                    TOOL_RESULT_AFTER_CALL.to_owned(),
                ));
            }
        }
    }
    problems
}

const SYSTEM_FIRST: &str = "a system message may only come first";
const TOOL_RESULT_AFTER_CALL: &str =
    "a tool result (ipython) must directly follow the assistant message that made the tool call";

fn answers_a_call(previous: &Message) -> bool {
    previous.role == Role::Assistant && previous.tool_call.is_some()
}

/// Every ordering problem of `messages`, named as `{path}[i]`.
#[must_use]
pub fn dialogue_problems(messages: &[Message], path: &str) -> Vec<FieldProblem> {
    ordering_problems(messages, path, &|index| format!("{path}[{index}]"))
}

/// Ordering problems; `field_of(i)` names message `i`.
fn ordering_problems(
    messages: &[Message],
    path: &str,
    field_of: &dyn Fn(usize) -> String,
) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    if messages.is_empty() {
        problems.push(FieldProblem::new(
            path.to_owned(),
            "the dialogue is empty".to_owned(),
        ));
    }
    for (index, message) in messages.iter().enumerate() {
        let field = field_of(index);
        match message.role {
            Role::System if index > 0 => {
                problems.push(FieldProblem::new(field, SYSTEM_FIRST.to_owned()));
            }
            Role::Ipython if index == 0 || !answers_a_call(&messages[index - 1]) => {
                problems.push(FieldProblem::new(field, TOOL_RESULT_AFTER_CALL.to_owned()));
            }
            _ => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Tool;

    #[test]
    fn empty_dialogue_is_refused() {
        let problems = Dialogue::new(vec![]).unwrap_err();
        assert_eq!(problems[0].message, "the dialogue is empty");
    }

    #[test]
    fn tool_result_without_a_call_is_refused() {
        let problems = Dialogue::new(vec![
            Message::new(Role::User, "hi"),
            Message::new(Role::Ipython, "42"),
        ])
        .unwrap_err();
        assert_eq!(problems[0].field, "messages[1]");
    }

    #[test]
    fn late_system_message_is_refused() {
        let problems = Dialogue::new(vec![
            Message::new(Role::User, "hi"),
            Message::new(Role::System, "be brief"),
        ])
        .unwrap_err();
        assert_eq!(problems[0].field, "messages[1]");
    }

    #[test]
    fn last_assistant_turn_spans_tool_use() {
        let dialogue = Dialogue::new(vec![
            Message::new(Role::User, "a"),
            Message::new(Role::Assistant, "b"),
            Message::new(Role::User, "c"),
            Message::tool_call(Tool::CodeInterpreter { code: "1+1".into() }),
            Message::new(Role::Ipython, "2"),
            Message::new(Role::Assistant, "2"),
        ])
        .unwrap();
        assert_eq!(dialogue.last_assistant_turn_start(), Some(3));
        let prompt_only = Dialogue::new(vec![Message::new(Role::User, "a")]).unwrap();
        assert_eq!(prompt_only.last_assistant_turn_start(), None);
    }

    #[test]
    fn unknown_role_and_order_problems_are_all_reported() {
        let value: Value = serde_json::from_str(
            r#"[{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}, {"role": "user"}]"#,
        )
        .unwrap();
        let problems = Dialogue::from_json(&value, "messages").unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect();
        assert_eq!(fields, ["messages[1].role", "messages[2].content"]);
        let value: Value = serde_json::from_str(
            r#"[{"role": "wizard", "content": "b"}, {"role": "user", "content": "a"}, {"role": "tool", "content": "r"}]"#,
        )
        .unwrap();
        let problems = Dialogue::from_json(&value, "messages").unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect();
        assert_eq!(fields, ["messages[0].role", "messages[2]"]);
    }
}
