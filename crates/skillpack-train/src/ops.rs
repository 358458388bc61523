//! `x · Wᵀ` against a frozen weight, with a backward pass that computes only `∂L/∂x`.
//!
//! candle's `matmul` backward always computes the gradient of both operands; for a frozen base
//! weight that is an [out, in] matrix of wasted FLOPs and memory per linear layer per step.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: x is [{m}, {k}] but w is [{n}, {k2}]");
        }
        let wt = wl.transpose(0, 1)?;
        Ok((x.matmul(w, (1, m, n, k), xl, &wt)?, Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, _) = wl.shape().dims2()?;
        let wt = wl.transpose(0, 1)?;
        Ok((x.matmul(w, (1, m, n, k), xl, &wt)?, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// `x · wᵀ` for `x` of shape `[.., in]` and a frozen `w` of shape `[out, in]`; gradients flow to
/// `x` only.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("x has at least one dimension");
    let m = x.elem_count() / k;
    let x2 = x.reshape((m, k))?;
    // apply_op2 records the op for backprop only when x is part of the graph.
    let y = x2.apply_op2(w, FrozenMatmul)?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty") = w.dim(0)?;
    y.reshape(out_dims)
}
