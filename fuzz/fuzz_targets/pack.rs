//! Pack manifests (`pack.toml`): parsing and validation, then a pack directory holding the
//! manifest and the tiny adapter, checked against the tiny base and opened by the skill engine
//! (which loads its adapters into llama.cpp).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillpack_fuzz::{assets, scratch};
use skillpack_pack::{Manifest, Pack};
use skillpack_run::SkillEngine;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };
    let _ = skillpack_serve::plan::PackView::of(&manifest);
    let assets = assets();
    let dir = scratch().join("pack");
    std::fs::create_dir_all(dir.join("skills")).expect("scratch");
    let adapter = dir.join("skills/a.gguf");
    if !adapter.is_file() {
        std::fs::copy(&assets.adapter, &adapter).expect("scratch");
    }
    std::fs::write(dir.join("pack.toml"), text).expect("scratch");
    let pack = Pack::open(&dir).expect("a manifest that parses opens");
    if pack.check(&assets.base).is_ok() {
        let _ = SkillEngine::new(&assets.model, pack);
    }
});
