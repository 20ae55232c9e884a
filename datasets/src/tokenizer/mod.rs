//! The Llama 3 tokenizer: an HF `tokenizers` BPE that encodes exactly as Meta's tiktoken one.
//!
//! Follows `llama_models/llama3/tokenizer.py`: [`Llama3Tokenizer::encode_text`] is Meta's
//! `encode(s, bos=False, eos=False)` with the default `disallowed_special=()` (special-token text
//! typed by a user is ordinary text), including its 400,000-character and 25,000-run chunking;
//! [`Llama3Tokenizer::decode`] is `decode`, rendering special tokens as their text. The parity
//! tests in `tests/integration/tokenizer_parity.rs` check both against fixtures produced by Meta's
//! tokenizer (`dev/`). [`import_tiktoken`] converts Meta's `tokenizer.model`; [`train_bpe`] trains
//! a small tokenizer with the same layout.

mod chunks;
mod direct;
mod error;
mod pipeline;
pub mod tiktoken_import;
pub mod train;

use std::path::Path;

use direct::DirectEncoder;

pub use chunks::{MAX_ENCODE_CHARS, MAX_RUN_CHARS, is_python_space};
pub use error::TokenizerError;
pub use tiktoken_import::import_tiktoken;
pub use train::train_bpe;

use crate::special_tokens::{
    BEGIN_OF_TEXT, END_HEADER, END_OF_TEXT, EOM, EOT, FINETUNE_RIGHT_PAD, PYTHON_TAG, START_HEADER,
};

/// The ids of the special tokens the dialogue protocol uses, resolved by name when loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokenIds {
    /// `<|begin_of_text|>` (128000 in Llama 3).
    pub begin_of_text: u32,
    /// `<|end_of_text|>` (128001).
    pub end_of_text: u32,
    /// `<|finetune_right_pad_id|>` (128004).
    pub finetune_right_pad: u32,
    /// `<|start_header_id|>` (128006).
    pub start_header: u32,
    /// `<|end_header_id|>` (128007).
    pub end_header: u32,
    /// `<|eom_id|>` (128008).
    pub eom: u32,
    /// `<|eot_id|>` (128009).
    pub eot: u32,
    /// `<|python_tag|>` (128010).
    pub python_tag: u32,
}

impl SpecialTokenIds {
    /// Looks each token up by name; a missing one is an error naming it and `source_name`.
    fn resolve(
        tokenizer: &tokenizers::Tokenizer,
        source_name: &str,
    ) -> Result<Self, TokenizerError> {
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| TokenizerError::MissingSpecialToken {
                    source_name: source_name.to_owned(),
                    token: token.to_owned(),
                })
        };
        Ok(Self {
            begin_of_text: id(BEGIN_OF_TEXT)?,
            end_of_text: id(END_OF_TEXT)?,
            finetune_right_pad: id(FINETUNE_RIGHT_PAD)?,
            start_header: id(START_HEADER)?,
            end_header: id(END_HEADER)?,
            eom: id(EOM)?,
            eot: id(EOT)?,
            python_tag: id(PYTHON_TAG)?,
        })
    }
}

/// A Llama 3 tokenizer: an HF `tokenizers::Tokenizer` configured to encode like Meta's tiktoken.
///
/// Construction sets, once, what every encode relies on: special-token text is not split out of
/// the input (`set_encode_special_tokens(true)`), and there is no truncation or padding. Encoding
/// never adds special tokens; the caller (the dialogue protocol) places them by id.
#[derive(Debug, Clone)]
pub struct Llama3Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokenIds,
    /// The Llama 3 pipeline run directly, when `inner` has exactly that configuration.
    direct: Option<DirectEncoder>,
    /// Vocabulary size, added tokens included; ids `0..vocab_size` all have a token.
    vocab_size: usize,
    /// The file it was loaded from, or how it was built, for error messages.
    source_name: String,
}

