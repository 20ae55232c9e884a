//! herd-recipe: the Llama 3 chat recipe end to end (paper §4.1, Figure 7). A round takes a policy
//! and preference data through reward modelling, rejection sampling, SFT, DPO, averaging and
//! export, with a report; `herd demo` runs the whole recipe from nothing on a task with checkable
//! answers (multi-digit addition), measuring held-out accuracy after every stage.
//!
//! This crate sits above the stages and only calls their library entry points: each stage stays
//! usable on its own (`herd reward train`, `herd synth`, `herd sft`, `herd dpo`, `herd average`,
//! `herd export`), and a round is exactly those commands in order.

pub mod arithmetic;
pub mod demo;
pub mod error;
pub mod evaluate;
pub mod report;
pub mod round;

pub use demo::{DemoSettings, DemoSummary};
pub use error::RecipeError;
pub use round::{RoundConfig, RoundSummary};
