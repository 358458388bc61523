//! Contamination checks between skill data and evaluation items: shared document ids, and
//! shared word 13-grams of normalized text (the test GPT-3's authors used for benchmark
//! contamination), which catches copies with changed punctuation, case or surrounding text.

use std::collections::{BTreeMap, HashSet};

/// Lowercased alphanumeric words of `text`.
pub fn normalized_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Words per n-gram.
pub const NGRAM: usize = 13;

fn fnv1a(words: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.bytes().chain(std::iter::once(b' ')) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn ngrams(text: &str) -> impl Iterator<Item = u64> {
    let words = normalized_words(text);
    let n = words.len();
    let hashes: Vec<u64> = if n < NGRAM {
        // Short texts count as one n-gram only when they are long enough to be distinctive.
        if n >= 8 {
            vec![fnv1a(&words)]
        } else {
            Vec::new()
        }
    } else {
        (0..=n - NGRAM)
            .map(|i| fnv1a(&words[i..i + NGRAM]))
            .collect()
    };
    hashes.into_iter()
}

/// The evaluation side of the check: document ids and n-grams per task.
#[derive(Default)]
pub struct EvalIndex {
    doc_ids: BTreeMap<String, &'static str>,
    grams: std::collections::HashMap<u64, &'static str>,
    short_texts: HashSet<u64>,
}

impl EvalIndex {
    /// Adds an evaluation item of `task`.
    pub fn add(&mut self, task: &'static str, doc_ids: &[String], texts: &[String]) {
        for id in doc_ids {
            self.doc_ids.insert(id.clone(), task);
        }
        for t in texts {
            let words = normalized_words(t);
            if (8..NGRAM).contains(&words.len()) {
                self.short_texts.insert(fnv1a(&words));
            }
            for g in ngrams(t) {
                self.grams.insert(g, task);
            }
        }
    }

    /// The task an evaluation item of which overlaps a skill record with these document ids and
    /// texts, if any.
    pub fn find(&self, doc_ids: &[String], texts: &[&str]) -> Option<&'static str> {
        for id in doc_ids {
            if let Some(task) = self.doc_ids.get(id) {
                return Some(task);
            }
        }
        for t in texts {
            let words = normalized_words(t);
            // A short evaluation text copied whole into the record (inside longer text).
            if !self.short_texts.is_empty() {
                for len in 8..NGRAM.min(words.len() + 1) {
                    for i in 0..=words.len() - len {
                        let h = fnv1a(&words[i..i + len]);
                        if self.short_texts.contains(&h) {
                            if let Some(task) = self.grams.get(&h) {
                                return Some(task);
                            }
                        }
                    }
                }
            }
            for g in ngrams(t) {
                if let Some(task) = self.grams.get(&g) {
                    return Some(task);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_copies_despite_case_and_punctuation() {
        let mut index = EvalIndex::default();
        index.add(
            "meqsum",
            &[],
            &[
                "What are the side effects of taking metformin every day for type two diabetes?"
                    .into(),
            ],
        );
        index.add("hoc", &["123".into()], &[]);
        assert_eq!(
            index.find(&[], &["Question A: WHAT are the side-effects of taking Metformin every day, for type two diabetes"]),
            Some("meqsum")
        );
        assert_eq!(index.find(&["123".into()], &[]), Some("hoc"));
        assert_eq!(
            index.find(&[], &["What are the side effects of aspirin?"]),
            None
        );
        // A short evaluation text (8..13 words) found inside a longer record.
        index.add(
            "medqa",
            &[],
            &["Which drug lowers blood pressure fastest in adults?".into()],
        );
        assert_eq!(
            index.find(
                &[],
                &["Hello. which drug lowers blood pressure fastest in adults? Thanks"]
            ),
            Some("medqa")
        );
    }
}
