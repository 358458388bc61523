//! Stage 2 of SA-MDKIF, the routers of a pack, as a library: training (supervised by skill
//! labels, optionally soft labels from each skill's answer loss; prototypes; end to end through
//! the model with selection on held-out items by the task's metric), temperature calibration,
//! commit modes, routing accuracy, time to first token, and a prompt's routing. Each
//! `skillpack router` subcommand is one call here; the model-free math is
//! [`skillpack_route::training`].
//!
//! A supervised router for a pack of two random skills on the tiny test llama, trained on a
//! few records per skill, then routing a prompt:
//!
//! ```rust
//! use std::path::{Path, PathBuf};
//!
//! use skillpack_eval::stage2::{self, RouterMethod, RouterTraining, ShowRouting, Silent};
//! use skillpack_pack::{synth_pack, SynthSpec, ALL_LINEAR};
//! use skillpack_route::FeatureKind;
//!
//! let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
//!     .map(PathBuf::from)
//!     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let model = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
//! let dir = tempfile::tempdir()?;
//! let pack = dir.path().join("pack");
//! let spec = SynthSpec {
//!     skills: 2,
//!     rank: 2,
//!     targets: ALL_LINEAR.iter().map(|t| t.to_string()).collect(),
//!     b_std: 0.1,
//!     decay: 0.5,
//!     seed: 7,
//! };
//! synth_pack(&pack, &skillpack_convert::GgufInfo::open(&model)?, &spec)?;
//!
//! // Skill data as `skillpack data build` writes it: DATA/SKILL/train.jsonl.
//! let data = dir.path().join("data");
//! for (skill, request) in [("s00", "List the chemicals in the text."), ("s01", "Summarize the question.")] {
//!     std::fs::create_dir_all(data.join(skill))?;
//!     let lines: Vec<String> = (0..6)
//!         .map(|i| {
//!             serde_json::json!({"id": format!("{skill}-{i}"), "skill": skill, "source": "demo",
//!                 "context": format!("Record {i} of {skill}."), "query": request, "output": "ok"})
//!             .to_string()
//!         })
//!         .collect();
//!     std::fs::write(data.join(skill).join("train.jsonl"), lines.join("\n"))?;
//! }
//!
//! let mut training = RouterTraining::new(&pack, &model, RouterMethod::Supervised);
//! training.data = Some(data);
//! training.features = FeatureKind::MeanEmbedding;
//! training.name = Some("general".into());
//! training.make_default = true;
//! let trained = stage2::train_router(&training, &mut Silent)?;
//! assert_eq!(trained.file, "routers/general.safetensors");
//! assert_eq!(trained.router.config.training["examples"], 12);
//!
//! let shown = stage2::show_routing(&ShowRouting {
//!     pack: pack.clone(),
//!     router: None,
//!     model: model.clone(),
//!     prompt: "Record 9 of s00.\n\nList the chemicals in the text.".into(),
//! })?;
//! assert_eq!(shown.router, "general");
//! assert!(shown.weights[0].1 > shown.weights[1].1, "{shown}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod manage;
mod measure;
mod train;

use std::path::Path;

use skillpack_data::Record;
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_route::FeatureExtractor;

use crate::{EvalError, Result};

pub use manage::{
    calibrate_router, commit_router, list_routers, show_routing, Calibration, CommitReport,
    CommitRouter, RouterList, RoutingShown, ShowRouting, TemperatureCalibration,
};
pub use measure::{
    bench_routers, routing_accuracy, AccuracyReport, BenchReport, BenchRouters, RouterAccuracy,
    RouterTiming, RoutingAccuracy, RoutingMiss, RoutingPrompt,
};
pub use train::{
    end_to_end_records, score_candidates, skill_answer_losses, split_validation, task_examples,
    train_router, warm_start_router, RouterMethod, RouterTraining, TrainedRouter,
};

/// A long step of stage 2, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Prompt features, one unit per prompt.
    Features,
    /// Soft labels: one unit per record and skill whose answer is scored.
    SoftLabels,
    /// End-to-end optimizer steps, each with its loss.
    EndToEnd,
    /// One candidate router evaluated on the validation items, one unit per item.
    Validation,
}

/// Receives the progress of stage-2 work. Every method does nothing by default.
pub trait Progress {
    /// A phase of `total` units starts; `label` names it (e.g. the candidate router).
    fn start(&mut self, _phase: Phase, _label: &str, _total: usize) {}
    /// `done` units of the current phase are finished; `loss` is the step's loss during
    /// [`Phase::EndToEnd`].
    fn update(&mut self, _done: usize, _loss: Option<f32>) {}
    /// The current phase is over.
    fn finish(&mut self) {}
    /// A one-line summary of a finished step (`skillpack router` prints it on stderr).
    fn note(&mut self, _message: &str) {}
}

/// No progress display, no notes.
pub struct Silent;

impl Progress for Silent {}

/// Loads the GGUF model at `path` with default parameters.
fn load_model(path: &Path) -> Result<Model> {
    Ok(Model::load(Backend::get(), path, &ModelParams::default())?)
}

/// Up to `per_skill` records of `SPLIT.jsonl` of each skill in `data` (the folder of `skillpack
/// data build`), spread over the file by hash, each with the index of its skill in `skills`.
pub fn skill_samples(
    data: &Path,
    split: &str,
    skills: &[String],
    per_skill: usize,
) -> Result<Vec<(usize, Record)>> {
    let mut out = Vec::new();
    for (k, skill) in skills.iter().enumerate() {
        let path = data.join(skill).join(format!("{split}.jsonl"));
        let text = std::fs::read_to_string(&path).map_err(|source| EvalError::Read {
            context: format!(
                "reading {} (build it with `skillpack data build`)",
                path.display()
            ),
            source,
        })?;
        let mut records: Vec<Record> = text
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    EvalError::Data(skillpack_data::DataError::Format {
                        file: path.display().to_string(),
                        line: i + 1,
                        reason: e.to_string(),
                    })
                })
            })
            .collect::<Result<_>>()?;
        records.sort_by_key(|r| skillpack_data::stable_hash(&format!("router:{}", r.id)));
        records.truncate(per_skill);
        out.extend(records.into_iter().map(|r| (k, r)));
    }
    Ok(out)
}

/// The features of each `(context, query)` prompt, rendered as the evaluation renders it,
/// reported as the phase [`Phase::Features`] named `label`.
pub fn prompt_features(
    extractor: &mut FeatureExtractor<'_>,
    model: &Model,
    prompts: &[(String, String)],
    label: &str,
    progress: &mut dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    progress.start(Phase::Features, label, prompts.len());
    let mut features = Vec::with_capacity(prompts.len());
    for (i, (context, query)) in prompts.iter().enumerate() {
        let tokens = crate::harness::prompt_tokens(model, context, query)?;
        features.push(extractor.features(&tokens)?);
        progress.update(i + 1, None);
    }
    progress.finish();
    Ok(features)
}

/// Records as `(context, query)` prompts.
fn record_prompts<'r>(records: impl IntoIterator<Item = &'r Record>) -> Vec<(String, String)> {
    records
        .into_iter()
        .map(|r| (r.context.clone(), r.query.clone()))
        .collect()
}

/// `names`, or every router of the pack when none are given.
fn names_or_all(pack: &skillpack_pack::Pack, names: &[String]) -> Vec<String> {
    if names.is_empty() {
        pack.manifest
            .routers
            .iter()
            .map(|r| r.name.clone())
            .collect()
    } else {
        names.to_vec()
    }
}
