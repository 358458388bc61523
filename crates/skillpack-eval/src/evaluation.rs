//! One evaluation as `skillpack eval` runs it: the configurations to compare (base model, single
//! skills, fixed weightings, routers), the items of each task, every (configuration, task)
//! through the [`harness`](crate::harness), and the files written: per-item predictions and a
//! summary per run, then a table, a chart and all summaries when several runs compare.

use std::path::{Path, PathBuf};

use skillpack_data::tasks::{self, PromptVariant, Split, Target, TaskItem, TASKS};
use skillpack_llama::{Backend, Context, ContextParams, Model, ModelParams};
use skillpack_pack::Pack;
use skillpack_run::{parse_skill_weights, Mode, SkillEngine};

use crate::harness::{self, Calibration, NoSkills, Prediction, RunSpec, SkillPolicy, TaskSummary};
use crate::policy::{FeatureCache, FixedWeights, Routed};
use crate::{default_limit, relevant_skills, report, EvalError, Result};

/// What to evaluate and where the results go. Error messages name the command-line flags these
/// fields stand for (`--task`, `--split`, ...).
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// One task by name (pubmedqa, medqa, ...); ignored with `all`.
    pub task: Option<String>,
    /// All nine tasks. Single-skill configurations then run only on the tasks they fit, and
    /// `router:NAME@task` only on its router's own task.
    pub all: bool,
    /// Split of the raw data: `dev` or `train`.
    pub split: String,
    /// Evaluate this file (in the task's raw format) instead of a split.
    pub file: Option<PathBuf>,
    /// The raw data folder.
    pub raw: PathBuf,
    /// The GGUF model.
    pub model: PathBuf,
    /// A skill pack directory, checked against the model.
    pub pack: Option<PathBuf>,
    /// Manual weights for the pack's skills, `id=weight,...` (the default configuration).
    pub skills: Option<String>,
    /// The base model only (the default configuration).
    pub no_skills: bool,
    /// Configurations to compare: `base`, `uniform`, `skill:ID`, `weights:ID=W+ID=W`, `router`,
    /// `router:NAME`, `router:NAME@task`. Empty: one chosen from `no_skills`, `skills` and the
    /// pack.
    pub configs: Vec<String>,
    /// Items per task (None: [`default_limit`]; 0: all of them).
    pub limit: Option<usize>,
    /// Output folder.
    pub out: PathBuf,
    /// Reuse summaries already in `out` (same configuration, task, split and item count), and
    /// continue an interrupted run from its checkpoint (`CONFIG/TASK.predictions.partial.jsonl`).
    pub resume: bool,
    /// Earlier output folders whose predictions of the same configuration on the first items
    /// of a task (the same split, scoring and wording) are taken instead of evaluating those
    /// items again (e.g. a run on the first 200 items before one on the whole split).
    pub reuse_from: Vec<PathBuf>,
    /// How options are scored, on every task where it applies (see
    /// [`Calibration::applies_to`]) and `task_calibration` says nothing.
    pub calibration: Calibration,
    /// Per-task scoring that overrides `calibration` (chosen per task on dev items, e.g. where
    /// it removes a collapse onto one label).
    pub task_calibration: Vec<(String, Calibration)>,
    /// How prompts are worded.
    pub prompt_variant: PromptVariant,
    /// How weighted skills are applied.
    pub mode: Mode,
    /// CPU threads (None: llama.cpp's choice).
    pub threads: Option<i32>,
    /// Context length in tokens.
    pub ctx_size: u32,
    /// Layers offloaded to the GPU (0: none, -1: all); needs a `gpu` build.
    pub gpu_layers: i32,
}

impl EvalOptions {
    /// The base model at `model` on `task`'s dev split in `raw`, results into `out`, with the
    /// command line's other defaults.
    pub fn new(
        model: impl Into<PathBuf>,
        task: &str,
        raw: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        EvalOptions {
            task: Some(task.to_string()),
            all: false,
            split: "dev".into(),
            file: None,
            raw: raw.into(),
            model: model.into(),
            pack: None,
            skills: None,
            no_skills: false,
            configs: Vec::new(),
            limit: None,
            out: out.into(),
            resume: false,
            reuse_from: Vec::new(),
            calibration: Calibration::None,
            task_calibration: Vec::new(),
            prompt_variant: PromptVariant::Standard,
            mode: Mode::Auto,
            threads: None,
            ctx_size: 2048,
            gpu_layers: 0,
        }
    }

