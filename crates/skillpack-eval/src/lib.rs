//! Evaluation of skill packs on the nine medical tasks of [`skillpack_data::tasks`]: items run
//! through llama.cpp ([`harness`]), scored with [`metrics`], and compared across configurations
//! in a markdown table and a grouped bar chart ([`report`]). [`run_evaluation`] is `skillpack
//! eval` in one call.
//!
//! ```rust
//! use std::path::{Path, PathBuf};
//!
//! use skillpack_eval::{run_evaluation, EvalOptions, EvalProgress};
//! use skillpack_pack::{synth_pack, SynthSpec, ALL_LINEAR};
//!
//! // The tiny random llama of the test fixtures, and a pack of two random skills for it.
//! let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
//!     .map(PathBuf::from)
//!     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let model = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
//! let work = tempfile::tempdir()?;
//! let spec = SynthSpec {
//!     skills: 2,
//!     rank: 4,
//!     targets: ALL_LINEAR.iter().map(|t| t.to_string()).collect(),
//!     b_std: 0.1,
//!     decay: 0.4,
//!     seed: 7,
//! };
//! synth_pack(&work.path().join("pack"), &skillpack_convert::GgufInfo::open(&model)?, &spec)?;
//!
//! // Two PubMedQA items in the raw format, the base model against one skill.
//! let items = work.path().join("pubmedqa.json");
//! std::fs::write(
//!     &items,
//!     r#"{"1": {"QUESTION": "Does aspirin cause ulcers?", "CONTEXTS": ["Aspirin caused gastric ulcers in rats."], "final_decision": "yes"},
//!         "2": {"QUESTION": "Does water cure anemia?", "CONTEXTS": ["Water had no effect on anemia."], "final_decision": "no"}}"#,
//! )?;
//! let mut options = EvalOptions::new(&model, "pubmedqa", work.path(), work.path().join("out"));
//! options.file = Some(items);
//! options.pack = Some(work.path().join("pack"));
//! options.configs = vec!["base".into(), "weights:s00=1".into()];
//! options.threads = Some(2);
//! options.ctx_size = 512;
//!
//! let mut finished = Vec::new();
//! let report = run_evaluation(&options, |event| {
//!     if let EvalProgress::Finished(summary) = event {
//!         finished.push(summary.config.clone());
//!     }
//! })?;
//! assert_eq!(finished, ["base", "weights:s00=1"]);
//! assert_eq!(report.summaries[1].items, 2);
//! assert!(report.wrote_table && report.table.contains("PubMedQA"));
//! assert!(work.path().join("out/weights:s00=1/pubmedqa.predictions.jsonl").is_file());
//! assert!(work.path().join("out/chart.svg").is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod evaluation;
pub mod harness;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod stage2;

pub use evaluation::{
    eval_configs, load_items, run_evaluation, EvalConfig, EvalOptions, EvalProgress, EvalReport,
};
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
    /// End-to-end router training through the model.
    #[error(transparent)]
    Train(#[from] skillpack_train::TrainError),
    /// A file that could not be read; `context` names it.
    #[error("{context}")]
    Read {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pack(#[from] skillpack_pack::PackError),
    #[error(transparent)]
    Convert(#[from] skillpack_convert::ConvertError),
    #[error(transparent)]
    Route(#[from] skillpack_route::RouteError),
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
