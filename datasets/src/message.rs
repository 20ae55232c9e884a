//! Typed dialogue messages of the Llama 3.1 protocol: roles, tool calls and how a message ends.
//!
//! Roles and tool calls follow Meta's `llama_models/datatypes.py` (`RawMessage`, `ToolCall`,
//! `BuiltinTool`, `StopReason`). The JSON form is herd's shared message format, read from
//! conversations, preferences and the labeling app alike:
//!
//! ```json
//! {"role": "assistant", "content": "", "end": "eom",
//!  "tool_calls": [{"type": "function", "function": {"name": "brave_search", "arguments": {"query": "gold price"}}}]}
//! ```
//!
//! `"tool"` is accepted as an alias of `"ipython"`; OpenAI-style tool calls are accepted with
//! `arguments` as an object or as a JSON string, and with or without the `{"type", "function"}`
//! wrapper. Parsing reports every problem it finds, each with the path of its field.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Who speaks a message. The names are the header text Meta renders between
/// `<|start_header_id|>` and `<|end_header_id|>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions and the Llama 3.1 preamble; only the first message may be a system message.
    System,
    /// The human.
    User,
    /// The model: the only role whose tokens are trained on.
    Assistant,
    /// The result of a tool call (Meta's `tool` role, rendered as `ipython`).
    Ipython,
}

impl Role {
    /// The role name as rendered in the header.
    #[must_use]
    pub fn header_name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Ipython => "ipython",
        }
    }

    /// Parses a role name; `"tool"` is an alias of `ipython`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "ipython" | "tool" => Some(Role::Ipython),
            _ => None,
        }
    }

    /// All roles, in a fixed order (used to cache header tokens).
    pub const ALL: [Role; 4] = [Role::System, Role::User, Role::Assistant, Role::Ipython];
}

impl fmt::Display for Role {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.header_name())
    }
}

/// How an assistant message ends: `<|eot_id|>` closes the turn, `<|eom_id|>` stops to wait for a
/// tool result (Meta's `StopReason.end_of_turn` / `end_of_message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageEnd {
    /// `<|eot_id|>`: the turn is over.
    #[default]
    EndOfTurn,
    /// `<|eom_id|>`: the assistant waits for a tool result and will continue.
    EndOfMessage,
}

impl MessageEnd {
    /// `"eot"` or `"eom"`, the JSON spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MessageEnd::EndOfTurn => "eot",
            MessageEnd::EndOfMessage => "eom",
        }
    }
}

/// A tool the assistant calls. The builtin tools are Llama 3.1's (`prompt_format.md`, "Builtin Tool
/// Calling"); everything else is a custom tool called with JSON arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Tool {
    /// `brave_search.call(query="...")`.
    BraveSearch {
        /// The search query; it cannot contain `"` (the call syntax has no escaping).
        query: String,
    },
    /// `wolfram_alpha.call(query="...")`.
    WolframAlpha {
        /// The query; it cannot contain `"`.
        query: String,
    },
    /// Python code, rendered verbatim after `<|python_tag|>`.
    CodeInterpreter {
        /// The code to run.
        code: String,
    },
    /// A user-defined function, rendered as Meta's JSON tool call.
    Custom {
        /// The function name.
        name: String,
        /// The arguments, keys in the order given.
        arguments: Map<String, Value>,
    },
}