    /// How `task`'s options are scored: its override, else `calibration` where that applies,
    /// else plainly.
    pub fn calibration_for(&self, task: &str) -> Calibration {
        let chosen = self
            .task_calibration
            .iter()
            .find(|(t, _)| t == task)
            .map_or(self.calibration, |(_, c)| *c);
        if chosen.applies_to(task) {
            chosen
        } else {
            Calibration::None
        }
    }

    /// The tasks to run, after refusing combinations that cannot work.
    fn tasks_to_run(&self) -> Result<Vec<&'static str>> {
        // The content-free prompt is built from the standard wording; permutation rotates the
        // options block wherever the wording puts it.
        let content_free = self.calibration == Calibration::ContentFree
            || self
                .task_calibration
                .iter()
                .any(|(_, c)| *c == Calibration::ContentFree);
        if self.prompt_variant != PromptVariant::Standard && content_free {
            return Err(EvalError::Invalid("content-free calibration is defined for the standard prompts only (drop --prompt-variant or the calibration)".into()));
        }
        for (task, calibration) in &self.task_calibration {
            let task = tasks::task_info(task)?.name;
            if !calibration.applies_to(task) {
                return Err(EvalError::Invalid(format!(
                    "--task-calibration {task}={}: that scoring does not apply to {task}",
                    calibration.as_str()
                )));
            }
        }
        if self.all {
            return Ok(TASKS.to_vec());
        }
        let task = self
            .task
            .as_deref()
            .ok_or_else(|| EvalError::Invalid("give --task T or --all".into()))?;
        Ok(vec![tasks::task_info(task)?.name])
    }
}

/// A configuration to evaluate: which skills, and on which tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// The name in tables and the output sub-folder.
    pub label: String,
    /// Weights for the pack's skills, `id=weight,...`; None for the base model or a router.
    pub weights: Option<String>,
    /// Only these tasks (None: every task of the run).
    pub tasks: Option<Vec<&'static str>>,
    /// A router of the pack, weighting each prompt.
    pub router: Option<String>,
}

/// The configurations of `options` (see [`EvalOptions::configs`]) for `pack`.
pub fn eval_configs(options: &EvalOptions, pack: Option<&Pack>) -> Result<Vec<EvalConfig>> {
    let mut specs = options.configs.clone();
    if specs.is_empty() {
        specs = if options.no_skills || pack.is_none() {
            vec!["base".into()]
        } else if let Some(s) = &options.skills {
            vec![format!("weights:{}", s.replace(',', "+"))]
        } else if pack.is_some_and(|p| !p.manifest.defaults.router.is_empty()) {
            vec!["router".into()]
        } else {
            vec!["uniform".into()]
        };
    }
    specs
        .iter()
        .map(|spec| eval_config(spec, options.all, pack))
        .collect()
}

/// One configuration from its spec.
fn eval_config(spec: &str, all: bool, pack: Option<&Pack>) -> Result<EvalConfig> {
    let need_pack =
        || pack.ok_or_else(|| EvalError::Invalid(format!("configuration `{spec}` needs --pack")));
    let config = |weights: Option<String>| EvalConfig {
        label: spec.to_string(),
        weights,
        tasks: None,
        router: None,
    };
    Ok(if spec == "base" {
        config(None)
    } else if spec == "uniform" {
        let skills = &need_pack()?.manifest.skills;
        let share = 1.0 / skills.len() as f32;
        config(Some(
            skills
                .iter()
                .map(|s| format!("{}={share}", s.id))
                .collect::<Vec<_>>()
                .join(","),
        ))
    } else if let Some(id) = spec.strip_prefix("skill:") {
        need_pack()?;
        let fits: Vec<&'static str> = TASKS
            .iter()
            .copied()
            .filter(|t| relevant_skills(t).contains(&id))
            .collect();
        EvalConfig {
            // Over all tasks a single skill runs only where it fits (nowhere, for some).
            tasks: all.then_some(fits),
            ..config(Some(format!("{id}=1")))
        }
    } else if let Some(weights) = spec.strip_prefix("weights:") {
        need_pack()?;
        config(Some(weights.replace('+', ",")))
    } else if spec == "router" || spec.starts_with("router:") {
        let pack = need_pack()?;
        let requested = spec.strip_prefix("router:").unwrap_or("");
        let task_only = requested.ends_with("@task");
        let name = match requested.trim_end_matches("@task") {
            "" if pack.manifest.defaults.router.is_empty() => {
                return Err(EvalError::Invalid(
                    "configuration `router`: the pack has no default router".into(),
                ))
            }
            "" => pack.manifest.defaults.router.clone(),
            name => name.to_string(),
        };
        // `router:NAME@task` runs only on the router's own task over all tasks.
        let only = pack
            .router(&name)
            .filter(|r| all && task_only && !r.task.is_empty())
            .map(|r| vec![tasks::task_info(&r.task).map(|i| i.name).unwrap_or("")]);
        EvalConfig {
            label: spec.trim_end_matches("@task").to_string(),
            weights: None,
            tasks: only,
            router: Some(name),
        }
    } else {
        return Err(EvalError::Invalid(format!(
            "unknown configuration `{spec}` (base, uniform, skill:ID, weights:ID=W+ID=W)"
        )));
    })
}

