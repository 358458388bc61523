//! Exports for front-ends that load one adapter or one model: a weighting of a pack's skills as a
//! single standard GGUF LoRA adapter (what `llama-server --lora`, `llama-cli --lora`, ollama's
//! `ADAPTER` and LM Studio load), or merged into a copy of the base model's weights.
//!
//! Both are exact up to storage precision: the exported adapter stacks the active skills' factors
//! (rank = the sum of their ranks, each B scaled by its weight and its own alpha/rank, alpha 0 so
//! llama.cpp applies it at the scale it is given), and the merged model holds `W + Σ wᵢ·Bᵢ·Aᵢ`
//! requantized to the type asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use skillpack_convert::{write_lora_gguf, GgufValue, LoraImage, LoraPair, OutType};

use crate::{fuse, FuseOptions, Fused, Pack, PackError, Result, SkillFactors};

/// Fuses the pack's skills at `weights` (skill index, weight; zero weights skipped) exactly.
pub fn weighted_delta(pack: &Pack, weights: &[(usize, f32)]) -> Result<Fused> {
    let mut factors = Vec::new();
    for &(i, w) in weights.iter().filter(|(_, w)| *w != 0.0) {
        let skill = pack
            .manifest
            .skills
            .get(i)
            .ok_or_else(|| PackError::Invalid(format!("the pack has no skill #{i}")))?;
        factors.push((SkillFactors::load(&pack.adapter_path(skill))?, w));
    }
    let parts: Vec<(&SkillFactors, f32)> = factors.iter().map(|(f, w)| (f, *w)).collect();
    fuse(&parts, FuseOptions { energy: None })
}

/// `qa=0.700,ner=0.300`: the weighting, as recorded in exported files.
pub fn weighting_label(pack: &Pack, weights: &[(usize, f32)]) -> String {
    weights
        .iter()
        .filter(|(_, w)| *w != 0.0)
        .map(|(i, w)| {
            let id = pack.manifest.skills.get(*i).map_or("?", |s| s.id.as_str());
            format!("{id}={w:.3}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One standard GGUF LoRA adapter holding the pack's skills at `weights` (load it at scale 1).
pub fn export_lora(pack: &Pack, weights: &[(usize, f32)], outtype: OutType) -> Result<LoraImage> {
    let fused = weighted_delta(pack, weights)?;
    let label = weighting_label(pack, weights);
    Ok(write_lora_gguf(
        &fused.architecture,
        0.0,
        &fused.pairs,
        outtype,
        &[
            (
                "general.name".into(),
                GgufValue::String(format!("{} [{label}]", pack.manifest.pack.name)),
            ),
            (
                "skillpack.pack".into(),
                GgufValue::String(pack.manifest.pack.name.clone()),
            ),
            ("skillpack.weights".into(), GgufValue::String(label)),
        ],
    )?)
}

/// Storage type of the merged tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeType {
    /// Each merged tensor in its type in the base model (decodes exactly as fast as the base).
    Same,
    F32,
    F16,
    Q8_0,
}

impl std::str::FromStr for MergeType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "same" => MergeType::Same,
            "f32" => MergeType::F32,
            "f16" => MergeType::F16,
            "q8_0" => MergeType::Q8_0,
            _ => return Err(format!("unknown merge type `{s}` (same, f32, f16, q8_0)")),
        })
    }
}

/// What [`merge_into_model`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MergeReport {
    pub output: PathBuf,
    pub bytes: u64,
    /// Tensors that received a delta, and all tensors.
    pub merged_tensors: usize,
    pub tensors: usize,
    /// Storage types of the merged tensors, as written (e.g. `q4_1`).
    pub merged_types: Vec<String>,
    /// The largest |delta| over all merged weights, and the root mean square of the
    /// requantization error relative to the delta's (0 for f32): how much of the delta survives.
    pub max_abs_delta: f32,
    pub requantization_error_vs_delta_rms: f32,
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> PackError {
    PackError::Invalid(format!("{}: {reason}", path.display()))
}

