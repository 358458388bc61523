//! `skillpack router`: train a pack's skill routers (supervised by skill labels, end to end on
//! a task, or prototypes), list them, and show a prompt's routing.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use skillpack_data::tasks::{self, Split, Target};
use skillpack_data::Record;
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_pack::{Pack, RouterSpec};
use skillpack_route::fit::{self, LinearFit};
use skillpack_route::{FeatureExtractor, FeatureKind, Router, RouterConfig};

/// Train and inspect a pack's skill routers.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  skillpack router train --pack P --method supervised --data data/skills --name general --default
  skillpack router train --pack P --method end-to-end --task pubmedqa --name pubmedqa
  skillpack router train --pack P --method prototype --data data/skills --name prototype
  skillpack router show --pack P \"List the chemicals in: ...\"
  skillpack router list --pack P --json")]
pub struct Args {
    #[command(subcommand)]
    pub command: RouterCommand,
}

#[derive(clap::Subcommand)]
pub enum RouterCommand {
    /// Train a router and register it in the pack.
    Train(TrainArgs),
    /// The pack's routers.
    List {
        #[arg(long)]
        pack: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Time to first token with routing ÷ without (base model), per router, on a task's dev
    /// prompts: routing includes the features, the weights and applying them.
    Bench {
        #[arg(long)]
        pack: PathBuf,
        /// Routers to measure (default: all of the pack's).
        #[arg(long, value_delimiter = ',')]
        routers: Vec<String>,
        #[arg(long, default_value = "pubmedqa")]
        task: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, default_value = "../shared/data/raw")]
        raw: PathBuf,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        threads: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// Set a router's softmax temperature by held-out NLL on the skills' own records (temperature
    /// scaling): each skill was trained to run at scale 1, so a confident route should give its
    /// skill a weight near 1 rather than a diluted one. Task data is not used.
    #[command(
        after_help = "Example:\n  skillpack router calibrate --pack examples/packs/medical-smollm2 --router general --data data/skills"
    )]
    Calibrate {
        #[arg(long)]
        pack: PathBuf,
        /// Router name (default: the pack's default router).
        #[arg(long)]
        router: Option<String>,
        /// Skill data from `skillpack data build`.
        #[arg(long)]
        data: PathBuf,
        /// Which file of each skill: dev (default) or train.
        #[arg(long, default_value = "dev")]
        split: String,
        #[arg(long, default_value_t = 20)]
        per_skill: usize,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        threads: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// Set how a router's scores become weights (softmax, sparsemax, or top-1 above a
    /// threshold), in place or as a new router sharing its head.
    #[command(
        after_help = "Examples:\n  skillpack router commit --pack P --router general --mode top1:0.5 --name general-top1\n  skillpack router commit --pack P --router general --mode sparsemax --name general-sparsemax"
    )]
    Commit {
        #[arg(long)]
        pack: PathBuf,
        /// Router name (default: the pack's default router).
        #[arg(long)]
        router: Option<String>,
        /// softmax, sparsemax or top1:THRESHOLD.
        #[arg(long)]
        mode: String,
        /// Save as a new router with this name (default: change the router in place).
        #[arg(long)]
        name: Option<String>,
        /// Make the result the pack's default router.
        #[arg(long)]
        default: bool,
        #[arg(long)]
        json: bool,
    },
    /// Top-1 routing accuracy on a set of free-form prompts (JSONL of {id, skill, prompt}):
    /// whether each router's heaviest skill is the one the prompt asks for.
    #[command(
        after_help = "Example:\n  skillpack router accuracy --pack examples/packs/medical-smollm2 --set examples/routing/freeform.jsonl"
    )]
    Accuracy {
        #[arg(long)]
        pack: PathBuf,
        /// Prompts with their intended skill.
        #[arg(long)]
        set: PathBuf,
        /// Routers to score (default: all of the pack's).
        #[arg(long, value_delimiter = ',')]
        routers: Vec<String>,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        threads: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// A prompt's skill weights under a router.
    Show {
        #[arg(long)]
        pack: PathBuf,
        /// Router name (default: the pack's default router).
        #[arg(long)]
        router: Option<String>,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        prompt: String,
    },
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub pack: PathBuf,
    /// supervised (skill labels over skill data), end-to-end (LM loss on a task's train split
    /// through the mixture), prototype (similarity to per-skill mean features).
    #[arg(long)]
    pub method: String,
    /// The task (end-to-end: its train split is the training data; others: recorded only).
    #[arg(long)]
    pub task: Option<String>,
    /// Skill data folder from `skillpack data build` (supervised, prototype).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The raw data folder (end-to-end).
    #[arg(long, default_value = "../shared/data/raw")]
    pub raw: PathBuf,
    /// mean-hidden (one extra forward pass) or mean-embedding (no forward pass).
    #[arg(long, default_value = "mean-hidden")]
    pub features: FeatureKind,
    /// Router name (default: METHOD[-TASK][-embedding]).
    #[arg(long)]
    pub name: Option<String>,
    /// Make it the pack's default router.
    #[arg(long)]
    pub default: bool,
    /// Records per skill (supervised, prototype).
    #[arg(long, default_value_t = 120)]
    pub per_skill: usize,
    /// End-to-end: start from this router's head (its standardization too), e.g. `general`;
    /// `none` starts from zeros. Default: the pack's default router when its features match.
    #[arg(long)]
    pub warm_start: Option<String>,
    /// End-to-end: learn the gain (otherwise it stays at --gain: skills run at their trained
    /// scale).
    #[arg(long)]
    pub learn_gain: bool,
    /// End-to-end: share of the task's train items held out to select the router by the task's
    /// own metric (the warm start is a candidate, so the result never loses to it there);
    /// 0 = no selection.
    #[arg(long, default_value_t = 0.3)]
    pub validation_share: f64,
    /// End-to-end: at most this many held-out items are evaluated per candidate.
    #[arg(long, default_value_t = 60)]
    pub validation_limit: usize,
    /// End-to-end: candidates every this many steps (default: a quarter of --steps).
    #[arg(long)]
    pub select_every: Option<usize>,
    /// Add a "no skill" output (end-to-end: the loss decides how much base model to keep).
    #[arg(long)]
    pub none_entry: bool,
    /// Supervised: refine the labels of the first N records per skill with soft labels from
    /// every single skill's answer loss, q_i ∝ exp(−NLL_i / τ) (N × skills scoring passes).
    #[arg(long, default_value_t = 0)]
    pub soft_labels: usize,
    /// τ of the soft labels (mean answer NLL per token, in nats).
    #[arg(long, default_value_t = 0.5)]
    pub soft_tau: f32,
    /// Optimizer steps (end-to-end).
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long, default_value_t = 384)]
    pub max_len: usize,
    /// Gain for supervised/prototype routers (end-to-end learns it, starting here).
    #[arg(long, default_value_t = 1.0)]
    pub gain: f32,
    /// Softmax temperature stored with the router (prototype: of the cosine similarities).
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
    /// Train examples for end-to-end (0 = the whole train split).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<i32>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        RouterCommand::Train(t) => train(t),
        RouterCommand::List { pack, json } => {
            let pack = Pack::open(&pack)?;
            if json {
                return super::print_json(&serde_json::json!({
                    "default": pack.manifest.defaults.router,
                    "routers": pack.manifest.routers,
                }));
            }
            for r in &pack.manifest.routers {
                println!(
                    "{}{:<24} {:<10} {:<15} task {}",
                    if r.name == pack.manifest.defaults.router {
                        "* "
                    } else {
                        "  "
                    },
                    r.name,
                    r.kind,
                    r.features,
                    if r.task.is_empty() { "-" } else { &r.task }
                );
            }
            Ok(())
        }
        RouterCommand::Bench {
            pack,
            routers,
            task,
            limit,
            raw,
            model,
            threads,
            json,
        } => bench(pack, routers, task, limit, raw, model, threads, json),
        RouterCommand::Calibrate {
            pack,
            router,
            data,
            split,
            per_skill,
            model,
            threads,
            json,
        } => calibrate(pack, router, data, &split, per_skill, model, threads, json),
        RouterCommand::Commit {
            pack,
            router,
            mode,
            name,
            default,
            json,
        } => commit(pack, router, &mode, name, default, json),
        RouterCommand::Accuracy {
            pack,
            set,
            routers,
            model,
            threads,
            json,
        } => accuracy(pack, set, routers, model, threads, json),
        RouterCommand::Show {
            pack,
            router,
            model,
            json,
            prompt,
        } => {
            let model_path = match model {
                Some(p) => p,
                None => super::default_model()?,
            };
            let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
            let pack = Pack::open(&pack)?;
            let router = skillpack_run::load_router(&pack, router.as_deref(), &model, &model_path)?
                .ok_or_else(|| anyhow::anyhow!("the pack has no router"))?;
            let mut extractor =
                FeatureExtractor::new(&model, &model_path, router.config.features, None)?;
            let tokens = skillpack_eval::harness::prompt_tokens(&model, "", &prompt)?;
            let weights = router.skill_weights(&extractor.features(&tokens)?, None)?;
            if json {
                return super::print_json(&serde_json::json!({
                    "router": router.config.name, "weights": weights,
                }));
            }
            for (s, w) in weights {
                println!("{s:<6} {w:.3}");
            }
            Ok(())
        }
    }
}

