//! Loss masks built from the span tags of a rendering — structurally, never by searching strings.
//!
//! - SFT (Llama 3 §4.1.3, "masking loss on prompt tokens"): the bodies of the trained assistant
//!   messages plus their `<|python_tag|>` and their `<|eot_id|>`/`<|eom_id|>`, so the model learns to
//!   call tools and to stop.
//! - DPO (Llama 3 §4.1.4, modification 1): "we mask out special formatting tokens including header
//!   and termination tokens" from chosen and rejected — only the bodies of the trained assistant
//!   messages count. `<|python_tag|>` stays IN the DPO mask: it is the model's decision to call a
//!   tool (chosen may call one where rejected answers directly), not formatting shared by both.

use serde::{Deserialize, Serialize};

use crate::message::Role;
use crate::render::{RenderedDialogue, SpanKind};

/// Which assistant messages a conversation trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainOn {
    /// Only the last assistant turn: the assistant messages after the last user message (with a
    /// tool-use turn, every assistant message of it). The Llama 3 recipe splits multi-turn dialogues
    /// per turn, and trains each example on its final turn.
    #[default]
    LastAssistantTurn,
    /// Every assistant message.
    AllAssistantTurns,
    /// Every assistant message from this message index on (a preference record's completion).
    FromMessage(usize),
}

/// For each message: is it trained on? Only assistant messages ever are.
#[must_use]
pub fn trained_messages(roles: &[Role], train_on: TrainOn) -> Vec<bool> {
    let first = match train_on {
        TrainOn::AllAssistantTurns => 0,
        TrainOn::FromMessage(index) => index,
        TrainOn::LastAssistantTurn => roles
            .iter()
            .rposition(|role| matches!(role, Role::User | Role::System))
            .map_or(0, |index| index + 1),
    };
    roles
        .iter()
        .enumerate()
        .map(|(index, role)| index >= first && *role == Role::Assistant)
        .collect()
}

/// The SFT mask: 1 on the body, python tag and end token of each trained assistant message.
#[must_use]
pub fn sft_mask(rendered: &RenderedDialogue, train_on: TrainOn) -> Vec<u8> {
    mask_where(rendered, train_on, |kind| {
        matches!(
            kind,
            SpanKind::Body | SpanKind::PythonTag | SpanKind::EndOfTurn | SpanKind::EndOfMessage
        )
    })
}

/// The DPO mask: 1 on the body and python tag of each trained assistant message; header and
/// termination tokens are 0 (Llama 3's formatting-token masking).
#[must_use]
pub fn dpo_mask(rendered: &RenderedDialogue, train_on: TrainOn) -> Vec<u8> {
    mask_where(rendered, train_on, |kind| {
        matches!(kind, SpanKind::Body | SpanKind::PythonTag)
    })
}

fn mask_where(
    rendered: &RenderedDialogue,
    train_on: TrainOn,
    counts: impl Fn(SpanKind) -> bool,
) -> Vec<u8> {
    let trained = trained_messages(&rendered.roles, train_on);
    rendered
        .tags
        .iter()
        .map(|tag| {
            let in_trained_message = tag
                .message
                .is_some_and(|index| trained.get(index as usize).copied().unwrap_or(false));
            u8::from(in_trained_message && counts(tag.kind))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_turn_includes_the_whole_tool_use_turn() {
        let roles = [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant,
            Role::Ipython,
            Role::Assistant,
        ];
        assert_eq!(
            trained_messages(&roles, TrainOn::LastAssistantTurn),
            [false, false, false, false, true, false, true]
        );
        assert_eq!(
            trained_messages(&roles, TrainOn::AllAssistantTurns),
            [false, false, true, false, true, false, true]
        );
        assert_eq!(
            trained_messages(&roles, TrainOn::FromMessage(6)),
            [false, false, false, false, false, false, true]
        );
    }
}