impl Tool {
    /// The tool's name as it appears in JSON and in the system preamble.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Tool::BraveSearch { .. } => "brave_search",
            Tool::WolframAlpha { .. } => "wolfram_alpha",
            Tool::CodeInterpreter { .. } => "code_interpreter",
            Tool::Custom { name, .. } => name,
        }
    }

    /// The arguments as a JSON object, in the shape the JSON format carries them.
    #[must_use]
    pub fn arguments(&self) -> Map<String, Value> {
        let mut arguments = Map::new();
        match self {
            Tool::BraveSearch { query } | Tool::WolframAlpha { query } => {
                arguments.insert("query".to_owned(), Value::String(query.clone()));
            }
            Tool::CodeInterpreter { code } => {
                arguments.insert("code".to_owned(), Value::String(code.clone()));
            }
            Tool::Custom {
                arguments: custom, ..
            } => arguments.clone_from(custom),
        }
        arguments
    }

    /// Builds a tool call from a name and its arguments, checking the builtin tools' shapes.
    pub fn from_name_and_arguments(
        name: &str,
        arguments: Map<String, Value>,
        path: &str,
        problems: &mut Vec<FieldProblem>,
    ) -> Option<Tool> {
        match name {
            "brave_search" | "wolfram_alpha" => {
                let query = builtin_string_argument(name, &arguments, "query", path, problems)?;
                if query.contains('"') {
                    problems.push(FieldProblem::new(
                        format!("{path}.arguments.query"),
                        format!(
                            "{name} query {query:?} contains a double quote, which the Llama 3.1 call syntax `{name}.call(query=\"...\")` cannot express"
                        ),
                    ));
                    return None;
                }
                Some(if name == "brave_search" {
                    Tool::BraveSearch { query }
                } else {
                    Tool::WolframAlpha { query }
                })
            }
            "code_interpreter" => {
                let code = builtin_string_argument(name, &arguments, "code", path, problems)?;
                Some(Tool::CodeInterpreter { code })
            }
            "" => {
                problems.push(FieldProblem::new(
                    format!("{path}.name"),
                    "tool name is empty".to_owned(),
                ));
                None
            }
            _ => Some(Tool::Custom {
                name: name.to_owned(),
                arguments,
            }),
        }
    }
}

fn builtin_string_argument(
    tool: &str,
    arguments: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    let unexpected: Vec<&String> = arguments.keys().filter(|name| *name != key).collect();
    if !unexpected.is_empty() {
        problems.push(FieldProblem::new(
            format!("{path}.arguments"),
            format!("{tool} takes only {{\"{key}\": string}}, got extra keys {unexpected:?}"),
        ));
        return None;
    }
    match arguments.get(key) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => {
            problems.push(FieldProblem::new(
                format!("{path}.arguments.{key}"),
                format!("{tool} {key} must be a string, got {}", json_kind(other)),
            ));
            None
        }
        None => {
            problems.push(FieldProblem::new(
                format!("{path}.arguments"),
                format!("{tool} needs {{\"{key}\": string}}"),
            ));
            None
        }
    }
}

/// One tool call of an assistant message. The id is kept for OpenAI-style data but never rendered:
/// the Llama 3.1 protocol has no call ids.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call id, if the data had one.
    pub id: Option<String>,
    /// What is called, with its arguments.
    pub tool: Tool,
}

/// One message of a dialogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The text. Empty for an assistant message that makes a tool call: in Llama 3.1 the call is the
    /// whole message body.
    pub content: String,
    /// The tool call of an assistant message (the protocol supports one per message).
    pub tool_call: Option<ToolCall>,
    /// How an assistant message ends; always `EndOfTurn` for other roles.
    pub end: MessageEnd,
    /// For an ipython (tool result) message: the id of the call it answers, if the data had one.
    pub tool_call_id: Option<String>,
    /// The `name` field of the OpenAI format (e.g. the function a tool result comes from), kept
    /// for the data's sake; Llama 3.1 does not render it.
    pub name: Option<String>,
}

