//! Task metrics: accuracy and macro-F1, SQuAD exact match and F1, ROUGE-L, entity-level
//! micro-F1 over exact spans, and sample-averaged multi-label F1.

use std::collections::BTreeSet;

/// Fraction of `predicted[i] == gold[i]`.
pub fn accuracy(predicted: &[usize], gold: &[usize]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / gold.len() as f64
}

/// F1 from counts (0 when undefined).
pub fn f1_from_counts(true_positive: usize, false_positive: usize, false_negative: usize) -> f64 {
    let denominator = 2 * true_positive + false_positive + false_negative;
    if denominator == 0 {
        0.0
    } else {
        2.0 * true_positive as f64 / denominator as f64
    }
}

/// Macro-averaged F1 over the classes that occur in `gold` or `predicted` (scikit-learn's
/// `f1_score(average="macro")` with its default labels).
pub fn macro_f1(predicted: &[usize], gold: &[usize]) -> f64 {
    let classes: BTreeSet<usize> = predicted.iter().chain(gold).copied().collect();
    if classes.is_empty() {
        return 0.0;
    }
    let sum: f64 = classes
        .iter()
        .map(|&c| {
            let tp = predicted
                .iter()
                .zip(gold)
                .filter(|(p, g)| **p == c && **g == c)
                .count();
            let fp = predicted
                .iter()
                .zip(gold)
                .filter(|(p, g)| **p == c && **g != c)
                .count();
            let fn_ = predicted
                .iter()
                .zip(gold)
                .filter(|(p, g)| **p != c && **g == c)
                .count();
            f1_from_counts(tp, fp, fn_)
        })
        .sum();
    sum / classes.len() as f64
}

/// SQuAD answer normalization: lowercase, drop punctuation and the articles a/an/the, collapse
/// whitespace.
pub fn squad_normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD exact match against the best reference (1.0 or 0.0).
pub fn exact_match(prediction: &str, references: &[String]) -> f64 {
    let p = squad_normalize(prediction);
    if references.iter().any(|r| squad_normalize(r) == p) {
        1.0
    } else {
        0.0
    }
}

