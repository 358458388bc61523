//! Llama-family hyper-parameters, from a Hugging Face `config.json` or GGUF metadata.

use std::path::Path;

use serde::Deserialize;
use skillpack_convert::GgufInfo;

use crate::{Result, TrainError};

/// What the decoder needs to know about its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
}

#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    tie_word_embeddings: bool,
    model_type: Option<String>,
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

impl LlamaConfig {
    /// Reads a Hugging Face `config.json` (llama family).
    pub fn from_hf(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let c: HfConfig = serde_json::from_str(&text)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        if let Some(t) = &c.model_type {
            if t != "llama" && t != "mistral" {
                return Err(TrainError::Input(format!(
                    "{}: model_type `{t}` is not a llama-family model",
                    path.display()
                )));
            }
        }
        if let Some(kind) = c
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.as_deref())
        {
            if kind != "default" {
                return Err(TrainError::Input(format!(
                    "{}: rope_type `{kind}` is not supported",
                    path.display()
                )));
            }
        }
        let rope_theta = c
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(c.rope_theta)
            .unwrap_or(10000.0);
        Ok(LlamaConfig {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim: c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads),
            rms_norm_eps: c.rms_norm_eps,
            rope_theta,
            tie_word_embeddings: c.tie_word_embeddings,
        })
    }

    /// Reads the `llama.*` metadata of a GGUF model.
    pub fn from_gguf(info: &GgufInfo) -> Result<Self> {
        let arch = info.architecture().unwrap_or("?");
        if arch != "llama" {
            return Err(TrainError::Input(format!(
                "{}: architecture `{arch}` is not supported for training (llama)",
                info.path.display()
            )));
        }
        let need = |key: &str| {
            info.arch_u64(key).map(|v| v as usize).ok_or_else(|| {
                TrainError::Input(format!("{}: missing llama.{key}", info.path.display()))
            })
        };
        let f32_key = |key: &str| match info.metadata.get(&format!("llama.{key}")) {
            Some(skillpack_convert::GgufValue::F32(v)) => Some(*v as f64),
            _ => None,
        };
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let vocab = match info.tensors.get("token_embd.weight") {
            Some(t) => t.dims[0],
            None => {
                return Err(TrainError::Input(format!(
                    "{}: no token_embd.weight",
                    info.path.display()
                )))
            }
        };
        Ok(LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: info
                .arch_u64("attention.head_count_kv")
                .map(|v| v as usize)
                .unwrap_or(heads),
            head_dim: info
                .arch_u64("attention.key_length")
                .map(|v| v as usize)
                .unwrap_or(hidden / heads),
            rms_norm_eps: f32_key("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: f32_key("rope.freq_base").unwrap_or(10000.0),
            tie_word_embeddings: !info.tensors.contains_key("output.weight"),
        })
    }
}
