//! The model families skillpack supports, in one table every stage reads: the converter (tensor
//! names, q/k permutation), the trainer's candle decoder (biases, extra norms, attention pattern,
//! rope bases, activation, embedding scale, norm convention), routers and packs (refusing what
//! is not here, with one message).
//!
//! Facts are llama.cpp's (what the GGUF holds and what llama.cpp computes) and Hugging Face's
//! (what a checkpoint holds); the tiny models in the fixtures check each family against both.

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) · up` (llama, Qwen).
    Silu,
    /// `gelu_tanh(gate) · up` (Gemma: `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Which layers attend to a sliding window instead of the whole prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPattern {
    /// Every layer is global.
    Global,
    /// Every `period`-th layer (1-based) is global, the rest use the window of
    /// `{arch}.attention.sliding_window` tokens (each token sees itself and the `window − 1`
    /// before it) and the rope base `{arch}.rope.freq_base_swa`.
    SlidingExceptEvery { period: usize },
}

/// One model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Architecture {
    /// `general.architecture` of the GGUF.
    pub name: &'static str,
    /// Hugging Face `model_type`s of the same family.
    pub hf_model_types: &'static [&'static str],
    /// llama.cpp's HF converter permutes q/k rows for interleaved RoPE (llama only); adapters
    /// and trained weights are permuted the same way.
    pub permute_qk: bool,
    /// q, k and v projections carry biases (Qwen2); LoRA never adapts a bias.
    pub qkv_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (`attn_q_norm`/`attn_k_norm`; HF `q_norm`/`k_norm`).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP as well as before (Gemma's "sandwich" norms:
    /// GGUF `post_attention_norm`, `ffn_norm` (before the MLP), `post_ffw_norm`).
    pub sandwich_norms: bool,
    /// Hugging Face's RMSNorm multiplies by `1 + w` (Gemma); llama.cpp's converter stores
    /// `w + 1`, so GGUF norms are applied as stored and HF norms get the 1 added.
    pub hf_norm_adds_one: bool,
    pub activation: Activation,
    /// Token embeddings are multiplied by √hidden (Gemma).
    pub scale_embeddings: bool,
    pub attention: AttentionPattern,
}

/// The llama family; the others differ from it where they say.
const LLAMA: Architecture = Architecture {
    name: "llama",
    hf_model_types: &["llama", "mistral"],
    permute_qk: true,
    qkv_bias: false,
    qk_norm: false,
    sandwich_norms: false,
    hf_norm_adds_one: false,
    activation: Activation::Silu,
    scale_embeddings: false,
    attention: AttentionPattern::Global,
};

/// Every supported family.
pub const ARCHITECTURES: [Architecture; 4] = [
    LLAMA,
    Architecture {
        name: "qwen2",
        hf_model_types: &["qwen2"],
        permute_qk: false,
        qkv_bias: true,
        ..LLAMA
    },
    Architecture {
        name: "qwen3",
        hf_model_types: &["qwen3"],
        permute_qk: false,
        qk_norm: true,
        ..LLAMA
    },
    Architecture {
        name: "gemma3",
        hf_model_types: &["gemma3_text", "gemma3"],
        permute_qk: false,
        qk_norm: true,
        sandwich_norms: true,
        hf_norm_adds_one: true,
        activation: Activation::GeluTanh,
        scale_embeddings: true,
        // llama.cpp sets Gemma 3's pattern in code (every 6th layer global, local rope base
        // 10,000 unless the GGUF says `rope.freq_base_swa`).
        attention: AttentionPattern::SlidingExceptEvery { period: 6 },
        ..LLAMA
    },
];

/// `llama, qwen2, qwen3, gemma3`.
pub fn supported_architectures() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family with GGUF name `name`, or a message naming it and listing the supported ones.
pub fn architecture(name: &str) -> std::result::Result<&'static Architecture, String> {
    ARCHITECTURES
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| {
            format!(
                "architecture `{name}` is not supported (supported: {})",
                supported_architectures()
            )
        })
}

/// The family of a Hugging Face `model_type`.
pub fn architecture_of_hf(model_type: &str) -> std::result::Result<&'static Architecture, String> {
    ARCHITECTURES
        .iter()
        .find(|a| a.hf_model_types.contains(&model_type))
        .ok_or_else(|| {
            format!(
                "model_type `{model_type}` is not supported (supported: {})",
                ARCHITECTURES
                    .iter()
                    .flat_map(|a| a.hf_model_types.iter().copied())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// A Hugging Face projection's GGUF tensor stem (the same in every family here).
pub fn gguf_module_name(hf_projection: &str) -> Option<&'static str> {
    Some(match hf_projection {
        "q_proj" => "attn_q",
        "k_proj" => "attn_k",
        "v_proj" => "attn_v",
        "o_proj" => "attn_output",
        "gate_proj" => "ffn_gate",
        "up_proj" => "ffn_up",
        "down_proj" => "ffn_down",
        _ => return None,
    })
}

impl Architecture {
    /// Whether layer `layer` (0-based) attends to a sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        match self.attention {
            AttentionPattern::Global => false,
            AttentionPattern::SlidingExceptEvery { period } => !(layer + 1).is_multiple_of(period),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_patterns() {
        assert!(architecture("llama").unwrap().permute_qk);
        assert!(architecture("qwen2").unwrap().qkv_bias);
        let err = architecture("phi3").unwrap_err();
        assert_eq!(
            err,
            "architecture `phi3` is not supported (supported: llama, qwen2, qwen3, gemma3)"
        );
        assert_eq!(architecture_of_hf("gemma3_text").unwrap().name, "gemma3");
        let g = architecture("gemma3").unwrap();
        let sliding: Vec<bool> = (0..12).map(|l| g.is_sliding(l)).collect();
        assert_eq!(
            sliding,
            [true, true, true, true, true, false, true, true, true, true, true, false]
        );
        assert!(!architecture("qwen3").unwrap().is_sliding(0));
    }
}
