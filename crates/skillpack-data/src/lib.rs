//! Medical skill data for SA-MDKIF: the shared raw datasets turned into unified instruction
//! records `{id, skill, source, context, query, output}` for the twelve basic skills, with
//! several phrasings of each query, deterministic splits, data cards, and contamination checks
//! against the nine evaluation tasks ([`tasks`]). Reads only the raw files given to it; never
//! copies them.
//!
//! ```
//! use skillpack_data::tasks::{self, Split, Target};
//! # let raw = std::env::var_os("SKILLPACK_RAW_DATA").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/raw"));
//! // PubMedQA's labelled questions, split deterministically into router-training and dev items.
//! let items = tasks::load("pubmedqa", &raw)?;
//! let dev = tasks::select(items, Split::Dev);
//! assert!(dev.len() > 50);
//! match &dev[0].target {
//!     Target::Choice { options, gold } => {
//!         assert_eq!(options, &["yes", "no", "maybe"]);
//!         assert!(*gold < 3);
//!     }
//!     other => panic!("PubMedQA is a choice task, not {other:?}"),
//! }
//! // The same user message every stage (training data, routing, evaluation) builds.
//! let message = skillpack_data::user_message(&dev[0].context, &dev[0].query);
//! assert!(message.contains(&dev[0].query));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod atomic;
pub mod overlap;
pub mod pubtator;
pub mod raw;
pub mod requests;
mod skills;
pub mod tasks;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use atomic::write_atomic_with;
pub use skills::{SkillInfo, SKILLS};

/// One instruction record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub skill: String,
    pub source: String,
    pub context: String,
    pub query: String,
    pub output: String,
    /// For records rendered as a user would type them: the request bank and the index of the
    /// request used (`BANK#k`), so a router can hold out whole wordings for validation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phrasing: String,
}

/// The user message of a prompt: the context, a blank line, then the query (the query alone
/// when there is no context). Skills train on it and the evaluation asks with it.
pub fn user_message(context: &str, query: &str) -> String {
    if context.trim().is_empty() {
        query.to_string()
    } else {
        format!("{}\n\n{}", context.trim_end(), query)
    }
}

/// Errors of data building, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Format {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// A stable 64-bit hash of `key` (for phrasing choice and splits).
pub fn stable_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `"train"` or `"dev"`: a deterministic split of `key` with `dev_percent` % in dev.
pub fn split_of(key: &str, seed: u64, dev_percent: u64) -> &'static str {
    if stable_hash(&format!("{seed}:{key}")) % 100 < dev_percent {
        "dev"
    } else {
        "train"
    }
}

/// Settings of `build_all`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Percent of each skill's groups (documents, dialogues) held out as the skill's dev split.
    pub dev_percent: u64,
    pub seed: u64,
    /// Only these skills (all when empty).
    pub skills: Vec<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dev_percent: 5,
            seed: 13,
            skills: Vec::new(),
        }
    }
}

/// The built data of one skill.
pub struct SkillData {
    pub info: &'static SkillInfo,
    pub train: Vec<Record>,
    pub dev: Vec<Record>,
    /// Records dropped because they overlap an evaluation item, by task.
    pub removed: BTreeMap<String, usize>,
    /// Records per query template.
    pub phrasings: BTreeMap<String, usize>,
}

