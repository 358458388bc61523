//! Frozen base weights from a GGUF (dequantized) or Hugging Face safetensors, in Hugging Face's
//! layout. GGUF stores the q/k projection rows permuted for llama.cpp's interleaved RoPE; they are
//! permuted back here, so training happens in one convention (HF's rotate-half) and each export
//! format gets its own layout (the converter re-permutes lora_B for GGUF).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use skillpack_convert::GgufInfo;

use crate::{LlamaConfig, Result, TrainError};

/// The linear projections of a block, by Hugging Face name.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// One transformer block's frozen weights.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub input_norm: Tensor,
    pub post_attention_norm: Tensor,
    /// Projection weights `[out, in]` by HF name (`q_proj`, ...).
    pub linears: HashMap<&'static str, Tensor>,
}

/// All frozen weights.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    pub config: LlamaConfig,
    pub embed: Tensor,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
}

/// Inverse of llama.cpp's q/k row permutation: GGUF row `(h·half + i)·2 + j` is HF row
/// `(h·2 + j)·half + i`.
pub(crate) fn unpermute_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / n_head / 2;
    // GGUF rows viewed as [n_head, half, 2, cols] → [n_head, 2, half, cols].
    Ok(w.reshape((n_head, half, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

impl ModelWeights {
    /// Loads a GGUF model, dequantizing every tensor to `dtype` on `device`.
    pub fn from_gguf(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let info = GgufInfo::open(path)?;
        let config = LlamaConfig::from_gguf(&info)?;
        let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
        let content = gguf_file::Content::read(&mut file)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        let mut get = |name: &str| -> Result<Tensor> {
            let q = content.tensor(&mut file, name, device).map_err(|e| {
                TrainError::Input(format!("{}: tensor `{name}`: {e}", path.display()))
            })?;
            Ok(q.dequantize(device)?.to_dtype(dtype)?)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let mut linears = HashMap::new();
            for p in PROJECTIONS {
                let stem = skillpack_convert::gguf_module_name(p)
                    .expect("PROJECTIONS are llama projections");
                let mut w = get(&format!("blk.{l}.{stem}.weight"))?;
                if p == "q_proj" {
                    w = unpermute_rows(&w, config.num_attention_heads)?;
                } else if p == "k_proj" {
                    w = unpermute_rows(&w, config.num_key_value_heads)?;
                }
                linears.insert(p, w);
            }
            layers.push(LayerWeights {
                input_norm: get(&format!("blk.{l}.attn_norm.weight"))?,
                post_attention_norm: get(&format!("blk.{l}.ffn_norm.weight"))?,
                linears,
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(get("output.weight")?)
        };
        Ok(ModelWeights {
            embed: get("token_embd.weight")?,
            norm: get("output_norm.weight")?,
            lm_head,
            layers,
            config,
        })
    }

    /// Loads a Hugging Face checkpoint directory (`config.json` + `model.safetensors`).
    pub fn from_hf(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = LlamaConfig::from_hf(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&path, device)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        let get = |name: &str| -> Result<Tensor> {
            let t = tensors.get(name).ok_or_else(|| {
                TrainError::Input(format!("{}: no tensor `{name}`", path.display()))
            })?;
            Ok(t.to_dtype(dtype)?)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let mut linears = HashMap::new();
            for p in PROJECTIONS {
                let group =
                    if p.ends_with("_proj") && ["gate_proj", "up_proj", "down_proj"].contains(&p) {
                        "mlp"
                    } else {
                        "self_attn"
                    };
                linears.insert(p, get(&format!("model.layers.{l}.{group}.{p}.weight"))?);
            }
            layers.push(LayerWeights {
                input_norm: get(&format!("model.layers.{l}.input_layernorm.weight"))?,
                post_attention_norm: get(&format!(
                    "model.layers.{l}.post_attention_layernorm.weight"
                ))?,
                linears,
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(get("lm_head.weight")?)
        };
        Ok(ModelWeights {
            embed: get("model.embed_tokens.weight")?,
            norm: get("model.norm.weight")?,
            lm_head,
            layers,
            config,
        })
    }

    /// Loads a `.gguf` file or a Hugging Face directory.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if path.is_dir() {
            Self::from_hf(path, device, dtype)
        } else {
            Self::from_gguf(path, device, dtype)
        }
    }
}
