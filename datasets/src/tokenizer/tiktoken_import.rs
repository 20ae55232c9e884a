//! Converts Meta's tiktoken `tokenizer.model` into an equivalent HF byte-level BPE tokenizer.
//!
//! Follows HF transformers' `TikTokenConverter` (`convert_slow_tokenizer.py`), the converter
//! behind Meta's published `tokenizer.json`, so the vocabulary and merges hash equal to its output:
//! - vocabulary: each token's bytes written with GPT-2's `bytes_to_unicode` alphabet, id = rank;
//! - merges: for every multi-byte token, each split `left + right` whose two halves are also
//!   tokens, ordered by the merged token's rank, then by the halves' ranks;
//! - the BPE model first looks a whole pre-token up in the vocabulary (`ignore_merges`), as
//!   tiktoken does, and has no unknown token and no byte fallback.
//!
//! Pre-tokenizer, decoder, post-processor and special tokens come from [`super::pipeline`].

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokenizers::Tokenizer;
use tokenizers::models::bpe::{BPE, Merges, Vocab};

use super::TokenizerError;
use super::pipeline::{finish_llama3_tokenizer, llama3_pre_tokenizer};

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// for U+0100 onwards, in byte order.
pub(crate) fn byte_level_alphabet() -> [char; 256] {
    let mut alphabet = ['\0'; 256];
    let mut next_unprintable = 0x100_u32;
    for (byte, slot) in (0_u8..=255).zip(alphabet.iter_mut()) {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(byte)
        } else {
            next_unprintable += 1;
            next_unprintable - 1
        };
        // Codes are below U+0200: always valid scalar values.
        *slot = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    alphabet
}

/// Reads `model_path` (lines of `base64(token bytes) rank`) and builds the HF tokenizer.
///
/// Ranks must run 0, 1, 2, … in file order (Meta's file does); blank lines are skipped as in
/// tiktoken's `load_tiktoken_bpe`. Errors name the file and line. The 256 Llama 3 special tokens
/// get ids `num_ranks..num_ranks + 256`.
pub fn import_tiktoken(model_path: &Path) -> Result<Tokenizer, TokenizerError> {
    let text = std::fs::read(model_path).map_err(|source| TokenizerError::Read {
        path: model_path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(text).map_err(|source| TokenizerError::NotUtf8 {
        path: model_path.to_path_buf(),
        source,
    })?;
    let (ranked_tokens, lines) = parse_ranks(model_path, &text)?;
    let (vocab, merges) = vocab_and_merges(model_path, &ranked_tokens, &lines)?;
    let model = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(true)
        .build()
        .map_err(|error| TokenizerError::Build {
            component: "BPE model",
            message: error.to_string(),
        })?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(llama3_pre_tokenizer()?));
    finish_llama3_tokenizer(&mut tokenizer)?;
    Ok(tokenizer)
}

/// Token bytes in rank order, and the 1-based line each came from, checking each line.
type RankedTokens = (Vec<Vec<u8>>, Vec<usize>);

fn parse_ranks(path: &Path, text: &str) -> Result<RankedTokens, TokenizerError> {
    let mut tokens: Vec<Vec<u8>> = Vec::with_capacity(text.len() / 16);
    let mut lines: Vec<usize> = Vec::with_capacity(text.len() / 16);
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.is_empty() {
            continue;
        }
        let malformed = || TokenizerError::MalformedLine {
            path: path.to_path_buf(),
            line: line_number,
            content: line.to_owned(),
        };
        let (token_text, rank_text) = line.split_once(' ').ok_or_else(malformed)?;
        if rank_text.contains(' ') {
            return Err(malformed());
        }
        let token = BASE64
            .decode(token_text)
            .map_err(|error| TokenizerError::InvalidBase64 {
                path: path.to_path_buf(),
                line: line_number,
                value: token_text.to_owned(),
                message: error.to_string(),
            })?;
        let rank: u32 = rank_text.parse().map_err(|_| TokenizerError::InvalidRank {
            path: path.to_path_buf(),
            line: line_number,
            value: rank_text.to_owned(),
        })?;
        let expected = tokens.len() as u32;
        if rank != expected {
            let kind = if rank < expected {
                "a duplicate"
            } else {
                "not contiguous"
            };
            return Err(TokenizerError::RankOutOfOrder {
                path: path.to_path_buf(),
                line: line_number,
                rank,
                expected,
                kind,
            });
        }
        tokens.push(token);
        lines.push(line_number);
    }
    Ok((tokens, lines))
}