/// SQuAD token F1 against the best reference.
pub fn squad_f1(prediction: &str, references: &[String]) -> f64 {
    let p = squad_normalize(prediction);
    let p_tokens: Vec<&str> = p.split_whitespace().collect();
    references
        .iter()
        .map(|r| {
            let r = squad_normalize(r);
            let r_tokens: Vec<&str> = r.split_whitespace().collect();
            if p_tokens.is_empty() || r_tokens.is_empty() {
                return if p_tokens == r_tokens { 1.0 } else { 0.0 };
            }
            let common = multiset_overlap(&p_tokens, &r_tokens);
            if common == 0 {
                return 0.0;
            }
            let precision = common as f64 / p_tokens.len() as f64;
            let recall = common as f64 / r_tokens.len() as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max)
}

fn multiset_overlap(a: &[&str], b: &[&str]) -> usize {
    let mut remaining: Vec<&str> = b.to_vec();
    let mut common = 0;
    for t in a {
        if let Some(i) = remaining.iter().position(|r| r == t) {
            remaining.swap_remove(i);
            common += 1;
        }
    }
    common
}

/// ROUGE-L tokens: lowercased alphanumeric words (the reference implementation's default
/// tokenizer, without stemming).
fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

fn lcs_length(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                row[j + 1].max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L F1 (β = 1) against the best reference.
pub fn rouge_l(prediction: &str, references: &[String]) -> f64 {
    let p = rouge_tokens(prediction);
    references
        .iter()
        .map(|r| {
            let r = rouge_tokens(r);
            let lcs = lcs_length(&p, &r);
            if lcs == 0 {
                return 0.0;
            }
            let precision = lcs as f64 / p.len() as f64;
            let recall = lcs as f64 / r.len() as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max)
}

/// Parses an NER answer of `Type: a; b` lines (types as in `types`, case-insensitive) into
/// `(type, mention)` pairs. `none` and empty items are skipped; lines of other shapes ignored.
pub fn parse_entity_answer(answer: &str, types: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in answer.lines() {
        let Some((head, rest)) = line.split_once(':') else {
            continue;
        };
        let head = head
            .trim()
            .trim_start_matches(['-', '*', ' '])
            .to_lowercase();
        let Some(kind) = types.iter().find(|t| {
            let t = t.to_lowercase();
            head == t || head == format!("{t}s") || head == format!("{t}es")
        }) else {
            continue;
        };
        for item in rest.split([';', ',']) {
            let item = item.trim().trim_end_matches('.').trim();
            if item.is_empty() || item.eq_ignore_ascii_case("none") {
                continue;
            }
            out.push((kind.clone(), item.to_string()));
        }
    }
    out
}

/// Byte spans of every case-insensitive occurrence of `mention` in `text` that starts and ends
/// on a word boundary.
pub fn find_spans(text: &str, mention: &str) -> Vec<(usize, usize)> {
    if mention.is_empty() {
        return Vec::new();
    }
    let lower_text = text.to_lowercase();
    let lower_mention = mention.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; only then fall back to no match.
    if lower_text.len() != text.len() || lower_mention.len() != mention.len() {
        return Vec::new();
    }
    let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(i) = lower_text[from..].find(&lower_mention) {
        let start = from + i;
        let end = start + lower_mention.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let first = mention.chars().next();
        let last = mention.chars().next_back();
        // A boundary is needed only where the mention itself starts/ends with a word character.
        let left_ok = !is_word(first) || !is_word(before);
        let right_ok = !is_word(last) || !is_word(after);
        if left_ok && right_ok {
            spans.push((start, end));
        }
        from = start + lower_mention.chars().next().map_or(1, char::len_utf8);
    }
    spans
}

/// `num / den`, or 0 when `den` is 0.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Counts of entity-level matching (exact span and type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntityCounts {
    pub true_positive: usize,
    pub false_positive: usize,
    pub false_negative: usize,
}

impl EntityCounts {
    /// No spans on either side.
    pub fn is_empty(&self) -> bool {
        *self == EntityCounts::default()
    }

    /// Compares predicted and gold `(start, end, type)` spans (each set deduplicated).
    pub fn of(predicted: &[(usize, usize, String)], gold: &[(usize, usize, String)]) -> Self {
        let p: BTreeSet<&(usize, usize, String)> = predicted.iter().collect();
        let g: BTreeSet<&(usize, usize, String)> = gold.iter().collect();
        let tp = p.intersection(&g).count();
        EntityCounts {
            true_positive: tp,
            false_positive: p.len() - tp,
            false_negative: g.len() - tp,
        }
    }

    pub fn add(&mut self, other: EntityCounts) {
        self.true_positive += other.true_positive;
        self.false_positive += other.false_positive;
        self.false_negative += other.false_negative;
    }

    pub fn precision(&self) -> f64 {
        ratio(self.true_positive, self.true_positive + self.false_positive)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_positive, self.true_positive + self.false_negative)
    }

    pub fn f1(&self) -> f64 {
        f1_from_counts(self.true_positive, self.false_positive, self.false_negative)
    }
}

/// Predicted entity spans: every occurrence in `text` of each predicted mention, with its type.
pub fn predicted_spans(text: &str, mentions: &[(String, String)]) -> Vec<(usize, usize, String)> {
    let mut spans = Vec::new();
    for (kind, mention) in mentions {
        for (s, e) in find_spans(text, mention) {
            spans.push((s, e, kind.clone()));
        }
    }
    spans
}

/// F1 of one sample's predicted label set (1.0 when both sets are empty).
pub fn sample_f1(predicted: &[usize], gold: &[usize]) -> f64 {
    let p: BTreeSet<usize> = predicted.iter().copied().collect();
    let g: BTreeSet<usize> = gold.iter().copied().collect();
    if p.is_empty() && g.is_empty() {
        return 1.0;
    }
    let tp = p.intersection(&g).count();
    f1_from_counts(tp, p.len() - tp, g.len() - tp)
}

/// Label-wise macro F1 of multi-label predictions: each label's F1 over the items (as a binary
/// task), averaged over the labels that occur in `gold` or `predicted` of some item.
pub fn multilabel_macro_f1(predicted: &[Vec<usize>], gold: &[Vec<usize>]) -> f64 {
    let labels: BTreeSet<usize> = predicted.iter().chain(gold).flatten().copied().collect();
    if labels.is_empty() {
        return 0.0;
    }
    let sum: f64 = labels
        .iter()
        .map(|l| {
            let (mut tp, mut fp, mut fn_) = (0, 0, 0);
            for (p, g) in predicted.iter().zip(gold) {
                match (p.contains(l), g.contains(l)) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
            }
            f1_from_counts(tp, fp, fn_)
        })
        .sum();
    sum / labels.len() as f64
}

/// How concentrated the predicted labels are, beside the gold's own concentration: a classifier
/// that answers one label for nearly every item scores its accuracy from the label mix alone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelBalance {
    /// The most frequent predicted label and its share of the items.
    pub predicted_top: String,
    pub predicted_share: f64,
    /// The most frequent gold label and its share.
    pub gold_top: String,
    pub gold_share: f64,
    /// Predictions collapse: one label for more than [`COLLAPSE_SHARE`] of the items while the
    /// gold's largest class is under [`BALANCED_SHARE`].
    pub collapsed: bool,
}

