//! Router training math that needs no model: names and labels, the rows a supervised fit holds
//! out, the supervised fit with its L2 penalty chosen on them, soft labels from per-skill
//! losses, temperature calibration, warm-start heads, and the choice among candidate routers
//! once each has a validation score. Measuring features, losses and scores through llama.cpp is
//! `skillpack_eval::stage2`'s part.

use std::fmt;

use crate::fit::{self, LinearFit, LinearHead};
use crate::router::softmax;
use crate::{FeatureKind, Result, RouteError, Router};

/// The label of the base-model candidate of end-to-end selection: the warm start at gain 0.
pub const NO_SKILL_CANDIDATE: &str = "no skill (base model)";

/// The L2 penalties a supervised fit tries when it can hold out whole request wordings.
pub const L2_GRID: [f32; 4] = [1e-3, 1e-2, 1e-1, 1.0];

/// The default name of a router: `METHOD[-TASK]`, plus a suffix naming features other than
/// mean-hidden (`-embedding`, `-segments`, `-lexical`).
pub fn default_router_name(method: &str, task: &str, features: FeatureKind) -> String {
    let mut name = method.to_string();
    if !task.is_empty() {
        name = format!("{name}-{task}");
    }
    match features {
        FeatureKind::MeanEmbedding => name.push_str("-embedding"),
        FeatureKind::SegmentEmbedding => name.push_str("-segments"),
        FeatureKind::SegmentLexical => name.push_str("-lexical"),
        FeatureKind::MeanHidden => {}
    }
    name
}

/// One-hot targets: row `i` is 1 at `labels[i]` and 0 elsewhere, over `classes` outputs.
pub fn one_hot(labels: &[usize], classes: usize) -> Vec<Vec<f32>> {
    labels
        .iter()
        .map(|&k| (0..classes).map(|j| (j == k) as u8 as f32).collect())
        .collect()
}

/// `(x − mean) / std` per dimension of every row (a standard deviation below 1e-6 counts as
/// 1e-6, so a router read from a file cannot divide by zero).
pub fn standardize_rows(features: &[Vec<f32>], mean: &[f32], std: &[f32]) -> Vec<Vec<f32>> {
    features
        .iter()
        .map(|f| {
            f.iter()
                .zip(mean)
                .zip(std)
                .map(|((x, m), s)| (x - m) / s.max(1e-6))
                .collect()
        })
        .collect()
}

/// The rows of a supervised fit held out to measure accuracy and choose the L2 penalty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOut {
    /// One flag per row: held out.
    pub rows: Vec<bool>,
    /// Held out by request wording (records rendered from a request bank), not 1 in 5.
    pub by_wording: bool,
}

impl HeldOut {
    /// Holds out by wording when any record says which request rendered it (`phrasing` =
    /// `BANK#k`): every request index ≡ 0 mod 4, so the accuracy is on wordings the head never
    /// saw. Without such records, every fifth row.
    pub fn from_phrasings(phrasings: &[&str]) -> Self {
        let unseen_wording = |phrasing: &str| {
            phrasing
                .rsplit_once('#')
                .and_then(|(_, k)| k.parse::<usize>().ok())
                .is_some_and(|k| k % 4 == 0)
        };
        let by_wording = phrasings.iter().any(|p| !p.is_empty());
        let rows = phrasings
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if by_wording {
                    unseen_wording(p)
                } else {
                    i % 5 == 0
                }
            })
            .collect();
        HeldOut { rows, by_wording }
    }

    /// Indices of the held-out rows.
    pub fn indices(&self) -> Vec<usize> {
        (0..self.rows.len()).filter(|&i| self.rows[i]).collect()
    }
}

/// A supervised head and how it was chosen.
#[derive(Debug, Clone)]
pub struct SupervisedFit {
    /// The head fitted on every row with the chosen penalty.
    pub head: LinearHead,
    /// Rows it was fitted on.
    pub examples: usize,
    /// The chosen L2 penalty.
    pub l2: f32,
    /// Accuracy on the held-out rows of the probe fitted without them, at the chosen penalty.
    pub held_out_accuracy: f32,
    /// How many rows were held out.
    pub held_out: usize,
    /// Held out by request wording (see [`HeldOut`]).
    pub held_out_by_wording: bool,
    /// Every penalty tried with its held-out accuracy.
    pub l2_grid: Vec<(f32, f32)>,
}

