//! Training a router and registering it in its pack: supervised (skill labels over skill data,
//! optionally refined by soft labels from each skill's answer loss), prototypes, or end to end
//! (the LM loss of a task's train split through the mixture of skills, then the best of the
//! warm start, the base model and the trained heads on held-out items by the task's metric).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use crate::harness::Calibration;
use skillpack_data::tasks::{self, Split, Target, TaskItem};
use skillpack_data::Record;
use skillpack_llama::{Context, ContextParams, Model};
use skillpack_pack::{Pack, RouterSpec};
use skillpack_route::training::{
    check_warm_start, choose_candidate, default_router_name, first_rows_per_class, fit_supervised,
    lowest_loss, one_hot, selection_candidates, soft_label, standardize_rows, warm_start_head,
    HeldOut,
};
use skillpack_route::{fit, Commit, FeatureExtractor, FeatureKind, Router, RouterConfig};

use super::{load_model, prompt_features, record_prompts, skill_samples, Phase, Progress};
use crate::{EvalError, Result};

/// How a router learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterMethod {
    /// A linear head fitted to skill labels over skill data.
    Supervised,
    /// A linear head trained by the LM loss on a task's train split through the mixture.
    EndToEnd,
    /// Cosine similarity to per-skill mean features.
    Prototype,
}

impl RouterMethod {
    /// `supervised`, `end-to-end` or `prototype`, as router files record it.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterMethod::Supervised => "supervised",
            RouterMethod::EndToEnd => "end-to-end",
            RouterMethod::Prototype => "prototype",
        }
    }
}

impl FromStr for RouterMethod {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "supervised" => Ok(RouterMethod::Supervised),
            "end-to-end" => Ok(RouterMethod::EndToEnd),
            "prototype" => Ok(RouterMethod::Prototype),
            other => Err(EvalError::Invalid(format!(
                "unknown --method `{other}` (supervised, end-to-end, prototype)"
            ))),
        }
    }
}

/// Everything [`train_router`] needs; [`RouterTraining::new`] sets `skillpack router train`'s
/// defaults.
#[derive(Debug, Clone)]
pub struct RouterTraining {
    /// The pack's folder.
    pub pack: PathBuf,
    /// The base model's GGUF file.
    pub model: PathBuf,
    /// How the router learns.
    pub method: RouterMethod,
    /// The task (end-to-end: its train split is the training data; others: recorded only).
    pub task: Option<String>,
    /// Skill data folder from `skillpack data build` (supervised, prototype).
    pub data: Option<PathBuf>,
    /// The raw data folder (end-to-end).
    pub raw: PathBuf,
    /// The features it reads.
    pub features: FeatureKind,
    /// Router name (None: `METHOD[-TASK][-embedding]`, see
    /// [`default_router_name`]).
    pub name: Option<String>,
    /// Make it the pack's default router.
    pub make_default: bool,
    /// Records per skill (supervised, prototype).
    pub per_skill: usize,
    /// Supervised, prototype: whole user messages labelled with their skill (`{id, skill,
    /// prompt}` JSON lines, as `router accuracy` reads), added to the skill records. Skill
    /// records carry only our templates and request banks; these carry what users type.
    pub prompts: Option<PathBuf>,
    /// How many times each of `prompts` is added (their weight against the skill records).
    pub prompt_repeats: usize,
    /// End-to-end: start from this router's head (and standardization); `none` starts from
    /// zeros. None: the pack's default router when its features match.
    pub warm_start: Option<String>,
    /// End-to-end: learn the gain (otherwise it stays at `gain`).
    pub learn_gain: bool,
    /// End-to-end: share of the task's train items held out to select the router by the
    /// task's own metric (0 = no selection).
    pub validation_share: f64,
    /// End-to-end: at most this many held-out items are evaluated per candidate.
    pub validation_limit: usize,
    /// End-to-end: how the held-out items' options are scored (None: as the pack's evaluation
    /// scores the task, permutation for lettered multiple choice, plain otherwise).
    pub validation_scoring: Option<Calibration>,
    /// End-to-end: candidates every this many steps (None: a quarter of `steps`).
    pub select_every: Option<usize>,
    /// Add a "no skill" output (end-to-end).
    pub none_entry: bool,
    /// Supervised: soft labels for the first this many records per skill, from every single
    /// skill's answer loss.
    pub soft_labels: usize,
    /// τ of the soft labels (mean answer NLL per token, in nats).
    pub soft_tau: f32,
    /// Optimizer steps (end-to-end).
    pub steps: usize,
    /// Examples per end-to-end step.
    pub batch: usize,
    /// Adam's learning rate (end-to-end).
    pub learning_rate: f64,
    /// Longest example in tokens (end-to-end).
    pub max_len: usize,
    /// Gain for supervised and prototype routers (end-to-end starts here).
    pub gain: f32,
    /// Softmax temperature stored with the router (None: 1, prototypes 0.1).
    pub temperature: Option<f32>,
    /// Seed of the end-to-end batches (recorded for supervised routers).
    pub seed: u64,
    /// End-to-end train examples (0 = the whole train split).
    pub limit: usize,
    /// CPU threads of llama.cpp (None: its choice).
    pub threads: Option<i32>,
}