impl Message {
    /// A message with text content that ends its turn.
    #[must_use]
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_call: None,
            end: MessageEnd::EndOfTurn,
            tool_call_id: None,
            name: None,
        }
    }

    /// An assistant message that calls a tool and waits for its result (`<|eom_id|>`).
    #[must_use]
    pub fn tool_call(tool: Tool) -> Message {
        Message {
            role: Role::Assistant,
            content: String::new(),
            tool_call: Some(ToolCall { id: None, tool }),
            end: MessageEnd::EndOfMessage,
            tool_call_id: None,
            name: None,
        }
    }

    /// Parses herd's JSON message format, reporting every problem with its field path
    /// (`path` is the message's own path, e.g. `messages[2]`).
    #[expect(
        clippy::too_many_lines,
        reason = "one linear check per field, then the checks across fields"
    )]
    pub fn from_json(value: &Value, path: &str) -> Result<Message, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let Value::Object(fields) = value else {
            return Err(vec![FieldProblem::new(
                path.to_owned(),
                format!("a message must be a JSON object, got {}", json_kind(value)),
            )]);
        };
        for key in fields.keys() {
            if !matches!(
                key.as_str(),
                "role" | "content" | "tool_calls" | "end" | "tool_call_id" | "name"
            ) {
                problems.push(FieldProblem::new(
                    format!("{path}.{key}"),
                    "unknown field (expected role, content, tool_calls, end, tool_call_id, name)"
                        .to_owned(),
                ));
            }
        }
        let role = match fields.get("role") {
            Some(Value::String(name)) => Role::parse(name).or_else(|| {
                problems.push(FieldProblem::new(
                    format!("{path}.role"),
                    format!(
                        "unknown role {name:?} (expected system, user, assistant, ipython or tool)"
                    ),
                ));
                None
            }),
            Some(other) => {
                problems.push(FieldProblem::new(
                    format!("{path}.role"),
                    format!("role must be a string, got {}", json_kind(other)),
                ));
                None
            }
            None => {
                problems.push(FieldProblem::new(
                    format!("{path}.role"),
                    "missing role".to_owned(),
                ));
                None
            }
        };
        let content = match fields.get("content") {
            Some(Value::String(text)) => Some(text.clone()),
            // OpenAI writes `"content": null` beside tool calls.
            Some(Value::Null) | None => None,
            Some(other) => {
                problems.push(FieldProblem::new(
                    format!("{path}.content"),
                    format!("content must be a string, got {}", json_kind(other)),
                ));
                None
            }
        };
        let tool_call = match fields.get("tool_calls") {
            None | Some(Value::Null) => None,
            Some(Value::Array(calls)) if calls.is_empty() => None,
            Some(Value::Array(calls)) => {
                if calls.len() > 1 {
                    problems.push(FieldProblem::new(
                        format!("{path}.tool_calls"),
                        format!(
                            "{} tool calls in one message; Llama 3.1 supports one per assistant message (split them into separate messages)",
                            calls.len()
                        ),
                    ));
                }
                parse_tool_call(&calls[0], &format!("{path}.tool_calls[0]"), &mut problems)
            }
            Some(other) => {
                problems.push(FieldProblem::new(
                    format!("{path}.tool_calls"),
                    format!("tool_calls must be a list, got {}", json_kind(other)),
                ));
                None
            }
        };
        let end = match fields.get("end") {
            None | Some(Value::Null) => None,
            Some(Value::String(end)) if end == "eot" => Some(MessageEnd::EndOfTurn),
            Some(Value::String(end)) if end == "eom" => Some(MessageEnd::EndOfMessage),
            Some(other) => {
                problems.push(FieldProblem::new(
                    format!("{path}.end"),
                    format!("end must be \"eot\" or \"eom\", got {other}"),
                ));
                None
            }
        };
        let tool_call_id = optional_string(fields, "tool_call_id", path, &mut problems);
        // OpenAI tool results may carry the function's `name`; kept, though Llama 3.1 does not
        // render it.
        let name = optional_string(fields, "name", path, &mut problems);

        if let Some(role) = role {
            if role != Role::Assistant {
                if tool_call.is_some() {
                    problems.push(FieldProblem::new(
                        format!("{path}.tool_calls"),
                        format!(
                            "only assistant messages make tool calls, this is a {role} message"
                        ),
                    ));
                }
                if end == Some(MessageEnd::EndOfMessage) {
                    problems.push(FieldProblem::new(
                        format!("{path}.end"),
                        format!(
                            "only assistant messages can end with eom, this is a {role} message"
                        ),
                    ));
                }
            }
            if tool_call.is_some() && content.as_deref().is_some_and(|text| !text.is_empty()) {
                problems.push(FieldProblem::new(
                    format!("{path}.content"),
                    "an assistant message with a tool call must have empty content: in Llama 3.1 the call is the whole message body (put the text in a message of its own)".to_owned(),
                ));
            }
            if content.is_none() && tool_call.is_none() && !fields.contains_key("tool_calls") {
                problems.push(FieldProblem::new(
                    format!("{path}.content"),
                    "missing content".to_owned(),
                ));
            }
        }
        match role {
            Some(role) if problems.is_empty() => Ok(Message {
                role,
                content: content.unwrap_or_default(),
                tool_call,
                end: end.unwrap_or_default(),
                tool_call_id,
                name,
            }),
            _ => Err(problems),
        }
    }

    /// herd's JSON form of the message (the inverse of [`Message::from_json`]).
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut fields = Map::new();
        fields.insert("role".to_owned(), json!(self.role.header_name()));
        fields.insert("content".to_owned(), json!(self.content));
        if let Some(call) = &self.tool_call {
            let mut wrapped = Map::new();
            if let Some(id) = &call.id {
                wrapped.insert("id".to_owned(), json!(id));
            }
            wrapped.insert("type".to_owned(), json!("function"));
            wrapped.insert(
                "function".to_owned(),
                json!({"name": call.tool.name(), "arguments": call.tool.arguments()}),
            );
            fields.insert(
                "tool_calls".to_owned(),
                Value::Array(vec![Value::Object(wrapped)]),
            );
        }
        if self.end == MessageEnd::EndOfMessage {
            fields.insert("end".to_owned(), json!("eom"));
        }
        if let Some(id) = &self.tool_call_id {
            fields.insert("tool_call_id".to_owned(), json!(id));
        }
        if let Some(name) = &self.name {
            fields.insert("name".to_owned(), json!(name));
        }
        Value::Object(fields)
    }
}

