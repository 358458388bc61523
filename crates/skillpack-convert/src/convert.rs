//! PEFT → GGUF LoRA conversion.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

use crate::lora_gguf::{write_lora_gguf, LoraPair};
use crate::peft::{Matrix, PeftAdapter};
use crate::{gguf_module_name, ConvertError, GgufInfo, Result};

/// Storage type of the written adapter tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutType {
    F32,
    F16,
    Bf16,
    /// 8-bit blocks of 32; tensors whose rows are not a multiple of 32 (lora_b with r < 32)
    /// fall back to f16, as llama.cpp's own converter does.
    Q8_0,
}

impl std::str::FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "bf16" => OutType::Bf16,
            "q8_0" => OutType::Q8_0,
            _ => return Err(format!("unknown outtype `{s}` (f32, f16, bf16, q8_0)")),
        })
    }
}

impl OutType {
    pub(crate) fn ggml(self) -> GgmlDType {
        match self {
            OutType::F32 => GgmlDType::F32,
            OutType::F16 => GgmlDType::F16,
            OutType::Bf16 => GgmlDType::BF16,
            OutType::Q8_0 => GgmlDType::Q8_0,
        }
    }
}

/// Conversion settings.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub outtype: OutType,
    /// `general.name`; defaults to the PEFT directory's name.
    pub name: Option<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            outtype: OutType::F32,
            name: None,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    pub source: String,
    pub source_format: &'static str,
    pub architecture: String,
    pub base_fingerprint: String,
    /// Modules written (lora_a/lora_b pairs).
    pub modules: usize,
    /// AdaLoRA modules whose rank was pruned to zero (nothing to write).
    pub dropped_zero_rank: usize,
    pub min_rank: usize,
    pub max_rank: usize,
    /// `adapter.lora.alpha` written: the common alpha when one value is exact for every module,
    /// else 0 with each module's scale folded into its lora_b.
    pub alpha: f32,
    pub scales_folded: bool,
    pub outtype: OutType,
    /// Tensors written as f16 because their rows are not a multiple of the q8_0 block.
    pub f16_fallbacks: usize,
    pub bytes: usize,
}

/// A converted adapter: the complete GGUF image and a report.
#[derive(Debug, Clone)]
pub struct ConvertedAdapter {
    pub gguf: Vec<u8>,
    pub report: ConvertReport,
}

impl ConvertedAdapter {
    /// Writes the GGUF image atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::write_atomic(path, &self.gguf)
    }
}

/// Reorders the rows of `m` ([n_head·head_dim, cols]) from Hugging Face's rotate-half RoPE
/// layout to llama.cpp's interleaved one, as llama.cpp's HF converter does to q/k weights:
/// view as [n_head, 2, head_dim/2, cols] and swap the middle axes.
fn permute_rows(m: &Matrix, n_head: usize) -> Option<Matrix> {
    if n_head == 0 || !m.rows.is_multiple_of(n_head * 2) {
        return None;
    }
    let half = m.rows / n_head / 2;
    let mut out = vec![0f32; m.data.len()];
    for h in 0..n_head {
        for two in 0..2 {
            for i in 0..half {
                let src = (h * 2 + two) * half + i;
                let dst = (h * half + i) * 2 + two;
                out[dst * m.cols..(dst + 1) * m.cols]
                    .copy_from_slice(&m.data[src * m.cols..(src + 1) * m.cols]);
            }
        }
    }
    Some(Matrix {
        rows: m.rows,
        cols: m.cols,
        data: out,
    })
}

