//! The training toolbox's integration tests: parity with torch's `AdamW`, and exact resume.

#![expect(clippy::unwrap_used, reason = "test helpers stop at the first failure")]

mod pytorch_adamw;
mod resume;
