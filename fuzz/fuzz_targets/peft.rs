//! PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`, framed as one
//! input): reading, then converting for the tiny llama. Whatever converts must load in llama.cpp.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillpack_convert::{convert, ConvertOptions, PeftAdapter};
use skillpack_fuzz::{assets, scratch, unframe};
use skillpack_llama::LoraAdapter;

fuzz_target!(|data: &[u8]| {
    let Some((config, weights)) = unframe(data) else {
        return;
    };
    let assets = assets();
    let dir = scratch().join("peft");
    std::fs::create_dir_all(&dir).expect("scratch");
    std::fs::write(dir.join("adapter_config.json"), config).expect("scratch");
    std::fs::write(dir.join("adapter_model.safetensors"), weights).expect("scratch");
    let Ok(adapter) = PeftAdapter::load(&dir) else {
        return;
    };
    for module in &adapter.modules {
        let _ = adapter.module_scale(module);
    }
    if let Ok(converted) = convert(&adapter, &assets.base, &ConvertOptions::default()) {
        if let Err(e) = LoraAdapter::load_from_bytes(&assets.model, converted.gguf, "converted") {
            panic!("a converted adapter must load in llama.cpp: {e}");
        }
    }
});