/// Converts `peft` into a GGUF LoRA adapter for `base`, checking every tensor against it.
pub fn convert(
    peft: &PeftAdapter,
    base: &GgufInfo,
    options: &ConvertOptions,
) -> Result<ConvertedAdapter> {
    let base_err = |reason: String| ConvertError::Base {
        base: base.path.clone(),
        reason,
    };
    if base.is_adapter() {
        return Err(base_err(
            "is an adapter; --base must be the model the adapter was trained on".into(),
        ));
    }
    let arch = base
        .architecture()
        .ok_or_else(|| base_err("no general.architecture".into()))?
        .to_string();
    let permutes = crate::architecture(&arch)
        .map_err(|what| ConvertError::Unsupported {
            path: base.path.clone(),
            what,
        })?
        .permute_qk;
    let n_head = base.arch_u64("attention.head_count").unwrap_or(0) as usize;
    let n_head_kv = base
        .arch_u64("attention.head_count_kv")
        .unwrap_or(n_head as u64) as usize;
    let weights = peft.dir.join("adapter_model.safetensors");

    let mut pairs = Vec::with_capacity(peft.modules.len());
    let mut scales = Vec::with_capacity(peft.modules.len());
    let mut dropped = 0;
    for module in &peft.modules {
        let r = module.a.rows;
        if r == 0 {
            dropped += 1;
            continue;
        }
        let stem =
            gguf_module_name(&module.projection).ok_or_else(|| ConvertError::Unsupported {
                path: weights.clone(),
                what: format!(
                    "module `{}`: projection `{}` has no llama.cpp tensor",
                    module.path, module.projection
                ),
            })?;
        let name = format!("blk.{}.{stem}.weight", module.layer);
        let base_tensor = base
            .tensors
            .get(&name)
            .ok_or_else(|| ConvertError::Tensor {
                path: weights.clone(),
                tensor: module.a_key.clone(),
                reason: format!("its base tensor `{name}` is not in the base model"),
            })?;
        let (out_dim, in_dim) = match base_tensor.dims.as_slice() {
            [o, i] => (*o, *i),
            d => {
                return Err(base_err(format!(
                    "tensor `{name}` has shape {d:?}, expected 2 dimensions"
                )))
            }
        };
        if module.a.cols != in_dim || module.b.rows != out_dim {
            return Err(ConvertError::Tensor {
                path: weights.clone(),
                tensor: module.b_key.clone(),
                reason: format!(
                    "shape mismatch for `{name}`: adapter maps {} -> {} (lora_A [{}, {}], lora_B [{}, {}]) but the base weight is [{out_dim}, {in_dim}] (out, in)",
                    module.a.cols, module.b.rows, module.a.rows, module.a.cols, module.b.rows, module.b.cols
                ),
            });
        }
        let mut a = module.a.clone();
        if let Some(e) = &module.e {
            // AdaLoRA: delta = B · (A ⊙ E) · scale; fold the singular values into A's rows.
            for (row, ev) in a.data.chunks_exact_mut(a.cols).zip(e) {
                row.iter_mut().for_each(|x| *x *= ev);
            }
        }
        let heads = match module.projection.as_str() {
            "q_proj" if permutes => Some(n_head),
            "k_proj" if permutes => Some(n_head_kv),
            _ => None,
        };
        let b = match heads {
            Some(h) => permute_rows(&module.b, h).ok_or_else(|| {
                base_err(format!(
                    "cannot permute `{name}`: {} rows do not split into {h} heads",
                    module.b.rows
                ))
            })?,
            None => module.b.clone(),
        };
        pairs.push(LoraPair { name, a, b });
        scales.push(peft.module_scale(module)?);
    }
    if pairs.is_empty() {
        return Err(ConvertError::Unsupported {
            path: weights,
            what: "every module has rank 0: nothing to convert".into(),
        });
    }

    // llama.cpp scales each module by alpha / rank (or by 1 when alpha is 0). Write one alpha
    // when it reproduces every module's scale exactly; otherwise fold the scales into lora_b.
    let alphas: Vec<f32> = pairs
        .iter()
        .zip(&scales)
        .map(|(p, s)| (s * p.a.rows as f64) as f32)
        .collect();
    let uniform = alphas.iter().all(|a| a.to_bits() == alphas[0].to_bits())
        && pairs
            .iter()
            .zip(&scales)
            .all(|(p, s)| alphas[0] / p.a.rows as f32 == *s as f32);
    let alpha = if uniform { alphas[0] } else { 0.0 };
    if !uniform {
        for (p, s) in pairs.iter_mut().zip(&scales) {
            let s = *s as f32;
            p.b.data.iter_mut().for_each(|x| *x *= s);
        }
    }

    let name = options.name.clone().unwrap_or_else(|| {
        peft.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".into())
    });
    let fingerprint = base.fingerprint();
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.name".into(), Value::String(name)),
        (
            "skillpack.source_format".into(),
            Value::String(peft.kind.source_format().into()),
        ),
        (
            "skillpack.base_fingerprint".into(),
            Value::String(fingerprint.clone()),
        ),
    ];
    if let Some(b) = &peft.config.base_model_name_or_path {
        metadata.push(("skillpack.base_model".into(), Value::String(b.clone())));
    }
    if let Some(v) = &peft.config.peft_version {
        metadata.push(("skillpack.peft_version".into(), Value::String(v.clone())));
    }
    let written = write_lora_gguf(&arch, alpha, &pairs, options.outtype, &metadata)?;
    let (gguf, f16_fallbacks) = (written.bytes, written.f16_fallbacks);

    let ranks = pairs.iter().map(|p| p.a.rows);
    let report = ConvertReport {
        source: peft.dir.display().to_string(),
        source_format: peft.kind.source_format(),
        architecture: arch,
        base_fingerprint: fingerprint,
        modules: pairs.len(),
        dropped_zero_rank: dropped,
        min_rank: ranks.clone().min().unwrap_or(0),
        max_rank: ranks.max().unwrap_or(0),
        alpha,
        scales_folded: !uniform,
        outtype: options.outtype,
        f16_fallbacks,
        bytes: gguf.len(),
    };
    Ok(ConvertedAdapter { gguf, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_matches_llama_cpp_layout() {
        // 1 head, head_dim 4: HF rows [x0, x1, y0, y1] (rotate-half pairs (x0,y0), (x1,y1))
        // become llama.cpp's interleaved [x0, y0, x1, y1].
        let m = Matrix {
            rows: 4,
            cols: 1,
            data: vec![0.0, 1.0, 2.0, 3.0],
        };
        assert_eq!(permute_rows(&m, 1).unwrap().data, vec![0.0, 2.0, 1.0, 3.0]);
        // 2 heads of dim 4, 2 columns.
        let m = Matrix {
            rows: 8,
            cols: 2,
            data: (0..16).map(|x| x as f32).collect(),
        };
        let p = permute_rows(&m, 2).unwrap();
        let rows: Vec<f32> = p.data.chunks(2).map(|r| r[0] / 2.0).collect();
        assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows(&m, 3).is_none());
    }

    #[test]
    fn outtype_parses() {
        assert_eq!("Q8_0".parse::<OutType>().unwrap(), OutType::Q8_0);
        assert!("q4"
            .parse::<OutType>()
            .unwrap_err()
            .contains("unknown outtype"));
    }
}
