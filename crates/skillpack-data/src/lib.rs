//! Medical skill data for SA-MDKIF: the shared raw datasets turned into unified instruction
//! records `{id, skill, source, context, query, output}`, with several phrasings of each query,
//! deterministic splits and data cards. Reads only the raw files given to it; never copies them.

pub mod pubtator;
mod skills;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use skills::{build_ner, split_of, write_jsonl};

/// One instruction record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub skill: String,
    pub source: String,
    pub context: String,
    pub query: String,
    pub output: String,
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
}

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
