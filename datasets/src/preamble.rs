//! The Llama 3.1 system preamble: `Environment: ipython`, `Tools: ...`, the knowledge and today
//! dates, then the instructions. Opt-in: herd never adds it to training data by itself — build it
//! and put it in the system message yourself.
//!
//! The layout reproduces all five system messages of Meta's `llama3_1/prompt_format.md` byte for
//! byte (fixture `datasets/tests/fixtures/llama3_protocol.json`, "preambles"): every line ends with
//! a newline; a blank line separates `Environment: ipython` from the dates when there is no `Tools:`
//! line (the template Meta generated the document with); a blank line precedes the instructions when
//! anything is above them; and a preamble of a single line has no trailing newline (the document's
//! "Environment: ipython" code-interpreter example and its plain "You are a helpful assistant").

use crate::message::{Message, Role};

/// A builtin tool that is listed on the `Tools:` line. `code_interpreter` is never listed:
/// `Environment: ipython` alone turns it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedTool {
    /// `brave_search`.
    BraveSearch,
    /// `wolfram_alpha`.
    WolframAlpha,
}

impl ListedTool {
    /// The name on the `Tools:` line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ListedTool::BraveSearch => "brave_search",
            ListedTool::WolframAlpha => "wolfram_alpha",
        }
    }
}

/// Builder for the system preamble.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemPreamble {
    /// Write `Environment: ipython` (turns on tool calls with `<|eom_id|>`, and the code interpreter).
    pub environment_ipython: bool,
    /// The builtin tools to list, in this order.
    pub tools: Vec<ListedTool>,
    /// E.g. `December 2023`.
    pub cutting_knowledge_date: Option<String>,
    /// E.g. `21 September 2024`.
    pub today_date: Option<String>,
    /// The system instructions that follow the preamble.
    pub instructions: Option<String>,
}

impl SystemPreamble {
    /// The preamble with the tools and environment Meta's examples use.
    #[must_use]
    pub fn with_builtin_tools(tools: Vec<ListedTool>) -> SystemPreamble {
        SystemPreamble {
            environment_ipython: true,
            tools,
            ..SystemPreamble::default()
        }
    }

    /// The system message content.
    #[must_use]
    pub fn text(&self) -> String {
        let mut text = String::new();
        if self.environment_ipython {
            text.push_str("Environment: ipython\n");
        }
        let has_dates = self.cutting_knowledge_date.is_some() || self.today_date.is_some();
        if !self.tools.is_empty() {
            let names: Vec<&str> = self.tools.iter().map(|tool| tool.name()).collect();
            text.push_str("Tools: ");
            text.push_str(&names.join(", "));
            text.push('\n');
        } else if !text.is_empty() && has_dates {
            text.push('\n');
        }
        if let Some(date) = &self.cutting_knowledge_date {
            text.push_str("Cutting Knowledge Date: ");
            text.push_str(date);
            text.push('\n');
        }
        if let Some(date) = &self.today_date {
            text.push_str("Today Date: ");
            text.push_str(date);
            text.push('\n');
        }
        if let Some(instructions) = &self.instructions {
            if text.is_empty() {
                text.push_str(instructions);
            } else {
                text.push('\n');
                text.push_str(instructions);
                text.push('\n');
            }
        } else if text.matches('\n').count() == 1 {
            text.pop();
        }
        text
    }

    /// The preamble as a system message.
    #[must_use]
    pub fn message(&self) -> Message {
        Message::new(Role::System, self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system texts of the examples in `llama3_1/prompt_format.md` (llama-models 0.3.0).
    #[test]
    fn reproduces_the_prompt_format_document() {
        let dated = |preamble: SystemPreamble| SystemPreamble {
            cutting_knowledge_date: Some("December 2023".into()),
            today_date: Some("21 September 2024".into()),
            instructions: Some("You are a helpful assistant.".into()),
            ..preamble
        };
        let builtin = dated(SystemPreamble::with_builtin_tools(vec![
            ListedTool::BraveSearch,
            ListedTool::WolframAlpha,
        ]));
        assert_eq!(
            builtin.text(),
            "Environment: ipython\nTools: brave_search, wolfram_alpha\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n"
        );
        let full_interaction = SystemPreamble::with_builtin_tools(vec![
            ListedTool::BraveSearch,
            ListedTool::WolframAlpha,
        ]);
        assert_eq!(
            full_interaction.text(),
            "Environment: ipython\nTools: brave_search, wolfram_alpha\n"
        );
        let json_tools = dated(SystemPreamble::with_builtin_tools(vec![]));
        assert_eq!(
            json_tools.text(),
            "Environment: ipython\n\nCutting Knowledge Date: December 2023\nToday Date: 21 September 2024\n\nYou are a helpful assistant.\n"
        );
        let plain = SystemPreamble {
            instructions: Some("You are a helpful assistant".into()),
            ..SystemPreamble::default()
        };
        assert_eq!(plain.text(), "You are a helpful assistant");
        let code_interpreter = SystemPreamble::with_builtin_tools(vec![]);
        assert_eq!(code_interpreter.text(), "Environment: ipython");
    }
}
