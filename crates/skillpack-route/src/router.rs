//! A router head and its files: `NAME.json` (config: feature spec, dims, skills, gain,
//! temperature, how it was trained) and `NAME.safetensors` (`feature_mean`, `feature_std`,
//! `weight [outputs, dim]`, `bias [outputs]`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::{FeatureKind, Result, RouteError};

/// A router's settings and provenance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterConfig {
    pub name: String,
    /// `linear` (a fitted or end-to-end trained head) or `prototype` (cosine similarity to
    /// per-skill mean features).
    pub kind: String,
    /// `supervised`, `end-to-end` or `prototype`.
    pub method: String,
    /// The task it was trained for (empty = general).
    #[serde(default)]
    pub task: String,
    pub features: FeatureKind,
    /// Feature width (the base model's embedding width).
    pub dim: usize,
    /// Skill ids, in output order.
    pub skills: Vec<String>,
    /// A last output for "no skill" (its probability mass is dropped).
    pub none_entry: bool,
    /// Multiplies the softmax weights (each skill was trained at scale 1).
    pub gain: f32,
    /// Softmax temperature.
    pub temperature: f32,
    /// How the scores become weights: softmax (default), sparsemax or top-1 above a threshold.
    #[serde(default, skip_serializing_if = "Commit::is_softmax")]
    pub commit: Commit,
    /// L2-normalize standardized features before the head (prototype routers).
    #[serde(default)]
    pub normalize_input: bool,
    /// Fingerprint of the base model's tensor table (see `GgufInfo::fingerprint`).
    pub base_fingerprint: String,
    /// How it was trained: data, steps, seed, final loss.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// How a router's scores (logits / temperature) become weights. Softmax spreads some weight over
/// every skill; sparsemax and top-1 commit to the chosen skill, so it is not diluted by the rest;
/// blend commits when the router is sure and mixes every skill equally when it is not.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Commit {
    /// Softmax: every output gets some weight.
    #[default]
    Softmax,
    /// Sparsemax (Martins & Astudillo, 2016): the Euclidean projection of the scores onto the
    /// simplex; outputs far below the top get exactly zero.
    Sparsemax,
    /// The top output alone at weight 1 when its softmax probability is at least `threshold`;
    /// the softmax otherwise.
    Top1 { threshold: f32 },
    /// Sparsemax when the softmax's top probability is at least `threshold`; otherwise every
    /// skill at the same weight (1 / skills; "no skill" gets none). A prompt unlike any skill's
    /// records (an unseen task) then gets the uniform mixture, which on the medical pack's
    /// unseen tasks beat every single routing.
    Blend { threshold: f32 },
}

impl Commit {
    fn is_softmax(&self) -> bool {
        *self == Commit::Softmax
    }

    /// Parses `softmax`, `sparsemax`, `top1:THRESHOLD` (e.g. `top1:0.5`) or `blend:THRESHOLD`.
    pub fn parse(spec: &str) -> std::result::Result<Self, String> {
        let threshold = |t: &str| t.parse::<f32>().ok().filter(|t| (0.0..=1.0).contains(t));
        let parsed = match spec {
            "softmax" => Some(Commit::Softmax),
            "sparsemax" => Some(Commit::Sparsemax),
            s => match s.split_once(':') {
                Some(("top1", t)) => threshold(t).map(|threshold| Commit::Top1 { threshold }),
                Some(("blend", t)) => threshold(t).map(|threshold| Commit::Blend { threshold }),
                _ => None,
            },
        };
        parsed.ok_or_else(|| {
            format!(
                "unknown commit mode `{spec}` (softmax, sparsemax, top1:T or blend:T with T in [0, 1])"
            )
        })
    }

    /// The threshold of a thresholded mode.
    fn threshold(&self) -> Option<f32> {
        match *self {
            Commit::Top1 { threshold } | Commit::Blend { threshold } => Some(threshold),
            Commit::Softmax | Commit::Sparsemax => None,
        }
    }