/// The items of `task` that `options` selects (its file, or the split; at most the limit; in
/// the chosen wording), with the split's name for the summaries (`dev`, `file:PATH`).
pub fn load_items(options: &EvalOptions, task: &str) -> Result<(Vec<TaskItem>, String)> {
    let (items, split) = match &options.file {
        Some(f) => (tasks::load_file(task, f)?, format!("file:{}", f.display())),
        None => {
            let split = match options.split.as_str() {
                "dev" => Split::Dev,
                "train" => Split::Train,
                other => {
                    return Err(EvalError::Invalid(format!(
                        "--split must be dev or train, not `{other}`"
                    )))
                }
            };
            (
                tasks::select(tasks::load(task, &options.raw)?, split),
                options.split.clone(),
            )
        }
    };
    let limit = options.limit.unwrap_or_else(|| default_limit(task));
    let items: Vec<TaskItem> = if limit == 0 {
        items
    } else {
        items.into_iter().take(limit).collect()
    };
    let items = match options.prompt_variant {
        PromptVariant::Standard => items,
        PromptVariant::User => items.iter().map(tasks::user_variant).collect(),
    };
    Ok((items, split))
}

/// How a [`run_evaluation`] goes, as it goes.
#[derive(Debug)]
pub enum EvalProgress<'a> {
    /// A summary already in the output folder stands for this run (`resume`).
    Reused {
        config: &'a str,
        task: &'a str,
        summary: &'a Path,
    },
    /// A run of `items` items starts; the first `reused` come from earlier predictions.
    Started {
        config: &'a str,
        task: &'a str,
        items: usize,
        reused: usize,
    },
    /// A configuration with exactly the same weights as `same_as` on every prompt: its
    /// predictions are copied.
    Copied {
        config: &'a str,
        task: &'a str,
        same_as: &'a str,
    },
    /// Items done so far in the current run.
    Items(usize),
    /// The current run finished and its files are written.
    Finished(&'a TaskSummary),
}

/// What a [`run_evaluation`] found and wrote.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// One summary per (configuration, task) run, in run order.
    pub summaries: Vec<TaskSummary>,
    /// The markdown table of the summaries with its notes (label balance, no-skill shares).
    pub table: String,
    /// Whether `table.md`, `chart.svg` and `results.json` were written into the output folder
    /// (over all tasks, or with several configurations).
    pub wrote_table: bool,
}