/// See [`LabelBalance::collapsed`].
pub const COLLAPSE_SHARE: f64 = 0.8;
/// See [`LabelBalance::collapsed`].
pub const BALANCED_SHARE: f64 = 0.6;

/// The label balance of `(predicted, gold)` label names (None without items).
pub fn label_balance<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Option<LabelBalance> {
    let mut predicted: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut gold: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut n = 0usize;
    for (p, g) in pairs {
        *predicted.entry(p).or_default() += 1;
        *gold.entry(g).or_default() += 1;
        n += 1;
    }
    // Ties go to the first label in name order, so the figure is reproducible.
    fn top<'k>(m: &std::collections::BTreeMap<&'k str, usize>) -> Option<(&'k str, usize)> {
        let mut best: Option<(&'k str, usize)> = None;
        for (k, v) in m {
            if best.is_none_or(|(_, bv)| *v > bv) {
                best = Some((k, *v));
            }
        }
        best
    }
    let (p, pc) = top(&predicted)?;
    let (g, gc) = top(&gold)?;
    let (predicted_share, gold_share) = (pc as f64 / n as f64, gc as f64 / n as f64);
    Some(LabelBalance {
        predicted_top: p.to_string(),
        predicted_share,
        gold_top: g.to_string(),
        gold_share,
        collapsed: predicted_share > COLLAPSE_SHARE && gold_share < BALANCED_SHARE,
    })
}

