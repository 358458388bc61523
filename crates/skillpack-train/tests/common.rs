//! Fixture paths and comparisons shared by this crate's tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::Tensor;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

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

pub fn prompt_ids() -> Vec<Vec<u32>> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("prompts.json")).unwrap())
            .unwrap();
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// `prompt{i}.last` and `prompt{i}.argmax` of a reference logits file.
pub fn reference(path: PathBuf, i: usize) -> (Vec<f32>, Vec<i64>) {
    let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let last = t[&format!("prompt{i}.last")].to_vec1::<f32>().unwrap();
    let argmax = t[&format!("prompt{i}.argmax")].to_vec1::<i64>().unwrap();
    (last, argmax)
}

#[allow(unused_imports)] // not every test file compares vectors
pub use skillpack_train::cosine;

pub fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Logits of every position for `ids`: (last row, argmax per position).
pub fn run(model: &skillpack_train::Llama, ids: &[u32]) -> (Vec<f32>, Vec<i64>) {
    let t = Tensor::new(ids, model.device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward(&t).unwrap().squeeze(0).unwrap();
    let rows = logits.to_vec2::<f32>().unwrap();
    let argmax = rows.iter().map(|r| argmax(r) as i64).collect();
    (rows.last().unwrap().clone(), argmax)
}
