//! Instruction data: `{skill, context, query, output}` records rendered with the base model's
//! chat template and tokenized by llama.cpp from the same GGUF, so that training sees exactly the
//! ids inference will see. The loss covers the output tokens (and the template's end-of-turn).

use std::path::Path;

use serde::{Deserialize, Serialize};
use skillpack_llama::{ChatMessage, Model};

use crate::{Result, TrainError};

/// One instruction record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub skill: String,
    #[serde(default)]
    pub context: String,
    pub query: String,
    pub output: String,
}

impl Record {
    /// The user message: context, a blank line, then the query.
    pub fn user_message(&self) -> String {
        if self.context.trim().is_empty() {
            self.query.clone()
        } else {
            format!("{}\n\n{}", self.context.trim_end(), self.query)
        }
    }
}

/// A tokenized example: ids and, per id, whether predicting it counts in the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// `targets[i]`: the loss includes predicting `ids[i]` from `ids[..i]`.
    pub targets: Vec<bool>,
}

/// Reads a JSONL file of records.
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    if path.is_dir() {
        return Err(TrainError::Input(format!(
            "{}: is a directory, not a JSONL file",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    parse_jsonl(&bytes, &path.display().to_string())
}

/// Parses JSONL records (`name` labels errors, which give the 1-based line): one JSON object
/// per non-blank line, UTF-8, with non-empty `query` and `output`. No records at all is an error.
pub fn parse_jsonl(bytes: &[u8], name: &str) -> Result<Vec<Record>> {
    let at = |line: usize, why: String| TrainError::Input(format!("{name}:{line}: {why}"));
    let mut records = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = std::str::from_utf8(line).map_err(|e| {
            at(
                i + 1,
                format!(
                    "not UTF-8 text (invalid byte at column {})",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).map_err(|e| at(i + 1, e.to_string()))?;
        for (field, value) in [("query", &record.query), ("output", &record.output)] {
            if value.trim().is_empty() {
                return Err(at(i + 1, format!("field `{field}` is empty")));
            }
        }
        records.push(record);
    }
    if records.is_empty() {
        return Err(TrainError::Input(format!("{name}: no records")));
    }
    Ok(records)
}

/// The prompt ids inference feeds for `record` (chat template with the assistant prefix).
pub fn prompt_ids(model: &Model, record: &Record) -> Result<Vec<u32>> {
    let prompt = model
        .apply_chat_template(
            &[ChatMessage {
                role: "user".into(),
                content: record.user_message(),
            }],
            true,
        )
        .map_err(|e| TrainError::Input(e.to_string()))?;
    let ids = model
        .tokenize(&prompt, true, true)
        .map_err(|e| TrainError::Input(e.to_string()))?;
    Ok(ids.into_iter().map(|t| t as u32).collect())
}

/// Tokenizes `record`: prompt ids as inference sees them, then the answer and the template's
/// end-of-turn, tokenized on their own (as generation produces them). Long examples keep the
/// end of the prompt and as much of the answer as fits `max_len`.
pub fn tokenize(model: &Model, record: &Record, max_len: usize) -> Result<Example> {
    let user = ChatMessage {
        role: "user".into(),
        content: record.user_message(),
    };
    let assistant = ChatMessage {
        role: "assistant".into(),
        content: record.output.clone(),
    };
    let prompt = model
        .apply_chat_template(std::slice::from_ref(&user), true)
        .map_err(|e| TrainError::Input(e.to_string()))?;
    let full = model
        .apply_chat_template(&[user, assistant], false)
        .map_err(|e| TrainError::Input(e.to_string()))?;
    let answer = full.strip_prefix(&prompt).ok_or_else(|| {
        TrainError::Input(
            "the chat template does not render the prompt as a prefix of the full conversation"
                .into(),
        )
    })?;
    let to_u32 = |v: Vec<i32>| v.into_iter().map(|t| t as u32).collect::<Vec<u32>>();
    let mut p = to_u32(
        model
            .tokenize(&prompt, true, true)
            .map_err(|e| TrainError::Input(e.to_string()))?,
    );
    let mut a = to_u32(
        model
            .tokenize(answer.trim_end_matches('\n'), false, true)
            .map_err(|e| TrainError::Input(e.to_string()))?,
    );
    if p.len() + a.len() > max_len {
        // Keep at least half the budget for the answer, then the end of the prompt.
        let a_keep = a
            .len()
            .min(max_len.saturating_sub(p.len().min(max_len / 2)));
        a.truncate(a_keep);
        let p_keep = max_len - a.len();
        p = p[p.len() - p_keep.min(p.len())..].to_vec();
    }
    let targets = std::iter::repeat_n(false, p.len())
        .chain(std::iter::repeat_n(true, a.len()))
        .collect();
    p.extend(a);
    Ok(Example { ids: p, targets })
}

/// Batches of example indices: shuffled with `seed`, then grouped by length within windows of
/// `50 × batch` so padding stays small (length bucketing).
pub fn bucketed_batches(lengths: &[usize], batch: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = crate::SeededNormal::new(seed);
    // Fisher–Yates with the seeded generator.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut batches = Vec::new();
    for window in order.chunks(batch * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| lengths[i]);
        batches.extend(w.chunks(batch).map(|c| c.to_vec()));
    }
    // Shuffle batch order so that lengths are mixed over time.
    for i in (1..batches.len()).rev() {
        batches.swap(i, rng.below(i + 1));
    }
    batches
}