    /// Short name for tables: `softmax`, `sparsemax`, `top1:0.5`.
    pub fn label(&self) -> String {
        match self {
            Commit::Softmax => "softmax".into(),
            Commit::Sparsemax => "sparsemax".into(),
            Commit::Top1 { threshold } => format!("top1:{threshold}"),
            Commit::Blend { threshold } => format!("blend:{threshold}"),
        }
    }

    /// The weights of `logits` at `temperature` under this mode (they sum to 1). With
    /// `none_entry`, the last output is "no skill".
    pub fn weights(&self, logits: &[f32], temperature: f32, none_entry: bool) -> Vec<f32> {
        match *self {
            Commit::Softmax => softmax(logits, temperature),
            Commit::Sparsemax => {
                let z: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
                sparsemax(&z)
            }
            Commit::Top1 { threshold } => {
                let p = softmax(logits, temperature);
                let top = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
                if p[top] >= threshold {
                    (0..p.len()).map(|i| (i == top) as u8 as f32).collect()
                } else {
                    p
                }
            }
            Commit::Blend { threshold } => {
                let p = softmax(logits, temperature);
                if p.iter().any(|v| !v.is_finite()) {
                    return p;
                }
                if p.iter().copied().fold(0f32, f32::max) >= threshold {
                    Commit::Sparsemax.weights(logits, temperature, none_entry)
                } else {
                    let skills = p.len() - none_entry as usize;
                    (0..p.len())
                        .map(|i| if i < skills { 1.0 / skills as f32 } else { 0.0 })
                        .collect()
                }
            }
        }
    }
}

/// Sparsemax of `z`: `max(z_i - tau, 0)` with `tau` chosen so the result sums to 1.
pub fn sparsemax(z: &[f32]) -> Vec<f32> {
    if z.iter().any(|v| !v.is_finite()) {
        return vec![f32::NAN; z.len()];
    }
    let mut sorted = z.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // The support is the largest k with 1 + k z_(k) > sum of the top k.
    let (mut cumulative, mut support_sum, mut k) = (0f32, 0f32, 0usize);
    for (i, v) in sorted.iter().enumerate() {
        cumulative += v;
        if 1.0 + (i + 1) as f32 * v > cumulative {
            k = i + 1;
            support_sum = cumulative;
        }
    }
    let tau = (support_sum - 1.0) / k as f32;
    z.iter().map(|v| (v - tau).max(0.0)).collect()
}

