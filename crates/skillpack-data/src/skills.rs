//! Skill builders. Each turns raw files into records with several query phrasings (chosen by a
//! hash of the record id, so the output is deterministic).

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{pubtator, DataError, Record, Result};

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })
}

/// A stable 64-bit hash of `key` (for phrasing choice and splits).
fn stable_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// `"train"` or `"dev"`: a deterministic split of `id` with `dev_percent` % in dev.
pub fn split_of(id: &str, seed: u64, dev_percent: u64) -> &'static str {
    if stable_hash(&format!("{seed}:{id}")) % 100 < dev_percent {
        "dev"
    } else {
        "train"
    }
}

const NER_QUERIES: [&str; 4] = [
    "List the chemicals and diseases mentioned in the text.",
    "Extract every chemical and disease entity from the passage above.",
    "Which chemicals and which diseases does this abstract mention?",
    "Identify the chemical and disease names in the text.",
];

/// NER records from BC5CDR PubTator documents: the abstract as context, the unique chemical and
/// disease mentions (in order of first appearance) as output.
pub fn build_ner(pubtator_file: &Path, source: &str) -> Result<Vec<Record>> {
    let name = pubtator_file.display().to_string();
    let docs = pubtator::parse(&read(pubtator_file)?, &name)?;
    Ok(docs
        .iter()
        .map(|d| {
            let mut chemicals: Vec<&str> = Vec::new();
            let mut diseases: Vec<&str> = Vec::new();
            for m in &d.mentions {
                let list = if m.kind == "Chemical" {
                    &mut chemicals
                } else {
                    &mut diseases
                };
                if !list.iter().any(|x| x.eq_ignore_ascii_case(&m.text)) {
                    list.push(&m.text);
                }
            }
            let id = format!("{source}:{}", d.pmid);
            let query = NER_QUERIES[(stable_hash(&id) % NER_QUERIES.len() as u64) as usize];
            let join = |v: &[&str]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join("; ")
                }
            };
            Record {
                id,
                skill: "ner".into(),
                source: source.into(),
                context: d.text(),
                query: query.into(),
                output: format!(
                    "Chemicals: {}\nDiseases: {}",
                    join(&chemicals),
                    join(&diseases)
                ),
            }
        })
        .collect())
}

/// Writes records as JSONL atomically.
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<()> {
    let io = |source| DataError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    for r in records {
        serde_json::to_writer(&mut f, r).map_err(|e| io(std::io::Error::other(e)))?;
        f.write_all(b"\n").map_err(io)?;
    }
    f.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
