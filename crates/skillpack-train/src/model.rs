//! A llama-family decoder in candle whose linear layers can carry LoRA / AdaLoRA updates.
//!
//! Only differentiable building blocks are used (candle 0.11's fused `rms_norm`, `softmax_last_dim`,
//! `rope` and `sdpa` have no backward): `rms_norm_slow`, `ops::softmax`, `rope_slow`. Frozen weights
//! go through [`crate::ops::frozen_linear`], whose backward computes only the input gradient.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::ops::{causal_softmax, frozen_linear, rms_norm, rope, swiglu};
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
        let (b, t) = ids.dims2()?;
        let (h, nh, nkv, hd) = (
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
        );
        let (cos, sin) = rope_tables(hd, c.rope_theta, t, &self.device)?;
        let dtype = self.weights.embed.dtype();
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        let eps = c.rms_norm_eps;
        let mut x = self.weights.embed.index_select(&ids.flatten_all()?, 0)?; // [b·t, h]
        for (l, lw) in self.weights.layers.iter().enumerate() {
            let normed = rms_norm(&x, &lw.input_norm, eps)?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor> {
                Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
            };
            let q = heads(self.linear(l, "q_proj", &normed)?, nh)?;
            let k = heads(self.linear(l, "k_proj", &normed)?, nkv)?;
            let v = heads(self.linear(l, "v_proj", &normed)?, nkv)?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;
            // Grouped-query attention without copying k/v per query head: the `rep` query heads
            // sharing a kv head are stacked along the sequence axis ([b, nkv, rep·t, hd]); row
            // `i` of a group is query position `i mod t`, which the causal softmax relies on.
            let rep = nh / nkv;
            let q = q.reshape((b, nkv, rep * t, hd))?;
            let probs = causal_softmax(&q.matmul(&k.t()?)?, 1.0 / (hd as f64).sqrt())?;
            let attn = probs
                .matmul(&v)?
                .reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * t, nh * hd))?;
            x = (x + self.linear(l, "o_proj", &attn)?)?;
            let normed = rms_norm(&x, &lw.post_attention_norm, eps)?;
            let gate = self.linear(l, "gate_proj", &normed)?;
            let up = self.linear(l, "up_proj", &normed)?;
            x = (x + self.linear(l, "down_proj", &swiglu(&gate, &up)?)?)?;
        }
        let x = rms_norm(&x, &self.weights.norm, eps)?;
        Ok(x.reshape((b, t, h))?)
    }

    /// Logits `[.., vocab]` for hidden states `[.., hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.weights.lm_head.as_ref().unwrap_or(&self.weights.embed);
        Ok(frozen_linear(hidden, head)?)
    }

    /// Logits for every position, `[b, t, vocab]`, in f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.logits(&self.hidden(ids)?)?.to_dtype(DType::F32)?)
    }
}
