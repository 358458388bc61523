//! Synthetic skill packs (random adapters) for benchmarks and tests.

use std::path::Path;

use skillpack_convert::{
    write_lora_gguf, GgufInfo, GgufValue, LoraPair, Matrix, OutType, SeededNormal,
};

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

fn random_matrix(rng: &mut SeededNormal, rows: usize, cols: usize, std: f32) -> Matrix {
    Matrix {
        rows,
        cols,
        data: rng.samples(rows * cols, std as f64),
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
    let mut rng = SeededNormal::new(spec.seed);
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
            let mut b = random_matrix(&mut rng, out_dim, spec.rank, spec.b_std);
            for row in b.data.chunks_exact_mut(spec.rank) {
                for (j, x) in row.iter_mut().enumerate() {
                    *x *= spec.decay.powi(j as i32);
                }
            }
            pairs.push(LoraPair {
                name: name.clone(),
                a: random_matrix(&mut rng, spec.rank, in_dim, 1.0 / (in_dim as f32).sqrt()),
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