/// Runs every configuration of `options` on its tasks, writing into `options.out`
/// `CONFIG/TASK.predictions.jsonl` and `CONFIG/TASK.summary.json` per run, then — over all
/// tasks or several configurations — `table.md`, `chart.svg` and `results.json`.
pub fn run_evaluation(
    options: &EvalOptions,
    mut progress: impl FnMut(EvalProgress<'_>),
) -> Result<EvalReport> {
    let tasks_to_run = options.tasks_to_run()?;
    let params = ModelParams {
        n_gpu_layers: options.gpu_layers,
        ..ModelParams::default()
    };
    let model = Model::load(Backend::get(), &options.model, &params)?;
    let pack = match &options.pack {
        Some(dir) => {
            let pack = Pack::open(dir)?;
            pack.check(&skillpack_convert::GgufInfo::open(&options.model)?)?;
            Some(pack)
        }
        None => None,
    };
    let configs = eval_configs(options, pack.as_ref())?;
    let mut ctx = Context::new(
        &model,
        &ContextParams {
            n_ctx: options.ctx_size,
            n_threads: options.threads,
            // Options are scored side by side, one sequence each (ChemProt has 13).
            n_seq_max: 16,
            ..Default::default()
        },
    )?;
    let mut summaries: Vec<TaskSummary> = Vec::new();
    // Routed configurations featurize each prompt once between them.
    let cache = FeatureCache::default();
    // Configurations that weight every prompt alike share one evaluation per task.
    let mut fingerprints: Vec<(String, String)> = Vec::new();
    for config in &configs {
        let (mut policy, fingerprint) =
            skill_policy(config, pack.as_ref(), &model, options, &cache)?;
        fingerprints.push((config.label.clone(), fingerprint.clone()));
        for task in &tasks_to_run {
            if config
                .tasks
                .as_ref()
                .is_some_and(|only| !only.contains(task))
            {
                continue;
            }
            let (items, split) = load_items(options, task)?;
            // Calibration changes option scores only: generated answers are the same under
            // either setting, and are recorded (and reused) as uncalibrated.
            let scores_options = items.iter().any(|item| {
                matches!(
                    item.target,
                    Target::Choice { .. } | Target::MultiLabel { .. }
                )
            });
            let task_options = EvalOptions {
                calibration: if scores_options {
                    options.calibration_for(task)
                } else {
                    Calibration::None
                },
                ..options.clone()
            };
            let options = &task_options;
            let dir = options.out.join(&config.label);
            let summary_path = dir.join(format!("{task}.summary.json"));
            let predictions_path = dir.join(format!("{task}.predictions.jsonl"));
            let partial_path = dir.join(format!("{task}.predictions.partial.jsonl"));
            if options.resume {
                if let Some(summary) =
                    reusable_summary(&summary_path, items.len(), &split, options, &fingerprint)
                {
                    progress(EvalProgress::Reused {
                        config: &config.label,
                        task,
                        summary: &summary_path,
                    });
                    summaries.push(summary);
                    continue;
                }
            }
            let twin = summaries.iter().find(|s| {
                s.task == *task
                    && s.items == items.len()
                    && fingerprints
                        .iter()
                        .any(|(label, f)| *label == s.config && *f == fingerprint)
            });
            if let Some(twin) = twin {
                let twin_label = twin.config.clone();
                let summary = copy_twin(twin, &config.label, &options.out)?;
                progress(EvalProgress::Copied {
                    config: &config.label,
                    task,
                    same_as: &twin_label,
                });
                summaries.push(summary);
                continue;
            }
            let done =
                earlier_predictions(options, &config.label, &fingerprint, task, &items, &split);
            progress(EvalProgress::Started {
                config: &config.label,
                task,
                items: items.len(),
                reused: done.len(),
            });
            let run = RunSpec {
                task,
                config: &config.label,
                split: &split,
                calibration: options.calibration,
                prompt_variant: options.prompt_variant,
            };
            create_dir(&dir)?;
            // The checkpoint: one line per item, flushed as it is made, so an interruption
            // loses at most the item in progress.
            let header = CheckpointHeader::of(options, &split, &fingerprint);
            let mut checkpoint = Checkpoint::create(&partial_path, &header, &done)?;
            let (predictions, mut summary) = harness::evaluate_resuming(
                &mut ctx,
                policy.as_mut(),
                &run,
                &items,
                done,
                |done, prediction| {
                    checkpoint.append(prediction)?;
                    progress(EvalProgress::Items(done));
                    Ok(())
                },
            )?;
            drop(checkpoint);
            summary.weights_fingerprint = Some(fingerprint.clone());
            skillpack_convert::write_atomic(&predictions_path, &predictions_jsonl(&predictions)?)?;
            skillpack_convert::write_atomic(&summary_path, &to_json(&summary, true)?)?;
            let _ = std::fs::remove_file(&partial_path);
            progress(EvalProgress::Finished(&summary));
            summaries.push(summary);
        }
    }
    let table = table_with_notes(&summaries, options);
    let wrote_table = options.all || configs.len() > 1;
    if wrote_table {
        create_dir(&options.out)?;
        skillpack_convert::write_atomic(&options.out.join("table.md"), table.as_bytes())?;
        skillpack_convert::write_atomic(
            &options.out.join("results.json"),
            &to_json(&summaries, true)?,
        )?;
        let model_name = options
            .model
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        report::bar_chart(
            &summaries,
            &options.out.join("chart.svg"),
            &format!("{model_name} — {} split", options.split),
        )?;
    }
    Ok(EvalReport {
        summaries,
        table,
        wrote_table,
    })
}

/// The skill policy of `config`: a router, a fixed weighting, or the base model; with a
/// fingerprint of the weights it gives (equal fingerprints: equal weights on every prompt).
fn skill_policy<'m>(
    config: &EvalConfig,
    pack: Option<&Pack>,
    model: &'m Model,
    options: &EvalOptions,
    cache: &FeatureCache,
) -> Result<(Box<dyn SkillPolicy<'m> + 'm>, String)> {
    const BASE: &str = "base";
    let Some(pack) = pack else {
        return Ok((Box::new(NoSkills), BASE.into()));
    };
    if let Some(weights) = &config.weights {
        let weights = parse_skill_weights(weights, &pack.manifest)?;
        let fingerprint = format!(
            "fixed {:?} {weights:?} skills {:016x}",
            options.mode,
            skills_fingerprint(pack)?
        );
        let mut engine = SkillEngine::new(model, pack.clone())?;
        // A fixed weighting is applied as given (the pack's top-k and minimum weight are
        // routing defaults).
        engine.top_k = 0;
        engine.min_weight = 0.0;
        return Ok((
            Box::new(FixedWeights {
                engine,
                weights,
                mode: options.mode,
            }),
            fingerprint,
        ));
    }
    let Some(name) = &config.router else {
        return Ok((Box::new(NoSkills), BASE.into()));
    };
    let router = skillpack_run::load_router(pack, Some(name), model, &options.model)?
        .expect("a named router loads or fails");
    // A zero gain scales every skill to nothing: the base model.
    let fingerprint = if router.config.gain == 0.0 {
        BASE.into()
    } else {
        // The pack's routing defaults prune the router's weights (top-k, minimum weight).
        let d = &pack.manifest.defaults;
        format!(
            "{} top-k {} min-weight {} skills {:016x}",
            router_fingerprint(&router, options.mode),
            d.top_k,
            d.min_weight,
            skills_fingerprint(pack)?
        )
    };
    let extractor = skillpack_route::FeatureExtractor::new(
        model,
        &options.model,
        router.config.features,
        options.threads,
    )?;
    Ok((
        Box::new(Routed {
            engine: SkillEngine::new(model, pack.clone())?,
            skills: pack.manifest.skills.iter().map(|s| s.id.clone()).collect(),
            router,
            extractor,
            mode: options.mode,
            model,
            cache: cache.clone(),
        }),
        fingerprint,
    ))
}

