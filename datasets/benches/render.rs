//! Render + tokenize throughput on the shipped sample conversations with Meta's real Llama 3
//! tokenizer: conversations/s and tokens/s. The Python reference (Meta's `ChatFormat` on the same
//! file) is `dev/bench_reference_render.py`; `dev/bench.sh` runs both in one go.
//!
//! Needs `.cache/llama3/tokenizer.model` (`bash dev/fetch-llama3-tokenizer.sh`).

#![expect(clippy::expect_used, reason = "a benchmark stops at its first failure")]

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datasets::Dialogue;
use datasets::encode::{EncodeOptions, encode_record};
use datasets::jsonl::JsonlLines;
use datasets::records::Record;
use datasets::render::Renderer;
use datasets::tokenizer::{Llama3Tokenizer, import_tiktoken};

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn llama3_tokenizer() -> Llama3Tokenizer {
    let model = std::env::var_os("HERD_LLAMA3_TOKENIZER_MODEL").map_or_else(
        || repository_root().join(".cache/llama3/tokenizer.model"),
        PathBuf::from,
    );
    let imported = import_tiktoken(&model)
        .unwrap_or_else(|error| panic!("{error}\nrun `bash dev/fetch-llama3-tokenizer.sh` first"));
    Llama3Tokenizer::from_tokenizer(imported, model.display().to_string())
        .expect("llama3 tokenizer")
}

fn render_throughput(criterion: &mut Criterion) {
    let tokenizer = llama3_tokenizer();
    let renderer = Renderer::new(&tokenizer).expect("renderer");
    let samples = repository_root().join("data/samples/conversations.jsonl");
    let records: Vec<Record> = JsonlLines::open(&samples.display().to_string())
        .expect("sample conversations")
        .records()
        .map(|item| item.expect("valid sample").1)
        .collect();
    let dialogues: Vec<&Dialogue> = records
        .iter()
        .map(|record| match record {
            Record::Conversation(conversation) => &conversation.dialogue,
            Record::Preference(_) => panic!("conversations.jsonl holds a preference"),
        })
        .collect();
    // Meta's `encode_dialog_prompt` always ends with the open assistant header; render the same.
    let tokens: usize = dialogues
        .iter()
        .map(|dialogue| renderer.render(dialogue, true).expect("renders").len())
        .sum();
    let render = || {
        for dialogue in &dialogues {
            std::hint::black_box(renderer.render(dialogue, true).expect("renders"));
        }
    };
    let mut group = criterion.benchmark_group("render");
    group.throughput(Throughput::Elements(dialogues.len() as u64));
    group.bench_function("conversations", |bencher| bencher.iter(render));
    group.throughput(Throughput::Elements(tokens as u64));
    group.bench_function("tokens", |bencher| bencher.iter(render));
    group.finish();

    // What a trainer pays per record: render + SFT mask + DPO mask.
    let options = EncodeOptions::default();
    let mut group = criterion.benchmark_group("encode_with_masks");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("conversations", |bencher| {
        bencher.iter(|| {
            for record in &records {
                std::hint::black_box(encode_record(&renderer, record, options).expect("encodes"));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, render_throughput);
criterion_main!(benches);
