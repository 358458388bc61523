//! Does llama.cpp apply a GGUF adapter as the PEFT adapter it came from computes? The delta
//! logits (adapter − base) at the last prompt token from candle (PEFT semantics, on the
//! dequantized base) and from llama.cpp, compared on prompts from a data file.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use skillpack_llama::{Backend, Context, ContextParams, LoraAdapter, Model, ModelParams};

use crate::{cosine, load_peft, prompt_ids, read_jsonl, Llama, ModelWeights, Result};

/// How llama.cpp's delta agrees with candle's on one prompt (fields in the order `--json`
/// prints them).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterAgreement {
    /// Cosine of the two delta-logit vectors (1: the same change).
    pub delta_cosine: f64,
    /// L2 norm of candle's delta.
    pub delta_norm: f64,
    /// The record's id.
    pub id: String,
    pub prompt_tokens: usize,
    /// Whether both pick the same next token with the adapter.
    pub same_argmax: bool,
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

/// Compares the GGUF adapter `gguf` in llama.cpp against its PEFT source `peft` in candle on
/// the first `n` records of `data`, over the base model `model_path`.
pub fn verify_adapter(
    model_path: &Path,
    peft: &Path,
    gguf: &Path,
    data: &Path,
    n: usize,
) -> Result<Vec<AdapterAgreement>> {
    let cpp = Model::load(Backend::get(), model_path, &ModelParams::default())?;
    let adapter = LoraAdapter::load(&cpp, gguf)?;
    let mut ctx = Context::new(
        &cpp,
        &ContextParams {
            n_ctx: 2048,
            n_batch: 2048,
            ..Default::default()
        },
    )?;
    let base = Llama::new(ModelWeights::load(model_path, &Device::Cpu, DType::F32)?);
    let mut tuned = Llama::new(ModelWeights::load(model_path, &Device::Cpu, DType::F32)?);
    load_peft(&mut tuned, peft)?;
    let last = |m: &Llama, ids: &[u32]| -> Result<Vec<f32>> {
        let t = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let h = m.hidden(&t)?;
        Ok(m.logits(&h.narrow(1, ids.len() - 1, 1)?)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let mut rows = Vec::new();
    for record in read_jsonl(data)?.iter().take(n) {
        let ids = prompt_ids(&cpp, record)?;
        let cpp_ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let mut cpp_last = |with: bool| -> Result<Vec<f32>> {
            if with {
                ctx.set_adapters(&[(&adapter, 1.0)])?;
            } else {
                ctx.clear_adapters()?;
            }
            ctx.clear_memory();
            ctx.eval(&cpp_ids, 0, false)?;
            Ok(ctx.logits(-1)?.to_vec())
        };
        let (cpp_base, cpp_with) = (cpp_last(false)?, cpp_last(true)?);
        let (candle_base, candle_with) = (last(&base, &ids)?, last(&tuned, &ids)?);
        let delta = |with: &[f32], base: &[f32]| -> Vec<f32> {
            with.iter().zip(base).map(|(a, b)| a - b).collect()
        };
        let (d_cpp, d_candle) = (
            delta(&cpp_with, &cpp_base),
            delta(&candle_with, &candle_base),
        );
        rows.push(AdapterAgreement {
            delta_cosine: cosine(&d_cpp, &d_candle),
            delta_norm: d_candle
                .iter()
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
                .sqrt(),
            id: record.id.clone(),
            prompt_tokens: ids.len(),
            same_argmax: argmax(&cpp_with) == argmax(&candle_with),
        });
    }
    Ok(rows)
}
