//! Instruction JSONL (`{id, skill, context, query, output}` per line): parsing, then rendering
//! and tokenizing each record as training does, with the default model's vocabulary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillpack_fuzz::assets;
use skillpack_train::{parse_jsonl, tokenize};

fuzz_target!(|data: &[u8]| {
    let Ok(records) = parse_jsonl(data, "input.jsonl") else {
        return;
    };
    let assets = assets();
    for record in records.iter().take(4) {
        if let Ok(example) = tokenize(&assets.vocab, record, 256) {
            assert_eq!(example.ids.len(), example.targets.len());
            assert!(example.ids.len() <= 256);
        }
    }
});