/// Writes a copy of the GGUF model `base` to `output` with `delta` added to the weights it adapts
/// (each requantized per `merge_type`); every other tensor and all metadata are copied unchanged.
/// The file is written next to `output` and renamed over it, so a failure leaves nothing behind.
pub fn merge_into_model(
    base: &Path,
    delta: &Fused,
    merge_type: MergeType,
    output: &Path,
) -> Result<MergeReport> {
    let info = skillpack_convert::GgufInfo::open(base)?;
    if info.architecture() != Some(delta.architecture.as_str()) {
        return Err(invalid(
            base,
            format!(
                "is `{}`, the skills were trained for `{}`",
                info.architecture().unwrap_or("?"),
                delta.architecture
            ),
        ));
    }
    let by_name: HashMap<&str, &LoraPair> =
        delta.pairs.iter().map(|p| (p.name.as_str(), p)).collect();
    for p in &delta.pairs {
        let t = info
            .tensors
            .get(&p.name)
            .ok_or_else(|| invalid(base, format!("has no tensor `{}` for the delta", p.name)))?;
        if t.dims != [p.b.rows, p.a.cols] {
            return Err(invalid(
                base,
                format!(
                    "tensor `{}` is {:?}, the delta is {}x{}",
                    p.name, t.dims, p.b.rows, p.a.cols
                ),
            ));
        }
    }
    let mut file = std::fs::File::open(base).map_err(|e| invalid(base, e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| invalid(base, e))?;
    // Tensors in file order, so the copy reads like the original.
    let mut names: Vec<(&String, u64)> = content
        .tensor_infos
        .iter()
        .map(|(n, t)| (n, t.offset))
        .collect();
    names.sort_by_key(|(_, o)| *o);
    let cpu = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let (mut merged_types, mut max_abs, mut err_sq, mut delta_sq) = (Vec::new(), 0f32, 0f64, 0f64);
    for (name, _) in names {
        let q = content
            .tensor(&mut file, name, &cpu)
            .map_err(|e| invalid(base, format!("tensor `{name}`: {e}")))?;
        let Some(pair) = by_name.get(name.as_str()) else {
            tensors.push((name.clone(), q));
            continue;
        };
        let fail = |e: candle_core::Error| invalid(base, format!("merging `{name}`: {e}"));
        let (out_dim, in_dim) = (pair.b.rows, pair.a.cols);
        let a = Tensor::from_slice(&pair.a.data, (pair.a.rows, in_dim), &cpu).map_err(fail)?;
        let b = Tensor::from_slice(&pair.b.data, (out_dim, pair.a.rows), &cpu).map_err(fail)?;
        let d = b.matmul(&a).map_err(fail)?;
        let w = q
            .dequantize(&cpu)
            .map_err(fail)?
            .reshape((out_dim, in_dim))
            .map_err(fail)?;
        let merged = (&w + &d).map_err(fail)?;
        let dtype = match merge_type {
            MergeType::Same => q.dtype(),
            MergeType::F32 => GgmlDType::F32,
            MergeType::F16 => GgmlDType::F16,
            MergeType::Q8_0 => GgmlDType::Q8_0,
        };
        if !in_dim.is_multiple_of(dtype.block_size()) {
            return Err(invalid(
                base,
                format!("`{name}`: rows of {in_dim} are not whole {dtype:?} blocks"),
            ));
        }
        let requantized = QTensor::quantize(&merged, dtype).map_err(fail)?;
        // How much of the delta the storage type keeps: (stored − W) vs delta.
        let stored = requantized.dequantize(&cpu).map_err(fail)?;
        let kept = (&stored - &w).map_err(fail)?;
        let err = (&kept - &d).map_err(fail)?;
        err_sq += err
            .sqr()
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(fail)? as f64;
        delta_sq += d
            .sqr()
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(fail)? as f64;
        let m = d
            .abs()
            .and_then(|t| t.max_all())
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(fail)?;
        max_abs = max_abs.max(m);
        let ty = format!("{dtype:?}").to_lowercase();
        if !merged_types.contains(&ty) {
            merged_types.push(ty);
        }
        tensors.push((name.clone(), requantized));
    }
    // Metadata: general.* first, then the rest by key (GGUF readers look keys up by name).
    // general.alignment is dropped: the writer aligns to 32 bytes, GGUF's default.
    let mut keys: Vec<&String> = content
        .metadata
        .keys()
        .filter(|k| k.as_str() != "general.alignment")
        .collect();
    keys.sort_by_key(|k| (!k.starts_with("general."), k.as_str()));
    let metadata: Vec<(&str, &Value)> = keys
        .iter()
        .map(|k| (k.as_str(), &content.metadata[*k]))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bytes = skillpack_convert::write_atomic_with(output, |w| {
        gguf_file::write(w, &metadata, &refs).map_err(std::io::Error::other)
    })?;
    Ok(MergeReport {
        output: output.to_path_buf(),
        bytes,
        merged_tensors: delta.pairs.len(),
        tensors: tensors.len(),
        merged_types,
        max_abs_delta: max_abs,
        requantization_error_vs_delta_rms: if delta_sq > 0.0 {
            (err_sq / delta_sq).sqrt() as f32
        } else {
            0.0
        },
    })
}
