//! The typed records every stage and the labeling app share: a conversation (SFT data) and a
//! preference (reward-model and DPO data).
//!
//! - Conversation: `{"messages": [...]}` (+ optional `id`, `metadata`).
//! - Preference, TRL's conversational format (`trl` `DPOTrainer`/`RewardTrainer` docs):
//!   `{"prompt": [...], "chosen": [assistant...], "rejected": [assistant...]}` plus herd's Llama 3
//!   fields: `strength` (the four levels annotators choose, §4.2.1), `margin` (1, 2/3, 1/3, 0 by
//!   default), `edited` (a human-edited response, ranked edited > chosen > rejected), and the
//!   labeling app's `item_id` / `annotator_id`. Unknown fields are an error, not dropped.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::dialogue::{Dialogue, messages_from_json};
use crate::message::{FieldProblem, Message, Role, join_problems, json_kind};

/// How much better chosen is than rejected: Llama 3's four preference levels (§4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strength {
    /// "significantly better".
    SignificantlyBetter,
    /// "better".
    Better,
    /// "slightly better".
    SlightlyBetter,
    /// "marginally better" (Llama 3 drops these pairs from training as too noisy).
    MarginallyBetter,
}

impl Strength {
    /// All levels, strongest first.
    pub const ALL: [Strength; 4] = [
        Strength::SignificantlyBetter,
        Strength::Better,
        Strength::SlightlyBetter,
        Strength::MarginallyBetter,
    ];

    /// The JSON spelling (`significantly_better`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Strength::SignificantlyBetter => "significantly_better",
            Strength::Better => "better",
            Strength::SlightlyBetter => "slightly_better",
            Strength::MarginallyBetter => "marginally_better",
        }
    }

    /// Parses the JSON spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Strength> {
        Strength::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
    }

    /// The default reward margin of the level: 1, 2/3, 1/3, 0 (the margin-loss scale of Llama 2,
    /// which Llama 3 keeps as an option).
    #[must_use]
    pub fn margin(self) -> f64 {
        match self {
            Strength::SignificantlyBetter => 1.0,
            Strength::Better => 2.0 / 3.0,
            Strength::SlightlyBetter => 1.0 / 3.0,
            Strength::MarginallyBetter => 0.0,
        }
    }
}

impl fmt::Display for Strength {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A conversation for supervised fine-tuning.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    /// The record's id, if it has one.
    pub id: Option<String>,
    /// The dialogue.
    pub dialogue: Dialogue,
    /// Free-form metadata, kept as given.
    pub metadata: Option<Value>,
}

/// A preference between two (or, with an edit, three) responses to one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRecord {
    /// The record's id, if it has one.
    pub id: Option<String>,
    /// The dialogue so far, ending with a user or tool-result message.
    pub prompt: Dialogue,
    /// The preferred response: one or more messages, the first an assistant message.
    pub chosen: Vec<Message>,
    /// The worse response.
    pub rejected: Vec<Message>,
    /// A human-edited response, better than `chosen`.
    pub edited: Option<Vec<Message>>,
    /// How much better `chosen` is.
    pub strength: Option<Strength>,
    /// The reward margin for a margin loss.
    pub margin: Option<f64>,
    /// The labeling app's item id.
    pub item_id: Option<String>,
    /// The labeling app's annotator id.
    pub annotator_id: Option<String>,
    /// Free-form metadata, kept as given.
    pub metadata: Option<Value>,
}

impl PreferenceRecord {
    /// The prompt followed by `completion`, checked as one dialogue.
    pub fn full_dialogue(&self, completion: &[Message]) -> Result<Dialogue, Vec<FieldProblem>> {
        self.prompt.extended(completion, "completion")
    }
}

/// One line of a data file.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `{"messages": [...]}`.
    Conversation(ConversationRecord),
    /// `{"prompt", "chosen", "rejected", ...}`.
    Preference(PreferenceRecord),
}

