//! `herd chat --model DIR`: a terminal chat in the Llama 3.1 protocol. Each turn renders the whole
//! dialogue with an open assistant header, generates until `<|eot_id|>`/`<|eom_id|>`, decodes the
//! reply (content or tool call) and keeps it in the dialogue. `/reset` starts over, `/exit` (or end
//! of input) quits.

use std::io::{BufRead, Write};

use datasets::decode::decode_assistant;
use datasets::render::Renderer;
use datasets::{Dialogue, Message, Role};

use crate::error::SynthError;
use crate::generate::{GenerateOptions, Policy};

/// Runs the chat loop over `input`/`output` (standard input and output in the binary).
pub fn chat(
    policy: &Policy,
    system: Option<&str>,
    options: &GenerateOptions,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), SynthError> {
    let tokenizer = policy.tokenizer.as_ref().ok_or_else(|| {
        SynthError::Input("chat needs a tokenizer.json in the model directory".to_owned())
    })?;
    let renderer = Renderer::new(tokenizer)?;
    let start: Vec<Message> = system
        .map(|text| Message::new(Role::System, text))
        .into_iter()
        .collect();
    let mut messages = start.clone();
    let mut turn = 0u64;
    loop {
        write!(output, "you> ")?;
        output.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line {
            "/exit" => break,
            "/reset" => {
                messages.clone_from(&start);
                writeln!(output, "(new conversation)")?;
                continue;
            }
            "" => continue,
            _ => {}
        }
        messages.push(Message::new(Role::User, line));
        let dialogue = Dialogue::new(messages.clone())
            .map_err(|problems| SynthError::Input(datasets::message::join_problems(&problems)))?;
        let prompt = renderer.render(&dialogue, true)?.ids;
        let generated = policy
            .generate(&[prompt], options, options.seed.wrapping_add(turn))?
            .remove(0);
        turn += 1;
        let mut ids = generated.ids;
        if let model::generation::StopReason::StopToken(id) = generated.stop {
            ids.push(id);
        }
        match decode_assistant(tokenizer, &ids) {
            Ok(decoded) => {
                let reply = match &decoded.message.tool_call {
                    Some(call) => format!(
                        "[tool call] {}",
                        datasets::render::tool_call_text(&call.tool)
                    ),
                    None => decoded.message.content.clone(),
                };
                writeln!(output, "assistant> {reply}")?;
                messages.push(decoded.message);
            }
            Err(error) => {
                writeln!(
                    output,
                    "(the model's reply could not be decoded: {error}; dropped)"
                )?;
                messages.pop();
            }
        }
    }
    Ok(())
}
