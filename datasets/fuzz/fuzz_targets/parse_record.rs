//! Arbitrary bytes as a JSONL file: reading and parsing must never panic, and every record that
//! parses must survive its JSON form unchanged.
#![no_main]

use datasets::jsonl::JsonlLines;
use datasets::records::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = Box::new(std::io::Cursor::new(data.to_vec()));
    for (_, record) in JsonlLines::from_reader(reader, "fuzz.jsonl").records().flatten() {
        let again = Record::from_json(&record.to_json()).expect("a record's JSON form parses");
        assert_eq!(again, record);
    }
});
