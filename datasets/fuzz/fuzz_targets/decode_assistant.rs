//! Arbitrary token ids into `decode_assistant`: it must never panic, and whatever message it
//! decodes must render back to ids that decode to the same message (decode is the inverse of
//! render on everything it accepts).
#![no_main]

use std::sync::OnceLock;

use datasets::decode::decode_assistant;
use datasets::render::Renderer;
use datasets::tokenizer::Llama3Tokenizer;
use libfuzzer_sys::fuzz_target;

fn tokenizer() -> &'static Llama3Tokenizer {
    static TOKENIZER: OnceLock<Llama3Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let json = include_bytes!("../../tests/fixtures/tiny-tokenizer.json");
        let inner = tokenizers::Tokenizer::from_bytes(json).expect("tiny tokenizer parses");
        Llama3Tokenizer::from_tokenizer(inner, "tiny-tokenizer.json").expect("tiny tokenizer")
    })
}

fuzz_target!(|data: &[u8]| {
    let tokenizer = tokenizer();
    let vocabulary = tokenizer.vocab_size() as u32;
    // Two bytes per id; the top of the range maps onto the special tokens, so tags and stop
    // tokens turn up often.
    let ids: Vec<u32> = data
        .chunks_exact(2)
        .map(|pair| u32::from(u16::from_le_bytes([pair[0], pair[1]])) % vocabulary)
        .collect();
    let Ok(decoded) = decode_assistant(tokenizer, &ids) else {
        return;
    };
    let renderer = Renderer::new(tokenizer).expect("renderer");
    let body = renderer
        .render_assistant_body(&decoded.message)
        .expect("a decoded message renders");
    let again = decode_assistant(tokenizer, &body).expect("a rendered message decodes");
    assert_eq!(again.message, decoded.message);
});