/// A router head with its feature standardization.
#[derive(Debug, Clone)]
pub struct Router {
    pub config: RouterConfig,
    pub feature_mean: Vec<f32>,
    pub feature_std: Vec<f32>,
    /// `[outputs, dim]`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

fn file_error(path: &Path, message: impl Into<String>) -> RouteError {
    RouteError::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl Router {
    /// Number of outputs (skills, plus one for "no skill").
    pub fn outputs(&self) -> usize {
        self.config.skills.len() + self.config.none_entry as usize
    }

    /// Checks that every array has the size the config implies.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (d, k) = (self.config.dim, self.outputs());
        if d == 0 || self.config.skills.is_empty() {
            return Err("router has no features or no skills".into());
        }
        let Some(kd) = k.checked_mul(d) else {
            return Err(format!("{k} outputs × {d} features overflow"));
        };
        for (name, len, want) in [
            ("feature_mean", self.feature_mean.len(), d),
            ("feature_std", self.feature_std.len(), d),
            ("weight", self.weight.len(), kd),
            ("bias", self.bias.len(), k),
        ] {
            if len != want {
                return Err(format!("tensor `{name}` has {len} values, expected {want}"));
            }
        }
        if !(self.config.temperature > 0.0 && self.config.temperature.is_finite()) {
            return Err(format!(
                "temperature {} must be > 0",
                self.config.temperature
            ));
        }
        if let Some(threshold) = self.config.commit.threshold() {
            if !(0.0..=1.0).contains(&threshold) {
                return Err(format!("commit threshold {threshold} must be in [0, 1]"));
            }
        }
        if !self.config.gain.is_finite() || self.config.gain < 0.0 {
            return Err(format!("gain {} must be finite and ≥ 0", self.config.gain));
        }
        if self
            .weight
            .iter()
            .chain(&self.bias)
            .chain(&self.feature_mean)
            .chain(&self.feature_std)
            .any(|v| !v.is_finite())
        {
            return Err("router tensors contain NaN or infinity".into());
        }
        Ok(())
    }

    /// Standardized (and, for prototype routers, L2-normalized) features.
    pub fn standardize(&self, features: &[f32]) -> Result<Vec<f32>> {
        if features.len() != self.config.dim {
            return Err(RouteError::Invalid(format!(
                "router `{}` expects {} features, got {}",
                self.config.name,
                self.config.dim,
                features.len()
            )));
        }
        let mut z: Vec<f32> = features
            .iter()
            .zip(&self.feature_mean)
            .zip(&self.feature_std)
            .map(|((x, m), s)| (x - m) / s.max(1e-6))
            .collect();
        if self.config.normalize_input {
            let norm = z.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            z.iter_mut().for_each(|v| *v /= norm);
        }
        Ok(z)
    }

    /// Head outputs before the softmax.
    pub fn logits(&self, features: &[f32]) -> Result<Vec<f32>> {
        let z = self.standardize(features)?;
        let d = self.config.dim;
        Ok((0..self.outputs())
            .map(|k| {
                let row = &self.weight[k * d..(k + 1) * d];
                row.iter().zip(&z).map(|(w, x)| w * x).sum::<f32>() + self.bias[k]
            })
            .collect())
    }

    /// The outputs' weights at `temperature` (default: the router's), by the router's commit
    /// mode (softmax unless set).
    pub fn probabilities(&self, features: &[f32], temperature: Option<f32>) -> Result<Vec<f32>> {
        let t = temperature.unwrap_or(self.config.temperature);
        if !(t > 0.0 && t.is_finite()) {
            return Err(RouteError::Invalid(format!("temperature {t} must be > 0")));
        }
        let p = self
            .config
            .commit
            .weights(&self.logits(features)?, t, self.config.none_entry);
        // Finite tensors can still overflow (huge weights, a tiny temperature): refuse rather
        // than hand NaN scales to llama.cpp.
        if p.iter().any(|v| !v.is_finite()) {
            return Err(RouteError::Invalid(format!(
                "router `{}` gives non-finite scores for this prompt (overflow at temperature {t})",
                self.config.name
            )));
        }
        Ok(p)
    }

    /// The router's choice for a prompt: its heaviest output under the commit mode (the first
    /// of equals) — a skill id, or `none` for the "no skill" output or a zero gain — with that
    /// output's weight.
    pub fn top_output(&self, features: &[f32], temperature: Option<f32>) -> Result<(&str, f32)> {
        let p = self.probabilities(features, temperature)?;
        let top = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
        Ok(match self.config.skills.get(top) {
            Some(skill) if self.config.gain > 0.0 => (skill.as_str(), p[top] * self.config.gain),
            _ => ("none", p[top]),
        })
    }

    /// Weight per skill id (the "no skill" mass dropped, times the gain).
    pub fn skill_weights(
        &self,
        features: &[f32],
        temperature: Option<f32>,
    ) -> Result<Vec<(String, f32)>> {
        let p = self.probabilities(features, temperature)?;
        Ok(self
            .config
            .skills
            .iter()
            .zip(&p)
            .map(|(s, w)| (s.clone(), w * self.config.gain))
            .collect())
    }

    /// The weights in the order of `pack_skills` (skills the router does not know get 0).
    pub fn weights_for(
        &self,
        features: &[f32],
        temperature: Option<f32>,
        pack_skills: &[String],
    ) -> Result<Vec<f32>> {
        let by_id: HashMap<String, f32> = self
            .skill_weights(features, temperature)?
            .into_iter()
            .collect();
        Ok(pack_skills
            .iter()
            .map(|s| by_id.get(s).copied().unwrap_or(0.0))
            .collect())
    }

    /// Writes `dir/NAME.json` and `dir/NAME.safetensors` (each atomically). Returns the
    /// weights file's name.
    pub fn save(&self, dir: &Path) -> Result<String> {
        self.validate().map_err(RouteError::Invalid)?;
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e.to_string()))?;
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (k, d) = (self.outputs(), self.config.dim);
        let arrays = [
            ("feature_mean", bytes(&self.feature_mean), vec![d]),
            ("feature_std", bytes(&self.feature_std), vec![d]),
            ("weight", bytes(&self.weight), vec![k, d]),
            ("bias", bytes(&self.bias), vec![k]),
        ];
        let views: Vec<(&str, TensorView<'_>)> = arrays
            .iter()
            .map(|(n, b, s)| {
                (
                    *n,
                    TensorView::new(Dtype::F32, s.clone(), b).expect("sizes match the shapes"),
                )
            })
            .collect();
        let st =
            safetensors::serialize(views, None).map_err(|e| RouteError::Invalid(e.to_string()))?;
        let name = &self.config.name;
        let weights_file = format!("{name}.safetensors");
        skillpack_convert::write_atomic(&dir.join(&weights_file), &st)?;
        let mut json = serde_json::to_vec_pretty(&self.config).expect("config serializes");
        json.push(b'\n');
        skillpack_convert::write_atomic(&dir.join(format!("{name}.json")), &json)?;
        Ok(weights_file)
    }

