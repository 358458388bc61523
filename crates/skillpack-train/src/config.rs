//! Decoder hyper-parameters of every supported family (see [`skillpack_convert::ARCHITECTURES`]),
//! from a Hugging Face `config.json` or GGUF metadata.

use std::path::Path;

use serde::Deserialize;
use skillpack_convert::{Architecture, GgufInfo};

use crate::{Result, TrainError};

/// What the decoder needs to know about its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The family (from the architecture table).
    pub arch: &'static Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// RoPE base of global layers.
    pub rope_theta: f64,
    /// RoPE base of sliding-window layers.
    pub rope_theta_local: f64,
    /// Tokens a sliding-window layer sees (itself included); `None` without such layers.
    pub sliding_window: Option<usize>,
    /// Multiplies q·kᵀ: 1/√head_dim, or 1/√query_pre_attn_scalar where HF says so.
    pub attention_scale: f64,
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
    rope_local_base_freq: Option<f64>,
    /// `{rope_theta, rope_type}`, or per layer type (Gemma 3: `full_attention`,
    /// `sliding_attention`).
    rope_parameters: Option<serde_json::Value>,
    sliding_window: Option<usize>,
    query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    model_type: Option<String>,
    hidden_act: Option<String>,
    hidden_activation: Option<String>,
}

/// `(rope_theta, rope_type)` of one rope parameter object.
fn rope_entry(v: &serde_json::Value) -> (Option<f64>, Option<String>) {
    (
        v.get("rope_theta").and_then(|t| t.as_f64()),
        v.get("rope_type")
            .and_then(|t| t.as_str())
            .map(str::to_string),
    )
}

impl LlamaConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let c: HfConfig = serde_json::from_str(&text)
            .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
        let invalid = |what: String| TrainError::Input(format!("{}: {what}", path.display()));
        let arch =
            skillpack_convert::architecture_of_hf(c.model_type.as_deref().unwrap_or("llama"))
                .map_err(invalid)?;
        // (global, local) rope entries: one object for all layers, or one per layer type.
        let (global, local) = match &c.rope_parameters {
            Some(p) if p.get("full_attention").is_some() => (
                rope_entry(&p["full_attention"]),
                p.get("sliding_attention").map(rope_entry),
            ),
            Some(p) => (rope_entry(p), None),
            None => ((None, None), None),
        };
        for kind in [&global.1, &local.as_ref().and_then(|l| l.1.clone())]
            .into_iter()
            .flatten()
        {
            if kind != "default" {
                return Err(invalid(format!("rope_type `{kind}` is not supported")));
            }
        }
        let activation = c.hidden_activation.or(c.hidden_act).unwrap_or_default();
        let expected = match arch.activation {
            skillpack_convert::Activation::Silu => ["silu", "silu"],
            skillpack_convert::Activation::GeluTanh => ["gelu_pytorch_tanh", "gelu_tanh"],
        };
        if !activation.is_empty() && !expected.contains(&activation.as_str()) {
            return Err(invalid(format!(
                "activation `{activation}` is not {}'s `{}`",
                arch.name, expected[0]
            )));
        }
        let rope_theta = global.0.or(c.rope_theta).unwrap_or(10000.0);
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / c.num_attention_heads);
        Ok(LlamaConfig {
            arch,
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            num_key_value_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            head_dim,
            rms_norm_eps: c.rms_norm_eps,
            rope_theta,
            rope_theta_local: local
                .and_then(|l| l.0)
                .or(c.rope_local_base_freq)
                .unwrap_or(10000.0),
            sliding_window: c.sliding_window.filter(|_| arch.is_sliding(0)),
            attention_scale: 1.0 / c.query_pre_attn_scalar.unwrap_or(head_dim as f64).sqrt(),
            tie_word_embeddings: c.tie_word_embeddings,
        })
    }

    /// Reads the `{arch}.*` metadata of a GGUF model.
    pub fn from_gguf(info: &GgufInfo) -> Result<Self> {
        let name = info.architecture().unwrap_or("?");
        let arch = skillpack_convert::architecture(name)
            .map_err(|m| TrainError::Input(format!("{}: {m}", info.path.display())))?;
        let need = |key: &str| {
            info.arch_u64(key).map(|v| v as usize).ok_or_else(|| {
                TrainError::Input(format!("{}: missing {name}.{key}", info.path.display()))
            })
        };
        let f32_key = |key: &str| match info.metadata.get(&format!("{name}.{key}")) {
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
        let head_dim = info
            .arch_u64("attention.key_length")
            .map(|v| v as usize)
            .unwrap_or(hidden / heads);
        let sliding_window = if arch.is_sliding(0) {
            Some(need("attention.sliding_window")?)
        } else {
            None
        };
        Ok(LlamaConfig {
            arch,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: info
                .arch_u64("attention.head_count_kv")
                .map(|v| v as usize)
                .unwrap_or(heads),
            head_dim,
            rms_norm_eps: f32_key("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: f32_key("rope.freq_base").unwrap_or(10000.0),
            rope_theta_local: f32_key("rope.freq_base_swa").unwrap_or(10000.0),
            sliding_window,
            // llama.cpp: 1/√head_dim for every family here (Gemma 3's query_pre_attn_scalar
            // equals head_dim except at 27B, which llama.cpp special-cases).
            attention_scale: 1.0 / (head_dim as f64).sqrt(),
            tie_word_embeddings: !info.tensors.contains_key("output.weight"),
        })
    }
}