/// Up to `per_skill` records of each skill's train split, spread over the file by hash.
fn skill_samples(
    data: &Path,
    skills: &[String],
    per_skill: usize,
) -> anyhow::Result<Vec<(usize, Record)>> {
    skill_samples_from(data, "train", skills, per_skill)
}

/// [`skill_samples`] from `SPLIT.jsonl` of each skill.
fn skill_samples_from(
    data: &Path,
    split: &str,
    skills: &[String],
    per_skill: usize,
) -> anyhow::Result<Vec<(usize, Record)>> {
    let mut out = Vec::new();
    for (k, skill) in skills.iter().enumerate() {
        let path = data.join(skill).join(format!("{split}.jsonl"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (build it with `skillpack data build`)",
                path.display()
            )
        })?;
        let mut records: Vec<Record> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        records.sort_by_key(|r| skillpack_data::stable_hash(&format!("router:{}", r.id)));
        records.truncate(per_skill);
        out.extend(records.into_iter().map(|r| (k, r)));
    }
    Ok(out)
}

/// A progress bar over `len` items, labelled `prefix`.
fn progress(len: usize, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// Features of each `(context, query)` with a progress bar.
fn features_of(
    extractor: &mut FeatureExtractor<'_>,
    model: &Model,
    prompts: &[(String, String)],
    label: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let bar = progress(prompts.len(), label);
    let mut features = Vec::with_capacity(prompts.len());
    for (context, query) in prompts {
        let t = skillpack_eval::harness::prompt_tokens(model, context, query)?;
        features.push(extractor.features(&t)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(features)
}

/// The answer a task item trains on (end-to-end routers), and its query: HoC items become one
/// yes/no question per gold hallmark plus one without, as the evaluation asks them.
fn task_examples(item: &tasks::TaskItem) -> Vec<(String, String)> {
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

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    // The pack and the base's architecture are checked before llama.cpp loads anything.
    let mut pack = Pack::open(&args.pack)?;
    let base = skillpack_convert::GgufInfo::open(&model_path)?;
    pack.check(&base)?;
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    pack.manifest
        .base
        .check_prompt_format(model.prompt_format().as_str())
        .map_err(|m| anyhow::anyhow!("{}: {m}", args.pack.display()))?;
    let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
    if skills.is_empty() {
        bail!("{}: the pack has no skills", args.pack.display());
    }
    let task = match &args.task {
        Some(t) => tasks::task_info(t)?.name.to_string(),
        None => String::new(),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        let mut n = args.method.clone();
        if !task.is_empty() {
            n = format!("{n}-{task}");
        }
        match args.features {
            FeatureKind::MeanEmbedding => n.push_str("-embedding"),
            FeatureKind::SegmentEmbedding => n.push_str("-segments"),
            FeatureKind::SegmentLexical => n.push_str("-lexical"),
            FeatureKind::MeanHidden => {}
        }
        n
    });
    let mut extractor = FeatureExtractor::new(&model, &model_path, args.features, args.threads)?;
    let config = |kind: &str,
                  none_entry: bool,
                  gain: f32,
                  temperature: f32,
                  normalize: bool,
                  training: serde_json::Value| RouterConfig {
        name: name.clone(),
        kind: kind.into(),
        method: args.method.clone(),
        task: task.clone(),
        features: args.features,
        dim: args.features.width(model.n_embd()),
        skills: skills.clone(),
        none_entry,
        gain,
        temperature,
        commit: skillpack_route::Commit::Softmax,
        normalize_input: normalize,
        base_fingerprint: base.fingerprint(),
        training,
    };
    let router = match args.method.as_str() {
        "supervised" | "prototype" => {
            let data = args.data.as_ref().ok_or_else(|| {
                anyhow::anyhow!("--method {} needs --data (skill data)", args.method)
            })?;
            let samples = skill_samples(data, &skills, args.per_skill)?;
            let prompts: Vec<(String, String)> = samples
                .iter()
                .map(|(_, r)| (r.context.clone(), r.query.clone()))
                .collect();
            let features = features_of(&mut extractor, &model, &prompts, "features")?;
            let labels: Vec<usize> = samples.iter().map(|(k, _)| *k).collect();
            let (mean, std) = fit::standardization(&features);
            let standardize = |f: &Vec<f32>| -> Vec<f32> {
                f.iter()
                    .zip(&mean)
                    .zip(&std)
                    .map(|((x, m), s)| (x - m) / s)
                    .collect()
            };
            let inputs: Vec<Vec<f32>> = features.iter().map(standardize).collect();
            if args.method == "supervised" {
                let mut targets: Vec<Vec<f32>> = labels
                    .iter()
                    .map(|&k| (0..skills.len()).map(|j| (j == k) as u8 as f32).collect())
                    .collect();
                if args.soft_labels > 0 {
                    soft_labels(&model, &pack, &samples, &mut targets, &args)?;
                }
                // Held-out accuracy first, then the head on everything. Records rendered from a
                // user request bank are held out by wording (every request index ≡ 0 mod 4): the
                // accuracy on wordings the head never saw, which also picks the L2 penalty.
                // Without such records, every fifth example is held out.
                let unseen_wording = |r: &Record| {
                    r.phrasing
                        .rsplit_once('#')
                        .and_then(|(_, k)| k.parse::<usize>().ok())
                        .is_some_and(|k| k % 4 == 0)
                };
                let by_wording = samples.iter().any(|(_, r)| !r.phrasing.is_empty());
                let held_out: Vec<bool> = samples
                    .iter()
                    .enumerate()
                    .map(|(i, (_, r))| {
                        if by_wording {
                            unseen_wording(r)
                        } else {
                            i % 5 == 0
                        }
                    })
                    .collect();
                let (fit_in, fit_t): (Vec<_>, Vec<_>) = inputs
                    .iter()
                    .zip(&targets)
                    .zip(&held_out)
                    .filter(|(_, h)| !**h)
                    .map(|((z, t), _)| (z.clone(), t.clone()))
                    .unzip();
                let held: Vec<usize> = (0..inputs.len()).filter(|&i| held_out[i]).collect();
                let grid: Vec<f32> = if by_wording {
                    vec![1e-3, 1e-2, 1e-1, 1.0]
                } else {
                    vec![LinearFit::default().l2]
                };
                let mut tried = Vec::new();
                for &l2 in &grid {
                    let options = LinearFit {
                        l2,
                        ..LinearFit::default()
                    };
                    let probe = fit::fit_linear(&fit_in, &fit_t, &options);
                    let correct = held
                        .iter()
                        .filter(|&&i| probe.predict(&inputs[i]) == labels[i])
                        .count();
                    tried.push((l2, correct as f32 / held.len().max(1) as f32));
                }
                // Ties go to the stronger penalty (the smoother head).
                let (l2, held_accuracy) =
                    tried
                        .iter()
                        .copied()
                        .fold((0f32, -1f32), |b, (l, a)| if a >= b.1 { (l, a) } else { b });
                let head = fit::fit_linear(
                    &inputs,
                    &targets,
                    &LinearFit {
                        l2,
                        ..LinearFit::default()
                    },
                );
                eprintln!(
                    "supervised router: {} examples, loss {:.3}, training accuracy {:.1} %, held-out accuracy {:.1} % ({} held out{}), L2 {l2}{}",
                    inputs.len(),
                    head.loss,
                    head.accuracy * 100.0,
                    held_accuracy * 100.0,
                    held.len(),
                    if by_wording { ", by request wording" } else { ", 1 in 5" },
                    if tried.len() > 1 {
                        format!(
                            " chosen from {}",
                            tried
                                .iter()
                                .map(|(l, a)| format!("{l}: {:.1} %", a * 100.0))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else {
                        String::new()
                    }
                );
                Router {
                    config: config(
                        "linear",
                        false,
                        args.gain,
                        args.temperature.unwrap_or(1.0),
                        false,
                        serde_json::json!({"examples": inputs.len(), "per_skill": args.per_skill,
                            "loss": head.loss, "train_accuracy": head.accuracy,
                            "held_out_accuracy": held_accuracy, "held_out": held.len(),
                            "held_out_by_wording": by_wording, "l2": l2,
                            "l2_grid": tried.iter().map(|(l, a)| serde_json::json!([l, a])).collect::<Vec<_>>(),
                            "seed": args.seed}),
                    ),
                    feature_mean: mean,
                    feature_std: std,
                    weight: head.weight,
                    bias: head.bias,
                }
            } else {
                let temperature = args.temperature.unwrap_or(0.1);
                // Temperature 1 inside the rows; the stored one sharpens at inference.
                let weight = fit::prototypes(&inputs, &labels, skills.len(), 1.0);
                Router {
                    config: config(
                        "prototype",
                        false,
                        args.gain,
                        temperature,
                        true,
                        serde_json::json!({"examples": inputs.len(), "per_skill": args.per_skill}),
                    ),
                    feature_mean: mean,
                    feature_std: std,
                    weight,
                    bias: vec![0.0; skills.len()],
                }
            }
        }
        "end-to-end" => {
            if task.is_empty() {
                bail!("--method end-to-end needs --task");
            }
            if !(0.0..1.0).contains(&args.validation_share) {
                bail!(
                    "--validation-share must be in [0, 1), not {}",
                    args.validation_share
                );
            }
            let items = tasks::select(tasks::load(&task, &args.raw)?, Split::Train);
            // Held-out items by hash: they select the router and are never trained on.
            let (validation, fit_items): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| {
                let bucket = skillpack_data::stable_hash(&format!("validation:{}", i.id)) % 1000;
                (bucket as f64) < args.validation_share * 1000.0
            });
            let validation: Vec<_> = validation.into_iter().take(args.validation_limit).collect();
            let mut records = Vec::new();
            for item in &fit_items {
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
            records
                .sort_by_key(|r| skillpack_data::stable_hash(&format!("e2e:{}:{}", r.id, r.query)));
            if args.limit > 0 {
                records.truncate(args.limit);
            }
            let warm = warm_start_router(&pack, &args, &model, &model_path)?;
            let prompts: Vec<(String, String)> = records
                .iter()
                .map(|r| (r.context.clone(), r.query.clone()))
                .collect();
            let features = features_of(&mut extractor, &model, &prompts, "features")?;
            // A warm start keeps its router's standardization, so its head reads the same inputs.
            let (mean, std) = match &warm {
                Some(w) => (w.feature_mean.clone(), w.feature_std.clone()),
                None => fit::standardization(&features),
            };
            let inputs: Vec<Vec<f32>> = features
                .iter()
                .map(|f| {
                    f.iter()
                        .zip(&mean)
                        .zip(&std)
                        .map(|((x, m), s)| (x - m) / s.max(1e-6))
                        .collect()
                })
                .collect();
            let initial_head = warm
                .as_ref()
                .map(|w| warm_head(w, &skills, args.none_entry))
                .transpose()?;
            let examples = records
                .iter()
                .map(|r| skillpack_train::tokenize(&model, r, args.max_len))
                .collect::<Result<Vec<_>, _>>()?;
            let weights = skillpack_train::ModelWeights::load(
                &model_path,
                &candle_core::Device::Cpu,
                candle_core::DType::F32,
            )?;
            let mut llama = skillpack_train::Llama::new(weights);
            let adapter_paths: Vec<PathBuf> = pack
                .manifest
                .skills
                .iter()
                .map(|s| pack.adapter_path(s))
                .collect();
            let refs: Vec<&Path> = adapter_paths.iter().map(PathBuf::as_path).collect();
            let mixture = skillpack_train::Mixture::from_gguf(&llama, &refs)?;
            let bar = ProgressBar::new(args.steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} loss {msg} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("router {task}"));
            let select_every = args.select_every.unwrap_or((args.steps / 4).max(1)).max(1);
            let head = skillpack_train::train_router(
                &mut llama,
                mixture,
                &examples,
                &inputs,
                &skillpack_train::RouterTrainConfig {
                    steps: args.steps,
                    batch: args.batch,
                    learning_rate: args.lr,
                    max_len: args.max_len,
                    seed: args.seed,
                    none_entry: args.none_entry,
                    initial_gain: args.gain,
                    learn_gain: args.learn_gain,
                    initial_head,
                    snapshot_every: if validation.is_empty() {
                        0
                    } else {
                        select_every
                    },
                },
                |step, loss| {
                    bar.set_position(step as u64);
                    bar.set_message(format!("{loss:.3}"));
                },
            )?;
            bar.finish_and_clear();
            drop(llama);
            let n = head.losses.len();
            let first: f32 = head.losses.iter().take(10).sum::<f32>() / n.clamp(1, 10) as f32;
            let last: f32 = head.losses.iter().rev().take(10).sum::<f32>() / n.clamp(1, 10) as f32;
            eprintln!(
                "end-to-end router on {task}: {} examples, {} steps, loss {first:.3} -> {last:.3} (means of 10), gain {:.2}",
                examples.len(),
                args.steps,
                head.gain
            );
            let commit = warm.as_ref().map(|w| w.config.commit).unwrap_or_default();
            let trained = |weight: Vec<f32>, bias: Vec<f32>, gain: f32, note: serde_json::Value| {
                let mut r = Router {
                    config: config(
                        "linear",
                        args.none_entry,
                        gain,
                        args.temperature.unwrap_or(1.0),
                        false,
                        note,
                    ),
                    feature_mean: mean.clone(),
                    feature_std: std.clone(),
                    weight,
                    bias,
                };
                r.config.commit = commit;
                r
            };
            let training = serde_json::json!({"examples": examples.len(), "steps": args.steps, "batch": args.batch,
                "lr": args.lr, "seed": args.seed, "loss_first10": first, "loss_last10": last,
                "learn_gain": args.learn_gain, "warm_start": warm.as_ref().map(|w| w.config.name.clone()),
                "losses": head.losses});
            if validation.is_empty() {
                trained(head.weight, head.bias, head.gain, training)
            } else {
                // Candidates: the warm start as it is, then the head every `select_every` steps.
                let mut candidates: Vec<(String, Router)> = Vec::new();
                if let Some(w) = &warm {
                    candidates.push((format!("warm start `{}`", w.config.name), w.clone()));
                    // The base model as a candidate: a task on which every skill hurts gets no
                    // skill (gain 0), so a task router never loses to the base model on its
                    // validation items either.
                    let mut none = w.clone();
                    none.config.gain = 0.0;
                    candidates.push((NO_SKILL_CANDIDATE.into(), none));
                }
                for snap in &head.snapshots {
                    candidates.push((
                        format!("step {}", snap.step),
                        trained(
                            snap.weight.clone(),
                            snap.bias.clone(),
                            snap.gain,
                            serde_json::Value::Null,
                        ),
                    ));
                }
                let scores = score_on_validation(
                    &model,
                    &model_path,
                    &pack,
                    &task,
                    &validation,
                    &candidates,
                    args.threads,
                )?;
                // Ties go to the earlier candidate: the warm start first.
                let best =
                    (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
                let metric = tasks::task_info(&task)?.metrics[0];
                let table: Vec<serde_json::Value> = candidates
                    .iter()
                    .zip(&scores)
                    .map(|((label, _), s)| serde_json::json!({"candidate": label, metric: s}))
                    .collect();
                let fell_back = warm.is_some() && best == 0;
                eprintln!(
                    "validation ({} items, {metric}): {}; chosen: {}",
                    validation.len(),
                    candidates
                        .iter()
                        .zip(&scores)
                        .map(|((l, _), s)| format!("{l} {:.1}", s * 100.0))
                        .collect::<Vec<_>>()
                        .join(", "),
                    candidates[best].0
                );
                let mut training = training;
                training["validation"] = serde_json::json!({
                    "items": validation.len(), "metric": metric, "candidates": table,
                    "chosen": candidates[best].0,
                });
                if candidates[best].0 == NO_SKILL_CANDIDATE {
                    training["note"] = format!(
                        "the base model beat the warm start and every trained head on the held-out items ({metric}): this router gives no skill"
                    )
                    .into();
                } else if fell_back {
                    training["note"] = format!(
                        "no trained head beat the warm start `{}` on the held-out items ({metric}): this router is that router's head",
                        candidates[0].0
                    )
                    .into();
                }
                let (_, mut chosen) = candidates.swap_remove(best);
                // A fallback keeps the warm start's head, temperature and gain as they are;
                // either way the router takes this run's name and provenance.
                chosen.config.name = name.clone();
                chosen.config.method = args.method.clone();
                chosen.config.task = task.clone();
                chosen.config.training = training;
                chosen
            }
        }
        other => bail!("unknown --method `{other}` (supervised, end-to-end, prototype)"),
    };
    let file = router.save(&pack.dir.join("routers"))?;
    let spec = RouterSpec {
        name: name.clone(),
        file: format!("routers/{file}"),
        kind: router.config.kind.clone(),
        task: task.clone(),
        features: args.features.as_str().into(),
    };
    pack.set_router(spec, args.default)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        super::print_json(&serde_json::json!({
            "router": name, "file": format!("routers/{file}"), "seconds": seconds,
            "training": router.config.training,
        }))?;
    } else {
        println!(
            "router `{name}` saved to {} in {seconds:.0} s",
            pack.dir.join("routers").join(file).display()
        );
    }
    Ok(())
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

#[allow(clippy::too_many_arguments)]
fn bench(
    pack_dir: PathBuf,
    routers: Vec<String>,
    task: String,
    limit: usize,
    raw: PathBuf,
    model: Option<PathBuf>,
    threads: Option<i32>,
    json: bool,
) -> anyhow::Result<()> {
    use skillpack_llama::{Context, ContextParams, Sampler, SamplerParams};
    use std::time::Instant;
    let model_path = match model {
        Some(p) => p,
        None => super::default_model()?,
    };
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let pack = Pack::open(&pack_dir)?;
    pack.check(&skillpack_convert::GgufInfo::open(&model_path)?)?;
    let names = names_or_all(&pack, routers);
    if names.is_empty() {
        bail!("the pack has no routers to measure");
    }
    let items: Vec<_> = tasks::select(tasks::load(&task, &raw)?, Split::Dev)
        .into_iter()
        .take(limit)
        .collect();
    let prompts = items
        .iter()
        .map(|i| skillpack_eval::harness::prompt_tokens(&model, &i.context, &i.query))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ctx = Context::new(
        &model,
        &ContextParams {
            n_threads: threads,
            ..Default::default()
        },
    )?;
    let mut sampler = Sampler::new(&model, &SamplerParams::default());
    // Prompt evaluation and the first sampled token, from an empty cache.
    let mut first_token = |ctx: &mut Context<'_>, prompt: &[i32]| -> anyhow::Result<()> {
        ctx.clear_memory();
        ctx.eval(prompt, 0, false)?;
        sampler.sample(ctx, -1)?;
        Ok(())
    };
    let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
    let mut engine = skillpack_run::SkillEngine::new(&model, pack.clone())?;
    // Warm-up, then the base model's TTFT per prompt.
    first_token(&mut ctx, &prompts[0])?;
    let mut base = Vec::new();
    for p in &prompts {
        ctx.clear_adapters()?;
        let t = Instant::now();
        first_token(&mut ctx, p)?;
        base.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let base_ms = median(&mut base);
    let mut rows = Vec::new();
    for name in &names {
        let router =
            skillpack_run::load_router(&pack, Some(name), &model, &model_path)?.expect("named");
        let mut extractor =
            FeatureExtractor::new(&model, &model_path, router.config.features, threads)?;
        let (mut total, mut feature_ms, mut apply_ms) = (Vec::new(), Vec::new(), Vec::new());
        for p in &prompts {
            let t = Instant::now();
            let f = extractor.features(p)?;
            let w = router.weights_for(&f, None, &skills)?;
            let t_features = t.elapsed().as_secs_f64() * 1e3;
            engine.apply(&mut ctx, &w, skillpack_run::Mode::Auto, p.len() + 64)?;
            let t_apply = t.elapsed().as_secs_f64() * 1e3 - t_features;
            first_token(&mut ctx, p)?;
            total.push(t.elapsed().as_secs_f64() * 1e3);
            feature_ms.push(t_features);
            apply_ms.push(t_apply);
        }
        let ttft = median(&mut total);
        rows.push(serde_json::json!({
            "router": name,
            "features": router.config.features.as_str(),
            "ttft_ms": ttft,
            "features_ms": median(&mut feature_ms),
            "apply_ms": median(&mut apply_ms),
            "ratio": ttft / base_ms,
        }));
    }
    let mean_tokens = prompts.iter().map(Vec::len).sum::<usize>() as f64 / prompts.len() as f64;
    if json {
        return super::print_json(&serde_json::json!({
            "task": task, "prompts": prompts.len(), "mean_prompt_tokens": mean_tokens,
            "base_ttft_ms": base_ms, "routers": rows,
        }));
    }
    println!(
        "{} prompts of {task} (mean {mean_tokens:.0} tokens); base TTFT {base_ms:.1} ms (median)",
        prompts.len()
    );
    for r in rows {
        println!(
            "{:<28} {:<15} TTFT {:>7.1} ms  features {:>6.1} ms  apply {:>6.1} ms  ratio {:.3}",
            r["router"].as_str().unwrap_or(""),
            r["features"].as_str().unwrap_or(""),
            r["ttft_ms"].as_f64().unwrap_or(0.0),
            r["features_ms"].as_f64().unwrap_or(0.0),
            r["apply_ms"].as_f64().unwrap_or(0.0),
            r["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// Replaces the one-hot labels of the first `args.soft_labels` records of each skill with
/// `softmax(−NLL / τ)` over the skills, where `NLL_k` is the mean per-token loss of the
/// record's answer under skill `k` alone (through llama.cpp).
fn soft_labels(
    model: &Model,
    pack: &Pack,
    samples: &[(usize, Record)],
    targets: &mut [Vec<f32>],
    args: &TrainArgs,
) -> anyhow::Result<()> {
    use skillpack_llama::{Context, ContextParams};
    let k = pack.manifest.skills.len();
    let chosen: Vec<usize> = (0..samples.len())
        .filter(|&i| {
            samples[..i]
                .iter()
                .filter(|(s, _)| *s == samples[i].0)
                .count()
                < args.soft_labels
        })
        .collect();
    let mut ctx = Context::new(
        model,
        &ContextParams {
            n_threads: args.threads,
            ..Default::default()
        },
    )?;
    let mut engine = skillpack_run::SkillEngine::new(model, pack.clone())?;
    engine.top_k = 0;
    engine.min_weight = 0.0;
    let prompts = chosen
        .iter()
        .map(|&i| {
            let r = &samples[i].1;
            Ok((
                skillpack_eval::harness::prompt_tokens(model, &r.context, &r.query)?,
                skillpack_eval::harness::answer_tokens(model, &r.output)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bar = ProgressBar::new((k * chosen.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix("soft labels");
    // Mean answer NLL per token, one column per skill.
    let mut columns: Vec<Vec<f32>> = Vec::with_capacity(k);
    for skill in 0..k {
        let weights: Vec<f32> = (0..k).map(|j| (j == skill) as u8 as f32).collect();
        engine.apply(&mut ctx, &weights, skillpack_run::Mode::Multi, 0)?;
        let mut scorer = skillpack_eval::Scorer::new(&mut ctx);
        let mut column = Vec::with_capacity(prompts.len());
        for (prompt, answer) in &prompts {
            let answer = &answer[..answer.len().min(64)];
            let ll = scorer.score(prompt, &[answer.to_vec()])?[0];
            column.push((-ll / answer.len().max(1) as f64) as f32);
            bar.inc(1);
        }
        columns.push(column);
    }
    let nll: Vec<Vec<f32>> = (0..chosen.len())
        .map(|row| columns.iter().map(|c| c[row]).collect())
        .collect();
    bar.finish_and_clear();
    for (row, &i) in chosen.iter().enumerate() {
        let logits: Vec<f32> = nll[row].iter().map(|l| -l).collect();
        targets[i] = skillpack_route::router::softmax(&logits, args.soft_tau);
    }
    let agree = chosen
        .iter()
        .enumerate()
        .filter(|(row, &i)| {
            let best = (0..k)
                .min_by(|&a, &b| nll[*row][a].total_cmp(&nll[*row][b]))
                .unwrap_or(0);
            best == samples[i].0
        })
        .count();
    eprintln!(
        "soft labels for {} records: the record's own skill has the lowest answer loss for {agree}",
        chosen.len()
    );
    Ok(())
}

/// Mean negative log-likelihood of each record's own skill under softmax(logits / t).
fn label_nll(logits: &[(usize, Vec<f32>)], t: f32) -> f64 {
    let total: f64 = logits
        .iter()
        .map(|(k, l)| -(skillpack_route::router::softmax(l, t)[*k].max(1e-12) as f64).ln())
        .sum();
    total / logits.len().max(1) as f64
}

#[allow(clippy::too_many_arguments)]
fn calibrate(
    pack_dir: PathBuf,
    name: Option<String>,
    data: PathBuf,
    split: &str,
    per_skill: usize,
    model: Option<PathBuf>,
    threads: Option<i32>,
    json: bool,
) -> anyhow::Result<()> {
    if split != "dev" && split != "train" {
        anyhow::bail!("--split must be dev or train, not `{split}`");
    }
    let model_path = match model {
        Some(p) => p,
        None => super::default_model()?,
    };
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let pack = Pack::open(&pack_dir)?;
    let mut router = skillpack_run::load_router(&pack, name.as_deref(), &model, &model_path)?
        .ok_or_else(|| anyhow::anyhow!("the pack has no router"))?;
    let spec = pack
        .router(&router.config.name)
        .ok_or_else(|| anyhow::anyhow!("router `{}` is not in the pack", router.config.name))?
        .clone();
    let skills = router.config.skills.clone();
    let samples = skill_samples_from(&data, split, &skills, per_skill)?;
    let prompts: Vec<(String, String)> = samples
        .iter()
        .map(|(_, r)| (r.context.clone(), r.query.clone()))
        .collect();
    let mut extractor =
        FeatureExtractor::new(&model, &model_path, router.config.features, threads)?;
    let features = features_of(&mut extractor, &model, &prompts, "features")?;
    let logits: Vec<(usize, Vec<f32>)> = samples
        .iter()
        .zip(&features)
        .map(|((k, _), f)| Ok((*k, router.logits(f)?)))
        .collect::<anyhow::Result<_>>()?;
    let before = router.config.temperature;
    // Temperature scaling: a grid fine enough for routing, including the current value.
    let mut grid: Vec<f32> = (1..=60).map(|i| i as f32 * 0.05).collect();
    grid.push(before);
    let best = grid
        .iter()
        .copied()
        .min_by(|a, b| label_nll(&logits, *a).total_cmp(&label_nll(&logits, *b)))
        .unwrap_or(before);
    let own_weight = |t: f32| {
        logits
            .iter()
            .map(|(k, l)| skillpack_route::router::softmax(l, t)[*k] as f64)
            .sum::<f64>()
            / logits.len().max(1) as f64
    };
    let report = serde_json::json!({
        "router": router.config.name,
        "records": logits.len(),
        "split": split,
        "temperature_before": before,
        "temperature": best,
        "nll_before": label_nll(&logits, before),
        "nll": label_nll(&logits, best),
        "own_skill_weight_before": own_weight(before),
        "own_skill_weight": own_weight(best),
    });
    router.config.temperature = best;
    let file = router.save(
        &pack
            .dir
            .join(Path::new(&spec.file).parent().unwrap_or(Path::new(""))),
    )?;
    if json {
        return super::print_json(&report);
    }
    println!(
        "router `{}`: temperature {before} -> {best} on {} {split} records; NLL {:.3} -> {:.3}; mean weight on the record's own skill {:.3} -> {:.3} (saved {file})",
        router.config.name,
        logits.len(),
        report["nll_before"].as_f64().unwrap_or(0.0),
        report["nll"].as_f64().unwrap_or(0.0),
        report["own_skill_weight_before"].as_f64().unwrap_or(0.0),
        report["own_skill_weight"].as_f64().unwrap_or(0.0),
    );
    Ok(())
}

/// `router commit`: a router with another commit mode, in place or under a new name.
fn commit(
    pack_dir: PathBuf,
    name: Option<String>,
    mode: &str,
    new_name: Option<String>,
    make_default: bool,
    json: bool,
) -> anyhow::Result<()> {
    let commit = skillpack_route::Commit::parse(mode).map_err(anyhow::Error::msg)?;
    let mut pack = Pack::open(&pack_dir)?;
    let source = name.unwrap_or_else(|| pack.manifest.defaults.router.clone());
    let spec = pack
        .router(&source)
        .ok_or_else(|| anyhow::anyhow!("the pack has no router `{source}`"))?
        .clone();
    let mut router = Router::load(&pack.dir.join(&spec.file))?;
    router.config.commit = commit;
    let target = new_name.unwrap_or_else(|| source.clone());
    if target != source {
        if pack.router(&target).is_some() {
            bail!("the pack already has a router `{target}`: choose another --name");
        }
        router.config.name = target.clone();
        router.config.training = serde_json::json!({
            "derived_from": source, "commit": commit.label(),
        });
    }
    let file = router.save(&pack.dir.join("routers"))?;
    pack.set_router(
        RouterSpec {
            name: target.clone(),
            file: format!("routers/{file}"),
            ..spec
        },
        make_default,
    )?;
    if json {
        return super::print_json(&serde_json::json!({
            "router": target, "from": source, "commit": commit.label(), "default": make_default,
        }));
    }
    println!(
        "router `{target}` ({} of `{source}`'s scores){}",
        commit.label(),
        if make_default {
            ", now the default"
        } else {
            ""
        }
    );
    Ok(())
}

/// `names`, or every router of the pack when none are given.
fn names_or_all(pack: &Pack, names: Vec<String>) -> Vec<String> {
    if names.is_empty() {
        pack.manifest
            .routers
            .iter()
            .map(|r| r.name.clone())
            .collect()
    } else {
        names
    }
}

/// One prompt of a routing set.
#[derive(serde::Deserialize)]
struct RoutingPrompt {
    id: String,
    skill: String,
    prompt: String,
}

/// `router accuracy`: each router's top-1 skill against the intended one.
fn accuracy(
    pack_dir: PathBuf,
    set: PathBuf,
    names: Vec<String>,
    model: Option<PathBuf>,
    threads: Option<i32>,
    json: bool,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&set).with_context(|| format!("reading {}", set.display()))?;
    let prompts: Vec<RoutingPrompt> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| {
                format!(
                    "{}:{}: not a {{id, skill, prompt}} line",
                    set.display(),
                    i + 1
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if prompts.is_empty() {
        bail!("{}: no prompts", set.display());
    }
    let model_path = match model {
        Some(p) => p,
        None => super::default_model()?,
    };
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let pack = Pack::open(&pack_dir)?;
    let names = names_or_all(&pack, names);
    let pairs: Vec<(String, String)> = prompts
        .iter()
        .map(|p| (String::new(), p.prompt.clone()))
        .collect();
    // One featurization per feature kind, shared by the routers that read it.
    let mut by_kind: Vec<(FeatureKind, Vec<Vec<f32>>)> = Vec::new();
    let mut rows = Vec::new();
    for name in &names {
        let router = skillpack_run::load_router(&pack, Some(name), &model, &model_path)?
            .ok_or_else(|| anyhow::anyhow!("the pack has no router `{name}`"))?;
        let kind = router.config.features;
        if !by_kind.iter().any(|(k, _)| *k == kind) {
            let mut extractor = FeatureExtractor::new(&model, &model_path, kind, threads)?;
            let f = features_of(&mut extractor, &model, &pairs, kind.as_str())?;
            by_kind.push((kind, f));
        }
        let features = &by_kind.iter().find(|(k, _)| *k == kind).expect("added").1;
        let mut per_skill: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        let mut misses = Vec::new();
        for (p, f) in prompts.iter().zip(features) {
            let weights = router.skill_weights(f, None)?;
            let (top, w) =
                weights.iter().fold(
                    ("none", 0f32),
                    |b, (s, w)| if *w > b.1 { (s.as_str(), *w) } else { b },
                );
            let entry = per_skill.entry(p.skill.clone()).or_default();
            entry.1 += 1;
            if top == p.skill {
                entry.0 += 1;
            } else {
                misses.push(
                    serde_json::json!({"id": p.id, "skill": p.skill, "top": top, "weight": w}),
                );
            }
        }
        let correct: usize = per_skill.values().map(|(c, _)| c).sum();
        rows.push(serde_json::json!({
            "router": name,
            "features": kind.as_str(),
            "commit": router.config.commit.label(),
            "correct": correct,
            "prompts": prompts.len(),
            "top1": correct as f64 / prompts.len() as f64,
            "per_skill": per_skill.iter().map(|(s, (c, n))| (s.clone(), serde_json::json!([c, n]))).collect::<serde_json::Map<_, _>>(),
            "misses": misses,
        }));
    }
    if json {
        return super::print_json(&serde_json::json!({"set": set, "routers": rows}));
    }
    for r in &rows {
        let per: Vec<String> = r["per_skill"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(s, v)| format!("{s} {}/{}", v[0], v[1]))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<24} top-1 {}/{} ({:.1} %)  {}",
            r["router"].as_str().unwrap_or(""),
            r["correct"],
            r["prompts"],
            r["top1"].as_f64().unwrap_or(0.0) * 100.0,
            per.join(", ")
        );
    }
    Ok(())
}

/// The router an end-to-end run starts from: `--warm-start NAME`, none with `none`, or by
/// default the pack's default router when it reads the same features.
fn warm_start_router(
    pack: &Pack,
    args: &TrainArgs,
    model: &Model,
    model_path: &Path,
) -> anyhow::Result<Option<Router>> {
    let name = match args.warm_start.as_deref() {
        Some("none") => return Ok(None),
        Some(n) => n.to_string(),
        None if pack.manifest.defaults.router.is_empty() => return Ok(None),
        None => pack.manifest.defaults.router.clone(),
    };
    let router =
        skillpack_run::load_router(pack, Some(&name), model, model_path)?.expect("a named router");
    if router.config.features != args.features {
        if args.warm_start.is_some() {
            bail!(
                "--warm-start `{name}` reads {} features, this router {}",
                router.config.features.as_str(),
                args.features.as_str()
            );
        }
        return Ok(None);
    }
    if router.config.kind != "linear" {
        bail!(
            "--warm-start `{name}` is a {} router, not a linear head",
            router.config.kind
        );
    }
    Ok(Some(router))
}

/// The label of the base-model candidate of end-to-end selection.
const NO_SKILL_CANDIDATE: &str = "no skill (base model)";

/// The warm start's head in the pack's skill order, divided by its temperature (training runs
/// at temperature 1), with a "no skill" row (weights 0, bias −4: nearly unused) when asked.
fn warm_head(
    warm: &Router,
    skills: &[String],
    none_entry: bool,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let d = warm.config.dim;
    let t = warm.config.temperature;
    let (mut weight, mut bias) = (Vec::new(), Vec::new());
    for s in skills {
        let k = warm
            .config
            .skills
            .iter()
            .position(|x| x == s)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "warm start `{}` has no output for skill `{s}`",
                    warm.config.name
                )
            })?;
        weight.extend(warm.weight[k * d..(k + 1) * d].iter().map(|w| w / t));
        bias.push(warm.bias[k] / t);
    }
    if none_entry {
        weight.extend(std::iter::repeat_n(0.0, d));
        bias.push(-4.0);
    }
    Ok((weight, bias))
}

/// Each candidate router's headline metric on the validation items, run through llama.cpp as
/// `eval` runs it (the items featurized once for all candidates, which share a feature kind).
fn score_on_validation(
    model: &Model,
    model_path: &Path,
    pack: &Pack,
    task: &str,
    validation: &[tasks::TaskItem],
    candidates: &[(String, Router)],
    threads: Option<i32>,
) -> anyhow::Result<Vec<f64>> {
    use skillpack_eval::policy::{FeatureCache, Routed};
    let mut ctx = skillpack_llama::Context::new(
        model,
        &skillpack_llama::ContextParams {
            n_ctx: 2048,
            n_threads: threads,
            n_seq_max: 16,
            ..Default::default()
        },
    )?;
    // One policy for every candidate (they read the same features, checked by the warm
    // start): each prompt is featurized once, and only the head changes between runs.
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
        let bar = progress(validation.len(), label);
        let run = skillpack_eval::harness::RunSpec {
            task,
            config: label,
            split: "train-validation",
            calibration: skillpack_eval::harness::Calibration::None,
            prompt_variant: tasks::PromptVariant::Standard,
        };
        let (_, summary) =
            skillpack_eval::harness::evaluate(&mut ctx, &mut policy, &run, validation, |i| {
                bar.set_position(i as u64)
            })?;
        bar.finish_and_clear();
        scores.push(summary.metrics.first().map(|m| m.1).unwrap_or(0.0));
    }
    Ok(scores)
}