/// FNV-1a over `bytes`, continuing from `hash`: stable across builds, since summaries keep it.
fn fnv1a(hash: u64, bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(hash, |h, byte| {
        (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The pack's skills: their ids, in order, and their adapter files' bytes.
fn skills_fingerprint(pack: &Pack) -> Result<u64> {
    let mut hash = FNV_OFFSET;
    for skill in &pack.manifest.skills {
        let path = pack.adapter_path(skill);
        let bytes = std::fs::read(&path).map_err(|e| EvalError::Read {
            context: format!(
                "reading the adapter of skill `{}`: {}",
                skill.id,
                path.display()
            ),
            source: e,
        })?;
        hash = fnv1a(hash, skill.id.bytes().chain([0]));
        hash = fnv1a(hash, (bytes.len() as u64).to_le_bytes());
        hash = fnv1a(hash, bytes);
    }
    Ok(hash)
}

/// Everything about a router that decides its weights (not its name, task or training log),
/// with its arrays hashed.
fn router_fingerprint(router: &skillpack_route::Router, mode: Mode) -> String {
    let c = &router.config;
    let mut hash = FNV_OFFSET;
    for array in [
        &router.feature_mean,
        &router.feature_std,
        &router.weight,
        &router.bias,
    ] {
        hash = fnv1a(hash, (array.len() as u64).to_le_bytes());
        hash = fnv1a(hash, array.iter().flat_map(|x| x.to_le_bytes()));
    }
    format!(
        "router {mode:?} {} {:?} {} {:?} {} {} {} {:?} {} {:016x}",
        c.kind,
        c.features,
        c.dim,
        c.skills,
        c.none_entry,
        c.gain.to_bits(),
        c.temperature.to_bits(),
        c.commit,
        c.normalize_input,
        hash
    )
}

/// Copies the predictions of `twin` (a configuration with the same fingerprint, already in
/// `out`) as `label`'s, and returns the summary relabelled.
fn copy_twin(twin: &TaskSummary, label: &str, out: &Path) -> Result<TaskSummary> {
    let from = out
        .join(&twin.config)
        .join(format!("{}.predictions.jsonl", twin.task));
    let bytes = std::fs::read(&from).map_err(|e| EvalError::Output {
        path: from.display().to_string(),
        message: e.to_string(),
    })?;
    let dir = out.join(label);
    create_dir(&dir)?;
    skillpack_convert::write_atomic(
        &dir.join(format!("{}.predictions.jsonl", twin.task)),
        &bytes,
    )?;
    let mut summary = twin.clone();
    summary.config = label.to_string();
    summary.same_as = Some(twin.same_as.clone().unwrap_or_else(|| twin.config.clone()));
    if label.starts_with("router:") && summary.no_skill_share.is_none() {
        // The twin is the base model (or a fixed weighting of nothing): no skill on any item.
        summary.no_skill_share = Some(1.0);
    }
    skillpack_convert::write_atomic(
        &dir.join(format!("{}.summary.json", twin.task)),
        &to_json(&summary, true)?,
    )?;
    Ok(summary)
}

/// The longest run of predictions for the first items of `task` by configuration `label`:
/// this run's checkpoint (with `resume`), or a finished run in one of `reuse_from` with the
/// same split, scoring and wording.
fn earlier_predictions(
    options: &EvalOptions,
    label: &str,
    fingerprint: &str,
    task: &str,
    items: &[TaskItem],
    split: &str,
) -> Vec<Prediction> {
    let mut best: Vec<Prediction> = Vec::new();
    let mut consider = |path: &Path| {
        let found = prediction_prefix(path, items);
        if found.len() > best.len() {
            best = found;
        }
    };
    if options.resume {
        let path = options
            .out
            .join(label)
            .join(format!("{task}.predictions.partial.jsonl"));
        // Only a checkpoint of the same split, scoring and wording.
        let header = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<CheckpointHeader>(text.lines().next()?).ok());
        if header.is_some_and(|h| h.serves(&CheckpointHeader::of(options, split, fingerprint))) {
            consider(&path);
        }
    }
    for dir in &options.reuse_from {
        let dir = dir.join(label);
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{task}.summary.json"))) else {
            continue;
        };
        let Ok(summary) = serde_json::from_str::<TaskSummary>(&text) else {
            continue;
        };
        // Only predictions written with every field can be scored again.
        if summary.resumable
            && summary.split == split
            && summary.calibration == options.calibration
            && summary.prompt_variant == options.prompt_variant
            && same_weights(summary.weights_fingerprint.as_deref(), Some(fingerprint))
        {
            consider(&dir.join(format!("{task}.predictions.jsonl")));
        }
    }
    best
}

/// The predictions at the head of the JSON-lines file `path` whose ids follow `items` (a
/// checkpoint's header line is skipped; a torn last line, from an interruption, ends the run).
fn prediction_prefix(path: &Path, items: &[TaskItem]) -> Vec<Prediction> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip_while(|line| serde_json::from_str::<CheckpointHeader>(line).is_ok())
        .map_while(|line| serde_json::from_str::<Prediction>(line).ok())
        .zip(items)
        .take_while(|(p, item)| p.id == item.id)
        .map(|(p, _)| p)
        .collect()
}

/// The first line of a checkpoint: what its predictions were made under.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointHeader {
    checkpoint_split: String,
    calibration: Calibration,
    prompt_variant: PromptVariant,
    /// The configuration's weights fingerprint (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights: Option<String>,
}

