//! The import format — what rejection sampling writes and what `herd label import` reads: one
//! JSON object per line, `{"id"?, "prompt": [messages], "responses": [{"id"?, "content", "model"?,
//! "round"?}, …]}` with two or more responses. Problems name the line and the field.

use datasets::dialogue::Dialogue;
use datasets::message::{FieldProblem, Role, join_problems};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One candidate response.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportResponse {
    /// The response's own id, if the file gave one.
    pub id: Option<String>,
    /// The assistant text.
    pub content: String,
    /// The model that wrote it.
    pub model: Option<String>,
    /// The round of the recipe that produced it.
    pub round: Option<i64>,
}

/// One item to rank.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportItem {
    /// The line's `id`, or `sha256:` + a hash of the line's prompt and responses, so re-importing
    /// the same content adds nothing.
    pub external_id: String,
    /// The prompt dialogue (ends with a user or tool-result message).
    pub prompt: Dialogue,
    /// The candidates, in file order.
    pub responses: Vec<ImportResponse>,
}

const FIELDS: [&str; 3] = ["id", "prompt", "responses"];
const RESPONSE_FIELDS: [&str; 4] = ["id", "content", "model", "round"];

/// Parses one line's JSON value.
pub fn parse_item(value: &Value) -> Result<ImportItem, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let Some(fields) = value.as_object() else {
        return Err(vec![FieldProblem::new(
            String::new(),
            format!(
                "expected an object, got {}",
                datasets::message::json_kind(value)
            ),
        )]);
    };
    for key in fields.keys() {
        if !FIELDS.contains(&key.as_str()) {
            problems.push(FieldProblem::new(
                key.clone(),
                format!("unknown field (expected one of {})", FIELDS.join(", ")),
            ));
        }
    }
    let external_id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        Some(_) => {
            problems.push(FieldProblem::new(
                "id".into(),
                "expected a non-empty string or number".into(),
            ));
            None
        }
    };
    let prompt = match fields.get("prompt") {
        None => {
            problems.push(FieldProblem::new("prompt".into(), "missing prompt".into()));
            None
        }
        Some(value) => match Dialogue::from_json(value, "prompt") {
            Ok(prompt) => {
                if prompt.messages().last().map(|message| message.role) == Some(Role::Assistant) {
                    problems.push(FieldProblem::new(
                        format!("prompt[{}]", prompt.messages().len() - 1),
                        "the prompt must end with a user or tool-result message".into(),
                    ));
                }
                Some(prompt)
            }
            Err(mut found) => {
                problems.append(&mut found);
                None
            }
        },
    };
    let responses = parse_responses(fields.get("responses"), &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let (Some(prompt), Some(responses)) = (prompt, responses) else {
        return Err(vec![FieldProblem::new(String::new(), "incomplete".into())]);
    };
    let external_id = external_id.unwrap_or_else(|| content_id(value));
    Ok(ImportItem {
        external_id,
        prompt,
        responses,
    })
}

fn parse_responses(
    value: Option<&Value>,
    problems: &mut Vec<FieldProblem>,
) -> Option<Vec<ImportResponse>> {
    let Some(value) = value else {
        problems.push(FieldProblem::new(
            "responses".into(),
            "missing responses".into(),
        ));
        return None;
    };
    let Some(list) = value.as_array() else {
        problems.push(FieldProblem::new(
            "responses".into(),
            "expected a list of responses".into(),
        ));
        return None;
    };
    if list.len() < 2 {
        problems.push(FieldProblem::new(
            "responses".into(),
            format!("need two or more responses to rank, got {}", list.len()),
        ));
    }
    let mut responses = Vec::new();
    for (index, entry) in list.iter().enumerate() {
        let path = format!("responses[{index}]");
        let Some(fields) = entry.as_object() else {
            problems.push(FieldProblem::new(path, "expected an object".into()));
            continue;
        };
        for key in fields.keys() {
            if !RESPONSE_FIELDS.contains(&key.as_str()) {
                problems.push(FieldProblem::new(
                    format!("{path}.{key}"),
                    format!(
                        "unknown field (expected one of {})",
                        RESPONSE_FIELDS.join(", ")
                    ),
                ));
            }
        }
        let content = match fields.get("content") {
            Some(Value::String(content)) if !content.trim().is_empty() => content.clone(),
            Some(Value::String(_)) => {
                problems.push(FieldProblem::new(
                    format!("{path}.content"),
                    "empty response".into(),
                ));
                continue;
            }
            _ => {
                problems.push(FieldProblem::new(
                    format!("{path}.content"),
                    "missing or not a string".into(),
                ));
                continue;
            }
        };
        let text = |key: &str, problems: &mut Vec<FieldProblem>| match fields.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(_) => {
                problems.push(FieldProblem::new(
                    format!("{path}.{key}"),
                    "expected a string".into(),
                ));
                None
            }
        };
        let id = text("id", problems);
        let model = text("model", problems);
        let round = match fields.get("round") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) if number.as_i64().is_some() => number.as_i64(),
            Some(_) => {
                problems.push(FieldProblem::new(
                    format!("{path}.round"),
                    "expected an integer".into(),
                ));
                None
            }
        };
        responses.push(ImportResponse {
            id,
            content,
            model,
            round,
        });
    }
    Some(responses)
}

/// `sha256:` + the hash of the value's canonical JSON (keys as written; the serializer keeps
/// insertion order, so identical lines hash identically).
fn content_id(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    format!("sha256:{}", hex::encode(&digest[..16]))
}

/// Parses a whole JSONL text; every bad line is reported as `NAME:LINE: field: problem`.
pub fn parse_file(text: &str, name: &str) -> Result<Vec<ImportItem>, String> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Err(error) => errors.push(format!("{name}:{number}: not JSON: {error}")),
            Ok(value) => match parse_item(&value) {
                Ok(item) => items.push(item),
                Err(problems) => {
                    errors.push(format!("{name}:{number}: {}", join_problems(&problems)));
                }
            },
        }
        if errors.len() >= 20 {
            errors.push(format!("{name}: stopping after 20 bad lines"));
            break;
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_line_and_names_bad_fields() {
        let good = json!({"prompt": [{"role": "user", "content": "2+2?"}],
                          "responses": [{"content": "4", "model": "m", "round": 1}, {"content": "5"}]});
        let item = parse_item(&good).unwrap();
        assert_eq!(item.responses.len(), 2);
        assert_eq!(item.responses[0].round, Some(1));
        assert!(item.external_id.starts_with("sha256:"));
        assert_eq!(parse_item(&good).unwrap().external_id, item.external_id);

        let one =
            json!({"prompt": [{"role": "user", "content": "x"}], "responses": [{"content": "4"}]});
        let text = join_problems(&parse_item(&one).unwrap_err());
        assert!(text.contains("responses"), "{text}");

        let error =
            parse_file("{\"prompt\": [], \"responses\": []}\nnot json\n", "f.jsonl").unwrap_err();
        assert!(error.contains("f.jsonl:1:"), "{error}");
        assert!(error.contains("f.jsonl:2: not JSON"), "{error}");

        let extra = json!({"prompt": [{"role": "user", "content": "x"}],
                           "responses": [{"content": "a", "score": 1}, {"content": "b"}]});
        let text = join_problems(&parse_item(&extra).unwrap_err());
        assert!(text.contains("responses[0].score"), "{text}");
    }
}
