//! LoRA and AdaLoRA parameters on one linear layer, exactly as PEFT 0.21 defines them.

use candle_core::{DType, Device, Tensor, Var};

use crate::Result;
use skillpack_convert::SeededNormal;

/// Which PEFT method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Lora,
    RsLora,
    AdaLora,
}

impl std::str::FromStr for Method {
    type Err = crate::TrainError;

    /// `adalora`, `lora` or `rslora`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "adalora" => Ok(Method::AdaLora),
            "lora" => Ok(Method::Lora),
            "rslora" => Ok(Method::RsLora),
            other => Err(crate::TrainError::Input(format!(
                "unknown method `{other}` (adalora, lora, rslora)"
            ))),
        }
    }
}

/// Trainable low-rank update of one frozen linear `W [out, in]`:
/// LoRA: `Δ(x) = scale · (x Aᵀ) Bᵀ`; AdaLoRA: `Δ(x) = scale · (x (A ⊙ E)ᵀ) Bᵀ` with
/// `scale = lora_alpha / (ranknum + 1e-5)`.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
    /// AdaLoRA singular values `[r, 1]`.
    pub e: Option<Var>,
    pub scale: f64,
}

impl LoraModule {
    /// PEFT's initialisation. LoRA: A ~ kaiming-uniform(a=√5) = U(±1/√in), B = 0.
    /// AdaLoRA: A, B ~ N(0, 0.02²), E = 0.
    /// `weight_shape` is the frozen weight's `(out, in)`; `r` is the (initial) rank.
    pub fn init(
        method: Method,
        r: usize,
        weight_shape: (usize, usize),
        alpha: f64,
        rng: &mut SeededNormal,
        device: &Device,
    ) -> Result<Self> {
        let (out_dim, in_dim) = weight_shape;
        let var = |data: Vec<f32>, shape: (usize, usize)| -> Result<Var> {
            Ok(Var::from_tensor(
                &Tensor::from_vec(data, shape, device)?.to_dtype(DType::F32)?,
            )?)
        };
        Ok(match method {
            Method::AdaLora => LoraModule {
                a: var(rng.samples(r * in_dim, 0.02), (r, in_dim))?,
                b: var(rng.samples(out_dim * r, 0.02), (out_dim, r))?,
                e: Some(var(vec![0.0; r], (r, 1))?),
                scale: Self::adalora_scale(alpha, r),
            },
            Method::Lora | Method::RsLora => LoraModule {
                a: var(
                    rng.uniform_samples(r * in_dim, 1.0 / (in_dim as f64).sqrt()),
                    (r, in_dim),
                )?,
                b: var(vec![0.0; out_dim * r], (out_dim, r))?,
                e: None,
                scale: if method == Method::RsLora {
                    alpha / (r as f64).sqrt()
                } else {
                    alpha / r as f64
                },
            },
        })
    }

    /// PEFT's AdaLoRA scale: `lora_alpha` (or `init_r` when alpha is 0) over `init_r + 1e-5`,
    /// in f32 as torch computes it.
    pub fn adalora_scale(alpha: f64, init_r: usize) -> f64 {
        let scaling = if alpha > 0.0 {
            alpha as f32
        } else {
            init_r as f32
        };
        (scaling / (init_r as f32 + 1e-5)) as f64
    }

    /// The update for `x [m, in]`: `[m, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = match &self.e {
            Some(e) => self.a.as_tensor().broadcast_mul(e.as_tensor())?,
            None => self.a.as_tensor().clone(),
        };
        let x = x.to_dtype(DType::F32)?;
        // Scale the small [m, r] product, not the [m, out] result.
        Ok((x.matmul(&a.t()?)? * self.scale)?.matmul(&self.b.as_tensor().t()?)?)
    }

    /// `x Wᵀ` plus the update, in one fused op where the device allows it.
    pub fn apply(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let a = match &self.e {
            Some(e) => self.a.as_tensor().broadcast_mul(e.as_tensor())?,
            None => self.a.as_tensor().clone(),
        };
        if x.dtype() != DType::F32 {
            return Ok((crate::ops::frozen_linear(x, w)? + self.forward(x)?.to_dtype(x.dtype())?)?);
        }
        Ok(crate::ops::lora_linear(
            x,
            w,
            &a,
            self.b.as_tensor(),
            self.scale,
        )?)
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.a.as_tensor().dim(0).unwrap_or(0)
    }

    /// Trainable variables.
    pub fn vars(&self) -> Vec<&Var> {
        let mut v = vec![&self.a, &self.b];
        if let Some(e) = &self.e {
            v.push(e);
        }
        v
    }
}
