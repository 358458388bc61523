//! GGUF files from the internet, models and adapters: the Rust header reader every command
//! uses, reading an adapter's factors back, and llama.cpp's own loaders behind skillpack's
//! checks. Anything may be refused; nothing may panic, abort or run out of memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillpack_convert::{GgufInfo, LoraFile};
use skillpack_fuzz::{assets, scratch_file};
use skillpack_llama::{LoraAdapter, Model, ModelParams};

fuzz_target!(|data: &[u8]| {
    let assets = assets();
    let path = scratch_file("input.gguf", data);
    if let Ok(info) = GgufInfo::read(&mut std::io::Cursor::new(data), &path, data.len() as u64) {
        let _ = info.fingerprint();
        let _ = info.architecture();
        for name in info.tensors.keys().take(4) {
            let _ = info.read_tensor_bytes(name);
        }
        let _ = LoraFile::read(&path);
    }
    // llama.cpp sees the bytes only through skillpack's checked entry points.
    let _ = LoraAdapter::load_from_bytes(&assets.model, data.to_vec(), "input");
    let vocab_only = ModelParams {
        vocab_only: true,
        ..Default::default()
    };
    if Model::load(assets.backend, &path, &vocab_only).is_ok() {
        // What `skillpack run` does: the whole model, tensors included.
        let _ = Model::load(assets.backend, &path, &ModelParams::default());
    }
});
