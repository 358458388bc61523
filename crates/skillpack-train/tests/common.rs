//! Fixture paths and comparisons shared by this crate's tests.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::Tensor;

#[path = "../../../tests/common/paths.rs"]
mod paths;

pub use paths::*;

/// Token ids of the fixture prompts.
pub fn prompt_ids() -> Vec<Vec<u32>> {
    fixture_prompt_ids()
}

/// `prompt{i}.last` and `prompt{i}.argmax` of a reference logits file.
pub fn reference(path: PathBuf, i: usize) -> (Vec<f32>, Vec<i64>) {
    let t = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let last = t[&format!("prompt{i}.last")].to_vec1::<f32>().unwrap();
    let argmax = t[&format!("prompt{i}.argmax")].to_vec1::<i64>().unwrap();
    (last, argmax)
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