    /// Loads a router from its weights file (`NAME.safetensors`, with `NAME.json` beside it),
    /// validating every tensor.
    pub fn load(weights_path: &Path) -> Result<Self> {
        let json_path: PathBuf = weights_path.with_extension("json");
        let config =
            std::fs::read(&json_path).map_err(|e| file_error(&json_path, e.to_string()))?;
        let bytes =
            std::fs::read(weights_path).map_err(|e| file_error(weights_path, e.to_string()))?;
        Self::from_bytes(&config, &bytes, weights_path)
    }

    /// Parses a router from the bytes of its JSON config and safetensors weights; errors name
    /// `weights_path` (and the `.json` beside it).
    pub fn from_bytes(config: &[u8], bytes: &[u8], weights_path: &Path) -> Result<Self> {
        let json_path: PathBuf = weights_path.with_extension("json");
        let config: RouterConfig = serde_json::from_slice(config)
            .map_err(|e| file_error(&json_path, format!("not a router config: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| file_error(weights_path, format!("not a safetensors file: {e}")))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| file_error(weights_path, format!("missing tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 {
                return Err(file_error(
                    weights_path,
                    format!("tensor `{name}` is {:?}, expected F32", t.dtype()),
                ));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        };
        let router = Router {
            feature_mean: read("feature_mean")?,
            feature_std: read("feature_std")?,
            weight: read("weight")?,
            bias: read("bias")?,
            config,
        };
        router.validate().map_err(|m| file_error(weights_path, m))?;
        Ok(router)
    }

    /// Checks the router against a base model (width, tensor fingerprint) and a pack's skills.
    pub fn check(
        &self,
        n_embd: usize,
        fingerprint: &str,
        pack_skills: &[String],
    ) -> std::result::Result<(), String> {
        let width = self.config.features.width(n_embd);
        if self.config.dim != width {
            return Err(format!(
                "router `{}` takes {} features but the base model's width is {n_embd} ({} {} features)",
                self.config.name,
                self.config.dim,
                width,
                self.config.features.as_str()
            ));
        }
        if !self.config.base_fingerprint.is_empty() && self.config.base_fingerprint != fingerprint {
            return Err(format!(
                "router `{}` was trained on another base model (fingerprint {} ≠ {fingerprint})",
                self.config.name, self.config.base_fingerprint
            ));
        }
        if let Some(s) = self.config.skills.iter().find(|s| !pack_skills.contains(s)) {
            return Err(format!(
                "router `{}` routes to skill `{s}`, which the pack does not have",
                self.config.name
            ));
        }
        Ok(())
    }
}

/// Softmax of `logits / temperature`.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits
        .iter()
        .map(|l| l / temperature)
        .fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits
        .iter()
        .map(|l| (l / temperature - max).exp())
        .collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router {
            config: RouterConfig {
                name: "r".into(),
                kind: "linear".into(),
                method: "supervised".into(),
                task: String::new(),
                features: FeatureKind::MeanEmbedding,
                dim: 2,
                skills: vec!["a".into(), "b".into()],
                none_entry: true,
                gain: 2.0,
                temperature: 1.0,
                commit: Commit::Softmax,
                normalize_input: false,
                base_fingerprint: "fp".into(),
                training: serde_json::Value::Null,
            },
            feature_mean: vec![1.0, 0.0],
            feature_std: vec![1.0, 2.0],
            weight: vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            bias: vec![0.0, 0.0, 0.0],
        }
    }

    #[test]
    fn weights_by_hand_and_round_trip() {
        let r = router();
        // z = ((3-1)/1, (0-0)/2) = (2, 0): logits (2, 0, 0).
        let p = r.probabilities(&[3.0, 0.0], None).unwrap();
        let e2 = 2f32.exp();
        assert!((p[0] - e2 / (e2 + 2.0)).abs() < 1e-6);
        let w = r
            .weights_for(&[3.0, 0.0], None, &["b".into(), "c".into(), "a".into()])
            .unwrap();
        assert!((w[0] - 2.0 / (e2 + 2.0)).abs() < 1e-6 && w[1] == 0.0);
        assert!((w[2] - 2.0 * e2 / (e2 + 2.0)).abs() < 1e-6);
        let dir = tempfile::tempdir().unwrap();
        let file = r.save(dir.path()).unwrap();
        let back = Router::load(&dir.path().join(file)).unwrap();
        assert_eq!(back.weight, r.weight);
        assert_eq!(back.config, r.config);
        assert!(r.check(2, "fp", &["a".into(), "b".into()]).is_ok());
        assert!(r
            .check(3, "fp", &["a".into(), "b".into()])
            .unwrap_err()
            .contains("width is 3"));
        assert!(r
            .check(2, "x", &["a".into(), "b".into()])
            .unwrap_err()
            .contains("another base"));
        assert!(r
            .check(2, "fp", &["a".into()])
            .unwrap_err()
            .contains("skill `b`"));
        assert!(r
            .logits(&[1.0])
            .unwrap_err()
            .to_string()
            .contains("expects 2 features"));
    }

    #[test]
    fn committing_modes_by_hand() {
        // Sparsemax of (1.0, 0.5, -1.0): support {0, 1}, tau = (1.5 - 1) / 2 = 0.25.
        let w = sparsemax(&[1.0, 0.5, -1.0]);
        assert_eq!(w, vec![0.75, 0.25, 0.0]);
        // A clear winner takes everything: (2, 0, 0) -> tau = 1.
        assert_eq!(sparsemax(&[2.0, 0.0, 0.0]), vec![1.0, 0.0, 0.0]);
        // Ties share: (0.3, 0.3, 0.3) -> 1/3 each.
        for v in sparsemax(&[0.3, 0.3, 0.3]) {
            assert!((v - 1.0 / 3.0).abs() < 1e-6);
        }
        // Through the router: logits (2, 0, 0) at temperature 4 -> z (0.5, 0, 0): support all
        // three? 1 + 3 * 0 > 0.5, so tau = (0.5 - 1) / 3 = -1/6: (2/3, 1/6, 1/6).
        let mut r = router();
        r.config.commit = Commit::Sparsemax;
        let p = r.probabilities(&[3.0, 0.0], Some(4.0)).unwrap();
        for (got, want) in p.iter().zip([2.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        // Top-1 at 0.5: softmax (e^2, 1, 1)/(e^2 + 2) has 0.787 on the first output: one-hot,
        // times the gain (2) for skill a, nothing for b.
        r.config.commit = Commit::Top1 { threshold: 0.5 };
        let w = r
            .weights_for(&[3.0, 0.0], None, &["a".into(), "b".into()])
            .unwrap();
        assert_eq!(w, vec![2.0, 0.0]);
        // Below the threshold the softmax stays: at 0.9 the weights are softmax × gain.
        r.config.commit = Commit::Top1 { threshold: 0.9 };
        let e2 = 2f32.exp();
        let w = r.weights_for(&[3.0, 0.0], None, &["a".into()]).unwrap();
        assert!((w[0] - 2.0 * e2 / (e2 + 2.0)).abs() < 1e-6);
        // "No skill" on top commits to the base model: features (1, 0) standardize to (0, 0),
        // so the logits are the bias (0, 0, 3): none has 0.909 >= 0.5 and every skill gets 0.
        r.bias = vec![0.0, 0.0, 3.0];
        assert_eq!(
            r.weights_for(&[1.0, 0.0], None, &["a".into(), "b".into()])
                .unwrap(),
            vec![0.0, 0.0]
        );
        // The router's choice names the "no skill" output when it wins, whatever the mode.
        r.config.commit = Commit::Softmax;
        assert_eq!(r.top_output(&[1.0, 0.0], None).unwrap().0, "none");
        assert_eq!(
            Commit::parse("top1:0.6").unwrap(),
            Commit::Top1 { threshold: 0.6 }
        );
        assert_eq!(Commit::parse("sparsemax").unwrap(), Commit::Sparsemax);
        assert!(Commit::parse("top1:2").is_err() && Commit::parse("max").is_err());
        assert_eq!(
            Commit::parse("blend:0.9").unwrap(),
            Commit::Blend { threshold: 0.9 }
        );
        assert!(Commit::parse("blend:-1").is_err() && Commit::parse("blend").is_err());
        // Blend: sure -> sparsemax; unsure -> every skill alike, "no skill" none. Logits
        // (2, 0, 0) at temperature 1: softmax top e^2 / (e^2 + 2) = 0.787; sparsemax gives
        // (1, 0, 0) (tau = 1).
        let sure = Commit::Blend { threshold: 0.7 }.weights(&[2.0, 0.0, 0.0], 1.0, true);
        assert_eq!(sure, vec![1.0, 0.0, 0.0]);
        let unsure = Commit::Blend { threshold: 0.8 }.weights(&[2.0, 0.0, 0.0], 1.0, true);
        assert_eq!(unsure, vec![0.5, 0.5, 0.0]);
        let unsure = Commit::Blend { threshold: 0.8 }.weights(&[2.0, 0.0, 0.0], 1.0, false);
        assert_eq!(unsure, vec![1.0 / 3.0; 3]);
        // Through the router (outputs a, b, none; gain 2): bias (0, 0, 3) -> softmax top 0.909.
        r.config.commit = Commit::Blend { threshold: 0.95 };
        assert_eq!(
            r.weights_for(&[1.0, 0.0], None, &["a".into(), "b".into()])
                .unwrap(),
            vec![1.0, 1.0]
        );
        r.config.commit = Commit::Blend { threshold: 0.9 };
        assert_eq!(
            r.weights_for(&[1.0, 0.0], None, &["a".into(), "b".into()])
                .unwrap(),
            vec![0.0, 0.0]
        );
        // Saved and loaded with the mode; a config without the field reads as softmax.
        let dir = tempfile::tempdir().unwrap();
        let file = r.save(dir.path()).unwrap();
        assert_eq!(
            Router::load(&dir.path().join(&file)).unwrap().config.commit,
            r.config.commit
        );
    }

    #[test]
    fn a_damaged_file_is_refused_with_the_tensor_named() {
        let r = router();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(r.save(dir.path()).unwrap());
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file.with_extension("json")).unwrap())
                .unwrap();
        json["dim"] = 3.into();
        std::fs::write(file.with_extension("json"), json.to_string()).unwrap();
        let e = Router::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("feature_mean") && e.contains("expected 3"),
            "{e}"
        );
        // A commit threshold outside [0, 1] is refused with the field named.
        json["dim"] = 2.into();
        json["commit"] = serde_json::json!({"mode": "top1", "threshold": 2.0});
        std::fs::write(file.with_extension("json"), json.to_string()).unwrap();
        let e = Router::load(&file).unwrap_err().to_string();
        assert!(e.contains("commit threshold 2"), "{e}");
        std::fs::write(&file, b"junk").unwrap();
        assert!(Router::load(&file)
            .unwrap_err()
            .to_string()
            .contains("not a safetensors"));
    }
}
