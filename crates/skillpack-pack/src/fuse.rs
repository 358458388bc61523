//! Fusing weighted skills into one adapter: per module, the skills' factors are concatenated
//! (A stacked, each B scaled by its weight and its own alpha/rank), optionally compressed by a
//! truncated SVD of the fused delta computed from QR factors of the stacked matrices and the
//! SVD of the small core, never the full out×in matrix.

use std::collections::BTreeMap;
use std::path::Path;

use nalgebra::DMatrix;
use skillpack_convert::{LoraFile, LoraPair, Matrix};

use crate::{PackError, Result};

/// A skill's factors with its per-module scale folded into B: `delta = B · A` at weight 1.
#[derive(Debug, Clone)]
pub struct SkillFactors {
    pub architecture: String,
    /// `(A [r, in], B [out, r])` by base tensor name.
    pub pairs: BTreeMap<String, (Matrix, Matrix)>,
}

impl SkillFactors {
    /// Reads a GGUF LoRA adapter.
    pub fn load(path: &Path) -> Result<Self> {
        let file = LoraFile::read(path)?;
        let pairs = file
            .pairs
            .values()
            .map(|p| {
                let s = file.pair_scale(p);
                let mut b = p.b.clone();
                if s != 1.0 {
                    b.data.iter_mut().for_each(|x| *x *= s);
                }
                (p.name.clone(), (p.a.clone(), b))
            })
            .collect();
        Ok(SkillFactors {
            architecture: file.architecture,
            pairs,
        })
    }

    /// Total rank over modules (a measure of the adapter's cost).
    pub fn total_rank(&self) -> usize {
        self.pairs.values().map(|(a, _)| a.rows).sum()
    }
}

/// How to fuse.
#[derive(Debug, Clone, Copy)]
pub struct FuseOptions {
    /// Keep the smallest rank whose singular values hold at least this fraction of the fused
    /// delta's squared Frobenius norm (e.g. 0.995); `None` = no compression (exact).
    pub energy: Option<f64>,
}

/// A fused adapter (alpha 0: apply at scale 1).
#[derive(Debug, Clone)]
pub struct Fused {
    pub architecture: String,
    pub pairs: Vec<LoraPair>,
    /// Sum of ranks before and after compression.
    pub rank_before: usize,
    pub rank_after: usize,
    /// Smallest fraction of energy kept over all modules (1.0 without compression).
    pub min_energy_kept: f64,
}

fn to_dmatrix(m: &Matrix) -> DMatrix<f64> {
    DMatrix::from_row_iterator(m.rows, m.cols, m.data.iter().map(|&x| x as f64))
}

fn from_dmatrix(m: &DMatrix<f64>) -> Matrix {
    let mut data = Vec::with_capacity(m.nrows() * m.ncols());
    for r in 0..m.nrows() {
        for c in 0..m.ncols() {
            data.push(m[(r, c)] as f32);
        }
    }
    Matrix {
        rows: m.nrows(),
        cols: m.ncols(),
        data,
    }
}

/// Truncated SVD of `B·A` from its factors: returns `(A' [k, in], B' [out, k], energy kept)`.
fn compress(a: &Matrix, b: &Matrix, energy: f64) -> (Matrix, Matrix, f64) {
    let a = to_dmatrix(a); // R × in
    let b = to_dmatrix(b); // out × R
    let (out_dim, in_dim) = (b.nrows(), a.ncols());
    let qr_b = b.qr();
    let qr_a = a.transpose().qr();
    let (q_b, r_b) = (qr_b.q(), qr_b.r()); // out×m, m×R
    let (q_a, r_a) = (qr_a.q(), qr_a.r()); // in×n, n×R
    let core = &r_b * r_a.transpose(); // m × n
    let svd = core.svd(true, true);
    let (u, v_t) = (svd.u.expect("requested"), svd.v_t.expect("requested"));
    // nalgebra does not promise sorted singular values: order them.
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
    let total: f64 = svd.singular_values.iter().map(|s| s * s).sum();
    let mut kept = 0.0;
    let mut k = 0;
    for &i in &order {
        if total > 0.0 && kept / total >= energy {
            break;
        }
        kept += svd.singular_values[i] * svd.singular_values[i];
        k += 1;
    }
    let k = k.max(1);
    let mut new_b = DMatrix::<f64>::zeros(out_dim, k);
    let mut new_a = DMatrix::<f64>::zeros(k, in_dim);
    for (col, &i) in order.iter().take(k).enumerate() {
        let s = svd.singular_values[i];
        new_b.set_column(col, &(&q_b * u.column(i) * s));
        new_a.set_row(col, &(v_t.row(i) * q_a.transpose()));
    }
    let fraction = if total > 0.0 { kept / total } else { 1.0 };
    (from_dmatrix(&new_a), from_dmatrix(&new_b), fraction)
}

