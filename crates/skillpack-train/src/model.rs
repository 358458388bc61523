//! The decoder of every supported family (llama, Qwen2, Qwen3, Gemma 3: see
//! [`skillpack_convert::ARCHITECTURES`]) in candle, whose linear layers can carry LoRA / AdaLoRA
//! updates. It computes what llama.cpp computes for the same GGUF: biases, per-head q/k norms,
//! sandwich norms, sliding-window layers with their own rope base, GELU-tanh, scaled embeddings.
//!
//! Only differentiable building blocks are used (candle 0.11's fused `rms_norm`, `softmax_last_dim`,
//! `rope` and `sdpa` have no backward): `rms_norm_slow`, `ops::softmax`, `rope_slow`. Frozen weights
//! go through [`crate::ops::frozen_linear`], whose backward computes only the input gradient.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use skillpack_convert::Activation;

use crate::attention::{rotary_attention, HeadLayout};
use crate::ops::{frozen_linear, geglu, rms_norm, swiglu};
use crate::{LoraModule, ModelWeights, Result};

/// Identifies an adaptable linear layer: block index and HF projection name.
pub type ModuleKey = (usize, &'static str);

/// The decoder: frozen weights plus adapters by module.
pub struct Llama {
    pub weights: ModelWeights,
    pub adapters: BTreeMap<ModuleKey, LoraModule>,
    /// Frozen skills mixed with per-row weights (router training), with the weights
    /// `[b·t, skills]` of the next forward pass.
    pub mixture: Option<crate::Mixture>,
    pub mixture_weights: Option<Tensor>,
    device: Device,
}

fn rope_tables(
    head_dim: usize,
    theta: f64,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64) as f32)
        .collect();
    let inv = Tensor::from_vec(inv, (1, head_dim / 2), device)?;
    let t = Tensor::arange(0u32, len as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((len, 1))?;
    let freqs = t.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

impl Llama {
    /// A model without adapters.
    pub fn new(weights: ModelWeights) -> Self {
        let device = weights.embed.device().clone();
        Llama {
            weights,
            adapters: BTreeMap::new(),
            mixture: None,
            mixture_weights: None,
            device,
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn linear(&self, layer: usize, projection: &'static str, x: &Tensor) -> Result<Tensor> {
        let y = self.linear_without_bias(layer, projection, x)?;
        match self.weights.layers[layer].biases.get(projection) {
            Some(b) => Ok(y.broadcast_add(b)?),
            None => Ok(y),
        }
    }

    fn linear_without_bias(
        &self,
        layer: usize,
        projection: &'static str,
        x: &Tensor,
    ) -> Result<Tensor> {
        let w = &self.weights.layers[layer].linears[projection];
        let y = match self.adapters.get(&(layer, projection)) {
            Some(adapter) => adapter.apply(x, w)?,
            None => frozen_linear(x, w)?,
        };
        let mixed = self
            .mixture
            .as_ref()
            .and_then(|m| m.modules.get(&(layer, projection)));
        match (mixed, &self.mixture_weights) {
            (Some(module), Some(weights)) => {
                Ok((y + module.forward(x, weights)?.to_dtype(x.dtype())?)?)
            }
            _ => Ok(y),
        }
    }

    /// Hidden states after the final norm, `[b, t, hidden]`, for token ids `[b, t]`.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let c = &self.weights.config;
        let arch = c.arch;
        let (b, t) = ids.dims2()?;
        let (h, nh, nkv, hd) = (
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        );
        let dtype = self.weights.embed.dtype();
        let tables = |theta: f64| -> Result<(Tensor, Tensor)> {
            let (cos, sin) = rope_tables(hd, theta, t, &self.device)?;
            Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?))
        };
        let global_rope = tables(c.rope_theta)?;
        let local_rope = match c.sliding_window {
            Some(_) => Some(tables(c.rope_theta_local)?),
            None => None,
        };
        let eps = c.rms_norm_eps;
        let mut x = self.weights.embed.index_select(&ids.flatten_all()?, 0)?; // [b·t, h]
        if arch.scale_embeddings {
            x = (x * (h as f64).sqrt())?;
        }
        for (l, lw) in self.weights.layers.iter().enumerate() {
            let sliding = arch.is_sliding(l) && c.sliding_window.is_some();
            let (cos, sin) = match (&local_rope, sliding) {
                (Some(local), true) => local,
                _ => &global_rope,
            };
            let normed = rms_norm(&x, &lw.input_norm, eps)?;
            // Per-head norm (Qwen3, Gemma 3) on [b·t·n, hd], back to the linears' [b·t, n·hd].
            let head_norm = |y: Tensor, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
                Ok(match norm {
                    Some(w) => {
                        rms_norm(&y.reshape((b * t * n, hd))?, w, eps)?.reshape((b * t, n * hd))?
                    }
                    None => y,
                })
            };
            let q = head_norm(self.linear(l, "q_proj", &normed)?, nh, &lw.q_norm)?;
            let k = head_norm(self.linear(l, "k_proj", &normed)?, nkv, &lw.k_norm)?;
            let v = self.linear(l, "v_proj", &normed)?;
            let layout = HeadLayout {
                batch: b,
                seq: t,
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
            };
            let window = if sliding { c.sliding_window } else { None };
            let attn = rotary_attention(&q, &k, &v, cos, sin, layout, c.attention_scale, window)?;
            let mut attn = self.linear(l, "o_proj", &attn)?;
            if let Some(w) = &lw.post_attention_norm {
                attn = rms_norm(&attn, w, eps)?;
            }
            x = (x + attn)?;
            let normed = rms_norm(&x, &lw.pre_mlp_norm, eps)?;
            let gate = self.linear(l, "gate_proj", &normed)?;
            let up = self.linear(l, "up_proj", &normed)?;
            let inner = match arch.activation {
                Activation::Silu => swiglu(&gate, &up)?,
                Activation::GeluTanh => geglu(&gate, &up)?,
            };
            let mut mlp = self.linear(l, "down_proj", &inner)?;
            if let Some(w) = &lw.post_mlp_norm {
                mlp = rms_norm(&mlp, w, eps)?;
            }
            x = (x + mlp)?;
        }
        let x = rms_norm(&x, &self.weights.norm, eps)?;
        Ok(x.reshape((b, t, h))?)
    }

    /// Logits `[.., vocab]` for hidden states `[.., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed);
        Ok(frozen_linear(hidden, head)?)
    }

    /// Mean cross-entropy of the output layer's logits for hidden rows `[n, hidden]` against
    /// `labels`, without the `[n, vocab]` logits ever existing whole on the CPU
    /// ([`crate::ops::head_cross_entropy`]); differentiable when `with_gradient`.
    pub fn head_loss(
        &self,
        hidden: &Tensor,
        labels: &[u32],
        with_gradient: bool,
    ) -> Result<Tensor> {
        let head = self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed);
        Ok(crate::ops::head_cross_entropy(
            hidden,
            head,
            labels,
            with_gradient,
        )?)
    }

    /// Logits for every position, `[b, t, vocab]`, in f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.logits(&self.hidden(ids)?)?.to_dtype(DType::F32)?)
    }
}