/// Fits a supervised linear head on standardized `inputs` against `targets` (one-hot or soft
/// rows): held-out accuracy first, one probe per penalty of [`L2_GRID`] when holding out by
/// wording (else the default penalty alone), then the head on every row with the penalty of the
/// best probe (ties go to the stronger penalty: the smoother head). `labels` are each row's
/// skill, against which the probes are scored.
pub fn fit_supervised(
    inputs: &[Vec<f32>],
    targets: &[Vec<f32>],
    labels: &[usize],
    held_out: &HeldOut,
) -> SupervisedFit {
    let (fit_inputs, fit_targets): (Vec<_>, Vec<_>) = inputs
        .iter()
        .zip(targets)
        .zip(&held_out.rows)
        .filter(|(_, held)| !**held)
        .map(|((z, t), _)| (z.clone(), t.clone()))
        .unzip();
    let held = held_out.indices();
    let grid: Vec<f32> = if held_out.by_wording {
        L2_GRID.to_vec()
    } else {
        vec![LinearFit::default().l2]
    };
    let mut tried = Vec::new();
    for &l2 in &grid {
        let options = LinearFit {
            l2,
            ..LinearFit::default()
        };
        let probe = fit::fit_linear(&fit_inputs, &fit_targets, &options);
        let correct = held
            .iter()
            .filter(|&&i| probe.predict(&inputs[i]) == labels[i])
            .count();
        tried.push((l2, correct as f32 / held.len().max(1) as f32));
    }
    let (l2, held_out_accuracy) =
        tried
            .iter()
            .copied()
            .fold((0f32, -1f32), |b, (l, a)| if a >= b.1 { (l, a) } else { b });
    let head = fit::fit_linear(
        inputs,
        targets,
        &LinearFit {
            l2,
            ..LinearFit::default()
        },
    );
    SupervisedFit {
        head,
        examples: inputs.len(),
        l2,
        held_out_accuracy,
        held_out: held.len(),
        held_out_by_wording: held_out.by_wording,
        l2_grid: tried,
    }
}

impl fmt::Display for SupervisedFit {
    /// One line: the fit's loss and accuracies, and the penalties it was chosen from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "supervised router: {} examples, loss {:.3}, training accuracy {:.1} %, held-out accuracy {:.1} % ({} held out{}), L2 {}",
            self.examples,
            self.head.loss,
            self.head.accuracy * 100.0,
            self.held_out_accuracy * 100.0,
            self.held_out,
            if self.held_out_by_wording { ", by request wording" } else { ", 1 in 5" },
            self.l2,
        )?;
        if self.l2_grid.len() > 1 {
            let tried: Vec<String> = self
                .l2_grid
                .iter()
                .map(|(l, a)| format!("{l}: {:.1} %", a * 100.0))
                .collect();
            write!(f, " chosen from {}", tried.join(", "))?;
        }
        Ok(())
    }
}

/// The rows that get soft labels: the first `per_class` rows of each class, in row order.
pub fn first_rows_per_class(labels: &[usize], per_class: usize) -> Vec<usize> {
    let mut seen = std::collections::HashMap::new();
    (0..labels.len())
        .filter(|&i| {
            let count = seen.entry(labels[i]).or_insert(0usize);
            *count += 1;
            *count <= per_class
        })
        .collect()
}

/// A soft label from each skill's loss on a record's answer: `q_k ∝ exp(−loss_k / τ)`.
pub fn soft_label(losses: &[f32], tau: f32) -> Vec<f32> {
    let logits: Vec<f32> = losses.iter().map(|l| -l).collect();
    softmax(&logits, tau)
}

/// The skill with the lowest loss (the first of equals; 0 when there is none).
pub fn lowest_loss(losses: &[f32]) -> usize {
    (0..losses.len())
        .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
        .unwrap_or(0)
}