impl Record {
    /// Parses one JSONL line's value, telling conversations from preferences by their keys and
    /// reporting every problem with its field.
    pub fn from_json(value: &Value) -> Result<Record, Vec<FieldProblem>> {
        let Value::Object(fields) = value else {
            return Err(vec![FieldProblem::new(
                String::new(),
                format!("a record must be a JSON object, got {}", json_kind(value)),
            )]);
        };
        if fields.contains_key("messages") {
            ConversationRecord::from_fields(fields).map(Record::Conversation)
        } else if fields.contains_key("prompt") || fields.contains_key("chosen") {
            PreferenceRecord::from_fields(fields).map(Record::Preference)
        } else {
            let keys: Vec<&String> = fields.keys().collect();
            Err(vec![FieldProblem::new(
                String::new(),
                format!(
                    "not a conversation ({{\"messages\": [...]}}) nor a preference ({{\"prompt\", \"chosen\", \"rejected\"}}); keys are {keys:?}"
                ),
            )])
        }
    }

    /// The JSON form (the inverse of [`Record::from_json`]).
    #[must_use]
    pub fn to_json(&self) -> Value {
        match self {
            Record::Conversation(record) => record.to_json(),
            Record::Preference(record) => record.to_json(),
        }
    }
}

fn unknown_keys(fields: &Map<String, Value>, known: &[&str], problems: &mut Vec<FieldProblem>) {
    for key in fields.keys() {
        if !known.contains(&key.as_str()) {
            problems.push(FieldProblem::new(
                key.clone(),
                format!("unknown field (expected {})", known.join(", ")),
            ));
        }
    }
}

fn optional_string(
    fields: &Map<String, Value>,
    key: &str,
    problems: &mut Vec<FieldProblem>,
) -> Option<String> {
    match fields.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        // Ids from databases are often numbers; keep their text.
        Some(Value::Number(number)) => Some(number.to_string()),
        Some(other) => {
            problems.push(FieldProblem::new(
                key.to_owned(),
                format!("{key} must be a string, got {}", json_kind(other)),
            ));
            None
        }
    }
}

impl ConversationRecord {
    const FIELDS: [&'static str; 3] = ["messages", "id", "metadata"];

    fn from_fields(fields: &Map<String, Value>) -> Result<ConversationRecord, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        unknown_keys(fields, &Self::FIELDS, &mut problems);
        let id = optional_string(fields, "id", &mut problems);
        let dialogue = fields
            .get("messages")
            .map(|messages| Dialogue::from_json(messages, "messages"))
            .transpose()
            .unwrap_or_else(|mut found| {
                problems.append(&mut found);
                None
            });
        match dialogue {
            Some(dialogue) if problems.is_empty() => Ok(ConversationRecord {
                id,
                dialogue,
                metadata: fields.get("metadata").cloned(),
            }),
            _ => Err(problems),
        }
    }

    /// The JSON form.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut fields = Map::new();
        if let Some(id) = &self.id {
            fields.insert("id".to_owned(), json!(id));
        }
        fields.insert("messages".to_owned(), json!(self.dialogue.messages()));
        if let Some(metadata) = &self.metadata {
            fields.insert("metadata".to_owned(), metadata.clone());
        }
        Value::Object(fields)
    }
}

impl PreferenceRecord {
    const FIELDS: [&'static str; 10] = [
        "prompt",
        "chosen",
        "rejected",
        "edited",
        "strength",
        "margin",
        "id",
        "item_id",
        "annotator_id",
        "metadata",
    ];

