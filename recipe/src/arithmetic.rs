//! The demo's task: multi-digit addition asked in chat, a task with checkable answers (the kind
//! Llama 3 §4.3.3 turns into verifiable rejection-sampling data).
//!
//! Everything is generated from a seed, with no network: a held-out set drawn first and never
//! trained on, pretraining text (`a + b = c` lines, no chat format), SFT conversations (a question
//! in one of several phrasings, the reply as the equation `a + b = c` or as a sentence), and prompts whose `metadata.answer`
//! the reference-answer verifier checks. The tokenizer corpus is the same text with every digit
//! removed: BPE then learns no merges inside numbers, so each digit stays one token — what a tiny
//! model needs to learn carrying (Llama 3's pre-tokenizer alone would allow three-digit tokens).

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use training::Rng;

use crate::error::RecipeError;

/// One problem: `left + right`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Problem {
    /// The first operand.
    pub left: u64,
    /// The second operand.
    pub right: u64,
}

/// The phrasings of a question; the SFT data and the prompts use all of them.
const QUESTIONS: [&str; 4] = [
    "What is {left} + {right}?",
    "Compute {left} + {right}.",
    "Add {left} and {right}.",
    "{left} + {right} = ?",
];

impl Problem {
    /// The sum.
    #[must_use]
    pub fn answer(self) -> u64 {
        self.left + self.right
    }

    /// The question in phrasing `phrasing` (taken modulo the number of phrasings).
    #[must_use]
    pub fn question(self, phrasing: usize) -> String {
        QUESTIONS[phrasing % QUESTIONS.len()]
            .replace("{left}", &self.left.to_string())
            .replace("{right}", &self.right.to_string())
    }

    /// The assistant's reply in `style`; its last number is the answer.
    #[must_use]
    pub fn reply(self, style: ReplyStyle) -> String {
        match style {
            ReplyStyle::Equation => self.equation(),
            ReplyStyle::Sentence => format!("The answer is {}.", self.answer()),
        }
    }

    /// The equation as the pretraining text writes it.
    #[must_use]
    pub fn equation(self) -> String {
        format!("{} + {} = {}", self.left, self.right, self.answer())
    }

    /// The base model's prompt: the equation up to `=`.
    #[must_use]
    pub fn text_prompt(self) -> String {
        format!("{} + {} =", self.left, self.right)
    }
}

/// How an SFT reply is written. The demo's "human-written" conversations mix both, as replies by
/// different annotators would: the sentence is as right as the equation, but a model answers far
/// worse in it — its answer digits sit six protocol tokens and a sentence away from the operands
/// they sum, where the equation restates them right before the answer, as the pretraining text
/// does (measured here: a base model at 98% on `a + b =` reached 7.5% in chat after SFT on bare
/// answers). Which style gets answers right is what rejection sampling and DPO learn from the
/// verifier; no stage is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStyle {
    /// `47 + 38 = 85`.
    Equation,
    /// `The answer is 85.`
    Sentence,
}

/// Draws problems whose operands have exactly `digits` digits: a held-out set of distinct problems
/// first, then training problems that are never held out (with repeats: two-digit addition has
/// only 8,100 problems, and the held-out ones must stay unseen, not the training ones unique).
///
/// Fixed-width operands put every digit at a fixed distance from the answer digits it adds up to;
/// measured here, a tiny model pretrained on 0–99 + 0–9 (mixed widths) learned no units digit in
/// 400 updates (7% right, chance 10%), while 10–99 + 10–99 trains past that (README, "The demo").
#[derive(Debug)]
pub struct ProblemSource {
    rng: Rng,
    low: u64,
    limit: u64,
    held_out: HashSet<Problem>,
}

impl ProblemSource {
    /// A source of `digits`-digit problems seeded by `seed`.
    #[must_use]
    pub fn new(seed: u64, digits: u32) -> ProblemSource {
        ProblemSource {
            rng: Rng::from_seed(seed),
            // One-digit operands are 0–9; wider ones start at 10^(digits − 1) (no leading zeros).
            low: if digits > 1 { 10u64.pow(digits - 1) } else { 0 },
            limit: 10u64.pow(digits),
            held_out: HashSet::new(),
        }
    }

    /// How many distinct problems exist.
    #[must_use]
    pub fn space(&self) -> u64 {
        (self.limit - self.low) * (self.limit - self.low)
    }

    fn random(&mut self) -> Problem {
        Problem {
            left: self.low + self.rng.below(self.limit - self.low),
            right: self.low + self.rng.below(self.limit - self.low),
        }
    }

    /// `count` distinct problems, held out from everything [`ProblemSource::draw`] gives later.
    pub fn hold_out(&mut self, count: usize) -> Result<Vec<Problem>, RecipeError> {
        if (self.held_out.len() + count) as u64 > self.space() / 10 {
            return Err(RecipeError::Config(format!(
                "holding out {count} more problems would take over a tenth of the {} distinct ones",
                self.space()
            )));
        }
        let mut problems = Vec::with_capacity(count);
        while problems.len() < count {
            let problem = self.random();
            if self.held_out.insert(problem) {
                problems.push(problem);
            }
        }
        Ok(problems)
    }

    /// `count` training problems (repeats possible), none of them held out.
    pub fn draw(&mut self, count: usize) -> Vec<Problem> {
        let mut problems = Vec::with_capacity(count);
        while problems.len() < count {
            let problem = self.random();
            if !self.held_out.contains(&problem) {
                problems.push(problem);
            }
        }
        problems
    }

