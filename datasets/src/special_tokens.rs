//! The Llama 3 special tokens and pre-tokenizer pattern.
//!
//! Follows Meta's `llama_models/llama3/tokenizer.py` (`Tokenizer.__init__` and `pat_str`): 256
//! special tokens whose ids start right after the base vocabulary (`num_base_tokens`, 128,000 for
//! Llama 3), twelve named ones first, then `<|reserved_special_token_2|>` …
//! `<|reserved_special_token_245|>`.

/// Number of base (byte-pair) tokens of Meta's Llama 3 `tokenizer.model`; special ids start here.
pub const LLAMA3_NUM_BASE_TOKENS: u32 = 128_000;

/// Number of special tokens Llama 3 appends after the base vocabulary.
pub const NUM_SPECIAL_TOKENS: usize = 256;

/// Start of a sequence (BOS).
pub const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";
/// End of a sequence (EOS) for pre-training text.
pub const END_OF_TEXT: &str = "<|end_of_text|>";
/// First reserved token among the named ones.
pub const RESERVED_SPECIAL_TOKEN_0: &str = "<|reserved_special_token_0|>";
/// Second reserved token among the named ones.
pub const RESERVED_SPECIAL_TOKEN_1: &str = "<|reserved_special_token_1|>";
/// Padding token used by fine-tuning (id 128004 in Llama 3).
pub const FINETUNE_RIGHT_PAD: &str = "<|finetune_right_pad_id|>";
/// Step marker (unused by the text dialogue protocol).
pub const STEP_ID: &str = "<|step_id|>";
/// Opens a message header (the role name).
pub const START_HEADER: &str = "<|start_header_id|>";
/// Closes a message header.
pub const END_HEADER: &str = "<|end_header_id|>";
/// End of message: the model expects a tool result and will continue the turn.
pub const EOM: &str = "<|eom_id|>";
/// End of turn.
pub const EOT: &str = "<|eot_id|>";
/// Starts a code-interpreter tool call.
pub const PYTHON_TAG: &str = "<|python_tag|>";
/// Image placeholder (multimodal models).
pub const IMAGE: &str = "<|image|>";

/// The twelve named special tokens, in id order (offsets 0..12 from the base vocabulary size).
pub const NAMED_SPECIAL_TOKENS: [&str; 12] = [
    BEGIN_OF_TEXT,
    END_OF_TEXT,
    RESERVED_SPECIAL_TOKEN_0,
    RESERVED_SPECIAL_TOKEN_1,
    FINETUNE_RIGHT_PAD,
    STEP_ID,
    START_HEADER,
    END_HEADER,
    EOM,
    EOT,
    PYTHON_TAG,
    IMAGE,
];

/// Meta's pre-tokenizer regex (`Tokenizer.pat_str`), verbatim.
pub const PRE_TOKENIZER_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// All 256 special token names in id order: the token at index `i` has id `num_base_tokens + i`.
#[must_use]
pub fn special_token_names() -> Vec<String> {
    let reserved = (NAMED_SPECIAL_TOKENS.len()..NUM_SPECIAL_TOKENS)
        // The named list already holds reserved tokens 0 and 1, so numbering continues at 2.
        .map(|index| {
            format!(
                "<|reserved_special_token_{}|>",
                index - NAMED_SPECIAL_TOKENS.len() + 2
            )
        });
    NAMED_SPECIAL_TOKENS
        .iter()
        .map(|name| (*name).to_owned())
        .chain(reserved)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_meta_layout() {
        let names = special_token_names();
        assert_eq!(names.len(), NUM_SPECIAL_TOKENS);
        assert_eq!(names[0], "<|begin_of_text|>");
        assert_eq!(names[4], "<|finetune_right_pad_id|>");
        assert_eq!(names[9], "<|eot_id|>");
        assert_eq!(names[11], "<|image|>");
        assert_eq!(names[12], "<|reserved_special_token_2|>");
        assert_eq!(names[255], "<|reserved_special_token_245|>");
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), NUM_SPECIAL_TOKENS);
    }
}
