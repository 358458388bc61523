//! GGUF LoRA adapter images: writing llama.cpp's layout from f32 factors, and reading an
//! adapter back into f32 factors (dequantizing whatever type it was stored in).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::{ConvertError, Matrix, OutType, Result};

/// One adapted weight: `delta = B · A` (times the adapter's alpha/rank, or 1 when alpha is 0).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// Base tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// `[r, in]`.
    pub a: Matrix,
    /// `[out, r]`.
    pub b: Matrix,
}

/// A written GGUF image.
#[derive(Debug, Clone)]
pub struct LoraImage {
    pub bytes: Vec<u8>,
    /// Tensors stored as f16 because their rows are not a multiple of the q8_0 block.
    pub f16_fallbacks: usize,
}

/// Writes a GGUF LoRA adapter: the keys llama.cpp requires, with exactly the types it reads
/// (`adapter.lora.alpha` as f32), then `extra` metadata, then `lora_a`/`lora_b` per pair.
pub fn write_lora_gguf(
    architecture: &str,
    alpha: f32,
    pairs: &[LoraPair],
    outtype: OutType,
    extra: &[(String, Value)],
) -> Result<LoraImage> {
    let fail = |reason: String| ConvertError::Tensor {
        path: "(GGUF being written)".into(),
        tensor: String::new(),
        reason,
    };
    let mut f16_fallbacks = 0;
    let mut quantize = |m: &Matrix| -> Result<QTensor> {
        let mut dtype = outtype.ggml();
        if dtype == GgmlDType::Q8_0 && !m.cols.is_multiple_of(dtype.block_size()) {
            dtype = GgmlDType::F16;
            f16_fallbacks += 1;
        }
        Tensor::from_slice(&m.data, (m.rows, m.cols), &Device::Cpu)
            .and_then(|t| QTensor::quantize(&t, dtype))
            .map_err(|e| fail(format!("quantizing: {e}")))
    };
    let mut tensors = Vec::with_capacity(pairs.len() * 2);
    for p in pairs {
        tensors.push((format!("{}.lora_a", p.name), quantize(&p.a)?));
        tensors.push((format!("{}.lora_b", p.name), quantize(&p.b)?));
    }
    let mut metadata: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String(architecture.into()),
        ),
        ("general.type".into(), Value::String("adapter".into())),
        ("adapter.type".into(), Value::String("lora".into())),
        ("adapter.lora.alpha".into(), Value::F32(alpha)),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "skillpack.converter".into(),
            Value::String(format!("skillpack {}", env!("CARGO_PKG_VERSION"))),
        ),
    ];
    metadata.extend(extra.iter().cloned());
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut cursor = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut cursor, &md, &ts).map_err(|e| fail(format!("writing GGUF: {e}")))?;
    Ok(LoraImage {
        bytes: cursor.into_inner(),
        f16_fallbacks,
    })
}

/// A GGUF LoRA adapter read back as f32 factors.
#[derive(Debug, Clone)]
pub struct LoraFile {
    pub architecture: String,
    /// `adapter.lora.alpha` (0 = scales already folded into lora_b).
    pub alpha: f32,
    /// Pairs by base tensor name.
    pub pairs: BTreeMap<String, LoraPair>,
}

impl LoraFile {
    /// Reads and dequantizes every pair of the adapter at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let info = crate::GgufInfo::open(path)?;
        let gguf_err = |reason: String| ConvertError::Gguf {
            path: path.into(),
            reason,
        };
        if !info.is_adapter() {
            return Err(gguf_err("general.type is not `adapter`".into()));
        }
        let architecture = info
            .architecture()
            .ok_or_else(|| gguf_err("no general.architecture".into()))?
            .to_string();
        let alpha = match info.metadata.get("adapter.lora.alpha") {
            None => 0.0,
            Some(Value::F32(a)) => *a,
            Some(other) => {
                return Err(gguf_err(format!(
                    "adapter.lora.alpha must be f32, found {other:?}"
                )))
            }
        };
        let mut file = std::fs::File::open(path).map_err(|source| ConvertError::Io {
            path: path.into(),
            source,
        })?;
        let content =
            gguf_file::Content::read(&mut file).map_err(|e| gguf_err(crate::candle_message(&e)))?;
        let mut load = |name: &str| -> Result<Matrix> {
            let t = content
                .tensor(&mut file, name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| gguf_err(format!("tensor `{name}`: {}", crate::candle_message(&e))))?;
            let (rows, cols) = t
                .dims2()
                .map_err(|e| gguf_err(format!("tensor `{name}`: {}", crate::candle_message(&e))))?;
            let data = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| gguf_err(format!("tensor `{name}`: {}", crate::candle_message(&e))))?;
            Ok(Matrix { rows, cols, data })
        };
        let mut pairs = BTreeMap::new();
        for name in info.tensors.keys() {
            let Some(stem) = name.strip_suffix(".lora_a") else {
                continue;
            };
            let b_name = format!("{stem}.lora_b");
            if !info.tensors.contains_key(&b_name) {
                return Err(gguf_err(format!("`{name}` has no `{b_name}`")));
            }
            let a = load(name)?;
            let b = load(&b_name)?;
            if a.rows != b.cols {
                return Err(gguf_err(format!(
                    "`{stem}`: lora_a has rank {} but lora_b {}",
                    a.rows, b.cols
                )));
            }
            pairs.insert(
                stem.to_string(),
                LoraPair {
                    name: stem.to_string(),
                    a,
                    b,
                },
            );
        }
        Ok(LoraFile {
            architecture,
            alpha,
            pairs,
        })
    }

    /// The factor llama.cpp multiplies `B·A` of `pair` by at adapter scale 1.
    pub fn pair_scale(&self, pair: &LoraPair) -> f32 {
        if self.alpha == 0.0 || pair.a.rows == 0 {
            1.0
        } else {
            self.alpha / pair.a.rows as f32
        }
    }
}