fn optional_string(
    fields: &Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    match fields.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => {
            problems.push(FieldProblem::new(
                format!("{path}.{key}"),
                format!("{key} must be a string, got {}", json_kind(other)),
            ));
            None
        }
    }
}

fn parse_tool_call(
    value: &Value,
    path: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<ToolCall> {
    let Value::Object(fields) = value else {
        problems.push(FieldProblem::new(
            path.to_owned(),
            format!(
                "a tool call must be a JSON object, got {}",
                json_kind(value)
            ),
        ));
        return None;
    };
    let id = optional_string(fields, "id", path, problems);
    // OpenAI wraps the call: {"type": "function", "function": {"name", "arguments"}}.
    let (function, function_path) = match fields.get("function") {
        Some(Value::Object(function)) => {
            if let Some(kind) = fields.get("type")
                && kind != "function"
            {
                problems.push(FieldProblem::new(
                    format!("{path}.type"),
                    format!("tool call type must be \"function\", got {kind}"),
                ));
            }
            (function, format!("{path}.function"))
        }
        Some(other) => {
            problems.push(FieldProblem::new(
                format!("{path}.function"),
                format!("function must be an object, got {}", json_kind(other)),
            ));
            return None;
        }
        None => (fields, path.to_owned()),
    };
    let name = match function.get("name") {
        Some(Value::String(name)) => name.clone(),
        Some(other) => {
            problems.push(FieldProblem::new(
                format!("{function_path}.name"),
                format!("tool name must be a string, got {}", json_kind(other)),
            ));
            return None;
        }
        None => {
            problems.push(FieldProblem::new(
                format!("{function_path}.name"),
                "missing tool name".to_owned(),
            ));
            return None;
        }
    };
    let arguments_path = format!("{function_path}.arguments");
    let arguments = match function
        .get("arguments")
        .or_else(|| function.get("parameters"))
    {
        None => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        // OpenAI sends the arguments as a JSON string.
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(arguments)) => arguments,
            Ok(other) => {
                problems.push(FieldProblem::new(
                    arguments_path,
                    format!(
                        "arguments must be a JSON object, the string holds {}",
                        json_kind(&other)
                    ),
                ));
                return None;
            }
            Err(error) => {
                problems.push(FieldProblem::new(
                    arguments_path,
                    format!("arguments string is not valid JSON: {error}"),
                ));
                return None;
            }
        },
        Some(other) => {
            problems.push(FieldProblem::new(
                arguments_path,
                format!(
                    "arguments must be an object or a JSON string, got {}",
                    json_kind(other)
                ),
            ));
            return None;
        }
    };
    let tool = Tool::from_name_and_arguments(&name, arguments, &function_path, problems)?;
    Some(ToolCall { id, tool })
}