/// The byte-level vocabulary and HF converter's merges for tokens given in rank order.
fn vocab_and_merges(
    path: &Path,
    ranked_tokens: &[Vec<u8>],
    lines: &[usize],
) -> Result<(Vocab, Merges), TokenizerError> {
    let alphabet = byte_level_alphabet();
    let to_string = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .map(|byte| alphabet[usize::from(*byte)])
            .collect()
    };
    let mut rank_of: HashMap<&[u8], u32> = HashMap::with_capacity(ranked_tokens.len());
    for (rank, token) in ranked_tokens.iter().enumerate() {
        if let Some(first_rank) = rank_of.insert(token.as_slice(), rank as u32) {
            return Err(TokenizerError::DuplicateToken {
                path: path.to_path_buf(),
                line: lines[rank],
                value: BASE64.encode(token),
                first_rank,
            });
        }
    }
    if let Some(byte) = (0_u8..=255).find(|byte| !rank_of.contains_key([*byte].as_slice())) {
        return Err(TokenizerError::MissingByte {
            path: path.to_path_buf(),
            byte,
        });
    }
    let strings: Vec<String> = ranked_tokens.iter().map(|token| to_string(token)).collect();
    let vocab: Vocab = strings
        .iter()
        .enumerate()
        .map(|(rank, string)| (string.clone(), rank as u32))
        .collect();

    // HF's converter: every split whose halves are tokens, sorted by (rank(left), rank(right))
    // within a token, tokens in rank order (Python's stable sort by the merged rank).
    let mut merges: Merges = Vec::with_capacity(ranked_tokens.len() * 3);
    let mut splits: Vec<(u32, u32, usize)> = Vec::new();
    for token in ranked_tokens.iter().filter(|token| token.len() > 1) {
        splits.clear();
        for split in 1..token.len() {
            let (left, right) = token.split_at(split);
            if let (Some(&left_rank), Some(&right_rank)) = (rank_of.get(left), rank_of.get(right)) {
                splits.push((left_rank, right_rank, split));
            }
        }
        splits.sort_unstable();
        for &(left_rank, right_rank, _) in &splits {
            merges.push((
                strings[left_rank as usize].clone(),
                strings[right_rank as usize].clone(),
            ));
        }
    }
    Ok((vocab, merges))
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn alphabet_is_gpt2_bytes_to_unicode() {
        let alphabet = byte_level_alphabet();
        assert_eq!(alphabet[usize::from(b'!')], '!');
        assert_eq!(alphabet[usize::from(b' ')], '\u{120}'); // 'Ġ'
        assert_eq!(alphabet[usize::from(b'\n')], '\u{10A}'); // 'Ċ'
        assert_eq!(alphabet[0], '\u{100}');
        assert_eq!(alphabet[0xAD], '\u{143}'); // the last unprintable byte
        let unique: std::collections::HashSet<char> = alphabet.iter().copied().collect();
        assert_eq!(unique.len(), 256);
    }

    fn write_model(
        lines: &str,
    ) -> Result<(tempfile::TempDir, std::path::PathBuf), Box<dyn Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokenizer.model");
        std::fs::write(&path, lines)?;
        Ok((dir, path))
    }

    /// All 256 single bytes, in byte order, as tiktoken lines.
    fn byte_lines() -> String {
        let mut lines = String::new();
        for byte in 0_u8..=255 {
            lines += &BASE64.encode([byte]);
            lines += " ";
            lines += &byte.to_string();
            lines += "\n";
        }
        lines
    }

    #[test]
    fn small_model_imports_with_merges_in_rank_order() -> Result<(), Box<dyn Error + Send + Sync>> {
        let extra = format!(
            "{} 256\n{} 257\n{} 258\n",
            BASE64.encode(b"ab"),
            BASE64.encode(b"bc"),
            BASE64.encode(b"abc")
        );
        let (_dir, path) = write_model(&(byte_lines() + &extra))?;
        let tokenizer = import_tiktoken(&path)?;
        let json: serde_json::Value = serde_json::from_str(&tokenizer.to_string(false)?)?;
        // "abc" splits as a+bc (ranks 97, 257) and ab+c (256, 99): sorted by left rank.
        assert_eq!(
            json["model"]["merges"],
            serde_json::json!([["a", "b"], ["b", "c"], ["a", "bc"], ["ab", "c"]])
        );
        assert_eq!(json["model"]["ignore_merges"], serde_json::json!(true));
        assert_eq!(tokenizer.token_to_id("<|begin_of_text|>"), Some(259));
        assert_eq!(
            tokenizer.token_to_id("<|reserved_special_token_245|>"),
            Some(259 + 255)
        );
        Ok(())
    }

    #[test]
    fn errors_name_file_and_line() -> Result<(), Box<dyn Error + Send + Sync>> {
        let cases = [
            (
                "IQ== 0\nIg==\n",
                ":2: expected `<base64 token bytes> <rank>`, found \"Ig==\"",
            ),
            ("IQ== 0\n!!!! 1\n", ":2: token \"!!!!\" is not valid base64"),
            (
                "IQ== 0\nIg== one\n",
                ":2: rank \"one\" is not a non-negative integer",
            ),
            (
                "IQ== 0\nIg== 0\n",
                ":2: rank 0 is a duplicate; expected rank 1",
            ),
            (
                "IQ== 0\nIg== 2\n",
                ":2: rank 2 is not contiguous; expected rank 1",
            ),
            (
                "IQ== 0\n\nIQ== 1\n",
                ":3: token \"IQ==\" already has rank 0",
            ),
            ("IQ== 0\n", ": no rank for the single byte 0x00"),
        ];
        for (content, expected) in cases {
            let (_dir, path) = write_model(content)?;
            let Err(error) = import_tiktoken(&path) else {
                panic!("{content:?} should not import");
            };
            let message = error.to_string();
            assert!(
                message.starts_with(&path.display().to_string()) && message.contains(expected),
                "{message:?} should name the file and contain {expected:?}"
            );
        }
        let Err(error) = import_tiktoken(Path::new("/nonexistent/tokenizer.model")) else {
            panic!("a missing file should not import");
        };
        assert!(
            error.to_string().contains("/nonexistent/tokenizer.model"),
            "{error}"
        );
        Ok(())
    }
}
