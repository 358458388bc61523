//! Causal attention of grouped query heads as one op, `softmax(scale · q kᵀ + mask) · v`, with
//! a hand-written backward. In candle's matmul / softmax / matmul chain every link keeps its
//! own buffers and receives a zero-filled gradient that is then added to; here the attention
//! probabilities are the only state kept for the backward pass, and the six products run as
//! plain f32 GEMMs or, under [`crate::MatmulPrecision::Bf16`], on AMX tiles.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::amx::{self, PackedRight};

/// `op(a) · op(b)` for row-major `a` (`[m, k]`, or `[k, m]` when `a_t`) and `b` (`[k, n]`, or
/// `[n, k]` when `b_t`), as a row-major `[m, n]`: bf16 on AMX when `bf16`, else f32.
fn product(
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    (m, k, n): (usize, usize, usize),
    bf16: bool,
) -> Vec<f32> {
    if bf16 {
        let transposed;
        let left = if a_t {
            transposed = transpose(a, k, m);
            &transposed[..]
        } else {
            a
        };
        let right = if b_t {
            PackedRight::transposed(b, n, k)
        } else {
            PackedRight::plain(b, k, n)
        };
        return amx::matmul(left, m, &right);
    }
    let mut out = vec![0f32; m * n];
    let (lhs_rs, lhs_cs) = if a_t { (1, m) } else { (k, 1) };
    let (rhs_rs, rhs_cs) = if b_t { (1, k) } else { (n, 1) };
    // SAFETY: the strides describe `a` ([m, k] or its transpose), `b` and `out` exactly, all
    // in bounds; `out` does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            b.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    out
}

/// The transpose of a row-major `[rows, cols]` matrix, in 16 × 16 blocks: a plain row loop
/// writes every element to another cache line, and the probabilities transposed here are up to
/// a few MB per head group.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 16;
    let mut out = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                let row = &a[r * cols..(r + 1) * cols];
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = row[c];
                }
            }
        }
    }
    out
}

struct CausalAttention {
    scale: f32,
    window: usize,
    bf16: bool,
    /// The probabilities of the forward pass, `[b·g, rows, t]`, taken by the backward pass.
    probs: Mutex<Option<Vec<f32>>>,
}

/// Dimensions of one call: `groups` = b · kv heads, `rows` = query heads per group · t.
struct Dims {
    groups: usize,
    rows: usize,
    t: usize,
    hd: usize,
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("causal-attention: inputs must be contiguous f32"),
    }
}

impl CausalAttention {
    fn dims(q: &Layout, k: &Layout) -> Result<Dims> {
        let (b, g, rows, hd) = q.shape().dims4()?;
        let (_, _, t, _) = k.shape().dims4()?;
        Ok(Dims {
            groups: b * g,
            rows,
            t,
            hd,
        })
    }

    /// Masked softmax of `scale · s` in place, row `r` being query position `r mod t`.
    fn softmax_rows(&self, s: &mut [f32], t: usize) {
        for (row, x) in s.chunks_mut(t).enumerate() {
            let i = row % t;
            let first = (i + 1).saturating_sub(self.window);
            let max = x[first..=i]
                .iter()
                .fold(f32::NEG_INFINITY, |m, v| m.max(*v))
                * self.scale;
            let mut sum = 0f32;
            for v in &mut x[first..=i] {
                *v = crate::ops::fast_exp(*v * self.scale - max);
                sum += *v;
            }
            let inv = 1.0 / sum;
            x[first..=i].iter_mut().for_each(|v| *v *= inv);
            x[..first].iter_mut().for_each(|v| *v = 0.0);
            x[i + 1..].iter_mut().for_each(|v| *v = 0.0);
        }
    }

