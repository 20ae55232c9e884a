//! Property tests over random dialogues with the real Llama 3 tokenizer:
//! - rendering an assistant message and decoding it gives the message back;
//! - the text rendering is exactly the decoded ids;
//! - the SFT and DPO masks select exactly the assistant spans — checked independently, by decoding
//!   the masked tokens and comparing with the text those spans must hold.

use datasets::decode::decode_assistant;
use datasets::mask::{TrainOn, dpo_mask, sft_mask};
use datasets::render::{Renderer, render_text, tool_call_text};
use datasets::{Dialogue, Message, MessageEnd, Role, Tool};
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::llama3::llama3_tokenizer;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 .,!?'\n\t-]{0,40}",
        "\\PC{0,24}",
        Just("<|eot_id|>".to_owned()),
        Just("<|start_header_id|>assistant<|end_header_id|>\n\n".to_owned()),
        Just("  leading and trailing  ".to_owned()),
        Just("数学 🧮 مرحبا".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn tool() -> impl Strategy<Value = Tool> {
    prop_oneof![
        "[^\"]{0,30}".prop_map(|query| Tool::BraveSearch { query }),
        "[^\"]{0,30}".prop_map(|query| Tool::WolframAlpha { query }),
        // Code that cannot be read as another call: no quotes, dots or braces.
        "[a-z0-9 =+*()\n]{1,40}".prop_map(|code| Tool::CodeInterpreter { code }),
        (
            "[a-z][a-z_]{0,11}".prop_filter("not a builtin", |name| {
                !matches!(
                    name.as_str(),
                    "brave_search" | "wolfram_alpha" | "code_interpreter"
                )
            }),
            prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..4)
        )
            .prop_map(|(name, arguments)| Tool::Custom {
                name,
                arguments: arguments.into_iter().collect::<Map<String, Value>>(),
            }),
    ]
}

fn assistant_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (text(), any::<bool>()).prop_map(|(content, eom)| Message {
            end: if eom {
                MessageEnd::EndOfMessage
            } else {
                MessageEnd::EndOfTurn
            },
            ..Message::new(Role::Assistant, content)
        }),
        (tool(), any::<bool>()).prop_map(|(tool, eom)| Message {
            end: if eom {
                MessageEnd::EndOfMessage
            } else {
                MessageEnd::EndOfTurn
            },
            ..Message::tool_call(tool)
        }),
    ]
}

/// A turn: a user message and a plain answer, or a tool call, its result and an answer.
fn turn() -> impl Strategy<Value = Vec<Message>> {
    prop_oneof![
        (text(), text()).prop_map(|(question, answer)| vec![
            Message::new(Role::User, question),
            Message::new(Role::Assistant, answer),
        ]),
        (text(), tool(), text(), text()).prop_map(|(question, tool, result, answer)| vec![
            Message::new(Role::User, question),
            Message::tool_call(tool),
            Message::new(Role::Ipython, result),
            Message::new(Role::Assistant, answer),
        ]),
        text().prop_map(|question| vec![Message::new(Role::User, question)]),
    ]
}

fn dialogue() -> impl Strategy<Value = Dialogue> {
    (
        proptest::option::of(text()),
        prop::collection::vec(turn(), 1..4),
    )
        .prop_map(|(system, turns)| {
            let mut messages: Vec<Message> = system
                .map(|text| Message::new(Role::System, text))
                .into_iter()
                .collect();
            messages.extend(turns.into_iter().flatten());
            Dialogue::new(messages).expect("generated dialogues are valid")
        })
}

/// The text an assistant message's trained span holds.
fn span_text(message: &Message, with_end: bool) -> String {
    let mut text = String::new();
    if let Some(call) = &message.tool_call {
        text.push_str("<|python_tag|>");
        text.push_str(&message.content);
        text.push_str(&tool_call_text(&call.tool));
    } else {
        text.push_str(&message.content);
    }
    if with_end {
        text.push_str(if message.end == MessageEnd::EndOfMessage {
            "<|eom_id|>"
        } else {
            "<|eot_id|>"
        });
    }
    text
}

fn masked_text(ids: &[u32], mask: &[u8]) -> String {
    let selected: Vec<u32> = ids
        .iter()
        .zip(mask)
        .filter(|(_, bit)| **bit == 1)
        .map(|(id, _)| *id)
        .collect();
    llama3_tokenizer()
        .decode(&selected)
        .expect("masked ids decode")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn render_then_decode_is_the_identity(message in assistant_message()) {
        let tokenizer = llama3_tokenizer();
        let renderer = Renderer::new(tokenizer).unwrap();
        let body = renderer.render_assistant_body(&message).unwrap();
        let decoded = decode_assistant(tokenizer, &body).unwrap();
        prop_assert_eq!(decoded.message, message);
        prop_assert_eq!(decoded.consumed, body.len());
    }

    #[test]
    fn masks_cover_exactly_the_assistant_spans(dialogue in dialogue()) {
        let tokenizer = llama3_tokenizer();
        let renderer = Renderer::new(tokenizer).unwrap();
        let rendered = renderer.render(&dialogue, false).unwrap();
        prop_assert_eq!(tokenizer.decode(&rendered.ids).unwrap(), render_text(&dialogue, false));

        let assistants: Vec<&Message> = dialogue.messages().iter().filter(|message| message.role == Role::Assistant).collect();
        let all = sft_mask(&rendered, TrainOn::AllAssistantTurns);
        prop_assert_eq!(all.len(), rendered.ids.len());
        let expected: String = assistants.iter().map(|message| span_text(message, true)).collect();
        prop_assert_eq!(masked_text(&rendered.ids, &all), expected);

        let dpo = dpo_mask(&rendered, TrainOn::AllAssistantTurns);
        let expected: String = assistants.iter().map(|message| span_text(message, false)).collect();
        prop_assert_eq!(masked_text(&rendered.ids, &dpo), expected);
        // DPO's mask is the SFT mask less the termination tokens.
        prop_assert!(dpo.iter().zip(&all).all(|(dpo, sft)| dpo <= sft));

        let last_turn_start = dialogue.last_assistant_turn_start();
        let last = sft_mask(&rendered, TrainOn::LastAssistantTurn);
        let expected: String = match last_turn_start {
            Some(start) => dialogue.messages()[start..].iter().filter(|message| message.role == Role::Assistant).map(|message| span_text(message, true)).collect(),
            None => String::new(),
        };
        prop_assert_eq!(masked_text(&rendered.ids, &last), expected);
    }
}
