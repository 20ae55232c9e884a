//! Verifiers: checks of a response that need no reward model, for prompts whose answer can be
//! checked (Llama 3 paper §4.3.3: math rejection sampling keeps solutions whose final answer is
//! right; §4.3.1 the same idea with execution feedback for code). A verifier answers `Some(1.0)`
//! (right), `Some(0.0)` (wrong), or `None` (this prompt or response cannot be checked); how that
//! combines with a reward is [`crate::selection`]'s business.
//!
//! [`ReferenceAnswer`], the built-in one, compares the prompt's `metadata.answer` with the
//! response's *final answer*:
//! 1. the text inside the last `\boxed{…}` if the response has one (the MATH convention), otherwise
//!    the whole response;
//! 2. a reference that is a number (after removing `,` `$` `%` and spaces: `"1,234"`, `"$5"`,
//!    `-0.5`) is compared with the **last number** of that text, numerically (equal within
//!    1e-9 relative), so "so the total is 936." is right for 936 and "936 apples, not 937" is not;
//! 3. any other reference is compared with the text after the last `answer:` / `answer is`
//!    (case-insensitive) or else the last non-empty line, both normalised: lower case, `*`, `` ` ``,
//!    `$` and surrounding quotes removed, whitespace collapsed, a trailing `.` dropped.
//!
//! Tool-call responses and prompts without `metadata.answer` are not checkable.

use datasets::{ConversationRecord, Message};
use serde_json::Value;

/// A check of one response to one prompt.
pub trait Verifier {
    /// `Some(1.0)` right, `Some(0.0)` wrong (values in between for partial credit), `None` when
    /// this pair cannot be checked.
    fn verify(&self, prompt: &ConversationRecord, response: &Message) -> Option<f64>;
}

/// The prompt's `metadata.answer` against the response's final answer (rules in the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceAnswer;

impl Verifier for ReferenceAnswer {
    fn verify(&self, prompt: &ConversationRecord, response: &Message) -> Option<f64> {
        if response.tool_call.is_some() {
            return None;
        }
        let reference = match prompt.metadata.as_ref()?.get("answer")? {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return None,
        };
        if reference.trim().is_empty() {
            return None;
        }
        Some(if answer_matches(&reference, &response.content) {
            1.0
        } else {
            0.0
        })
    }
}

/// Whether `response`'s final answer equals `reference` (the rules of the module doc).
#[must_use]
pub fn answer_matches(reference: &str, response: &str) -> bool {
    let text = last_boxed(response).unwrap_or(response);
    if let Some(expected) = parse_number(reference) {
        return last_number(text)
            .is_some_and(|found| (found - expected).abs() <= 1e-9 * expected.abs().max(1.0));
    }
    let candidate = after_answer_marker(text).unwrap_or_else(|| last_line(text));
    let expected = normalise(reference);
    !expected.is_empty() && normalise(candidate) == expected
}

/// A reference that reads as a number once `,`, `$`, `%` and whitespace are removed.
fn parse_number(reference: &str) -> Option<f64> {
    let cleaned: String = reference
        .chars()
        .filter(|c| !matches!(c, ',' | '$' | '%') && !c.is_whitespace())
        .collect();
    let cleaned = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    // Only plain decimals: "inf", "nan" and "1e5" are text answers here.
    let plain = !cleaned.is_empty()
        && cleaned
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
        && cleaned.chars().any(|c| c.is_ascii_digit());
    plain.then(|| cleaned.parse().ok()).flatten()
}

/// The last number in `text`: an optional `-`, digits with optional `,ddd` thousands groups and an
/// optional decimal part (`1,234.5`). A `-` counts only where it cannot be a hyphen (`x-1` is 1).
fn last_number(text: &str) -> Option<f64> {
    let characters: Vec<char> = text.chars().collect();
    let mut last = None;
    let mut index = 0;
    while index < characters.len() {
        if !characters[index].is_ascii_digit() {
            index += 1;
            continue;
        }
        let negative = index > 0
            && characters[index - 1] == '-'
            && (index == 1 || !characters[index - 2].is_alphanumeric());
        let mut digits = String::new();
        while index < characters.len() {
            let c = characters[index];
            if c.is_ascii_digit() {
                digits.push(c);
                index += 1;
            } else if c == ','
                && characters.len() >= index + 4
                && characters[index + 1..index + 4]
                    .iter()
                    .all(char::is_ascii_digit)
                && characters
                    .get(index + 4)
                    .is_none_or(|next| !next.is_ascii_digit())
            {
                // A thousands separator: exactly three digits follow.
                index += 1;
            } else if c == '.'
                && !digits.contains('.')
                && characters.get(index + 1).is_some_and(char::is_ascii_digit)
            {
                digits.push('.');
                index += 1;
            } else {
                break;
            }
        }
        if let Ok(value) = digits.parse::<f64>() {
            last = Some(if negative { -value } else { value });
        }
    }
    last
}

