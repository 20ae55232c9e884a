use datasets::tokenizer::Llama3Tokenizer;
use pretrain::data::{Corpus, Split};
use pretrain::{DataConfig, DocumentSplit};

use crate::repository;

/// Three paragraphs, one held out by `held_out_fraction = 0.34` (documents 0, 1, 2: the third,
/// as ⌊3·0.34⌋ > ⌊2·0.34⌋), in 8-token windows: positions restart at every `<|begin_of_text|>`,
/// the last token of each document and the padding are not trained, and a second `prepare`
/// reuses the stream.
#[test]
fn windows_are_packed_with_document_masking() {
    let directory = tempfile::tempdir().unwrap();
    let text = directory.path().join("text.txt");
    std::fs::write(&text, "a b\n\nc d e f g\n\nheld out\n").unwrap();
    let tokenizer_path = repository().join("datasets/tests/fixtures/tiny-tokenizer.json");
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path).unwrap();
    let config = DataConfig {
        files: vec![text],
        documents: DocumentSplit::Paragraph,
        sequence_length: 8,
        held_out_fraction: 0.34,
        held_out_files: Vec::new(),
    };
    let data = directory.path().join("data");
    let corpus = Corpus::prepare(&config, &tokenizer, &tokenizer_path, &data).unwrap();
    let special = tokenizer.special();
    let encode = |text: &str| {
        let mut ids = vec![special.begin_of_text];
        ids.extend(tokenizer.encode_text(text).unwrap());
        ids.push(special.end_of_text);
        ids
    };
    let (first, second) = (encode("a b"), encode("c d e f g"));
    let stream: Vec<u32> = first.iter().chain(&second).copied().collect();
    assert_eq!(corpus.tokens(Split::Training), stream.len() as u64);
    assert_eq!(
        corpus.tokens(Split::HeldOut),
        encode("held out").len() as u64
    );
    assert_eq!(corpus.index().training_documents, 2);

    let windows = corpus.windows(Split::Training);
    let batch = corpus
        .batch(Split::Training, &(0..windows).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(&batch.input_ids[..stream.len()], stream.as_slice());
    let (a, b) = (first.len() as u32, second.len() as u32);
    // Row 0 holds document 0 and the start of document 1.
    assert_eq!(batch.document_boundaries[0], [0, a, 8]);
    let expected_positions: Vec<u32> = (0..a).chain(0..8 - a).collect();
    assert_eq!(batch.position_ids[0], expected_positions);
    assert!(batch.target_mask[a as usize - 1] < 0.5, "end of document 0");
    assert!(batch.target_mask[7] < 0.5, "end of row");
    assert_eq!(batch.targets[0], first[1]);
    // The last row: the rest of document 1, then padding.
    let last = batch.document_boundaries.last().unwrap();
    let rest = (a + b) as usize - 8 * (windows - 1);
    assert_eq!(last, &[0, rest as u32]);
    let last_mask = &batch.target_mask[8 * (windows - 1)..];
    assert!(
        last_mask[rest - 1..].iter().all(|&m| m < 0.5),
        "{last_mask:?}"
    );
    assert!(
        last_mask[..rest - 1].iter().all(|&m| m > 0.5),
        "{last_mask:?}"
    );
    batch.tensors(&candle_core::Device::Cpu).unwrap();

    let modified = std::fs::metadata(data.join("tokens.bin"))
        .unwrap()
        .modified()
        .unwrap();
    let again = Corpus::prepare(&config, &tokenizer, &tokenizer_path, &data).unwrap();
    assert_eq!(again.index(), corpus.index());
    assert_eq!(
        std::fs::metadata(data.join("tokens.bin"))
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "reused, not rebuilt"
    );
}