/// A 95 % percentile bootstrap interval of `statistic` over `n` items resampled with
/// replacement (`rounds` resamples, a fixed seed: the same items give the same interval).
pub fn bootstrap_interval(
    n: usize,
    rounds: usize,
    statistic: impl Fn(&[usize]) -> f64,
) -> Option<(f64, f64)> {
    if n == 0 || rounds == 0 {
        return None;
    }
    // SplitMix64: small, fast, and fixed.
    let mut state = 0x5EED_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut values: Vec<f64> = (0..rounds)
        .map(|_| {
            let sample: Vec<usize> = (0..n).map(|_| (next() % n as u64) as usize).collect();
            statistic(&sample)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * (rounds - 1) as f64).round() as usize).min(rounds - 1)];
    Some((at(0.025), at(0.975)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multilabel_macro_f1_balance_and_bootstrap_by_hand() {
        // Label 0: tp 1, fn 1 -> 2/3; label 1: tp 1, fp 1 -> 2/3; label 2: fp 1 -> 0.
        let pred = vec![vec![0, 1], vec![1, 2], vec![]];
        let gold = vec![vec![0, 1], vec![], vec![0]];
        assert!(close(
            multilabel_macro_f1(&pred, &gold),
            (2.0 / 3.0 + 2.0 / 3.0) / 3.0
        ));
        // 9 of 10 answers "yes" while gold is 5/5: collapsed.
        let p = ["yes"; 9]
            .iter()
            .chain(&["no"])
            .copied()
            .collect::<Vec<_>>();
        let g = ["yes", "no"].repeat(5);
        let b = label_balance(p.iter().copied().zip(g.iter().copied())).unwrap();
        assert_eq!(
            (b.predicted_top.as_str(), b.gold_top.as_str()),
            ("yes", "no")
        );
        assert!(close(b.predicted_share, 0.9) && close(b.gold_share, 0.5) && b.collapsed);
        // The same predictions on a 9:1 gold are not a collapse: the gold is skewed too.
        let g2 = p.clone();
        assert!(
            !label_balance(p.iter().copied().zip(g2.iter().copied()))
                .unwrap()
                .collapsed
        );
        // The bootstrap of a mean of 0/1 scores: half ones, 200 items -> about ±7 points.
        let scores: Vec<f64> = (0..200).map(|i| (i % 2) as f64).collect();
        let (lo, hi) = bootstrap_interval(200, 1000, |idx| {
            idx.iter().map(|&i| scores[i]).sum::<f64>() / idx.len() as f64
        })
        .unwrap();
        assert!(
            lo > 0.41 && lo < 0.45 && hi > 0.55 && hi < 0.59,
            "{lo} {hi}"
        );
        assert_eq!(bootstrap_interval(0, 10, |_| 0.0), None);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn accuracy_and_macro_f1_by_hand() {
        let gold = [0, 0, 1, 1, 2];
        let pred = [0, 1, 1, 1, 0];
        assert!(close(accuracy(&pred, &gold), 0.6));
        // class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0.
        assert!(close(macro_f1(&pred, &gold), (0.5 + 0.8 + 0.0) / 3.0));
        // A predicted class absent from gold counts too (scikit-learn's default labels).
        assert!(close(macro_f1(&[3], &[0]), 0.0));
    }

    #[test]
    fn squad_normalization_and_scores() {
        assert_eq!(squad_normalize("The  Cat, sat!"), "cat sat");
        assert_eq!(squad_normalize("an Apple a day"), "apple day");
        let refs = vec!["the mother-to-child transmission".to_string()];
        assert_eq!(exact_match("Mother-to-child transmission.", &refs), 1.0);
        assert_eq!(exact_match("transmission", &refs), 0.0);
        // "mothertochild transmission" vs "transmission": p=1/1, r=1/2 -> 2/3.
        assert!(close(squad_f1("transmission", &refs), 2.0 / 3.0));
        // Best reference wins; repeated tokens count as a multiset.
        let refs = vec!["a b".to_string(), "c c d".to_string()];
        // vs "c c d": common 2 ("c","c"), p=2/2, r=2/3 -> 0.8.
        assert!(close(squad_f1("c c", &refs), 0.8));
        assert_eq!(squad_f1("", &["".to_string()]), 1.0);
    }

    #[test]
    fn rouge_l_by_hand() {
        // LCS("the cat sat on the mat", "the cat lay on the mat") = 5 of 6 each -> F1 5/6.
        let r = rouge_l(
            "The cat sat on the mat.",
            &["the cat lay on the mat".to_string()],
        );
        assert!(close(r, 5.0 / 6.0));
        // LCS("a b c d", "b d e") = 2: p = 2/4, r = 2/3 -> 2*0.5*0.667/1.1667 = 0.5714...
        assert!(close(rouge_l("a b c d", &["b d e".to_string()]), 4.0 / 7.0));
        assert_eq!(rouge_l("", &["x".to_string()]), 0.0);
        assert_eq!(rouge_l("x y", &["z".to_string()]), 0.0);
    }

    #[test]
    fn entity_f1_exact_span_and_type() {
        let text = "Aspirin caused ulcers; aspirin is common. Not aspirinate.";
        let types = vec!["Chemical".to_string(), "Disease".to_string()];
        let parsed =
            parse_entity_answer("Chemicals: aspirin; none\nDiseases: ulcers, fever.", &types);
        assert_eq!(
            parsed,
            vec![
                ("Chemical".into(), "aspirin".into()),
                ("Disease".into(), "ulcers".into()),
                ("Disease".into(), "fever".into()),
            ]
        );
        // "aspirinate" is not a word-boundary match.
        assert_eq!(find_spans(text, "aspirin"), vec![(0, 7), (23, 30)]);
        let predicted = predicted_spans(text, &parsed);
        let gold = vec![
            (0, 7, "Chemical".to_string()),
            (23, 30, "Chemical".to_string()),
            (15, 21, "Chemical".to_string()), // right span, wrong type
            (46, 56, "Chemical".to_string()),
        ];
        let c = EntityCounts::of(&predicted, &gold);
        // predicted: aspirin×2 (Chemical), ulcers (Disease) -> tp 2, fp 1, fn 2.
        assert_eq!(
            c,
            EntityCounts {
                true_positive: 2,
                false_positive: 1,
                false_negative: 2
            }
        );
        assert!(close(c.f1(), 4.0 / 7.0));
        assert!(close(c.precision(), 2.0 / 3.0));
        assert!(close(c.recall(), 0.5));
    }

    #[test]
    fn sample_f1_by_hand() {
        assert_eq!(sample_f1(&[], &[]), 1.0);
        assert_eq!(sample_f1(&[1], &[]), 0.0);
        // {1,2} vs {2,3}: tp 1, fp 1, fn 1 -> 0.5.
        assert!(close(sample_f1(&[1, 2], &[2, 3]), 0.5));
    }
}