/// Mean negative log-likelihood of each row's own label under `softmax(logits / temperature)`;
/// rows are `(label, logits)`.
pub fn label_nll(rows: &[(usize, Vec<f32>)], temperature: f32) -> f64 {
    let total: f64 = rows
        .iter()
        .map(|(k, l)| -(softmax(l, temperature)[*k].max(1e-12) as f64).ln())
        .sum();
    total / rows.len().max(1) as f64
}

/// Mean weight of each row's own label under `softmax(logits / temperature)`.
pub fn own_label_weight(rows: &[(usize, Vec<f32>)], temperature: f32) -> f64 {
    rows.iter()
        .map(|(k, l)| softmax(l, temperature)[*k] as f64)
        .sum::<f64>()
        / rows.len().max(1) as f64
}

/// A temperature chosen by [`calibrate_temperature`], with the fit before and after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TemperatureFit {
    /// The router's temperature before.
    pub temperature_before: f32,
    /// The chosen temperature.
    pub temperature: f32,
    /// [`label_nll`] at the temperature before.
    pub nll_before: f64,
    /// [`label_nll`] at the chosen temperature.
    pub nll: f64,
    /// [`own_label_weight`] at the temperature before.
    pub own_weight_before: f64,
    /// [`own_label_weight`] at the chosen temperature.
    pub own_weight: f64,
}

/// Temperature scaling: the temperature of least [`label_nll`] on `rows` among 0.05, 0.10, …,
/// 3.00 and `current` (the first of equals), so the result is never worse than `current`.
pub fn calibrate_temperature(rows: &[(usize, Vec<f32>)], current: f32) -> TemperatureFit {
    let mut grid: Vec<f32> = (1..=60).map(|i| i as f32 * 0.05).collect();
    grid.push(current);
    let best = grid
        .iter()
        .copied()
        .min_by(|a, b| label_nll(rows, *a).total_cmp(&label_nll(rows, *b)))
        .unwrap_or(current);
    TemperatureFit {
        temperature_before: current,
        temperature: best,
        nll_before: label_nll(rows, current),
        nll: label_nll(rows, best),
        own_weight_before: own_label_weight(rows, current),
        own_weight: own_label_weight(rows, best),
    }
}

/// Whether `warm` can start an end-to-end run on `features`: `Ok(false)` when it reads other
/// features and was not asked for by name (`explicit`), an error when it was, or when it is not
/// a linear head.
pub fn check_warm_start(warm: &Router, features: FeatureKind, explicit: bool) -> Result<bool> {
    let name = &warm.config.name;
    if warm.config.features != features {
        if explicit {
            return Err(RouteError::Invalid(format!(
                "--warm-start `{name}` reads {} features, this router {}",
                warm.config.features.as_str(),
                features.as_str()
            )));
        }
        return Ok(false);
    }
    if warm.config.kind != "linear" {
        return Err(RouteError::Invalid(format!(
            "--warm-start `{name}` is a {} router, not a linear head",
            warm.config.kind
        )));
    }
    Ok(true)
}

/// The warm start's head as `(weight [outputs, dim], bias)` in the order of `skills`, divided
/// by its temperature (training runs at temperature 1), with a "no skill" row (weights 0, bias
/// −4: nearly unused) when `none_entry`.
pub fn warm_start_head(
    warm: &Router,
    skills: &[String],
    none_entry: bool,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let d = warm.config.dim;
    let t = warm.config.temperature;
    let (mut weight, mut bias) = (Vec::new(), Vec::new());
    for s in skills {
        let k = warm
            .config
            .skills
            .iter()
            .position(|x| x == s)
            .ok_or_else(|| {
                RouteError::Invalid(format!(
                    "warm start `{}` has no output for skill `{s}`",
                    warm.config.name
                ))
            })?;
        weight.extend(warm.weight[k * d..(k + 1) * d].iter().map(|w| w / t));
        bias.push(warm.bias[k] / t);
    }
    if none_entry {
        weight.extend(std::iter::repeat_n(0.0, d));
        bias.push(-4.0);
    }
    Ok((weight, bias))
}

