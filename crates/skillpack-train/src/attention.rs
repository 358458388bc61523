//! RoPE and causal attention of grouped query heads as one op, `softmax(scale · q kᵀ + mask) ·
//! v` on rotated q and k, with a hand-written backward. It reads the projections as the linears
//! lay them out and writes its output the same way: candle's chain (reshape, transpose, copy,
//! rope, matmul, softmax, matmul, transpose back) keeps a buffer per link and gives each a
//! zero-filled gradient that is then added to; here the rotated heads and the attention
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
    // Sequential: the heads already run in parallel.
    crate::ops::strided_product(
        &mut out,
        (m, n, k),
        (a, lhs_rs as isize, lhs_cs as isize),
        (b, rhs_rs as isize, rhs_cs as isize),
        false,
    );
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

/// The attention core on contiguous head groups: `softmax(scale · q kᵀ + mask) · v` per group
/// and its backward; [`RotaryAttention`] moves heads in and out around it.
struct CausalAttention {
    scale: f32,
    /// Keys visible to a query, itself included (`usize::MAX`: all earlier ones).
    window: usize,
    /// Products in bf16 on AMX.
    bf16: bool,
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
        _ => candle_core::bail!("rotary-attention: inputs must be contiguous f32"),
    }
}

impl CausalAttention {
    /// Masked softmax of `scale · s` in place, row `r` being query position `r mod t`.
    fn softmax_rows(&self, s: &mut [f32], t: usize) {
        for (row, x) in s.chunks_mut(t).enumerate() {
            let i = row % t;
            let first = (i + 1).saturating_sub(self.window);
            let max = x[first..=i]
                .iter()
                .fold(f32::NEG_INFINITY, |m, v| m.max(*v))
                * self.scale;
            let sum = crate::ops::exp_shifted_in_place(&mut x[first..=i], self.scale, max);
            let inv = (1.0 / sum) as f32;
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

impl CausalAttention {
    /// Probabilities `[groups, rows, t]` and output `[groups, rows, hd]` of every group, for
    /// contiguous `q [groups, rows, hd]`, `k`, `v` `[groups, t, hd]`.
    fn forward_all(&self, q: &[f32], k: &[f32], v: &[f32], d: &Dims) -> (Vec<f32>, Vec<f32>) {
        let (qn, kn) = (d.rows * d.hd, d.t * d.hd);
        let groups: Vec<(Vec<f32>, Vec<f32>)> = (0..d.groups)
            .into_par_iter()
            .map(|g| {
                self.forward_group(
                    &q[g * qn..(g + 1) * qn],
                    &k[g * kn..(g + 1) * kn],
                    &v[g * kn..(g + 1) * kn],
                    d,
                )
            })
            .collect();
        let mut probs = Vec::with_capacity(d.groups * d.rows * d.t);
        let mut out = Vec::with_capacity(d.groups * qn);
        for (p, o) in groups {
            probs.extend_from_slice(&p);
            out.extend_from_slice(&o);
        }
        (probs, out)
    }

    /// `∂q`, `∂k`, `∂v` (laid out like `q`, `k`, `v`) for the output gradient `dout`, from the
    /// forward pass's probabilities when kept (else recomputed per group).
    fn backward_all(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        probs: Option<&[f32]>,
        d: &Dims,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (rows, t, hd) = (d.rows, d.t, d.hd);
        let (qn, kn, pn) = (rows * hd, t * hd, rows * t);
        let per_group: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..d.groups)
            .into_par_iter()
            .map(|i| {
                let (qg, kg, vg) = (
                    &q[i * qn..(i + 1) * qn],
                    &k[i * kn..(i + 1) * kn],
                    &v[i * kn..(i + 1) * kn],
                );
                let dout = &dout[i * qn..(i + 1) * qn];
                let recomputed;
                let p = match probs {
                    Some(all) => &all[i * pn..(i + 1) * pn],
                    None => {
                        recomputed = self.forward_group(qg, kg, vg, d).0;
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
        for (a, b, c) in per_group {
            dq.extend_from_slice(&a);
            dk.extend_from_slice(&b);
            dv.extend_from_slice(&c);
        }
        (dq, dk, dv)
    }
}

/// `softmax(scale · q kᵀ + causal mask) · v` for `q [b, g, rep·t, hd]` (the `rep` query heads
/// sharing a kv head stacked along the sequence axis: row `r` is query position `r mod t`) and
/// `k`, `v` `[b, g, t, hd]`; with `window`, each query sees only the `window` most recent keys,
/// itself included. candle's differentiable composite: the path off the CPU (on the CPU,
/// [`rotary_attention`] runs the fused op).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    crate::ops::causal_softmax(&q.matmul(&k.t()?)?, scale, window)?.matmul(v)
}

/// How the projections of one attention call are laid out: `q` is `[batch · seq, heads ·
/// head_dim]`, `k` and `v` `[batch · seq, kv_heads · head_dim]` (row-major, as the linears
/// produce them); `heads` is a multiple of `kv_heads`.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Rotates one head vector by rotate-half RoPE with the position's `cos`, `sin` (`[d/2]`), or by
/// the opposite angle when `inverse` (the rotation's transpose: RoPE's backward).
pub(crate) fn rotate_row(x: &[f32], out: &mut [f32], cos: &[f32], sin: &[f32], inverse: bool) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        let s = if inverse { -sin[i] } else { sin[i] };
        out[i] = a * cos[i] - b * s;
        out[i + half] = b * cos[i] + a * s;
    }
}

/// Rope tables, `cos` and `sin` `[seq, head_dim / 2]`, as plain values.
struct RopeTables {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTables {
    fn at(&self, pos: usize, half: usize) -> (&[f32], &[f32]) {
        let range = pos * half..(pos + 1) * half;
        (&self.cos[range.clone()], &self.sin[range])
    }
}

/// Copies the head vector at position `pos` into `dst`, rotated by `rope` when given (by the
/// opposite angle when `inverse`).
fn copy_head(src: &[f32], dst: &mut [f32], pos: usize, rope: Option<&RopeTables>, inverse: bool) {
    match rope {
        Some(tables) => {
            let (cos, sin) = tables.at(pos, src.len() / 2);
            rotate_row(src, dst, cos, sin, inverse);
        }
        None => dst.copy_from_slice(src),
    }
}

/// Moves head vectors between the linears' layout `[b, t, n, hd]` (`[b · t, n · hd]` rows) and
/// the heads' `[b, n, t, hd]`: into heads when `to_heads`, rotated by `rope` when given; back
/// to rows otherwise, rotated back (the inverse rotation, RoPE's backward) when given.
fn relayout(
    src: &[f32],
    (b, t, n, hd): (usize, usize, usize, usize),
    rope: Option<&RopeTables>,
    to_heads: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; b * t * n * hd];
    out.par_chunks_mut(hd).enumerate().for_each(|(o, dst)| {
        let (bi, rest) = (o / (t * n), o % (t * n));
        let (pos, from) = if to_heads {
            let (head, pos) = (rest / t, rest % t);
            (pos, (bi * t + pos) * n + head)
        } else {
            let (pos, head) = (rest / n, rest % n);
            (pos, (bi * n + head) * t + pos)
        };
        copy_head(&src[from * hd..(from + 1) * hd], dst, pos, rope, !to_heads);
    });
    out
}

/// `[b · t, n · hd]` rows to heads `[b, n, t, hd]`, rotated by `rope` when given.
fn gather_heads(
    src: &[f32],
    dims: (usize, usize, usize, usize),
    rope: Option<&RopeTables>,
) -> Vec<f32> {
    relayout(src, dims, rope, true)
}

/// Heads `[b, n, t, hd]` back to `[b · t, n · hd]` rows, rotated back by `rope` when given.
fn scatter_heads(
    heads: &[f32],
    dims: (usize, usize, usize, usize),
    rope: Option<&RopeTables>,
) -> Vec<f32> {
    relayout(heads, dims, rope, false)
}

/// RoPE and grouped-query causal attention on the projections as the linears lay them out
/// ([`HeadLayout`]), output in the same layout for the output projection: the head split, the
/// rotation, the transposes and their backward passes happen inside one op, instead of a chain
/// of reshape / transpose / copy / rope nodes that each get a zero-filled gradient in candle's
/// backward pass.
struct RotaryAttention {
    core: CausalAttention,
    rope: RopeTables,
    layout: HeadLayout,
    /// Rotated `q`, `k` heads, `v` heads and the probabilities, kept for the backward pass.
    saved: Mutex<Option<[Vec<f32>; 4]>>,
}

impl RotaryAttention {
    fn dims(&self) -> Dims {
        let l = &self.layout;
        Dims {
            groups: l.batch * l.kv_heads,
            rows: l.heads / l.kv_heads * l.seq,
            t: l.seq,
            hd: l.head_dim,
        }
    }

    fn shape(&self, heads: usize) -> (usize, usize, usize, usize) {
        let l = &self.layout;
        (l.batch, l.seq, heads, l.head_dim)
    }

    /// Rotated `q` and `k` heads and `v` heads of the inputs.
    fn heads(&self, q: &[f32], k: &[f32], v: &[f32]) -> [Vec<f32>; 3] {
        let l = &self.layout;
        [
            gather_heads(q, self.shape(l.heads), Some(&self.rope)),
            gather_heads(k, self.shape(l.kv_heads), Some(&self.rope)),
            gather_heads(v, self.shape(l.kv_heads), None),
        ]
    }
}

impl CustomOp3 for RotaryAttention {
    fn name(&self) -> &'static str {
        "rotary-attention"
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
        let l = self.layout;
        let rows = l.batch * l.seq;
        let (q_width, kv_width) = (l.heads * l.head_dim, l.kv_heads * l.head_dim);
        if ql.shape().dims2()? != (rows, q_width)
            || kl.shape().dims2()? != (rows, kv_width)
            || vl.shape().dims2()? != (rows, kv_width)
        {
            candle_core::bail!(
                "rotary-attention: q {:?}, k {:?}, v {:?} do not fit {l:?}",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        let (q, k, v) = (f32_slice(qs, ql)?, f32_slice(ks, kl)?, f32_slice(vs, vl)?);
        let [qh, kh, vh] = self.heads(q, k, v);
        let (probs, out) = self.core.forward_all(&qh, &kh, &vh, &self.dims());
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some([qh, kh, vh, probs]);
        let out = scatter_heads(&out, self.shape(l.heads), None);
        Ok((CpuStorage::F32(out), Shape::from((rows, q_width))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let l = self.layout;
        let read =
            |x: &Tensor| -> Result<Vec<f32>> { x.contiguous()?.flatten_all()?.to_vec1::<f32>() };
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let [qh, kh, vh, probs] = match saved {
            Some(saved) => saved,
            None => {
                let [qh, kh, vh] = self.heads(&read(q)?, &read(k)?, &read(v)?);
                [qh, kh, vh, Vec::new()]
            }
        };
        let probs = (!probs.is_empty()).then_some(&probs[..]);
        let dout = {
            let grad = grad.contiguous()?;
            let (storage, layout) = grad.storage_and_layout();
            let candle_core::Storage::Cpu(gs) = &*storage else {
                candle_core::bail!("rotary-attention: the gradient is not on the CPU")
            };
            gather_heads(f32_slice(gs, layout)?, self.shape(l.heads), None)
        };
        let (dq, dk, dv) = self
            .core
            .backward_all(&qh, &kh, &vh, &dout, probs, &self.dims());
        let device = q.device();
        Ok((
            Some(Tensor::from_vec(
                scatter_heads(&dq, self.shape(l.heads), Some(&self.rope)),
                q.shape(),
                device,
            )?),
            Some(Tensor::from_vec(
                scatter_heads(&dk, self.shape(l.kv_heads), Some(&self.rope)),
                k.shape(),
                device,
            )?),
            Some(Tensor::from_vec(
                scatter_heads(&dv, self.shape(l.kv_heads), None),
                v.shape(),
                device,
            )?),
        ))
    }
}

/// Rotate-half RoPE (`cos`, `sin` `[seq, head_dim / 2]`) on `q` and `k`, then grouped-query
/// causal attention (with `window`, each query sees only the `window` most recent keys, itself
/// included), for projections laid out as in [`HeadLayout`]; the output is `[batch · seq,
/// heads · head_dim]`, ready for the output projection. Query head `h` reads kv head
/// `h / (heads / kv_heads)`. Differentiable in `q`, `k`, `v`: one op on the CPU in f32
/// ([`RotaryAttention`]), elsewhere the composite of reshapes, [`crate::ops::rope`] and
/// [`causal_attention`].
#[allow(clippy::too_many_arguments)]
pub fn rotary_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    layout: HeadLayout,
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    let HeadLayout {
        batch: b,
        seq: t,
        heads: nh,
        kv_heads: nkv,
        head_dim: hd,
    } = layout;
    if nkv == 0 || nh % nkv != 0 {
        candle_core::bail!("rotary-attention: {nh} query heads do not group over {nkv} kv heads");
    }
    let core = CausalAttention {
        scale: scale as f32,
        window: window.unwrap_or(usize::MAX),
        bf16: crate::ops::bf16_matmuls(),
    };
    if matches!(q.device(), Device::Cpu) && q.dtype() == DType::F32 {
        let table = |x: &Tensor| -> Result<Vec<f32>> {
            x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
        };
        let rope = RopeTables {
            cos: table(cos)?,
            sin: table(sin)?,
        };
        if rope.cos.len() < t * hd / 2 || rope.sin.len() < t * hd / 2 {
            candle_core::bail!("rotary-attention: rope tables shorter than {t} positions");
        }
        let op = RotaryAttention {
            core,
            rope,
            layout,
            saved: Mutex::new(None),
        };
        return q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op);
    }
    let heads = |y: &Tensor, n: usize| -> Result<Tensor> {
        y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
    };
    let q = crate::ops::rope(&heads(q, nh)?, cos, sin)?.reshape((b, nkv, nh / nkv * t, hd))?;
    let k = crate::ops::rope(&heads(k, nkv)?, cos, sin)?;
    let v = heads(v, nkv)?;
    causal_attention(&q, &k, &v, scale, window)?
        .reshape((b, nh, t, hd))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, nh * hd))
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

    /// f32 (tight), then bf16 on AMX (bf16 rounding) where present, with their tolerances.
    fn precisions() -> Vec<(crate::MatmulPrecision, f32)> {
        let mut precisions = vec![(crate::MatmulPrecision::F32, 1e-5)];
        if amx::available() {
            precisions.push((crate::MatmulPrecision::Bf16, 2e-2));
        }
        precisions
    }

    /// `ours` against `reference`, and the gradients of `sum(ours ⊙ w)` against `g_ref`'s for
    /// each named input, all within `tolerance` relative to the reference's largest value.
    fn assert_close(
        label: &str,
        (ours, reference): (&Tensor, &Tensor),
        w: &Tensor,
        g_ref: &candle_core::backprop::GradStore,
        inputs: &[(&str, &Var)],
        tolerance: f32,
    ) {
        assert!(max_rel_diff(ours, reference) < tolerance, "{label}: output");
        let g_ours = (ours * w).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in inputs {
            let diff = max_rel_diff(
                g_ours.get(x.as_tensor()).unwrap(),
                g_ref.get(x.as_tensor()).unwrap(),
            );
            assert!(diff < tolerance, "{label}: d{name} off by {diff}");
        }
    }

    /// The rotary attention op against candle's composite on the linears' layout (reshape,
    /// transpose, `rope_slow`, matmul, causal softmax, matmul, transpose back): output and the
    /// gradients of q, k, v, for grouped heads (6 query heads over 2 kv heads), with and without
    /// a window, in f32 (tight) and bf16 on AMX where present.
    #[test]
    fn rotary_attention_matches_the_composite() {
        let layout = HeadLayout {
            batch: 2,
            seq: 7,
            heads: 6,
            kv_heads: 2,
            head_dim: 8,
        };
        let (b, t, nh, nkv, hd) = (2, 7, 6, 2, 8);
        let q = Var::from_tensor(&randn(&[b * t, nh * hd], 5)).unwrap();
        let k = Var::from_tensor(&randn(&[b * t, nkv * hd], 6)).unwrap();
        let v = Var::from_tensor(&randn(&[b * t, nkv * hd], 7)).unwrap();
        let (cos, sin) = (randn(&[t, hd / 2], 8), randn(&[t, hd / 2], 9));
        let w = randn(&[b * t, nh * hd], 10);
        let heads = |y: &Tensor, n: usize| {
            y.reshape((b, t, n, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let precisions = precisions();
        for window in [None, Some(3)] {
            let qr = candle_nn::rotary_emb::rope_slow(&heads(q.as_tensor(), nh), &cos, &sin)
                .unwrap()
                .reshape((b, nkv, nh / nkv * t, hd))
                .unwrap();
            let kr =
                candle_nn::rotary_emb::rope_slow(&heads(k.as_tensor(), nkv), &cos, &sin).unwrap();
            let reference =
                crate::ops::causal_softmax(&qr.matmul(&kr.t().unwrap()).unwrap(), 0.3, window)
                    .unwrap()
                    .matmul(&heads(v.as_tensor(), nkv))
                    .unwrap()
                    .reshape((b, nh, t, hd))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .reshape((b * t, nh * hd))
                    .unwrap();
            let g_ref = (&reference * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (precision, tolerance) in &precisions {
                let _scope = crate::MatmulPrecisionScope::enter(*precision).unwrap();
                let ours = rotary_attention(
                    q.as_tensor(),
                    k.as_tensor(),
                    v.as_tensor(),
                    &cos,
                    &sin,
                    layout,
                    0.3,
                    window,
                )
                .unwrap();
                let label = format!("{precision:?} window {window:?}");
                let inputs = [("q", &q), ("k", &k), ("v", &v)];
                assert_close(&label, (&ours, &reference), &w, &g_ref, &inputs, *tolerance);
            }
        }
    }
}
