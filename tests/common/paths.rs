//! Where the oracles are and how vectors are compared: shared by the workspace's integration
//! tests (`tests/common`) and the trainer's (`crates/skillpack-train/tests/common.rs`, which
//! includes this file by path), so both read the same fixtures the same way.
#![allow(dead_code)]

use std::path::PathBuf;

/// Repository root: the nearest directory above the testing crate that holds `Cargo.lock`.
pub fn repo() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&manifest)
        .to_path_buf()
}

/// `../shared/fixtures` (or `$SKILLPACK_FIXTURES`). Panics with a clear message when absent:
/// the parity tests must not silently pass without their oracle.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("SKILLPACK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures"));
    assert!(
        dir.join("prompts.json").is_file(),
        "fixtures not found at {} (set SKILLPACK_FIXTURES)",
        dir.display()
    );
    dir
}

/// The default model installed by scripts/setup.sh (or `$SKILLPACK_MODEL`).
pub fn default_model() -> PathBuf {
    let p = std::env::var_os("SKILLPACK_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        p.is_file(),
        "default model not found at {} (run scripts/setup.sh)",
        p.display()
    );
    p
}

/// Token ids of the fixture prompts (`prompts.json`), as llama.cpp's `i32` or candle's `u32`.
pub fn fixture_prompt_ids<T: TryFrom<i64>>() -> Vec<Vec<T>>
where
    T::Error: std::fmt::Debug,
{
    let text = std::fs::read_to_string(fixtures().join("prompts.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|t| T::try_from(t.as_i64().unwrap()).unwrap())
                .collect()
        })
        .collect()
}

/// Element-wise `a - b`.
pub fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Largest element-wise |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Cosine similarity, accumulated in f64 (the library's, so tests and `verify` agree).
#[allow(unused_imports)] // not every test file compares vectors
pub use skillpack_train::cosine;