/// The content of the last `\boxed{…}`, braces balanced.
fn last_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (offset, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + offset]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The text after the last `answer:` or `answer is` (ASCII case-insensitive).
fn after_answer_marker(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    ["answer:", "answer is"]
        .iter()
        .filter_map(|marker| lower.rfind(marker).map(|at| at + marker.len()))
        .max()
        .map(|at| text[at..].lines().next().unwrap_or_default())
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default()
}

/// Lower case, markdown emphasis/code/math marks and surrounding quotes removed, whitespace
/// collapsed, a trailing `.` dropped.
fn normalise(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter(|c| !matches!(c, '*' | '`' | '$'))
        .collect::<String>()
        .to_lowercase();
    let collapsed = kept.split_whitespace().collect::<Vec<_>>().join(" ");
    let trimmed = collapsed.trim_end_matches('.').trim();
    trimmed
        .trim_matches(|c| matches!(c, '"' | '\'' | '“' | '”'))
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datasets::{Dialogue, Role};
    use serde_json::json;

    fn prompt(metadata: Option<Value>) -> ConversationRecord {
        ConversationRecord {
            id: None,
            dialogue: Dialogue::new(vec![Message::new(Role::User, "Q")]).unwrap(),
            metadata,
        }
    }

    fn verify(answer: &Value, response: &str) -> Option<f64> {
        ReferenceAnswer.verify(
            &prompt(Some(json!({ "answer": answer }))),
            &Message::new(Role::Assistant, response),
        )
    }

    #[test]
    fn numeric_references_match_the_last_number() {
        assert_eq!(verify(&json!("936"), "12 * 78 = 936"), Some(1.0));
        assert_eq!(verify(&json!(936), "So the total is 936."), Some(1.0));
        assert_eq!(verify(&json!("936"), "936 apples, not 937"), Some(0.0));
        assert_eq!(
            verify(&json!("1,234"), "That makes 1,234 in all"),
            Some(1.0)
        );
        assert_eq!(verify(&json!("1234"), "That makes $1,234.00"), Some(1.0));
        assert_eq!(verify(&json!("-3"), "x = -3"), Some(1.0));
        assert_eq!(verify(&json!("3"), "step-3"), Some(1.0));
        assert_eq!(verify(&json!("-3"), "step-3"), Some(0.0));
        assert_eq!(verify(&json!("0.5"), "one half: 0.50"), Some(1.0));
        assert_eq!(verify(&json!("3"), "1, 2, 3"), Some(1.0));
        assert_eq!(verify(&json!("7"), "no number here"), Some(0.0));
    }

    #[test]
    fn a_boxed_answer_wins_over_later_numbers() {
        assert_eq!(
            verify(&json!("42"), "\\boxed{42} (checked in 3 steps)"),
            Some(1.0)
        );
        assert_eq!(
            verify(&json!("Paris"), "The answer is \\boxed{\\text{Paris}}"),
            Some(0.0)
        );
        assert_eq!(verify(&json!("x^{2}"), "So \\boxed{x^{2}}."), Some(1.0));
    }

    #[test]
    fn text_references_match_the_normalised_final_answer() {
        assert_eq!(
            verify(&json!("Paris"), "Let me think.\nThe capital is **Paris**."),
            Some(0.0)
        );
        assert_eq!(
            verify(&json!("Paris"), "Let me think.\n**Paris**."),
            Some(1.0)
        );
        assert_eq!(
            verify(&json!("paris"), "It is in France.\nAnswer: \"Paris\"."),
            Some(1.0)
        );
        assert_eq!(
            verify(&json!("Lyon"), "The answer is Paris.\nGoodbye"),
            Some(0.0)
        );
    }

    #[test]
    fn unanswerable_pairs_are_not_checkable() {
        let response = Message::new(Role::Assistant, "936");
        assert_eq!(ReferenceAnswer.verify(&prompt(None), &response), None);
        assert_eq!(
            ReferenceAnswer.verify(&prompt(Some(json!({"capability": "math"}))), &response),
            None
        );
        assert_eq!(verify(&json!(""), "936"), None);
        let call = Message::tool_call(datasets::Tool::CodeInterpreter {
            code: "print(936)".into(),
        });
        assert_eq!(
            ReferenceAnswer.verify(&prompt(Some(json!({"answer": "936"}))), &call),
            None
        );
    }
}