/// Builds the skills' records from the raw folder, dropping every record that shares a document
/// id or a word 13-gram with an evaluation item (the dev split of a seen task, any item of an
/// unseen task).
pub fn build_all(raw_dir: &Path, options: &BuildOptions) -> Result<Vec<SkillData>> {
    for s in &options.skills {
        if !SKILLS.iter().any(|k| k.id == s) {
            return Err(DataError::Invalid(format!(
                "unknown skill `{s}` (skills: {})",
                SKILLS.iter().map(|k| k.id).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if !raw_dir.is_dir() {
        return Err(DataError::Invalid(format!(
            "{}: not a folder (give the shared raw data folder with --raw)",
            raw_dir.display()
        )));
    }
    let raw = skills::RawSet::load(raw_dir)?;
    let mut index = overlap::EvalIndex::default();
    for (task, items) in &raw.task_items {
        let seen = tasks::task_info(task)?.seen;
        for item in items
            .iter()
            .filter(|i| !seen || i.split == tasks::Split::Dev)
        {
            index.add(item.task, &item.doc_ids, &item.texts);
        }
    }
    let mut out = Vec::new();
    for info in SKILLS.iter() {
        if !options.skills.is_empty() && !options.skills.iter().any(|s| s == info.id) {
            continue;
        }
        let mut data = SkillData {
            info,
            train: Vec::new(),
            dev: Vec::new(),
            removed: BTreeMap::new(),
            phrasings: BTreeMap::new(),
        };
        let mut ids = std::collections::HashSet::new();
        for d in skills::build_skill(info.id, &raw) {
            let r = &d.record;
            if let Some(task) = index.find(&d.doc_ids, &[&r.context, &r.query, &r.output]) {
                *data.removed.entry(task.to_string()).or_default() += 1;
                continue;
            }
            if !ids.insert(r.id.clone()) {
                return Err(DataError::Invalid(format!(
                    "skill {}: duplicate record id {}",
                    info.id, r.id
                )));
            }
            *data.phrasings.entry(d.phrasing.clone()).or_default() += 1;
            // Prefixed: task splits hash the same seed and ids.
            if split_of(
                &format!("skill:{}", d.group),
                options.seed,
                options.dev_percent,
            ) == "dev"
            {
                data.dev.push(d.record);
            } else {
                data.train.push(d.record);
            }
        }
        out.push(data);
    }
    Ok(out)
}

/// Summary statistics of a list of lengths.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LengthStats {
    pub mean: f64,
    pub p50: usize,
    pub p95: usize,
    pub max: usize,
}

impl LengthStats {
    pub fn of(mut lengths: Vec<usize>) -> Self {
        if lengths.is_empty() {
            return Self::default();
        }
        lengths.sort_unstable();
        let at = |q: f64| lengths[((lengths.len() - 1) as f64 * q).round() as usize];
        LengthStats {
            mean: (lengths.iter().sum::<usize>() as f64 / lengths.len() as f64 * 10.0).round()
                / 10.0,
            p50: at(0.5),
            p95: at(0.95),
            max: *lengths.last().expect("non-empty"),
        }
    }
}

/// A skill's data card (`card.json`; `card.md` renders it).
#[derive(Debug, Clone, Serialize)]
pub struct DataCard {
    pub skill: String,
    pub title: String,
    pub description: String,
    pub train: usize,
    pub dev: usize,
    /// Records per source dataset.
    pub sources: BTreeMap<String, usize>,
    /// `(dataset, license)` of each source.
    pub licenses: Vec<(String, String)>,
    /// Distinct query templates (phrasings) over the skill's records.
    pub phrasings: usize,
    /// What lengths are counted in (`tokens` of the base model's tokenizer, or `words`).
    pub length_unit: String,
    pub prompt_length: LengthStats,
    pub output_length: LengthStats,
    /// Records dropped because they overlapped an evaluation item, by task.
    pub removed_overlaps: BTreeMap<String, usize>,
    /// SHA-256 of train.jsonl and dev.jsonl.
    pub sha256: BTreeMap<String, String>,
}

/// Writes `bytes` to `path` atomically ([`write_atomic_with`]), creating its directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| DataError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    write_atomic_with(path, |w| w.write_all(bytes))
        .map(|_| ())
        .map_err(io)
}

/// JSONL bytes of `records`.
pub fn jsonl_bytes(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("records serialize");
        out.push(b'\n');
    }
    out
}

/// Writes records as JSONL atomically.
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    write_atomic(path, &jsonl_bytes(records))
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `OUT/<skill>/{train,dev}.jsonl`, `card.json`, `card.md`, and `OUT/cards.md` plus
/// `OUT/manifest.json` over all skills. `token_len` measures lengths in the base model's tokens
/// (words when absent). Returns the cards.
pub fn write_build(
    out: &Path,
    skills: &[SkillData],
    token_len: Option<&dyn Fn(&str) -> usize>,
) -> Result<Vec<DataCard>> {
    let mut cards = Vec::new();
    for s in skills {
        let dir = out.join(s.info.id);
        let train = jsonl_bytes(&s.train);
        let dev = jsonl_bytes(&s.dev);
        write_atomic(&dir.join("train.jsonl"), &train)?;
        write_atomic(&dir.join("dev.jsonl"), &dev)?;
        let all: Vec<&Record> = s.train.iter().chain(&s.dev).collect();
        let measure = |text: &str| match token_len {
            Some(f) => f(text),
            None => text.split_whitespace().count(),
        };
        let mut sources = BTreeMap::new();
        for r in &all {
            *sources.entry(r.source.clone()).or_default() += 1;
        }
        let card = DataCard {
            skill: s.info.id.into(),
            title: s.info.title.into(),
            description: s.info.description.into(),
            train: s.train.len(),
            dev: s.dev.len(),
            sources,
            licenses: s
                .info
                .sources
                .iter()
                .map(|(d, l)| (d.to_string(), l.to_string()))
                .collect(),
            phrasings: s.phrasings.len(),
            length_unit: if token_len.is_some() {
                "tokens"
            } else {
                "words"
            }
            .into(),
            prompt_length: LengthStats::of(
                all.iter()
                    .map(|r| measure(&user_message(&r.context, &r.query)))
                    .collect(),
            ),
            output_length: LengthStats::of(all.iter().map(|r| measure(&r.output)).collect()),
            removed_overlaps: s.removed.clone(),
            sha256: [
                ("train.jsonl".to_string(), hex(&train)),
                ("dev.jsonl".to_string(), hex(&dev)),
            ]
            .into(),
        };
        let mut json = serde_json::to_vec_pretty(&card).expect("cards serialize");
        json.push(b'\n');
        write_atomic(&dir.join("card.json"), &json)?;
        write_atomic(&dir.join("card.md"), card_markdown(&card).as_bytes())?;
        cards.push(card);
    }
    let mut summary = String::from("# Skill data cards\n\n| skill | train | dev | sources | phrasings | prompt length (mean / p95) | output length (mean / p95) | overlaps removed |\n|---|---|---|---|---|---|---|---|\n");
    for c in &cards {
        summary.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} / {} | {} |\n",
            c.skill,
            c.train,
            c.dev,
            c.sources
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.phrasings,
            c.prompt_length.mean,
            c.prompt_length.p95,
            c.output_length.mean,
            c.output_length.p95,
            overlap_text(&c.removed_overlaps),
        ));
    }
    summary.push_str(&format!(
        "\nLengths in {}. Overlap = a shared document id or word 13-gram with an evaluation item (dev split of a seen task, any item of an unseen task).\n",
        cards.first().map(|c| c.length_unit.as_str()).unwrap_or("tokens")
    ));
    write_atomic(&out.join("cards.md"), summary.as_bytes())?;
    let mut manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "skills": cards.iter().map(|c| serde_json::json!({
            "skill": c.skill, "train": c.train, "dev": c.dev, "sha256": c.sha256,
        })).collect::<Vec<_>>(),
    }))
    .expect("manifest serializes");
    manifest.push(b'\n');
    write_atomic(&out.join("manifest.json"), &manifest)?;
    Ok(cards)
}

