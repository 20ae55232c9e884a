//! herd-datasets' integration tests: one binary, one module per subject.

#![expect(
    clippy::expect_used,
    reason = "test helpers stop at the first failure, with its message"
)]

mod chat_template;
mod llama3;
mod properties;
mod protocol_parity;
mod tokenizer_parity;