impl CheckpointHeader {
    fn of(options: &EvalOptions, split: &str, fingerprint: &str) -> Self {
        CheckpointHeader {
            checkpoint_split: split.to_string(),
            calibration: options.calibration,
            prompt_variant: options.prompt_variant,
            weights: Some(fingerprint.to_string()),
        }
    }

    /// Whether predictions made under `self` stand for a run under `current`.
    fn serves(&self, current: &CheckpointHeader) -> bool {
        self.checkpoint_split == current.checkpoint_split
            && self.calibration == current.calibration
            && self.prompt_variant == current.prompt_variant
            && same_weights(self.weights.as_deref(), current.weights.as_deref())
    }
}

/// Whether a stored weights fingerprint matches the current one (older outputs have none, and
/// are taken on their configuration's label).
fn same_weights(stored: Option<&str>, current: Option<&str>) -> bool {
    match (stored, current) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// An append-only JSON-lines file of the predictions made so far, after a header line.
struct Checkpoint {
    file: std::fs::File,
    path: PathBuf,
}

impl Checkpoint {
    /// Starts `path` with `header` and the predictions `done` (replacing what it held: written
    /// beside it and renamed over it, so an interruption leaves the old checkpoint or the new
    /// one, never a part of either).
    fn create(path: &Path, header: &CheckpointHeader, done: &[Prediction]) -> Result<Self> {
        let io = |e: std::io::Error| EvalError::Output {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut head = to_json(header, false)?;
        head.push(b'\n');
        head.extend(predictions_jsonl(done)?);
        let fresh = path.with_extension("jsonl.tmp");
        std::fs::write(&fresh, &head).map_err(io)?;
        std::fs::rename(&fresh, path).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Checkpoint {
            file,
            path: path.to_path_buf(),
        })
    }

    fn append(&mut self, prediction: &Prediction) -> Result<()> {
        use std::io::Write;
        let line = predictions_jsonl(std::slice::from_ref(prediction))?;
        self.file.write_all(&line).map_err(|e| EvalError::Output {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// One JSON line per prediction.
fn predictions_jsonl(predictions: &[Prediction]) -> Result<Vec<u8>> {
    let mut jsonl = Vec::new();
    for prediction in predictions {
        jsonl.extend(to_json(prediction, false)?);
        jsonl.push(b'\n');
    }
    Ok(jsonl)
}

/// The summary at `path` when it matches this run (items, split, scoring, wording).
fn reusable_summary(
    path: &Path,
    items: usize,
    split: &str,
    options: &EvalOptions,
    fingerprint: &str,
) -> Option<TaskSummary> {
    let text = std::fs::read_to_string(path).ok()?;
    let summary: TaskSummary = serde_json::from_str(&text).ok()?;
    (summary.items == items
        && summary.split == split
        && summary.calibration == options.calibration
        && summary.prompt_variant == options.prompt_variant
        && same_weights(summary.weights_fingerprint.as_deref(), Some(fingerprint)))
    .then_some(summary)
}

/// How options were scored, e.g. `none; medqa: permutation; medmcqa: permutation`.
fn scoring_note(options: &EvalOptions) -> String {
    let mut note = options.calibration.as_str().to_string();
    for (task, calibration) in &options.task_calibration {
        note.push_str(&format!("; {task}: {}", calibration.as_str()));
    }
    note
}

/// The markdown table of `summaries` with how it was scored and its side tables.
fn table_with_notes(summaries: &[TaskSummary], options: &EvalOptions) -> String {
    let mut table = report::markdown_table(summaries);
    table.push_str(&format!(
        "\nScores in percent with a 95 % bootstrap interval over the items; prompts: {}; option scoring: {}; ⚠ marks predictions collapsed onto one label.\n",
        options.prompt_variant.as_str(),
        scoring_note(options)
    ));
    let balance = report::balance_table(summaries);
    if !balance.is_empty() {
        table.push_str("\nMost frequent predicted label and its share of the items:\n\n");
        table.push_str(&balance);
    }
    let no_skill = report::no_skill_table(summaries);
    if !no_skill.is_empty() {
        table.push_str("\nShare of the items a routed configuration ran without any skill (its \"no skill\" output):\n\n");
        table.push_str(&no_skill);
    }
    table
}

/// `value` as JSON bytes (pretty for the files people read).
fn to_json(value: &impl serde::Serialize, pretty: bool) -> Result<Vec<u8>> {
    let bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    bytes.map_err(|e| EvalError::Invalid(format!("serializing results: {e}")))
}

/// Creates `dir` and its parents (the atomic writer needs the folder to exist).
fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EvalError::Output {
        path: dir.display().to_string(),
        message: e.to_string(),
    })
}
