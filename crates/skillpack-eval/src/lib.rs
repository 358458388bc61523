//! Evaluation of skill packs on the nine medical tasks of [`skillpack_data::tasks`]: items run
//! through llama.cpp ([`harness`]), scored with [`metrics`], and compared across configurations
//! in a markdown table and a grouped bar chart ([`report`]).

pub mod harness;
pub mod metrics;
pub mod policy;
pub mod report;

pub use harness::{evaluate, NoSkills, Prediction, Scorer, SkillPolicy, TaskSummary};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Llama(#[from] skillpack_llama::LlamaError),
    #[error(transparent)]
    Run(#[from] skillpack_run::RunError),
    #[error(transparent)]
    Data(#[from] skillpack_data::DataError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Output { path: String, message: String },
}

/// Result alias for this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// The skills that make sense alone on `task` (single-skill configurations of `eval --all`).
pub fn relevant_skills(task: &str) -> &'static [&'static str] {
    match task {
        "pubmedqa" => &["mrc"],
        "medqa" | "medmcqa" => &["mcqa", "qa"],
        "bc5cdr" => &["ner"],
        "chemprot" => &["re", "er"],
        "hoc" => &["mldc"],
        "healthver" => &["nli"],
        "covidqa" => &["mrc", "qa"],
        "meqsum" => &["ts"],
        _ => &[],
    }
}

/// Default number of dev items per task for `eval` (kept practical on 2 CPU cores; `--limit`
/// overrides, `--limit 0` runs the whole split).
pub fn default_limit(task: &str) -> usize {
    match task {
        "bc5cdr" => 100,
        "hoc" => 100,
        "covidqa" => 150,
        "meqsum" => 150,
        _ => 200,
    }
}