impl Llama3Tokenizer {
    /// Loads an HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|error| TokenizerError::Load {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        Self::from_tokenizer(tokenizer, path.display().to_string())
    }

    /// Wraps an HF tokenizer; `source_name` (its file, or how it was built) appears in errors.
    ///
    /// Fails if a special token herd needs is missing or if some id below the vocabulary size has
    /// no token (decode relies on ids being contiguous).
    pub fn from_tokenizer(
        mut inner: tokenizers::Tokenizer,
        source_name: impl Into<String>,
    ) -> Result<Self, TokenizerError> {
        let source_name = source_name.into();
        let special = SpecialTokenIds::resolve(&inner, &source_name)?;
        // Meta's encode treats special-token text as plain text (`disallowed_special=()`); the
        // tokenizers crate splits it out by default. This flag is not serialized, so it is set
        // here for every tokenizer, loaded or built.
        inner.set_encode_special_tokens(true);
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|error| TokenizerError::Build {
                component: "tokenizer without truncation",
                message: error.to_string(),
            })?;
        let vocab_size = inner.get_vocab_size(true);
        // One look-up per id at load time buys a bounds check instead of a look-up in decode.
        if let Some(id) = (0..vocab_size as u32).find(|id| inner.id_to_token(*id).is_none()) {
            return Err(TokenizerError::IdGap {
                source_name,
                id,
                vocab_size,
            });
        }
        Ok(Self {
            direct: DirectEncoder::for_tokenizer(&inner),
            inner,
            special,
            vocab_size,
            source_name,
        })
    }

    /// Writes the tokenizer as pretty-printed `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        self.inner
            .save(path, true)
            .map_err(|error| TokenizerError::Save {
                path: path.to_path_buf(),
                message: error.to_string(),
            })
    }

    /// The special token ids the dialogue protocol uses.
    #[must_use]
    pub fn special(&self) -> &SpecialTokenIds {
        &self.special
    }

    /// Number of ids, added (special) tokens included: 128,256 for Llama 3.
    #[must_use]
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The wrapped HF tokenizer (configured as described on [`Llama3Tokenizer`]).
    #[must_use]
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Where the tokenizer came from: its file, or how it was built.
    #[must_use]
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// The id of a token given in its stored form (byte-level string, or special-token text).
    #[must_use]
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The stored form of a token id (byte-level string, or special-token text).
    #[must_use]
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes ordinary text: no special tokens added, special-token text encoded as plain text.
    ///
    /// Meta's `encode(text, bos=False, eos=False)`: the text is cut where Meta cuts it (see
    /// [`MAX_ENCODE_CHARS`], [`MAX_RUN_CHARS`]) and the pieces encoded one after another. Text
    /// short enough to need no cut (every chat message in practice) is encoded in one call with
    /// one allocation for the ids and one for scratch space. Llama 3 tokenizers take a direct
    /// path ([`Llama3Tokenizer::encodes_directly`]) about twelve times faster than the
    /// `tokenizers` pipeline, with the same ids.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let Some(direct) = &self.direct else {
            return self.encode_text_with_tokenizers_pipeline(text);
        };
        let model = self.inner.get_model();
        // English averages about four bytes a token: one allocation in the common case.
        let mut ids = Vec::with_capacity(text.len().min(MAX_ENCODE_CHARS) / 4 + 1);
        let mut word = String::new();
        chunks::for_each_piece(text, |piece| {
            direct
                .encode_piece(model, piece, &mut ids, &mut word)
                .map_err(|error| self.encode_error(piece, &error))
        })?;
        Ok(ids)
    }

    /// The same as [`Llama3Tokenizer::encode_text`], always through `tokenizers::Tokenizer`'s
    /// general pipeline (`encode_fast(piece, false)` per piece); tests compare the two.
    pub fn encode_text_with_tokenizers_pipeline(
        &self,
        text: &str,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        chunks::for_each_piece(text, |piece| {
            let encoding = self
                .inner
                .encode_fast(piece, false)
                .map_err(|error| self.encode_error(piece, &error))?;
            ids.extend_from_slice(encoding.get_ids());
            Ok(())
        })?;
        Ok(ids)
    }

    fn encode_error(&self, piece: &str, error: &tokenizers::Error) -> TokenizerError {
        TokenizerError::Encode {
            source_name: self.source_name.clone(),
            prefix: piece.chars().take(40).collect(),
            message: error.to_string(),
        }
    }

    /// Whether [`Llama3Tokenizer::encode_text`] runs the Llama 3 pipeline directly (true for
    /// imported, trained and Meta-published Llama 3 tokenizers) rather than through
    /// `tokenizers::Tokenizer::encode`. Both give the same ids; the direct path is faster.
    #[must_use]
    pub fn encodes_directly(&self) -> bool {
        self.direct.is_some()
    }

    /// Decodes ids to text, special tokens rendered as their text (tiktoken's `decode`).
    ///
    /// Byte sequences that are not valid UTF-8 become U+FFFD, as with Python's
    /// `bytes.decode("utf-8", errors="replace")` in tiktoken. An id outside the vocabulary is an
    /// error naming it.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some((position, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= self.vocab_size)
        {
            return Err(TokenizerError::UnknownId {
                source_name: self.source_name.clone(),
                id,
                position,
                vocab_size: self.vocab_size,
            });
        }
        self.inner
            .decode(ids, false)
            .map_err(|error| TokenizerError::Decode {
                source_name: self.source_name.clone(),
                count: ids.len(),
                message: error.to_string(),
            })
    }
}