    #[expect(
        clippy::too_many_lines,
        reason = "one linear check per field, in the order the record lists them"
    )]
    fn from_fields(fields: &Map<String, Value>) -> Result<PreferenceRecord, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        unknown_keys(fields, &Self::FIELDS, &mut problems);
        let prompt = match fields.get("prompt") {
            None => {
                problems.push(FieldProblem::new("prompt".into(), "missing prompt".into()));
                None
            }
            Some(value) => match Dialogue::from_json(value, "prompt") {
                Ok(prompt) => {
                    if prompt.messages().last().map(|message| message.role) == Some(Role::Assistant)
                    {
                        problems.push(FieldProblem::new(
                            format!("prompt[{}]", prompt.messages().len() - 1),
                            "the prompt must end with a user or tool-result message, not an assistant message".into(),
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
        let mut completion = |key: &str, required: bool| -> Option<Vec<Message>> {
            let value = match fields.get(key) {
                None | Some(Value::Null) if !required => return None,
                None | Some(Value::Null) => {
                    problems.push(FieldProblem::new(key.to_owned(), format!("missing {key}")));
                    return None;
                }
                Some(value) => value,
            };
            let messages = messages_from_json(value, key)
                .map_err(|mut found| problems.append(&mut found))
                .ok()?;
            match messages.first() {
                None => {
                    problems.push(FieldProblem::new(key.to_owned(), format!("{key} is empty")));
                    return None;
                }
                Some(first) if first.role != Role::Assistant => {
                    problems.push(FieldProblem::new(
                        format!("{key}[0].role"),
                        format!(
                            "a response must start with an assistant message, got {}",
                            first.role
                        ),
                    ));
                    return None;
                }
                Some(_) => {}
            }
            if let Some(prompt) = &prompt
                && let Err(mut found) = prompt.extended(&messages, key)
            {
                problems.append(&mut found);
                return None;
            }
            Some(messages)
        };
        let chosen = completion("chosen", true);
        let rejected = completion("rejected", true);
        let edited = completion("edited", false);
        if let (Some(chosen), Some(rejected)) = (&chosen, &rejected)
            && same_response(chosen, rejected)
        {
            problems.push(FieldProblem::new(
                "rejected".into(),
                "rejected is identical to chosen: the pair teaches nothing".into(),
            ));
        }
        if let (Some(chosen), Some(edited)) = (&chosen, &edited)
            && same_response(chosen, edited)
        {
            problems.push(FieldProblem::new(
                "edited".into(),
                "edited is identical to chosen: drop it or record the edit".into(),
            ));
        }
        let strength = match fields.get("strength") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Strength::parse(text).or_else(|| {
                problems.push(FieldProblem::new(
                    "strength".into(),
                    format!(
                        "unknown strength {text:?} (expected significantly_better, better, slightly_better or marginally_better)"
                    ),
                ));
                None
            }),
            Some(other) => {
                problems.push(FieldProblem::new(
                    "strength".into(),
                    format!("strength must be a string, got {}", json_kind(other)),
                ));
                None
            }
        };
        let margin = match fields.get("margin") {
            None | Some(Value::Null) => None,
            Some(Value::Number(number)) => number.as_f64(),
            Some(other) => {
                problems.push(FieldProblem::new(
                    "margin".into(),
                    format!("margin must be a number, got {}", json_kind(other)),
                ));
                None
            }
        };
        let id = optional_string(fields, "id", &mut problems);
        let item_id = optional_string(fields, "item_id", &mut problems);
        let annotator_id = optional_string(fields, "annotator_id", &mut problems);
        match (prompt, chosen, rejected) {
            (Some(prompt), Some(chosen), Some(rejected)) if problems.is_empty() => {
                Ok(PreferenceRecord {
                    id,
                    prompt,
                    chosen,
                    rejected,
                    edited,
                    strength,
                    margin,
                    item_id,
                    annotator_id,
                    metadata: fields.get("metadata").cloned(),
                })
            }
            _ => Err(problems),
        }
    }

    /// The JSON form, in TRL's conversational layout.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut fields = Map::new();
        if let Some(id) = &self.id {
            fields.insert("id".to_owned(), json!(id));
        }
        fields.insert("prompt".to_owned(), json!(self.prompt.messages()));
        fields.insert("chosen".to_owned(), json!(self.chosen));
        fields.insert("rejected".to_owned(), json!(self.rejected));
        if let Some(edited) = &self.edited {
            fields.insert("edited".to_owned(), json!(edited));
        }
        if let Some(strength) = self.strength {
            fields.insert("strength".to_owned(), json!(strength.as_str()));
        }
        if let Some(margin) = self.margin {
            fields.insert("margin".to_owned(), json!(margin));
        }
        if let Some(item_id) = &self.item_id {
            fields.insert("item_id".to_owned(), json!(item_id));
        }
        if let Some(annotator_id) = &self.annotator_id {
            fields.insert("annotator_id".to_owned(), json!(annotator_id));
        }
        if let Some(metadata) = &self.metadata {
            fields.insert("metadata".to_owned(), metadata.clone());
        }
        Value::Object(fields)
    }
}

/// Two responses are the same when every message renders the same (call ids aside).
fn same_response(left: &[Message], right: &[Message]) -> bool {
    left.len() == right.len()
        && left.iter().zip(right).all(|(a, b)| {
            a.role == b.role
                && a.content == b.content
                && a.end == b.end
                && a.tool_call.as_ref().map(|call| &call.tool)
                    == b.tool_call.as_ref().map(|call| &call.tool)
        })
}

macro_rules! serde_via_json {
    ($type:ty, $parse:expr) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.to_json().serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = Value::deserialize(deserializer)?;
                let parse: fn(&Value) -> Result<$type, Vec<FieldProblem>> = $parse;
                parse(&value).map_err(|problems| D::Error::custom(join_problems(&problems)))
            }
        }
    };
}