impl RouterTraining {
    /// Training of a `method` router for the pack in `pack` on the base model `model`, with
    /// the defaults of `skillpack router train` (mean-hidden features, 120 records per skill,
    /// end to end 60 steps of 4 with 30 % of the task's train items held out).
    pub fn new(pack: impl Into<PathBuf>, model: impl Into<PathBuf>, method: RouterMethod) -> Self {
        RouterTraining {
            pack: pack.into(),
            model: model.into(),
            method,
            task: None,
            data: None,
            raw: PathBuf::from("../shared/data/raw"),
            features: FeatureKind::MeanHidden,
            name: None,
            make_default: false,
            per_skill: 120,
            prompts: None,
            prompt_repeats: 1,
            warm_start: None,
            learn_gain: false,
            validation_share: 0.3,
            validation_limit: 60,
            validation_scoring: None,
            select_every: None,
            none_entry: false,
            soft_labels: 0,
            soft_tau: 0.5,
            steps: 60,
            batch: 4,
            learning_rate: 0.05,
            max_len: 384,
            gain: 1.0,
            temperature: None,
            seed: 13,
            limit: 0,
            threads: None,
        }
    }
}

/// A router [`train_router`] saved and registered.
#[derive(Debug, Clone)]
pub struct TrainedRouter {
    /// The router, its training record in `config.training`.
    pub router: Router,
    /// Its weights file relative to the pack, e.g. `routers/general.safetensors`.
    pub file: String,
    /// Its weights file on disk.
    pub path: PathBuf,
    /// Wall time of the whole run.
    pub seconds: f64,
}

impl TrainedRouter {
    /// `{"router", "file", "seconds", "training"}` as `skillpack router train --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "router": self.router.config.name, "file": self.file, "seconds": self.seconds,
            "training": self.router.config.training,
        })
    }
}

impl fmt::Display for TrainedRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "router `{}` saved to {} in {:.0} s",
            self.router.config.name,
            self.path.display(),
            self.seconds
        )
    }
}

/// What every method shares: the pack, the model and the new router's identity.
struct Run<'a, 'm> {
    config: &'a RouterTraining,
    pack: Pack,
    model: &'m Model,
    /// The pack's skill ids, in pack order.
    skills: Vec<String>,
    /// The task's canonical name (empty: none).
    task: String,
    name: String,
    base_fingerprint: String,
}

impl Run<'_, '_> {
    /// The new router's configuration with the method's settings.
    fn router_config(
        &self,
        kind: &str,
        none_entry: bool,
        temperature: f32,
        normalize_input: bool,
        training: serde_json::Value,
    ) -> RouterConfig {
        let features = self.config.features;
        RouterConfig {
            name: self.name.clone(),
            kind: kind.into(),
            method: self.config.method.as_str().into(),
            task: self.task.clone(),
            features,
            dim: features.width(self.model.n_embd()),
            skills: self.skills.clone(),
            none_entry,
            gain: self.config.gain,
            temperature,
            commit: Commit::Softmax,
            normalize_input,
            base_fingerprint: self.base_fingerprint.clone(),
            training,
        }
    }
}