/// Fuses `skills` at their weights into one adapter. Skills with weight 0 are skipped.
pub fn fuse(skills: &[(&SkillFactors, f32)], options: FuseOptions) -> Result<Fused> {
    let active: Vec<&(&SkillFactors, f32)> = skills.iter().filter(|(_, w)| *w != 0.0).collect();
    let architecture = active
        .first()
        .map(|(s, _)| s.architecture.clone())
        .ok_or_else(|| PackError::Invalid("nothing to fuse: every weight is zero".into()))?;
    if let Some((s, _)) = active.iter().find(|(s, _)| s.architecture != architecture) {
        return Err(PackError::Invalid(format!(
            "cannot fuse skills of architectures `{architecture}` and `{}`",
            s.architecture
        )));
    }
    let mut names: Vec<&String> = active.iter().flat_map(|(s, _)| s.pairs.keys()).collect();
    names.sort();
    names.dedup();
    let mut pairs = Vec::with_capacity(names.len());
    let (mut rank_before, mut rank_after, mut min_energy) = (0, 0, 1.0f64);
    for name in names {
        let parts: Vec<(&Matrix, &Matrix, f32)> = active
            .iter()
            .filter_map(|(s, w)| s.pairs.get(name).map(|(a, b)| (a, b, *w)))
            .collect();
        let (in_dim, out_dim) = (parts[0].0.cols, parts[0].1.rows);
        if let Some((a, b, _)) = parts
            .iter()
            .find(|(a, b, _)| a.cols != in_dim || b.rows != out_dim)
        {
            return Err(PackError::Invalid(format!(
                "`{name}`: skills disagree on its shape ({out_dim}x{in_dim} vs {}x{})",
                b.rows, a.cols
            )));
        }
        let r: usize = parts.iter().map(|(a, _, _)| a.rows).sum();
        // A stacked by rows; B concatenated by columns, each skill's block times its weight.
        let mut a = Matrix {
            rows: r,
            cols: in_dim,
            data: Vec::with_capacity(r * in_dim),
        };
        let mut b = Matrix {
            rows: out_dim,
            cols: r,
            data: vec![0.0; out_dim * r],
        };
        let mut offset = 0;
        for (pa, pb, w) in &parts {
            a.data.extend_from_slice(&pa.data);
            for row in 0..out_dim {
                for c in 0..pb.cols {
                    b.data[row * r + offset + c] = pb.data[row * pb.cols + c] * w;
                }
            }
            offset += pa.rows;
        }
        rank_before += r;
        let (a, b) = match options.energy {
            Some(energy) => {
                let (a, b, kept) = compress(&a, &b, energy);
                min_energy = min_energy.min(kept);
                (a, b)
            }
            None => (a, b),
        };
        rank_after += a.rows;
        pairs.push(LoraPair {
            name: name.clone(),
            a,
            b,
        });
    }
    Ok(Fused {
        architecture,
        pairs,
        rank_before,
        rank_after,
        min_energy_kept: min_energy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_matrix(rows: usize, cols: usize, seed: &mut u64) -> Matrix {
        let data = (0..rows * cols)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
            })
            .collect();
        Matrix { rows, cols, data }
    }

    fn dense(a: &Matrix, b: &Matrix) -> DMatrix<f64> {
        to_dmatrix(b) * to_dmatrix(a)
    }

    fn skill(r: usize, seed: &mut u64) -> SkillFactors {
        let mut pairs = BTreeMap::new();
        pairs.insert(
            "blk.0.attn_q.weight".to_string(),
            (rand_matrix(r, 24, seed), rand_matrix(16, r, seed)),
        );
        SkillFactors {
            architecture: "llama".into(),
            pairs,
        }
    }

    #[test]
    fn fused_delta_is_the_weighted_sum_of_deltas() {
        let mut seed = 7;
        let (s1, s2) = (skill(4, &mut seed), skill(3, &mut seed));
        let fused = fuse(&[(&s1, 0.7), (&s2, 0.3)], FuseOptions { energy: None }).unwrap();
        let p = &fused.pairs[0];
        assert_eq!((p.a.rows, fused.rank_before), (7, 7));
        let (a1, b1) = &s1.pairs["blk.0.attn_q.weight"];
        let (a2, b2) = &s2.pairs["blk.0.attn_q.weight"];
        let expected = dense(a1, b1) * 0.7 + dense(a2, b2) * 0.3;
        assert!((dense(&p.a, &p.b) - expected).abs().max() < 1e-5);
    }

    #[test]
    fn compression_keeps_the_requested_energy_and_drops_redundant_rank() {
        let mut seed = 11;
        let s1 = skill(4, &mut seed);
        // The same skill twice: the fused delta has rank 4, not 8.
        let fused = fuse(
            &[(&s1, 0.5), (&s1, 0.5)],
            FuseOptions {
                energy: Some(0.999999),
            },
        )
        .unwrap();
        assert_eq!(fused.rank_before, 8);
        assert_eq!(fused.rank_after, 4);
        let (a1, b1) = &s1.pairs["blk.0.attn_q.weight"];
        let p = &fused.pairs[0];
        assert!((dense(&p.a, &p.b) - dense(a1, b1)).abs().max() < 1e-4);
        // A looser target keeps fewer ranks with at least that energy.
        let loose = fuse(&[(&s1, 1.0)], FuseOptions { energy: Some(0.5) }).unwrap();
        assert!(loose.rank_after < 4 && loose.min_energy_kept >= 0.5);
        let full = dense(a1, b1);
        let p = &loose.pairs[0];
        let residual = (&full - dense(&p.a, &p.b)).norm_squared() / full.norm_squared();
        assert!((1.0 - residual - loose.min_energy_kept).abs() < 1e-6);
    }
}
