//! The parts of a Llama 3 `tokenizer.json` shared by the tiktoken import and BPE training:
//! pre-tokenizer, decoder, post-processor and the 256 special tokens.
//!
//! Follows Meta's published `meta-llama/Llama-3.1-8B` `tokenizer.json` and HF transformers'
//! `TikTokenConverter.converted()`: `Split(pat_str, Isolated)` then `ByteLevel` without its own
//! regex, a `ByteLevel` decoder, and a `<|begin_of_text|> $A` template so transformers users get
//! a BOS (herd itself encodes with `add_special_tokens = false`).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::TokenizerError;
use crate::special_tokens::{BEGIN_OF_TEXT, PRE_TOKENIZER_PATTERN, special_token_names};

/// `Sequence[Split(Regex(pat_str), Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]`.
pub(crate) fn llama3_pre_tokenizer() -> Result<PreTokenizerWrapper, TokenizerError> {
    let split = Split::new(
        SplitPattern::Regex(PRE_TOKENIZER_PATTERN.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|error| TokenizerError::Build {
        component: "pre-tokenizer regex",
        message: error.to_string(),
    })?;
    let byte_level = ByteLevel::new(false, true, false);
    Ok(Sequence::new(vec![split.into(), byte_level.into()]).into())
}

/// Sets the decoder and post-processor, and appends the 256 Llama 3 special tokens right after
/// the model's base vocabulary (ids `num_base_tokens..num_base_tokens + 256`, Meta's layout).
pub(crate) fn finish_llama3_tokenizer(tokenizer: &mut Tokenizer) -> Result<(), TokenizerError> {
    let num_base_tokens = tokenizer.get_vocab_size(false) as u32;
    let names = special_token_names();
    let added: Vec<AddedToken> = names
        .iter()
        .map(|name| AddedToken::from(name.as_str(), true))
        .collect();
    tokenizer.add_special_tokens(&added);
    for (offset, name) in names.iter().enumerate() {
        let expected = num_base_tokens + offset as u32;
        let actual = tokenizer.token_to_id(name);
        if actual != Some(expected) {
            return Err(TokenizerError::SpecialTokenId {
                token: name.clone(),
                expected,
                actual: actual.unwrap_or(u32::MAX),
            });
        }
    }
    let template = TemplateProcessing::builder()
        .try_single(format!("{BEGIN_OF_TEXT} $A"))
        .and_then(|builder| builder.try_pair(format!("{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT} $B:1")))
        .map_err(|message| TokenizerError::Build {
            component: "post-processor template",
            message,
        })?
        .special_tokens(vec![(BEGIN_OF_TEXT, num_base_tokens)])
        .build()
        .map_err(|error| TokenizerError::Build {
            component: "post-processor",
            message: error.to_string(),
        })?;
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.with_post_processor(Some(template));
    Ok(())
}