serde_via_json!(Record, Record::from_json);
serde_via_json!(
    ConversationRecord,
    |value| match Record::from_json(value)? {
        Record::Conversation(record) => Ok(record),
        Record::Preference(_) => Err(vec![FieldProblem::new(
            String::new(),
            "expected a conversation, got a preference".into()
        )]),
    }
);
serde_via_json!(PreferenceRecord, |value| match Record::from_json(value)? {
    Record::Preference(record) => Ok(record),
    Record::Conversation(_) => Err(vec![FieldProblem::new(
        String::new(),
        "expected a preference, got a conversation".into()
    )]),
});

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Record, Vec<FieldProblem>> {
        Record::from_json(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn preference_round_trip() {
        let text = r#"{"prompt":[{"role":"user","content":"2+2?"}],"chosen":[{"role":"assistant","content":"4"}],"rejected":[{"role":"assistant","content":"5"}],"edited":[{"role":"assistant","content":"2 + 2 = 4."}],"strength":"better","margin":0.6666666666666666,"item_id":"7","annotator_id":"a1"}"#;
        let record = parse(text).unwrap();
        assert_eq!(serde_json::to_string(&record).unwrap(), text);
        let Record::Preference(preference) = record else {
            panic!("expected a preference")
        };
        assert_eq!(preference.strength.map(Strength::margin), preference.margin);
    }

    #[test]
    fn preference_problems_are_all_named() {
        let problems = parse(
            r#"{"prompt":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"chosen":[{"role":"user","content":"x"}],"rejected":[],"strength":"meh","colour":1}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "colour",
                "prompt[1]",
                "chosen[0].role",
                "rejected",
                "strength"
            ]
        );
    }

    #[test]
    fn identical_chosen_and_rejected_is_refused() {
        let problems = parse(
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"assistant","content":"a"}],"rejected":[{"role":"assistant","content":"a"}]}"#,
        )
        .unwrap_err();
        assert_eq!(problems[0].field, "rejected");
    }

    #[test]
    fn completion_order_problems_are_named_by_completion() {
        let problems = parse(
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"assistant","content":"a"},{"role":"tool","content":"r"}],"rejected":[{"role":"assistant","content":"b"}]}"#,
        )
        .unwrap_err();
        assert_eq!(problems[0].field, "chosen[1]");
    }

    #[test]
    fn neither_kind_is_explained() {
        let problems = parse(r#"{"text": "hello"}"#).unwrap_err();
        assert!(problems[0].message.contains("not a conversation"));
    }
}