/// The candidates of end-to-end selection, labelled: the warm start as it is, the base model
/// ([`NO_SKILL_CANDIDATE`]: the warm start at gain 0, so a task on which every skill hurts
/// gets no skill), then each trained head `(step, router)` as `step N`.
pub fn selection_candidates(
    warm: Option<&Router>,
    trained: impl IntoIterator<Item = (usize, Router)>,
) -> Vec<(String, Router)> {
    let mut candidates = Vec::new();
    if let Some(w) = warm {
        candidates.push((format!("warm start `{}`", w.config.name), w.clone()));
        let mut none = w.clone();
        none.config.gain = 0.0;
        candidates.push((NO_SKILL_CANDIDATE.to_string(), none));
    }
    candidates.extend(
        trained
            .into_iter()
            .map(|(step, router)| (format!("step {step}"), router)),
    );
    candidates
}

/// The candidate chosen by validation scores, and why when it is not a trained head.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateChoice {
    /// Index of the chosen candidate.
    pub index: usize,
    /// Set when the base model or the warm start won.
    pub note: Option<String>,
}

/// The best of candidates `labels` by `scores` on `metric` (ties go to the earlier candidate:
/// the warm start first when `warm_start`, as [`selection_candidates`] orders them).
pub fn choose_candidate(
    labels: &[String],
    scores: &[f64],
    warm_start: bool,
    metric: &str,
) -> CandidateChoice {
    let index = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
    let note = if labels.get(index).map(String::as_str) == Some(NO_SKILL_CANDIDATE) {
        Some(format!(
            "the base model beat the warm start and every trained head on the held-out items ({metric}): this router gives no skill"
        ))
    } else if warm_start && index == 0 {
        Some(format!(
            "no trained head beat the {} on the held-out items ({metric}): this router is that router's head",
            labels[0]
        ))
    } else {
        None
    };
    CandidateChoice { index, note }
}

/// The median of `values` (sorted in place; the upper one of an even count; 0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        0.0
    } else {
        values[values.len() / 2]
    }
}