fn overlap_text(removed: &BTreeMap<String, usize>) -> String {
    if removed.is_empty() {
        "none".into()
    } else {
        removed
            .iter()
            .map(|(k, v)| format!("{v} ({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn card_markdown(c: &DataCard) -> String {
    let stats = |s: &LengthStats| {
        format!(
            "mean {}, median {}, p95 {}, max {}",
            s.mean, s.p50, s.p95, s.max
        )
    };
    let mut md = format!(
        "# Skill `{}` — {}\n\n{}\n\n- Records: {} train, {} dev (split by document/dialogue hash)\n- Query phrasings: {}\n- Prompt length ({}): {}\n- Output length ({}): {}\n- Overlaps with evaluation items removed: {}\n\n## Sources\n\n| dataset | license | records |\n|---|---|---|\n",
        c.skill,
        c.title,
        c.description,
        c.train,
        c.dev,
        c.phrasings,
        c.length_unit,
        stats(&c.prompt_length),
        c.length_unit,
        stats(&c.output_length),
        overlap_text(&c.removed_overlaps),
    );
    for (dataset, license) in &c.licenses {
        md.push_str(&format!("| {dataset} | {license} | |\n"));
    }
    md.push_str("\n| source tag | records |\n|---|---|\n");
    for (source, n) in &c.sources {
        md.push_str(&format!("| {source} | {n} |\n"));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_stats_and_user_message() {
        let s = LengthStats::of(vec![5, 1, 3, 2, 4]);
        assert_eq!((s.mean, s.p50, s.p95, s.max), (3.0, 3, 5, 5));
        assert_eq!(user_message("", "q?"), "q?");
        assert_eq!(user_message("ctx \n", "q?"), "ctx\n\nq?");
    }
}