/// A problem with one field of one record, before the file and line are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field's path in the record, e.g. `messages[2].tool_calls[0].function.arguments`.
    pub field: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl FieldProblem {
    /// A problem at `field`.
    #[must_use]
    pub fn new(field: String, message: String) -> FieldProblem {
        FieldProblem { field, message }
    }
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            formatter.write_str(&self.message)
        } else {
            write!(formatter, "{}: {}", self.field, self.message)
        }
    }
}

/// Joins problems into one line each, for error messages.
#[must_use]
pub fn join_problems(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// "a number", "an array", … for error messages.
#[must_use]
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Message::from_json(&value, "message")
            .map_err(|problems| D::Error::custom(join_problems(&problems)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Message, Vec<FieldProblem>> {
        Message::from_json(&serde_json::from_str(text).unwrap(), "messages[0]")
    }

    #[test]
    fn tool_is_an_alias_of_ipython() {
        let message = parse(r#"{"role": "tool", "content": "42"}"#).unwrap();
        assert_eq!(message.role, Role::Ipython);
    }

    #[test]
    fn openai_tool_result_fields_survive_a_round_trip() {
        let text =
            r#"{"role":"ipython","content":"21°C","tool_call_id":"call_1","name":"get_weather"}"#;
        let message = parse(text).unwrap();
        assert_eq!(message.name.as_deref(), Some("get_weather"));
        assert_eq!(serde_json::to_string(&message).unwrap(), text);
    }

    #[test]
    fn openai_tool_call_with_string_arguments() {
        let message = parse(
            r#"{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 3}"}}]}"#,
        )
        .unwrap();
        let call = message.tool_call.unwrap();
        assert_eq!(call.id.as_deref(), Some("call_1"));
        let Tool::Custom { name, arguments } = call.tool else {
            panic!("expected a custom tool")
        };
        assert_eq!(name, "get_weather");
        assert_eq!(arguments.keys().collect::<Vec<_>>(), ["city", "days"]);
    }

    #[test]
    fn builtin_tools_are_recognised_by_name() {
        let message = parse(
            r#"{"role": "assistant", "tool_calls": [{"name": "brave_search", "arguments": {"query": "gold"}}], "end": "eom"}"#,
        )
        .unwrap();
        assert_eq!(message.end, MessageEnd::EndOfMessage);
        assert_eq!(
            message.tool_call.unwrap().tool,
            Tool::BraveSearch {
                query: "gold".into()
            }
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let problems = parse(r#"{"role": "robot", "content": 3, "colour": "red"}"#).unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "messages[0].colour",
                "messages[0].role",
                "messages[0].content"
            ]
        );
        assert!(problems[1].message.contains("\"robot\""));
    }

    #[test]
    fn bad_tool_arguments_are_named() {
        let problems = parse(
            r#"{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{not json"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            problems[0].field,
            "messages[0].tool_calls[0].function.arguments"
        );
        let problems = parse(
            r#"{"role": "assistant", "tool_calls": [{"name": "brave_search", "arguments": {"query": "say \"hi\""}}]}"#,
        )
        .unwrap_err();
        assert!(problems[0].message.contains("double quote"), "{problems:?}");
        let problems = parse(
            r#"{"role": "assistant", "tool_calls": [{"name": "code_interpreter", "arguments": {"code": 1}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            problems[0].field,
            "messages[0].tool_calls[0].arguments.code"
        );
    }

    #[test]
    fn content_beside_a_tool_call_is_refused() {
        let problems = parse(
            r#"{"role": "assistant", "content": "Let me search.", "tool_calls": [{"name": "brave_search", "arguments": {"query": "x"}}]}"#,
        )
        .unwrap_err();
        assert_eq!(problems[0].field, "messages[0].content");
    }

    #[test]
    fn json_round_trip() {
        let text = r#"{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{"b":1,"a":[true]}}}],"end":"eom"}"#;
        let message = parse(text).unwrap();
        assert_eq!(serde_json::to_string(&message).unwrap(), text);
        let back: Message = serde_json::from_str(text).unwrap();
        assert_eq!(back, message);
    }
}