    /// A phrasing index.
    pub fn phrasing(&mut self) -> usize {
        self.rng.below(QUESTIONS.len() as u64) as usize
    }

    /// A reply style: [`ReplyStyle::Sentence`] with probability `sentence_fraction`.
    pub fn reply_style(&mut self, sentence_fraction: f64) -> ReplyStyle {
        // Drawn per mille so the stream of draws does not depend on the fraction's value.
        if (self.rng.below(1000) as f64) < sentence_fraction * 1000.0 {
            ReplyStyle::Sentence
        } else {
            ReplyStyle::Equation
        }
    }
}

/// Writes `lines` of text to `path` (created with its parent directory).
fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) -> Result<(), RecipeError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(RecipeError::io(parent))?;
    }
    let file = std::fs::File::create(path).map_err(RecipeError::io(path))?;
    let mut writer = std::io::BufWriter::new(file);
    for line in lines {
        writer
            .write_all(line.as_bytes())
            .and_then(|()| writer.write_all(b"\n"))
            .map_err(RecipeError::io(path))?;
    }
    writer.flush().map_err(RecipeError::io(path))
}

/// Pretraining text: documents of `per_document` equations, separated by blank lines.
pub fn write_pretraining_text(
    path: &Path,
    problems: &[Problem],
    per_document: usize,
) -> Result<(), RecipeError> {
    let documents = problems.chunks(per_document.max(1)).map(|chunk| {
        let mut document = chunk
            .iter()
            .map(|problem| problem.equation())
            .collect::<Vec<_>>()
            .join("\n");
        document.push('\n');
        document
    });
    write_lines(path, documents)
}

/// SFT conversations: a question and the reply, a `sentence_fraction` of them in the sentence
/// style ([`ReplyStyle`]).
pub fn write_conversations(
    path: &Path,
    problems: &[Problem],
    sentence_fraction: f64,
    source: &mut ProblemSource,
) -> Result<(), RecipeError> {
    let lines: Vec<String> = problems
        .iter()
        .map(|problem| {
            let question = problem.question(source.phrasing());
            let reply = problem.reply(source.reply_style(sentence_fraction));
            json!({"messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": reply},
            ]})
            .to_string()
        })
        .collect();
    write_lines(path, lines)
}

/// Prompts for sampling: the question alone, with the answer in `metadata.answer` for the
/// reference-answer verifier.
pub fn write_prompts(
    path: &Path,
    problems: &[Problem],
    source: &mut ProblemSource,
) -> Result<(), RecipeError> {
    let lines: Vec<String> = problems
        .iter()
        .enumerate()
        .map(|(index, problem)| {
            json!({
                // Unique per line: a problem may repeat within a prompt set.
                "id": format!("q{index}:{}+{}", problem.left, problem.right),
                "messages": [{"role": "user", "content": problem.question(source.phrasing())}],
                "metadata": {
                    "answer": problem.answer().to_string(),
                    "capability": "arithmetic",
                    "text_prompt": problem.text_prompt(),
                },
            })
            .to_string()
        })
        .collect();
    write_lines(path, lines)
}

/// The tokenizer corpus: the conversations' text with every digit removed (see the module
/// header for why).
pub fn write_tokenizer_corpus(path: &Path, problems: &[Problem]) -> Result<(), RecipeError> {
    let lines = problems.iter().enumerate().map(|(index, problem)| {
        let text = format!(
            "{}\n{}\n{}",
            problem.question(index),
            problem.reply(ReplyStyle::Equation),
            problem.reply(ReplyStyle::Sentence)
        );
        text.chars().filter(|c| !c.is_ascii_digit()).collect()
    });
    write_lines(path, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_problems_are_distinct_and_never_drawn_for_training() {
        let mut source = ProblemSource::new(7, 2);
        let held_out = source.hold_out(800).unwrap();
        assert_eq!(held_out.iter().collect::<HashSet<_>>().len(), 800);
        let train = source.draw(20_000);
        let held: HashSet<_> = held_out.iter().collect();
        assert!(train.iter().all(|problem| !held.contains(problem)));
        assert!(
            train
                .iter()
                .chain(&held_out)
                .all(|problem| (10..100).contains(&problem.left)
                    && (10..100).contains(&problem.right)),
            "two digits exactly"
        );
        assert!(
            source.hold_out(11).is_err(),
            "over a tenth of the 8,100 problems"
        );
    }

    #[test]
    fn reply_styles_follow_the_fraction_and_the_seed() {
        let styles = |fraction: f64| {
            let mut source = ProblemSource::new(3, 2);
            (0..2000)
                .map(|_| source.reply_style(fraction))
                .collect::<Vec<_>>()
        };
        let sentences = |styles: &[ReplyStyle]| {
            styles
                .iter()
                .filter(|style| **style == ReplyStyle::Sentence)
                .count()
        };
        assert_eq!(sentences(&styles(0.0)), 0);
        assert_eq!(sentences(&styles(1.0)), 2000);
        let fifth = styles(0.2);
        assert!(
            (300..500).contains(&sentences(&fifth)),
            "{}",
            sentences(&fifth)
        );
        assert_eq!(fifth, styles(0.2), "seeded");
    }

    #[test]
    fn texts() {
        let problem = Problem {
            left: 47,
            right: 38,
        };
        assert_eq!(problem.equation(), "47 + 38 = 85");
        assert_eq!(problem.reply(ReplyStyle::Equation), "47 + 38 = 85");
        assert_eq!(problem.reply(ReplyStyle::Sentence), "The answer is 85.");
        assert_eq!(problem.question(0), "What is 47 + 38?");
    }
}
