//! Skill weights: parsing `--skills ner=0.7,re=0.3` and selecting the active skills.

use skillpack_pack::Manifest;

use crate::{Result, RunError};

/// Largest manual skill weight accepted (`--skills`, the server's `skills`).
pub const MAX_SKILL_WEIGHT: f32 = 4.0;

/// Parses `id=weight,id=weight` into one weight per skill of the pack (unnamed skills get 0).
pub fn parse_skill_weights(spec: &str, manifest: &Manifest) -> Result<Vec<f32>> {
    let mut weights = vec![0.0; manifest.skills.len()];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, w) = part
            .split_once('=')
            .ok_or_else(|| RunError::Invalid(format!("`{part}`: expected SKILL=WEIGHT")))?;
        let w: f32 = w
            .trim()
            .parse()
            .map_err(|_| RunError::Invalid(format!("`{part}`: weight `{w}` is not a number")))?;
        // As the server's `skills` field: each skill was trained to run at scale 1, so weights
        // are mixture weights; a negative one would subtract a skill.
        if !w.is_finite() || !(0.0..=MAX_SKILL_WEIGHT).contains(&w) {
            return Err(RunError::Invalid(format!(
                "`{part}`: weight must be within [0, {MAX_SKILL_WEIGHT}] ({w} given)"
            )));
        }
        let i = manifest
            .skills
            .iter()
            .position(|s| s.id == id.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = manifest.skills.iter().map(|s| s.id.as_str()).collect();
                RunError::Invalid(format!(
                    "unknown skill `{}` (pack has: {})",
                    id.trim(),
                    known.join(", ")
                ))
            })?;
        weights[i] = w;
    }
    Ok(weights)
}

/// The skills that will be applied: index and weight, strongest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Selection {
    pub active: Vec<(usize, f32)>,
}

impl Selection {
    /// A key for caches: the active skills with weights quantized to 1/1024.
    pub fn key(&self) -> Vec<(usize, i32)> {
        let mut k: Vec<(usize, i32)> = self
            .active
            .iter()
            .map(|(i, w)| (*i, (w * 1024.0).round() as i32))
            .collect();
        k.sort();
        k
    }
}

/// Keeps the `top_k` largest weights (0 = all; weights tied with the k-th stay too) that are at
/// least `min_weight` in magnitude.
pub fn select_active(weights: &[f32], top_k: usize, min_weight: f32) -> Selection {
    let mut active: Vec<(usize, f32)> = weights
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, w)| *w != 0.0 && w.abs() >= min_weight)
        .collect();
    active.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
    if top_k > 0 && active.len() > top_k {
        // Weights tied with the k-th stay: which of equal skills to drop would be arbitrary (a
        // router's uniform mixture keeps every skill).
        let kth = active[top_k - 1].1.abs();
        let keep = active.iter().take_while(|(_, w)| w.abs() >= kth).count();
        active.truncate(keep);
    }
    Selection { active }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_applies_top_k_and_min_weight() {
        let s = select_active(&[0.1, 0.5, 0.02, 0.3, 0.0], 2, 0.05);
        assert_eq!(s.active, vec![(1, 0.5), (3, 0.3)]);
        let s = select_active(&[0.1, 0.5, 0.02, 0.3], 0, 0.05);
        assert_eq!(s.active.len(), 3);
        assert_eq!(select_active(&[0.0, 0.0], 3, 0.0).active, vec![]);
        // Ties with the k-th weight are kept, not cut at an arbitrary index.
        let s = select_active(&[0.25, 0.25, 0.25, 0.25], 3, 0.05);
        assert_eq!(s.active.len(), 4);
        let s = select_active(&[0.4, 0.2, 0.2, 0.1, 0.1], 2, 0.0);
        assert_eq!(s.active, vec![(0, 0.4), (1, 0.2), (2, 0.2)]);
    }
}
