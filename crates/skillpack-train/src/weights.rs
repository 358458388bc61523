//! Frozen base weights of every supported family from a GGUF (dequantized) or Hugging Face
//! safetensors, in Hugging Face's layout. Llama GGUFs store the q/k projection rows permuted for llama.cpp's interleaved RoPE; they are
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

/// One transformer block's frozen weights. Norm weights are stored as they multiply (Gemma's
/// `1 + w` already added).
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// Before attention (`attn_norm`; HF `input_layernorm`).
    pub input_norm: Tensor,
    /// Before the MLP (`ffn_norm`; HF `post_attention_layernorm`, Gemma `pre_feedforward_layernorm`).
    pub pre_mlp_norm: Tensor,
    /// After attention and after the MLP (Gemma: `post_attention_norm`, `post_ffw_norm`).
    pub post_attention_norm: Option<Tensor>,
    pub post_mlp_norm: Option<Tensor>,
    /// Per-head norms of q and k (Qwen3, Gemma 3).
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// Projection weights `[out, in]` by HF name (`q_proj`, ...).
    pub linears: HashMap<&'static str, Tensor>,
    /// Projection biases by HF name (Qwen2's q, k, v).
    pub biases: HashMap<&'static str, Tensor>,
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
        let arch = config.arch;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let mut linears = HashMap::new();
            let mut biases = HashMap::new();
            for p in PROJECTIONS {
                let stem = skillpack_convert::gguf_module_name(p)
                    .expect("PROJECTIONS are the table's projections");
                let mut w = get(&format!("blk.{l}.{stem}.weight"))?;
                let heads = match p {
                    "q_proj" => config.num_attention_heads,
                    _ => config.num_key_value_heads,
                };
                let permuted = arch.permute_qk && (p == "q_proj" || p == "k_proj");
                if permuted {
                    w = unpermute_rows(&w, heads)?;
                }
                linears.insert(p, w);
                if arch.qkv_bias && ["q_proj", "k_proj", "v_proj"].contains(&p) {
                    let mut b = get(&format!("blk.{l}.{stem}.bias"))?;
                    if permuted {
                        b = unpermute_rows(&b.unsqueeze(1)?, heads)?.squeeze(1)?;
                    }
                    biases.insert(p, b);
                }
            }
            let input_norm = get(&format!("blk.{l}.attn_norm.weight"))?;
            let pre_mlp_norm = get(&format!("blk.{l}.ffn_norm.weight"))?;
            let mut optional = |present: bool, stem: &str| -> Result<Option<Tensor>> {
                present
                    .then(|| get(&format!("blk.{l}.{stem}.weight")))
                    .transpose()
            };
            layers.push(LayerWeights {
                input_norm,
                pre_mlp_norm,
                post_attention_norm: optional(arch.sandwich_norms, "post_attention_norm")?,
                post_mlp_norm: optional(arch.sandwich_norms, "post_ffw_norm")?,
                q_norm: optional(arch.qk_norm, "attn_q_norm")?,
                k_norm: optional(arch.qk_norm, "attn_k_norm")?,
                linears,
                biases,
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
        let arch = config.arch;
        // Gemma's HF norms multiply by (1 + w).
        let norm = |name: &str| -> Result<Tensor> {
            let w = get(name)?;
            Ok(if arch.hf_norm_adds_one { (w + 1.0)? } else { w })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let prefix = format!("model.layers.{l}");
            let mut linears = HashMap::new();
            let mut biases = HashMap::new();
            for p in PROJECTIONS {
                let group = if ["gate_proj", "up_proj", "down_proj"].contains(&p) {
                    "mlp"
                } else {
                    "self_attn"
                };
                linears.insert(p, get(&format!("{prefix}.{group}.{p}.weight"))?);
                if arch.qkv_bias && ["q_proj", "k_proj", "v_proj"].contains(&p) {
                    biases.insert(p, get(&format!("{prefix}.{group}.{p}.bias"))?);
                }
            }
            let optional = |present: bool, name: &str| -> Result<Option<Tensor>> {
                present
                    .then(|| norm(&format!("{prefix}.{name}")))
                    .transpose()
            };
            let (pre_mlp, post_attention) = if arch.sandwich_norms {
                ("pre_feedforward_layernorm", "post_attention_layernorm")
            } else {
                ("post_attention_layernorm", "")
            };
            layers.push(LayerWeights {
                input_norm: norm(&format!("{prefix}.input_layernorm.weight"))?,
                pre_mlp_norm: norm(&format!("{prefix}.{pre_mlp}.weight"))?,
                post_attention_norm: optional(
                    arch.sandwich_norms,
                    &format!("{post_attention}.weight"),
                )?,
                post_mlp_norm: optional(arch.sandwich_norms, "post_feedforward_layernorm.weight")?,
                q_norm: optional(arch.qk_norm, "self_attn.q_norm.weight")?,
                k_norm: optional(arch.qk_norm, "self_attn.k_norm.weight")?,
                linears,
                biases,
            });
        }
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(get("lm_head.weight")?)
        };
        Ok(ModelWeights {
            embed: get("model.embed_tokens.weight")?,
            norm: norm("model.norm.weight")?,
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