/// The heaviest skill of `weights` and its weight (`("none", 0)` when no weight is positive;
/// the first of equals).
pub fn top_skill(weights: &[(String, f32)]) -> (&str, f32) {
    weights.iter().fold(
        ("none", 0f32),
        |b, (s, w)| if *w > b.1 { (s.as_str(), *w) } else { b },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Commit, RouterConfig};

    fn linear_router(skills: &[&str], weight: Vec<f32>, bias: Vec<f32>) -> Router {
        let dim = weight.len() / bias.len();
        Router {
            config: RouterConfig {
                name: "general".into(),
                kind: "linear".into(),
                method: "supervised".into(),
                task: String::new(),
                features: FeatureKind::MeanEmbedding,
                dim,
                skills: skills.iter().map(|s| s.to_string()).collect(),
                none_entry: false,
                gain: 1.0,
                temperature: 2.0,
                commit: Commit::Softmax,
                normalize_input: false,
                base_fingerprint: String::new(),
                training: serde_json::Value::Null,
            },
            feature_mean: vec![0.0; dim],
            feature_std: vec![1.0; dim],
            weight,
            bias,
        }
    }

    #[test]
    fn names_labels_and_held_out_rows() {
        assert_eq!(
            default_router_name("end-to-end", "pubmedqa", FeatureKind::MeanEmbedding),
            "end-to-end-pubmedqa-embedding"
        );
        assert_eq!(
            default_router_name("supervised", "", FeatureKind::MeanHidden),
            "supervised"
        );
        assert_eq!(one_hot(&[1, 0], 3), [vec![0., 1., 0.], vec![1., 0., 0.]]);
        let by_wording = HeldOut::from_phrasings(&["NER#0", "NER#1", "", "QA#8"]);
        assert!(by_wording.by_wording);
        assert_eq!(by_wording.indices(), [0, 3]);
        let plain = HeldOut::from_phrasings(&[""; 11]);
        assert_eq!(plain.indices(), [0, 5, 10]);
        assert_eq!(first_rows_per_class(&[0, 0, 1, 0, 1, 1], 2), [0, 1, 2, 4]);
        assert_eq!(lowest_loss(&[2.0, 0.5, 0.5]), 1);
        let q = soft_label(&[1.0, 2.0], 0.5);
        assert!((q[0] - 1.0 / (1.0 + (-2f32).exp())).abs() < 1e-6, "{q:?}");
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 3.0);
        let weights = [("qa".to_string(), 0.2), ("ner".to_string(), 0.7)];
        assert_eq!(top_skill(&weights), ("ner", 0.7));
        assert_eq!(top_skill(&[]), ("none", 0.0));
    }

    #[test]
    fn supervised_fit_chooses_among_penalties_on_unseen_wordings() {
        let mut inputs = Vec::new();
        let mut labels = Vec::new();
        let mut phrasings = Vec::new();
        for i in 0..24 {
            let class = i % 2;
            let s = (i % 5) as f32 * 0.1;
            inputs.push(if class == 0 {
                vec![1.0 + s, -1.0]
            } else {
                vec![-1.0, 1.0 + s]
            });
            labels.push(class);
            phrasings.push(format!("BANK#{}", i / 2));
        }
        let phrasings: Vec<&str> = phrasings.iter().map(String::as_str).collect();
        let held = HeldOut::from_phrasings(&phrasings);
        let fit = fit_supervised(&inputs, &one_hot(&labels, 2), &labels, &held);
        assert_eq!(fit.l2_grid.len(), 4);
        assert_eq!(fit.held_out, 6);
        assert_eq!(fit.held_out_accuracy, 1.0);
        // Every penalty separates the classes: the tie goes to the strongest.
        assert_eq!(fit.l2, 1.0);
        assert!(
            fit.to_string().contains("chosen from 0.001: 100.0 %"),
            "{fit}"
        );
    }

    #[test]
    fn calibration_never_loses_to_the_current_temperature() {
        let rows = vec![
            (0, vec![2.0, 0.0]),
            (1, vec![0.0, 1.0]),
            (0, vec![0.5, 0.0]),
        ];
        let fit = calibrate_temperature(&rows, 7.0);
        assert!(fit.nll <= fit.nll_before);
        assert!(fit.own_weight > fit.own_weight_before);
        assert_eq!(fit.nll, label_nll(&rows, fit.temperature));
    }

    #[test]
    fn warm_start_heads_and_candidate_choice() {
        let warm = linear_router(&["a", "b"], vec![2.0, 4.0, 6.0, 8.0], vec![1.0, -1.0]);
        let skills = ["b".to_string(), "a".to_string()];
        let (weight, bias) = warm_start_head(&warm, &skills, true).unwrap();
        assert_eq!(weight, [3.0, 4.0, 1.0, 2.0, 0.0, 0.0]);
        assert_eq!(bias, [-0.5, 0.5, -4.0]);
        let missing = warm_start_head(&warm, &["c".to_string()], false).unwrap_err();
        assert!(missing.to_string().contains("no output for skill `c`"));
        assert!(check_warm_start(&warm, FeatureKind::MeanEmbedding, true).unwrap());
        assert!(!check_warm_start(&warm, FeatureKind::MeanHidden, false).unwrap());
        assert!(check_warm_start(&warm, FeatureKind::MeanHidden, true).is_err());

        let candidates = selection_candidates(Some(&warm), [(3, warm.clone())]);
        let labels: Vec<String> = candidates.iter().map(|(l, _)| l.clone()).collect();
        assert_eq!(
            labels,
            ["warm start `general`", NO_SKILL_CANDIDATE, "step 3"]
        );
        assert_eq!(candidates[1].1.config.gain, 0.0);
        let trained = choose_candidate(&labels, &[0.4, 0.3, 0.5], true, "accuracy");
        assert_eq!(
            trained,
            CandidateChoice {
                index: 2,
                note: None
            }
        );
        let base = choose_candidate(&labels, &[0.4, 0.6, 0.5], true, "accuracy");
        assert!(base.note.unwrap().contains("this router gives no skill"));
        let tie = choose_candidate(&labels, &[0.5, 0.5, 0.5], true, "accuracy");
        assert_eq!(tie.index, 0);
        assert!(tie
            .note
            .unwrap()
            .contains("no trained head beat the warm start"));
    }
}