/// Trains a router as `config` says, saves it in the pack's `routers/` and registers it in the
/// manifest (as the default when `config.make_default`). The pack and the base's architecture
/// are checked before llama.cpp loads anything.
pub fn train_router(config: &RouterTraining, progress: &mut dyn Progress) -> Result<TrainedRouter> {
    let started = Instant::now();
    let pack = Pack::open(&config.pack)?;
    let base = skillpack_convert::GgufInfo::open(&config.model)?;
    pack.check(&base)?;
    let model = load_model(&config.model)?;
    pack.manifest
        .base
        .check_prompt_format(model.prompt_format().as_str())
        .map_err(|m| EvalError::Invalid(format!("{}: {m}", config.pack.display())))?;
    let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
    if skills.is_empty() {
        return Err(EvalError::Invalid(format!(
            "{}: the pack has no skills",
            config.pack.display()
        )));
    }
    if config.prompts.is_some() && config.method == RouterMethod::EndToEnd {
        return Err(EvalError::Invalid(
            "--prompts adds rows to supervised and prototype routers; an end-to-end router \
             learns from its task's items"
                .into(),
        ));
    }
    let task = match &config.task {
        Some(t) => tasks::task_info(t)?.name.to_string(),
        None => String::new(),
    };
    let name = config
        .name
        .clone()
        .unwrap_or_else(|| default_router_name(config.method.as_str(), &task, config.features));
    let mut extractor =
        FeatureExtractor::new(&model, &config.model, config.features, config.threads)?;
    let mut run = Run {
        config,
        pack,
        model: &model,
        skills,
        task,
        name,
        base_fingerprint: base.fingerprint(),
    };
    let router = match config.method {
        RouterMethod::Supervised | RouterMethod::Prototype => {
            skill_data_router(&run, &mut extractor, progress)?
        }
        RouterMethod::EndToEnd => end_to_end_router(&run, &mut extractor, progress)?,
    };
    let routers = run.pack.dir.join("routers");
    let file = router.save(&routers)?;
    let spec = RouterSpec {
        name: run.name.clone(),
        file: format!("routers/{file}"),
        kind: router.config.kind.clone(),
        task: run.task.clone(),
        features: config.features.as_str().into(),
    };
    run.pack.set_router(spec, config.make_default)?;
    Ok(TrainedRouter {
        router,
        file: format!("routers/{file}"),
        path: routers.join(file),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The skill label of a routing prompt that no skill should answer (an out-of-domain request:
/// the router learns a "no skill" output from these, and the base model answers them).
pub const NO_SKILL: &str = "none";

/// The prompts of the routing set at `path` as training rows, each `repeats` times: the user
/// message as the query (no context), labelled with its skill's index in `skills` ([`NO_SKILL`]
/// prompts get `skills.len()`, the "no skill" output). Their phrasing is `prompts#LINE`, so
/// held-out selection sets aside whole prompts (every fourth).
fn prompt_samples(path: &Path, skills: &[String], repeats: usize) -> Result<Vec<(usize, Record)>> {
    if repeats == 0 {
        return Err(EvalError::Invalid(
            "prompt repeats must be at least 1 (0 would drop every prompt)".into(),
        ));
    }
    let mut out = Vec::new();
    for (i, p) in super::measure::read_routing_set(path)?
        .into_iter()
        .enumerate()
    {
        let position = skills.iter().position(|s| *s == p.skill);
        let no_skill = (p.skill == NO_SKILL).then_some(skills.len());
        let k = position.or(no_skill).ok_or_else(|| {
            EvalError::Invalid(format!(
                "{}: prompt `{}` asks for skill `{}`, which the pack does not have ({}; or `none`)",
                path.display(),
                p.id,
                p.skill,
                skills.join(", ")
            ))
        })?;
        let record = Record {
            id: format!("prompt:{}", p.id),
            skill: p.skill,
            source: "prompts".into(),
            context: String::new(),
            query: p.prompt,
            output: String::new(),
            phrasing: format!("prompts#{i}"),
        };
        out.extend(std::iter::repeat_n((k, record), repeats));
    }
    Ok(out)
}

/// A supervised or prototype router on `per_skill` records of each skill's train split (and
/// the labelled prompts of `prompts`, when given).
fn skill_data_router(
    run: &Run<'_, '_>,
    extractor: &mut FeatureExtractor<'_>,
    progress: &mut dyn Progress,
) -> Result<Router> {
    let config = run.config;
    let method = config.method.as_str();
    let data = config.data.as_ref().ok_or_else(|| {
        EvalError::Invalid(format!("--method {method} needs --data (skill data)"))
    })?;
    let mut samples = skill_samples(data, "train", &run.skills, config.per_skill)?;
    let mut extra = 0;
    if let Some(path) = &config.prompts {
        let added = prompt_samples(path, &run.skills, config.prompt_repeats)?;
        extra = added.len() / config.prompt_repeats.max(1);
        samples.extend(added);
    }
    let prompts = record_prompts(samples.iter().map(|(_, r)| r));
    let features = prompt_features(extractor, run.model, &prompts, "features", progress)?;
    let labels: Vec<usize> = samples.iter().map(|(k, _)| *k).collect();
    // "No skill" prompts add an output after the skills.
    let skills = run.skills.len();
    let none_entry = labels.contains(&skills);
    let outputs = skills + none_entry as usize;
    let (mean, std) = fit::standardization(&features);
    let inputs = standardize_rows(&features, &mean, &std);
    let router = |config: RouterConfig, weight, bias| Router {
        config,
        feature_mean: mean.clone(),
        feature_std: std.clone(),
        weight,
        bias,
    };
    if config.method == RouterMethod::Prototype {
        let temperature = config.temperature.unwrap_or(0.1);
        // Temperature 1 inside the rows; the stored one sharpens at inference.
        let weight = fit::prototypes(&inputs, &labels, outputs, 1.0);
        let training = serde_json::json!({"examples": inputs.len(), "per_skill": config.per_skill,
            "prompts": extra, "prompt_repeats": config.prompt_repeats});
        return Ok(router(
            run.router_config("prototype", none_entry, temperature, true, training),
            weight,
            vec![0.0; outputs],
        ));
    }
    let mut targets = one_hot(&labels, outputs);
    if config.soft_labels > 0 {
        // Soft labels come from the skills' answer losses: "no skill" prompts have no answer.
        let chosen: Vec<usize> = first_rows_per_class(&labels, config.soft_labels)
            .into_iter()
            .filter(|&i| labels[i] < skills)
            .collect();
        let records: Vec<&Record> = chosen.iter().map(|&i| &samples[i].1).collect();
        let losses = skill_answer_losses(run.model, &run.pack, &records, config.threads, progress)?;
        for (row, &i) in chosen.iter().enumerate() {
            targets[i] = soft_label(&losses[row], config.soft_tau);
            targets[i].resize(outputs, 0.0);
        }
        let agree = chosen
            .iter()
            .zip(&losses)
            .filter(|(&i, row)| lowest_loss(row) == labels[i])
            .count();
        progress.note(&format!(
            "soft labels for {} records: the record's own skill has the lowest answer loss for {agree}",
            chosen.len()
        ));
    }
    let phrasings: Vec<&str> = samples.iter().map(|(_, r)| r.phrasing.as_str()).collect();
    let fitted = fit_supervised(
        &inputs,
        &targets,
        &labels,
        &HeldOut::from_phrasings(&phrasings),
    );
    progress.note(&fitted.to_string());
    let training = serde_json::json!({"examples": inputs.len(), "per_skill": config.per_skill,
        "prompts": extra, "prompt_repeats": config.prompt_repeats, "loss": fitted.head.loss, "train_accuracy": fitted.head.accuracy,
        "held_out_accuracy": fitted.held_out_accuracy, "held_out": fitted.held_out,
        "held_out_by_wording": fitted.held_out_by_wording, "l2": fitted.l2,
        "l2_grid": fitted.l2_grid.iter().map(|(l, a)| serde_json::json!([l, a])).collect::<Vec<_>>(),
        "seed": config.seed});
    Ok(router(
        run.router_config(
            "linear",
            none_entry,
            config.temperature.unwrap_or(1.0),
            false,
            training,
        ),
        fitted.head.weight,
        fitted.head.bias,
    ))
}

/// Each record's mean answer NLL per token under each skill of `pack` alone (rows: records,
/// columns: the pack's skills), scored through llama.cpp on at most 64 answer tokens. These
/// are the losses soft labels come from.
pub fn skill_answer_losses(
    model: &Model,
    pack: &Pack,
    records: &[&Record],
    threads: Option<i32>,
    progress: &mut dyn Progress,
) -> Result<Vec<Vec<f32>>> {
    let k = pack.manifest.skills.len();
    let mut ctx = Context::new(
        model,
        &ContextParams {
            n_threads: threads,
            ..Default::default()
        },
    )?;
    let mut engine = skillpack_run::SkillEngine::new(model, pack.clone())?;
    // Each skill alone, at its full weight.
    engine.top_k = 0;
    engine.min_weight = 0.0;
    let prompts = records
        .iter()
        .map(|r| {
            Ok((
                crate::harness::prompt_tokens(model, &r.context, &r.query)?,
                crate::harness::answer_tokens(model, &r.output)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    progress.start(Phase::SoftLabels, "soft labels", k * records.len());
    let mut columns: Vec<Vec<f32>> = Vec::with_capacity(k);
    for skill in 0..k {
        let weights: Vec<f32> = (0..k).map(|j| (j == skill) as u8 as f32).collect();
        engine.apply(&mut ctx, &weights, skillpack_run::Mode::Multi, 0)?;
        let mut scorer = crate::Scorer::new(&mut ctx);
        let mut column = Vec::with_capacity(prompts.len());
        for (prompt, answer) in &prompts {
            let answer = &answer[..answer.len().min(64)];
            let ll = scorer.score(prompt, &[answer.to_vec()])?[0];
            column.push((-ll / answer.len().max(1) as f64) as f32);
            progress.update(skill * prompts.len() + column.len(), None);
        }
        columns.push(column);
    }
    progress.finish();
    Ok((0..records.len())
        .map(|row| columns.iter().map(|c| c[row]).collect())
        .collect())
}

/// The `(query, answer)` pairs a task item trains an end-to-end router on: HoC items become
/// one yes/no question per gold hallmark plus one without, as the evaluation asks them.
pub fn task_examples(item: &TaskItem) -> Vec<(String, String)> {
    match &item.target {
        Target::Choice { options, gold } => vec![(item.query.clone(), options[*gold].clone())],
        Target::MultiLabel { queries, gold, .. } => {
            let mut out: Vec<(String, String)> = gold
                .iter()
                .map(|&g| (queries[g].clone(), "yes".to_string()))
                .collect();
            let h = skillpack_data::stable_hash(&item.id) as usize;
            if let Some(n) = (0..queries.len())
                .map(|i| (i + h) % queries.len())
                .find(|i| !gold.contains(i))
            {
                out.push((queries[n].clone(), "no".into()));
            }
            out
        }
        Target::Entities { text, types, gold } => {
            let mut lists: Vec<Vec<&str>> = vec![Vec::new(); types.len()];
            for (s, e, k) in gold {
                let i = types.iter().position(|t| t == k).unwrap_or(0);
                if !lists[i]
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&text[*s..*e]))
                {
                    lists[i].push(&text[*s..*e]);
                }
            }
            vec![(
                item.query.clone(),
                tasks::ner_answer(&lists[0], lists.get(1).map_or(&[][..], |v| v)),
            )]
        }
        Target::Text { references, .. } => vec![(item.query.clone(), references[0].clone())],
    }
}

/// Splits a task's train items into `(validation, fit)` by a hash of each id (about `share`
/// of them validate, at most `limit`): validation items select the router and are never
/// trained on.
pub fn split_validation(
    items: Vec<TaskItem>,
    share: f64,
    limit: usize,
) -> (Vec<TaskItem>, Vec<TaskItem>) {
    let (validation, fit_items): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| {
        let bucket = skillpack_data::stable_hash(&format!("validation:{}", i.id)) % 1000;
        (bucket as f64) < share * 1000.0
    });
    (validation.into_iter().take(limit).collect(), fit_items)
}

/// The training records of `items` ([`task_examples`] of each), in an order fixed by hash, at
/// most `limit` (0 = all).
pub fn end_to_end_records(items: &[TaskItem], limit: usize) -> Vec<skillpack_train::Record> {
    let mut records = Vec::new();
    for item in items {
        for (query, output) in task_examples(item) {
            records.push(skillpack_train::Record {
                id: item.id.clone(),
                skill: String::new(),
                context: item.context.clone(),
                query,
                output,
            });
        }
    }
    records.sort_by_key(|r| skillpack_data::stable_hash(&format!("e2e:{}:{}", r.id, r.query)));
    if limit > 0 {
        records.truncate(limit);
    }
    records
}

/// The router an end-to-end run starts from: `requested` by name, none for `none`, or by
/// default the pack's default router when it reads `features` (see
/// [`check_warm_start`](skillpack_route::training::check_warm_start)).
pub fn warm_start_router(
    pack: &Pack,
    requested: Option<&str>,
    features: FeatureKind,
    model: &Model,
    model_path: &Path,
) -> Result<Option<Router>> {
    let name = match requested {
        Some("none") => return Ok(None),
        Some(n) => n.to_string(),
        None if pack.manifest.defaults.router.is_empty() => return Ok(None),
        None => pack.manifest.defaults.router.clone(),
    };
    let router = skillpack_run::load_router(pack, Some(&name), model, model_path)?
        .expect("a named router is loaded or refused");
    Ok(check_warm_start(&router, features, requested.is_some())?.then_some(router))
}

/// How routing changed with training: the skill weights (≥ 0.01) of the first
/// [`BEFORE_AFTER_PROMPTS`] validation prompts under the warm start (`before`, null without one)
/// and under the chosen router (`after`).
fn weights_before_after(
    extractor: &mut FeatureExtractor<'_>,
    model: &Model,
    validation: &[TaskItem],
    warm: Option<&Router>,
    chosen: &Router,
    progress: &mut dyn Progress,
) -> Result<serde_json::Value> {
    let items = &validation[..validation.len().min(BEFORE_AFTER_PROMPTS)];
    let prompts: Vec<(String, String)> = items
        .iter()
        .map(|item| (item.context.clone(), item.query.clone()))
        .collect();
    let features = prompt_features(extractor, model, &prompts, "before/after", progress)?;
    let shown = |router: &Router, f: &[f32]| -> Result<serde_json::Value> {
        let weights: serde_json::Map<String, serde_json::Value> = router
            .skill_weights(f, None)?
            .into_iter()
            .filter(|(_, w)| *w >= 0.01)
            .map(|(skill, w)| (skill, ((w * 1000.0).round() / 1000.0).into()))
            .collect();
        Ok(weights.into())
    };
    let mut rows = Vec::new();
    for ((item, (context, query)), f) in items.iter().zip(&prompts).zip(&features) {
        let prompt: String = format!("{query} {context}").chars().take(160).collect();
        rows.push(serde_json::json!({
            "id": item.id,
            "prompt": prompt,
            "before": warm.map(|w| shown(w, f)).transpose()?,
            "after": shown(chosen, f)?,
        }));
    }
    Ok(rows.into())
}

/// Validation prompts whose weights an end-to-end router records before and after training.
pub const BEFORE_AFTER_PROMPTS: usize = 5;

/// How an end-to-end router's held-out items of `task` are scored: `chosen`, which must apply
/// to the task, or as the pack's evaluation scores it (lettered options by permutation: plain
/// scoring could select a router for a letter preference).
fn validation_scoring(task: &str, chosen: Option<Calibration>) -> Result<Calibration> {
    match chosen {
        Some(c) if !c.applies_to(task) => Err(EvalError::Invalid(format!(
            "--validation-scoring {}: that scoring does not apply to {task}",
            c.as_str()
        ))),
        Some(c) => Ok(c),
        None if Calibration::Permutation.applies_to(task) => Ok(Calibration::Permutation),
        None => Ok(Calibration::None),
    }
}

/// Each candidate router's headline metric on the `validation` items of `task`, run through
/// llama.cpp as `skillpack eval` runs it. The candidates must read one feature kind: each item
/// is featurized once, and only the head changes between candidates.
#[allow(clippy::too_many_arguments)]
pub fn score_candidates(
    model: &Model,
    model_path: &Path,
    pack: &Pack,
    task: &str,
    validation: &[TaskItem],
    candidates: &[(String, Router)],
    calibration: Calibration,
    threads: Option<i32>,
    progress: &mut dyn Progress,
) -> Result<Vec<f64>> {
    use crate::policy::{FeatureCache, Routed};
    let mut ctx = Context::new(
        model,
        &ContextParams {
            n_ctx: 2048,
            n_threads: threads,
            n_seq_max: 16,
            ..Default::default()
        },
    )?;
    let Some((_, first)) = candidates.first() else {
        return Ok(Vec::new());
    };
    let mut policy = Routed {
        engine: skillpack_run::SkillEngine::new(model, pack.clone())?,
        router: first.clone(),
        extractor: FeatureExtractor::new(model, model_path, first.config.features, threads)?,
        skills: pack.manifest.skills.iter().map(|s| s.id.clone()).collect(),
        mode: skillpack_run::Mode::Auto,
        model,
        cache: FeatureCache::default(),
    };
    let mut scores = Vec::new();
    for (label, router) in candidates {
        policy.router = router.clone();
        progress.start(Phase::Validation, label, validation.len());
        let run = crate::harness::RunSpec {
            task,
            config: label,
            split: "train-validation",
            calibration,
            prompt_variant: tasks::PromptVariant::Standard,
        };
        let (_, summary) =
            crate::harness::evaluate(&mut ctx, &mut policy, &run, validation, |i| {
                progress.update(i, None)
            })?;
        progress.finish();
        scores.push(summary.metrics.first().map(|m| m.1).unwrap_or(0.0));
    }
    Ok(scores)
}

/// An end-to-end router on the task's train split, chosen on its held-out items when there
/// are any.
fn end_to_end_router(
    run: &Run<'_, '_>,
    extractor: &mut FeatureExtractor<'_>,
    progress: &mut dyn Progress,
) -> Result<Router> {
    let config = run.config;
    let task = run.task.as_str();
    if task.is_empty() {
        return Err(EvalError::Invalid(
            "--method end-to-end needs --task".into(),
        ));
    }
    if !(0.0..1.0).contains(&config.validation_share) {
        return Err(EvalError::Invalid(format!(
            "--validation-share must be in [0, 1), not {}",
            config.validation_share
        )));
    }
    let items = tasks::select(tasks::load(task, &config.raw)?, Split::Train);
    let (validation, fit_items) =
        split_validation(items, config.validation_share, config.validation_limit);
    let records = end_to_end_records(&fit_items, config.limit);
    let warm = warm_start_router(
        &run.pack,
        config.warm_start.as_deref(),
        config.features,
        run.model,
        &config.model,
    )?;
    let prompts: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.context.clone(), r.query.clone()))
        .collect();
    let features = prompt_features(extractor, run.model, &prompts, "features", progress)?;
    // A warm start keeps its router's standardization, so its head reads the same inputs.
    let (mean, std) = match &warm {
        Some(w) => (w.feature_mean.clone(), w.feature_std.clone()),
        None => fit::standardization(&features),
    };
    let inputs = standardize_rows(&features, &mean, &std);
    let initial_head = warm
        .as_ref()
        .map(|w| warm_start_head(w, &run.skills, config.none_entry))
        .transpose()?;
    let examples = records
        .iter()
        .map(|r| skillpack_train::tokenize(run.model, r, config.max_len))
        .collect::<Result<Vec<_>, _>>()?;
    let weights = skillpack_train::ModelWeights::load(
        &config.model,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )?;
    let mut llama = skillpack_train::Llama::new(weights);
    let adapter_paths: Vec<PathBuf> = run
        .pack
        .manifest
        .skills
        .iter()
        .map(|s| run.pack.adapter_path(s))
        .collect();
    let adapters: Vec<&Path> = adapter_paths.iter().map(PathBuf::as_path).collect();
    let mixture = skillpack_train::Mixture::from_gguf(&llama, &adapters)?;
    let select_every = config
        .select_every
        .unwrap_or((config.steps / 4).max(1))
        .max(1);
    progress.start(Phase::EndToEnd, &format!("router {task}"), config.steps);
    let head = skillpack_train::train_router(
        &mut llama,
        mixture,
        &examples,
        &inputs,
        &skillpack_train::RouterTrainConfig {
            steps: config.steps,
            batch: config.batch,
            learning_rate: config.learning_rate,
            max_len: config.max_len,
            seed: config.seed,
            none_entry: config.none_entry,
            initial_gain: config.gain,
            learn_gain: config.learn_gain,
            initial_head,
            snapshot_every: if validation.is_empty() {
                0
            } else {
                select_every
            },
        },
        |step, loss| progress.update(step, Some(loss)),
    )?;
    progress.finish();
    drop(llama);
    let n = head.losses.len();
    let first: f32 = head.losses.iter().take(10).sum::<f32>() / n.clamp(1, 10) as f32;
    let last: f32 = head.losses.iter().rev().take(10).sum::<f32>() / n.clamp(1, 10) as f32;
    progress.note(&format!(
        "end-to-end router on {task}: {} examples, {} steps, loss {first:.3} -> {last:.3} (means of 10), gain {:.2}",
        examples.len(),
        config.steps,
        head.gain
    ));
    let commit = warm.as_ref().map(|w| w.config.commit).unwrap_or_default();
    let trained = |weight: Vec<f32>, bias: Vec<f32>, gain: f32, training: serde_json::Value| {
        let mut router = Router {
            config: run.router_config(
                "linear",
                config.none_entry,
                config.temperature.unwrap_or(1.0),
                false,
                training,
            ),
            feature_mean: mean.clone(),
            feature_std: std.clone(),
            weight,
            bias,
        };
        router.config.gain = gain;
        router.config.commit = commit;
        router
    };
    let mut training = serde_json::json!({"examples": examples.len(), "steps": config.steps,
        "batch": config.batch, "lr": config.learning_rate, "seed": config.seed,
        "loss_first10": first, "loss_last10": last, "learn_gain": config.learn_gain,
        "warm_start": warm.as_ref().map(|w| w.config.name.clone()), "losses": head.losses});
    if validation.is_empty() {
        return Ok(trained(head.weight, head.bias, head.gain, training));
    }
    let snapshots = head.snapshots.iter().map(|snap| {
        let router = trained(
            snap.weight.clone(),
            snap.bias.clone(),
            snap.gain,
            serde_json::Value::Null,
        );
        (snap.step, router)
    });
    let mut candidates = selection_candidates(warm.as_ref(), snapshots);
    let scoring = validation_scoring(task, config.validation_scoring)?;
    let scores = score_candidates(
        run.model,
        &config.model,
        &run.pack,
        task,
        &validation,
        &candidates,
        scoring,
        config.threads,
        progress,
    )?;
    let metric = tasks::task_info(task)?.metrics[0];
    let labels: Vec<String> = candidates.iter().map(|(l, _)| l.clone()).collect();
    let choice = choose_candidate(&labels, &scores, warm.is_some(), metric);
    let table: Vec<serde_json::Value> = labels
        .iter()
        .zip(&scores)
        .map(|(label, s)| serde_json::json!({"candidate": label, metric: s}))
        .collect();
    progress.note(&format!(
        "validation ({} items, {metric}): {}; chosen: {}",
        validation.len(),
        labels
            .iter()
            .zip(&scores)
            .map(|(l, s)| format!("{l} {:.1}", s * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        labels[choice.index]
    ));
    training["validation"] = serde_json::json!({
        "items": validation.len(), "metric": metric, "scoring": scoring.as_str(),
        "candidates": table, "chosen": labels[choice.index],
    });
    if let Some(note) = choice.note {
        training["note"] = note.into();
    }
    let (_, mut chosen) = candidates.swap_remove(choice.index);
    training["weights_before_after"] = weights_before_after(
        extractor,
        run.model,
        &validation,
        warm.as_ref(),
        &chosen,
        progress,
    )?;
    // A fallback keeps the warm start's head, temperature and gain as they are; either way the
    // router takes this run's name and provenance.
    chosen.config.name = run.name.clone();
    chosen.config.method = config.method.as_str().into();
    chosen.config.task = run.task.clone();
    chosen.config.training = training;
    Ok(chosen)
}
