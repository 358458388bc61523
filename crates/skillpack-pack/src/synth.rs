//! Synthetic skill packs (random adapters) for benchmarks and tests.

use std::path::Path;

use skillpack_convert::{write_lora_gguf, GgufInfo, GgufValue, LoraPair, Matrix, OutType};

use crate::{Pack, PackError, Result};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub skills: usize,
    pub rank: usize,
    /// llama.cpp tensor stems to adapt, e.g. `attn_q`, `ffn_down`.
    pub targets: Vec<String>,
    /// Standard deviation of lora_b entries (lora_a is N(0, 1/in)).
    pub b_std: f32,
    /// Rank component j of each module is scaled by `decay^j` (1 = flat spectrum; trained
    /// adapters have decaying ones).
    pub decay: f32,
    pub seed: u64,
}

/// All seven linear projections of a llama block.
pub const ALL_LINEAR: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// SplitMix64 + Box–Muller: deterministic normal samples without extra dependencies.
struct Normal(u64);

impl Normal {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self, std: f32) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
    }

    fn matrix(&mut self, rows: usize, cols: usize, std: f32) -> Matrix {
        Matrix {
            rows,
            cols,
            data: (0..rows * cols).map(|_| self.sample(std)).collect(),
        }
    }
}

/// Creates a pack of `spec.skills` random adapters for `base` in `dir`.
pub fn synth_pack(dir: &Path, base: &GgufInfo, spec: &SynthSpec) -> Result<Pack> {
    let arch = base
        .architecture()
        .ok_or_else(|| PackError::Invalid("base has no general.architecture".into()))?
        .to_string();
    let mut pack = Pack::create(
        dir,
        "synthetic",
        &format!(
            "{} random rank-{} skills on {} (seed {})",
            spec.skills,
            spec.rank,
            spec.targets.join(","),
            spec.seed
        ),
        base,
    )?;
    let mut rng = Normal(spec.seed);
    for s in 0..spec.skills {
        let mut pairs = Vec::new();
        for (name, t) in &base.tensors {
            let Some(stem) = name
                .strip_prefix("blk.")
                .and_then(|r| r.split_once('.'))
                .map(|(_, s)| s)
            else {
                continue;
            };
            let Some(target) = stem.strip_suffix(".weight") else {
                continue;
            };
            if !spec.targets.iter().any(|x| x == target) {
                continue;
            }
            let [out_dim, in_dim] = t.dims[..] else {
                continue;
            };
            let mut b = rng.matrix(out_dim, spec.rank, spec.b_std);
            for row in b.data.chunks_exact_mut(spec.rank) {
                for (j, x) in row.iter_mut().enumerate() {
                    *x *= spec.decay.powi(j as i32);
                }
            }
            pairs.push(LoraPair {
                name: name.clone(),
                a: rng.matrix(spec.rank, in_dim, 1.0 / (in_dim as f32).sqrt()),
                b,
            });
        }
        if pairs.is_empty() {
            return Err(PackError::Invalid(format!(
                "no base tensors match targets {:?}",
                spec.targets
            )));
        }
        let id = format!("s{s:02}");
        let image = write_lora_gguf(
            &arch,
            spec.rank as f32,
            &pairs,
            OutType::F32,
            &[("general.name".into(), GgufValue::String(id.clone()))],
        )?;
        pack.add_skill(
            &id,
            &format!("synthetic skill {s}"),
            "random adapter",
            &image.bytes,
            base,
        )?;
    }
    Ok(pack)
}
