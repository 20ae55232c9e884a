//! Parity of herd's Llama 3 tokenizer with Meta's tiktoken tokenizer and HF's converter, and the
//! properties of `train_bpe` and the committed tiny tokenizer.
//!
//! References: `tests/fixtures/llama3_tokenizer.json`, written by `dev/tokenizer_fixtures.py`
//! from Meta's `llama_models` `Tokenizer.encode`/`decode` and transformers' `TikTokenConverter`;
//! Meta's `tokenizer.model` itself (see `llama3.rs`).

use std::error::Error;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use datasets::special_tokens::{
    LLAMA3_NUM_BASE_TOKENS, PRE_TOKENIZER_PATTERN, special_token_names,
};
use datasets::tokenizer::{Llama3Tokenizer, TokenizerError, train_bpe};
use proptest::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::Model as _;

use crate::llama3::{llama3_tokenizer, tokenizer_model_path};

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tests/fixtures/llama3_tokenizer.json`.
#[derive(Debug, Deserialize)]
struct Fixture {
    num_base_tokens: u32,
    special_tokens: Vec<(String, u32)>,
    pattern: String,
    hf_converter_vocab_sha256: String,
    hf_converter_merges_sha256: String,
    hf_converter_num_merges: usize,
    cases: Vec<Case>,
}

/// One text and the ids Meta's `encode(text, bos=False, eos=False)` gives it.
#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Result<Fixture, Box<dyn Error + Send + Sync>> {
    let path = fixtures_dir().join("llama3_tokenizer.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// GPT-2's `bytes_to_unicode`, written as in Python so the test does not reuse herd's table.
fn bytes_to_unicode() -> Vec<char> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = bytes.clone();
    let mut extra = 0;
    for byte in 0..256 {
        if !bytes.contains(&byte) {
            bytes.push(byte);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (byte, code) in bytes.iter().zip(chars) {
        table[*byte as usize] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

#[test]
fn every_meta_rank_has_its_id_and_bpe_keeps_it_whole() -> TestResult {
    let tokenizer = llama3_tokenizer();
    let model = tokenizer.inner().get_model();
    let table = bytes_to_unicode();
    let text = std::fs::read_to_string(tokenizer_model_path())?;
    let mut count = 0;
    for (rank, line) in text.lines().enumerate() {
        let (base64, rank_text) = line
            .split_once(' ')
            .ok_or("malformed tokenizer.model line")?;
        assert_eq!(rank_text.parse::<usize>()?, rank);
        let string: String = BASE64
            .decode(base64)?
            .iter()
            .map(|byte| table[usize::from(*byte)])
            .collect();
        let rank = rank as u32;
        assert_eq!(
            tokenizer.token_to_id(&string),
            Some(rank),
            "token {string:?}"
        );
        let ids: Vec<u32> = model
            .tokenize(&string)?
            .iter()
            .map(|token| token.id)
            .collect();
        assert_eq!(ids, [rank], "BPE on token {string:?}");
        count += 1;
    }
    assert_eq!(count, LLAMA3_NUM_BASE_TOKENS);
    Ok(())
}

#[test]
fn special_tokens_follow_meta_layout() -> TestResult {
    let fixture = fixture()?;
    let tokenizer = llama3_tokenizer();
    assert_eq!(fixture.num_base_tokens, LLAMA3_NUM_BASE_TOKENS);
    assert_eq!(fixture.pattern, PRE_TOKENIZER_PATTERN);
    let ours: Vec<(String, u32)> = special_token_names()
        .into_iter()
        .zip(LLAMA3_NUM_BASE_TOKENS..)
        .collect();
    assert_eq!(ours, fixture.special_tokens);
    for (name, id) in &ours {
        assert_eq!(tokenizer.token_to_id(name), Some(*id), "{name}");
        assert_eq!(tokenizer.id_to_token(*id).as_deref(), Some(name.as_str()));
    }
    assert_eq!(
        tokenizer.token_to_id("<|finetune_right_pad_id|>"),
        Some(128_004)
    );
    assert_eq!(tokenizer.vocab_size(), 128_256);
    let special = tokenizer.special();
    assert_eq!(
        [
            special.begin_of_text,
            special.end_of_text,
            special.finetune_right_pad,
            special.start_header,
            special.end_header,
            special.eom,
            special.eot,
            special.python_tag,
        ],
        [
            128_000, 128_001, 128_004, 128_006, 128_007, 128_008, 128_009, 128_010
        ]
    );
    Ok(())
}

#[test]
fn encode_and_decode_match_meta_on_every_fixture_case() -> TestResult {
    let fixture = fixture()?;
    let tokenizer = llama3_tokenizer();
    assert!(tokenizer.encodes_directly());
    let mut failures = Vec::new();
    for case in &fixture.cases {
        let ids = tokenizer.encode_text(&case.text)?;
        if tokenizer.encode_text_with_tokenizers_pipeline(&case.text)? != case.ids {
            failures.push(format!("{}: the tokenizers pipeline differs", case.name));
        }
        if ids != case.ids {
            let at = ids
                .iter()
                .zip(&case.ids)
                .take_while(|(a, b)| a == b)
                .count();
            failures.push(format!(
                "{}: encode differs at position {at} (herd {} ids, Meta {})",
                case.name,
                ids.len(),
                case.ids.len()
            ));
        }
        if tokenizer.decode(&case.ids)? != case.text {
            failures.push(format!("{}: decode differs", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        fixture.cases.len() >= 50,
        "the fixture should hold many cases"
    );
    Ok(())
}

/// The canonical forms in the fixture's `hf_canonical_forms`.
#[test]
fn vocabulary_and_merges_equal_hf_converter() -> TestResult {
    let fixture = fixture()?;
    let tokenizer = llama3_tokenizer();
    let mut vocab = Sha256::new();
    for id in 0..fixture.num_base_tokens {
        let token = tokenizer
            .id_to_token(id)
            .ok_or_else(|| format!("no token for id {id}"))?;
        vocab.update(format!("{id}\t{token}\n"));
    }
    let json: serde_json::Value = serde_json::from_str(&tokenizer.inner().to_string(false)?)?;
    let merges = json["model"]["merges"]
        .as_array()
        .ok_or("model.merges is not a list")?;
    let mut merges_hash = Sha256::new();
    for merge in merges {
        let (left, right) = match merge {
            serde_json::Value::Array(pair) => (
                pair.first().and_then(|v| v.as_str()).ok_or("bad merge")?,
                pair.get(1).and_then(|v| v.as_str()).ok_or("bad merge")?,
            ),
            serde_json::Value::String(pair) => pair.split_once(' ').ok_or("bad merge")?,
            _ => return Err("bad merge".into()),
        };
        merges_hash.update(format!("{left} {right}\n"));
    }
    assert_eq!(merges.len(), fixture.hf_converter_num_merges);
    assert_eq!(
        format!("{:x}", vocab.finalize()),
        fixture.hf_converter_vocab_sha256
    );
    assert_eq!(
        format!("{:x}", merges_hash.finalize()),
        fixture.hf_converter_merges_sha256
    );
    assert_eq!(json["model"]["ignore_merges"], serde_json::json!(true));
    Ok(())
}

#[test]
fn special_token_text_typed_by_a_user_is_plain_text() -> TestResult {
    let tokenizer = llama3_tokenizer();
    for name in special_token_names() {
        let ids = tokenizer.encode_text(&name)?;
        assert!(
            ids.len() > 1 && ids.iter().all(|id| *id < LLAMA3_NUM_BASE_TOKENS),
            "{name}: {ids:?}"
        );
        assert_eq!(tokenizer.decode(&ids)?, name);
    }
    let ids = tokenizer.encode_text("Say <|eot_id|> now")?;
    assert!(!ids.contains(&tokenizer.special().eot));
    // The wrapped tokenizer is configured the same way, and adds no BOS without being asked.
    let encoding = tokenizer.inner().encode("<|begin_of_text|>hi", false)?;
    assert!(
        !encoding
            .get_ids()
            .contains(&tokenizer.special().begin_of_text)
    );
    Ok(())
}

#[test]
fn decode_renders_special_tokens_and_rejects_unknown_ids() -> TestResult {
    let tokenizer = llama3_tokenizer();
    let special = tokenizer.special();
    let mut ids = vec![special.begin_of_text, special.start_header];
    ids.extend(tokenizer.encode_text("user")?);
    ids.push(special.end_header);
    assert_eq!(
        tokenizer.decode(&ids)?,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>"
    );
    let Err(error) = tokenizer.decode(&[special.eot, 128_256]) else {
        panic!("id 128256 is outside the vocabulary");
    };
    assert!(matches!(
        error,
        TokenizerError::UnknownId {
            id: 128_256,
            position: 1,
            ..
        }
    ));
    assert!(error.to_string().contains("128256"), "{error}");
    Ok(())
}

fn tiny_corpus() -> Vec<PathBuf> {
    vec![fixtures_dir().join("tiny-tokenizer-corpus.txt")]
}

fn to_json(tokenizer: &Llama3Tokenizer) -> Result<serde_json::Value, Box<dyn Error + Send + Sync>> {
    Ok(serde_json::from_str(&tokenizer.inner().to_string(false)?)?)
}

#[test]
fn train_bpe_is_deterministic_and_places_specials_after_the_base_vocabulary() -> TestResult {
    let first = train_bpe(&tiny_corpus(), 400, 2)?;
    let second = train_bpe(&tiny_corpus(), 400, 2)?;
    assert_eq!(to_json(&first)?, to_json(&second)?);
    assert_eq!(first.inner().get_vocab_size(false), 400);
    assert_eq!(first.vocab_size(), 400 + 256);
    for (offset, name) in special_token_names().iter().enumerate() {
        assert_eq!(first.token_to_id(name), Some(400 + offset as u32), "{name}");
    }
    assert_eq!(first.special().begin_of_text, 400);
    assert_eq!(first.special().finetune_right_pad, 404);
    let json = to_json(&first)?;
    assert_eq!(json["model"]["ignore_merges"], serde_json::json!(true));
    assert_eq!(
        json["model"]["merges"].as_array().map(Vec::len),
        Some(400 - 256)
    );
    Ok(())
}

#[test]
fn train_bpe_stops_early_on_a_small_corpus_and_checks_its_inputs() -> TestResult {
    // The corpus cannot supply 100,000 merges of frequency 2: fewer base tokens, specials after.
    let small = train_bpe(&tiny_corpus(), 100_000, 2)?;
    let base = small.inner().get_vocab_size(false) as u32;
    assert!((257..100_000).contains(&base), "{base}");
    assert_eq!(small.special().begin_of_text, base);

    let missing = fixtures_dir().join("no-such-corpus.txt");
    let Err(error) = train_bpe(std::slice::from_ref(&missing), 512, 2) else {
        panic!("a missing corpus file must fail");
    };
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );

    let Err(error) = train_bpe(&tiny_corpus(), 256, 2) else {
        panic!("256 leaves no room for a merge");
    };
    assert!(matches!(
        error,
        TokenizerError::VocabTooSmall {
            vocab_size: 256,
            ..
        }
    ));
    Ok(())
}

/// The committed tiny tokenizer: `dev/make-tiny-tokenizer.sh`.
fn tiny_tokenizer_path() -> PathBuf {
    fixtures_dir().join("tiny-tokenizer.json")
}

#[test]
fn tiny_tokenizer_fixture_loads_and_is_what_the_script_trains() -> TestResult {
    let path = tiny_tokenizer_path();
    let tiny = Llama3Tokenizer::from_file(&path)?;
    assert!(tiny.encodes_directly());
    assert_eq!(tiny.inner().get_vocab_size(false), 512);
    assert_eq!(tiny.vocab_size(), 512 + 256);
    assert_eq!(tiny.special().begin_of_text, 512);
    assert_eq!(tiny.special().eot, 512 + 9);
    let text = "The assistant answered: \"Tokyo\".\n\n<|eot_id|> 東京 🙂";
    assert_eq!(tiny.decode(&tiny.encode_text(text)?)?, text);
    // Re-training gives the committed file: the fixture and the script agree.
    let retrained = train_bpe(&tiny_corpus(), 512, 2)?;
    let committed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    assert_eq!(
        to_json(&retrained)?,
        committed,
        "tests/fixtures/tiny-tokenizer.json is stale: run `bash dev/make-tiny-tokenizer.sh`"
    );
    Ok(())
}

#[test]
fn from_file_errors_name_the_file_and_the_missing_token() -> TestResult {
    let Err(error) = Llama3Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")) else {
        panic!("a missing file must fail");
    };
    assert!(
        error.to_string().contains("/nonexistent/tokenizer.json"),
        "{error}"
    );

    // Drop <|eot_id|> from the tiny tokenizer's added tokens.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_tokenizer_path())?)?;
    let added = json["added_tokens"]
        .as_array_mut()
        .ok_or("added_tokens is not a list")?;
    added.retain(|token| token["content"] != "<|eot_id|>");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&json)?)?;
    let Err(error) = Llama3Tokenizer::from_file(&path) else {
        panic!("a tokenizer without <|eot_id|> must fail");
    };
    let message = error.to_string();
    assert!(
        message.contains("<|eot_id|>") && message.contains(&path.display().to_string()),
        "{message}"
    );
    Ok(())
}

fn tiny_tokenizer() -> &'static Llama3Tokenizer {
    static TINY: std::sync::OnceLock<Llama3Tokenizer> = std::sync::OnceLock::new();
    TINY.get_or_init(|| {
        let path = tiny_tokenizer_path();
        Llama3Tokenizer::from_file(&path)
            .unwrap_or_else(|error| panic!("cannot load {}: {error}", path.display()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Byte-level BPE covers every string: encode then decode gives it back.
    #[test]
    fn trained_tokenizer_round_trips_any_text(text in any::<String>()) {
        let tiny = tiny_tokenizer();
        let ids = tiny.encode_text(&text).map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert!(ids.iter().all(|id| (*id as usize) < 512));
        let decoded = tiny.decode(&ids).map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(decoded, text.clone());
        let generic = tiny
            .encode_text_with_tokenizers_pipeline(&text)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(ids, generic);
    }

    /// The direct encode path and the `tokenizers` pipeline agree on the real vocabulary.
    #[test]
    fn llama3_direct_path_agrees_with_tokenizers_pipeline(text in any::<String>()) {
        let tokenizer = llama3_tokenizer();
        let ids = tokenizer.encode_text(&text).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let generic = tokenizer
            .encode_text_with_tokenizers_pipeline(&text)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(&ids, &generic);
        let decoded = tokenizer.decode(&ids).map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(decoded, text);
    }

    /// The same on text made mostly of whitespace runs, where the direct path replaces the
    /// pattern's look-ahead by a check.
    #[test]
    fn llama3_direct_path_agrees_on_whitespace_runs(text in whitespace_heavy_text()) {
        let tokenizer = llama3_tokenizer();
        let ids = tokenizer.encode_text(&text).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let generic = tokenizer
            .encode_text_with_tokenizers_pipeline(&text)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(ids, generic);
    }
}

/// Strings over whitespace of every kind Meta's pattern treats differently, letters, digits and
/// punctuation.
fn whitespace_heavy_text() -> impl Strategy<Value = String> {
    let alphabet = vec![
        ' ', ' ', ' ', '\t', '\n', '\r', '\u{0B}', '\u{0C}', '\u{1C}', '\u{85}', '\u{A0}',
        '\u{2003}', '\u{2028}', '\u{3000}', 'a', 'Z', 'é', '7', '.', '\'', 's', '-', '東',
    ];
    proptest::collection::vec(proptest::sample::select(alphabet), 0..40)
        .prop_map(|chars| chars.into_iter().collect())
}