    /// Probabilities `[rows, t]` and output `[rows, hd]` of one group.
    fn forward_group(&self, q: &[f32], k: &[f32], v: &[f32], d: &Dims) -> (Vec<f32>, Vec<f32>) {
        let mut p = product(q, false, k, true, (d.rows, d.hd, d.t), self.bf16);
        self.softmax_rows(&mut p, d.t);
        let o = product(&p, false, v, false, (d.rows, d.t, d.hd), self.bf16);
        (p, o)
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Self::dims(ql, kl)?;
        let (q, k, v) = (f32_slice(qs, ql)?, f32_slice(ks, kl)?, f32_slice(vs, vl)?);
        let (qn, kn) = (d.rows * d.hd, d.t * d.hd);
        let groups: Vec<(Vec<f32>, Vec<f32>)> = (0..d.groups)
            .into_par_iter()
            .map(|g| {
                self.forward_group(
                    &q[g * qn..(g + 1) * qn],
                    &k[g * kn..(g + 1) * kn],
                    &v[g * kn..(g + 1) * kn],
                    &d,
                )
            })
            .collect();
        let mut probs = Vec::with_capacity(d.groups * d.rows * d.t);
        let mut out = Vec::with_capacity(d.groups * qn);
        for (p, o) in groups {
            probs.extend_from_slice(&p);
            out.extend_from_slice(&o);
        }
        *self.probs.lock().unwrap_or_else(|e| e.into_inner()) = Some(probs);
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, g, rows, hd) = q.dims4()?;
        let t = k.dim(2)?;
        let d = Dims {
            groups: b * g,
            rows,
            t,
            hd,
        };
        // Read in place (q, k, v were made contiguous for the forward pass; `contiguous` of a
        // contiguous tensor shares its storage).
        let inputs = [
            q.contiguous()?,
            k.contiguous()?,
            v.contiguous()?,
            grad.contiguous()?,
        ];
        let guards: Vec<_> = inputs.iter().map(|x| x.storage_and_layout()).collect();
        let slices = guards
            .iter()
            .map(|(storage, layout)| match &**storage {
                candle_core::Storage::Cpu(s) => f32_slice(s, layout),
                _ => candle_core::bail!("causal-attention: backward inputs must be on the CPU"),
            })
            .collect::<Result<Vec<&[f32]>>>()?;
        let (qv, kv, vv, gv) = (slices[0], slices[1], slices[2], slices[3]);
        let (qn, kn, pn) = (rows * hd, t * hd, rows * t);
        let probs = self.probs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let per_group: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..d.groups)
            .into_par_iter()
            .map(|i| {
                let (qg, kg, vg) = (
                    &qv[i * qn..(i + 1) * qn],
                    &kv[i * kn..(i + 1) * kn],
                    &vv[i * kn..(i + 1) * kn],
                );
                let dout = &gv[i * qn..(i + 1) * qn];
                let recomputed;
                let p = match &probs {
                    Some(all) => &all[i * pn..(i + 1) * pn],
                    None => {
                        recomputed = self.forward_group(qg, kg, vg, &d).0;
                        &recomputed[..]
                    }
                };
                // dP = dO · vᵀ; dS = scale · P ⊙ (dP − Σ_j dP ⊙ P), zero where masked (P = 0).
                let mut ds = product(dout, false, vg, true, (rows, hd, t), self.bf16);
                for (dsr, pr) in ds.chunks_mut(t).zip(p.chunks(t)) {
                    let dot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (x, pv) in dsr.iter_mut().zip(pr) {
                        *x = self.scale * pv * (*x - dot);
                    }
                }
                let dq = product(&ds, false, kg, false, (rows, t, hd), self.bf16);
                let dk = product(&ds, true, qg, false, (t, rows, hd), self.bf16);
                let dv = product(p, true, dout, false, (t, rows, hd), self.bf16);
                (dq, dk, dv)
            })
            .collect();
        let (mut dq, mut dk, mut dv) = (
            Vec::with_capacity(d.groups * qn),
            Vec::with_capacity(d.groups * kn),
            Vec::with_capacity(d.groups * kn),
        );
        for (a, b_, c) in per_group {
            dq.extend_from_slice(&a);
            dk.extend_from_slice(&b_);
            dv.extend_from_slice(&c);
        }
        let device = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), device)?),
            Some(Tensor::from_vec(dk, k.shape(), device)?),
            Some(Tensor::from_vec(dv, v.shape(), device)?),
        ))
    }
}

/// `softmax(scale · q kᵀ + causal mask) · v` for `q [b, g, rep·t, hd]` (the `rep` query heads
/// sharing a kv head stacked along the sequence axis: row `r` is query position `r mod t`) and
/// `k`, `v` `[b, g, t, hd]`; with `window`, each query sees only the `window` most recent keys,
/// itself included. Differentiable in `q`, `k` and `v`. One fused op on the CPU in f32; elsewhere
/// candle's differentiable composite.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    if matches!(q.device(), Device::Cpu) && q.dtype() == DType::F32 {
        return q.contiguous()?.apply_op3(
            &k.contiguous()?,
            &v.contiguous()?,
            CausalAttention {
                scale: scale as f32,
                window: window.unwrap_or(usize::MAX),
                bf16: crate::ops::bf16_matmuls(),
                probs: Mutex::new(None),
            },
        );
    }
    crate::ops::causal_softmax(&q.matmul(&k.t()?)?, scale, window)?.matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn blocked_transpose_is_the_transpose() {
        for (rows, cols) in [(1, 1), (3, 17), (16, 16), (33, 47), (40, 5)] {
            let a: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let t = transpose(&a, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        a[r * cols + c],
                        "({rows}, {cols}) at ({r}, {c})"
                    );
                }
            }
        }
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let data = crate::SeededNormal::new(seed).samples(n, 1.0);
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// The fused op against candle's composite (matmul, causal softmax, matmul): output and the
    /// gradients of q, k and v, for grouped heads (rep 3) with and without a window, in f32
    /// (tight) and bf16 on AMX where present (bf16 rounding).
    #[test]
    fn fused_attention_matches_the_composite() {
        let (b, g, rep, t, hd) = (2, 2, 3, 7, 16);
        let q = Var::from_tensor(&randn(&[b, g, rep * t, hd], 1)).unwrap();
        let k = Var::from_tensor(&randn(&[b, g, t, hd], 2)).unwrap();
        let v = Var::from_tensor(&randn(&[b, g, t, hd], 3)).unwrap();
        let w = randn(&[b, g, rep * t, hd], 4);
        let mut precisions = vec![(crate::MatmulPrecision::F32, 1e-5)];
        if amx::available() {
            precisions.push((crate::MatmulPrecision::Bf16, 2e-2));
        }
        for window in [None, Some(3)] {
            let reference = crate::ops::causal_softmax(
                &q.as_tensor().matmul(&k.as_tensor().t().unwrap()).unwrap(),
                0.25,
                window,
            )
            .unwrap()
            .matmul(v.as_tensor())
            .unwrap();
            let g_ref = (&reference * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (precision, tolerance) in &precisions {
                let _scope = crate::MatmulPrecisionScope::enter(*precision).unwrap();
                let ours =
                    causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.25, window)
                        .unwrap();
                let label = format!("{precision:?} window {window:?}");
                assert!(
                    max_rel_diff(&ours, &reference) < *tolerance,
                    "{label}: output"
                );
                let g_ours = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
                for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                    let diff = max_rel_diff(
                        g_ours.get(x.as_tensor()).unwrap(),
                        g_ref.get(x.as_tensor()).unwrap(),
                    );
                    assert!(diff < *tolerance, "{label}: d{name} off by {diff}");
                }
            }
        }
    }
}
