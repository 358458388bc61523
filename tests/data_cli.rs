//! `skillpack data build` on the shared raw data: all twelve skills with their cards, a
//! byte-identical rebuild, and no record carrying an evaluation item (checked here
//! independently of the builder's own 13-gram filter: dev PMIDs, dev questions verbatim).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use skillpack_data::tasks::{self, Split};

fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in files_under(dir) {
        let rel = entry.strip_prefix(dir).unwrap().display().to_string();
        out.insert(rel, std::fs::read(&entry).unwrap());
    }
    out
}

#[test]
fn builds_twelve_skills_reproducibly_without_evaluation_items() {
    let raw = raw_data();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        let (ok, stdout, err) =
            skillpack(&[&"data", &"build", &"--raw", &raw, &"--out", out, &"--json"]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        println!("built in {:.1} s", v["seconds"].as_f64().unwrap());
    }
    let (ta, tb) = (read_tree(&a), read_tree(&b));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (k, v) in &ta {
        assert!(v == &tb[k], "{k} differs between two builds");
    }
    let skills = [
        "qa", "mcqa", "mc", "mldc", "mrc", "nli", "ts", "ner", "re", "ea", "es", "er",
    ];
    let mut records = Vec::new();
    for s in skills {
        let card: serde_json::Value =
            serde_json::from_slice(&ta[&format!("{s}/card.json")]).unwrap();
        let train = card["train"].as_u64().unwrap();
        println!(
            "{s}: {train} train, {} dev, {} phrasings",
            card["dev"], card["phrasings"]
        );
        assert!(train >= 200, "{s}: only {train} records");
        assert!(
            card["phrasings"].as_u64().unwrap() >= 2,
            "{s}: one phrasing"
        );
        assert_eq!(card["length_unit"], "tokens");
        assert!(card["prompt_length"]["max"].as_u64().unwrap() > 0);
        assert!(!card["licenses"].as_array().unwrap().is_empty());
        assert!(ta.contains_key(&format!("{s}/card.md")));
        for part in ["train.jsonl", "dev.jsonl"] {
            for line in String::from_utf8(ta[&format!("{s}/{part}")].clone())
                .unwrap()
                .lines()
            {
                let r: skillpack_data::Record = serde_json::from_str(line).unwrap();
                assert_eq!(r.skill, s);
                assert!(!r.output.trim().is_empty(), "{}: empty output", r.id);
                records.push(r);
            }
        }
    }
    // Independent contamination check: dev-split PMIDs must not appear as a record's source
    // document, and no dev question (or claim, or consumer question) may appear verbatim.
    let mut dev_pmids = std::collections::HashSet::new();
    let mut dev_texts = Vec::new();
    for task in tasks::TASKS {
        let info = tasks::task_info(task).unwrap();
        for item in tasks::load(task, &raw).unwrap() {
            if info.seen && item.split != Split::Dev {
                continue;
            }
            if matches!(task, "pubmedqa" | "hoc" | "bc5cdr") {
                dev_pmids.insert(item.id.split(':').nth(1).unwrap().to_string());
            }
            // The item's own text, whole (templated openings like "A 63-year-old man comes to
            // the emergency department" are shared by unrelated questions).
            let probe = match task {
                "meqsum" | "hoc" | "bc5cdr" | "chemprot" => item.context.clone(),
                "medqa" | "medmcqa" => item.query.split("\n\n").next().unwrap().to_string(),
                _ => item
                    .query
                    .lines()
                    .next()
                    .unwrap()
                    .trim_start_matches("Claim: ")
                    .trim_start_matches("Question: ")
                    .to_string(),
            };
            if probe.chars().count() >= 60 {
                dev_texts.push(probe.to_lowercase());
            }
        }
    }
    assert!(dev_pmids.len() > 500 && dev_texts.len() > 1500);
    for r in &records {
        for part in r.id.split(':') {
            assert!(
                !dev_pmids.contains(part),
                "{} comes from an evaluation document",
                r.id
            );
        }
    }
    let haystack: String = records
        .iter()
        .map(|r| format!("{}\n{}\n{}\n", r.context, r.query, r.output).to_lowercase())
        .collect();
    // One pass over the word starts of the skill data, looking up 40-byte prefixes of the
    // evaluation texts, then comparing whole texts.
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<&String>> = Default::default();
    for t in &dev_texts {
        by_prefix.entry(&t.as_bytes()[..40]).or_default().push(t);
    }
    let bytes = haystack.as_bytes();
    let mut found = Vec::new();
    for i in 0..bytes.len().saturating_sub(40) {
        if i > 0 && !bytes[i - 1].is_ascii_whitespace() {
            continue;
        }
        if let Some(candidates) = by_prefix.get(&bytes[i..i + 40]) {
            for t in candidates {
                if bytes[i..].starts_with(t.as_bytes()) {
                    found.push(t.to_string());
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "evaluation texts found in skill data: {:?}",
        &found[..found.len().min(5)]
    );
}
