//! `skillpack eval`: the nine medical tasks through the runtime, per configuration (base model,
//! fixed skill weightings), with per-item predictions, summaries, a table and a chart.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use skillpack_data::tasks::{self, Split, TaskItem, TASKS};
use skillpack_eval::policy::{FeatureCache, FixedWeights, Routed};
use skillpack_eval::{harness, report, NoSkills, SkillPolicy, TaskSummary};
use skillpack_llama::{Backend, Context, ContextParams, Model, ModelParams};
use skillpack_pack::Pack;
use skillpack_run::{parse_skill_weights, Mode, SkillEngine};

/// Evaluate the base model or a skill pack on the medical tasks.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  skillpack eval --task pubmedqa --no-skills --limit 50
  skillpack eval --all --no-skills --out eval-out/base
  skillpack eval --all --pack examples/packs/medical-smollm2 --configs base,uniform,skill:ner
  skillpack eval --task meqsum --file my-meqsum-test.csv --no-skills --limit 0

Configurations (--configs): base (no skills), uniform (every skill of the pack at 1/N),
skill:ID (one skill at weight 1; with --all only on the tasks it fits), weights:ID=W+ID=W,
router (the pack's default router), router:NAME, router:NAME@task (with --all, only on the
router's own task).")]
pub struct Args {
    /// One task (pubmedqa, medqa, medmcqa, bc5cdr, chemprot, hoc, healthver, covidqa, meqsum).
    #[arg(long, conflicts_with = "all")]
    pub task: Option<String>,
    /// All nine tasks; writes OUT/table.md, OUT/chart.svg and OUT/results.json.
    #[arg(long)]
    pub all: bool,
    /// Split of the shared raw data to run: dev or train.
    #[arg(long, default_value = "dev")]
    pub split: String,
    /// Evaluate this file (in the task's raw format) instead of a split.
    #[arg(long, requires = "task")]
    pub file: Option<PathBuf>,
    /// The raw data folder.
    #[arg(long, default_value = "../shared/data/raw")]
    pub raw: PathBuf,
    /// GGUF model (default: the installed default model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Skill pack directory.
    #[arg(long)]
    pub pack: Option<PathBuf>,
    /// Manual skill weights for the pack, e.g. `ner=0.7,re=0.3`.
    #[arg(long)]
    pub skills: Option<String>,
    /// The base model only.
    #[arg(long)]
    pub no_skills: bool,
    /// Configurations to compare, comma-separated (see below).
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// Items per task (default: a per-task number that keeps a run practical on 2 cores;
    /// 0 = the whole split).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output folder.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
    /// Reuse summaries already in OUT (same config, task, split and item count).
    #[arg(long)]
    pub resume: bool,
    /// Option scoring: none (log-likelihood) or content-free (minus each option's
    /// log-likelihood after a content-free prompt, for base and packs alike).
    #[arg(long, default_value = "none")]
    pub calibration: harness::Calibration,
    /// Prompt wording: standard (laid out like the skills' records) or user (one message in
    /// words no skill template uses, the request before the text).
    #[arg(long, default_value = "standard")]
    pub prompt_variant: tasks::PromptVariant,
    /// How weighted skills are applied: multi, fused, fused-compressed, auto.
    #[arg(long, default_value = "auto")]
    pub mode: Mode,
    #[arg(long)]
    pub threads: Option<i32>,
    #[arg(long, default_value_t = 2048)]
    pub ctx_size: u32,
    #[arg(long)]
    pub json: bool,
}

/// A configuration to evaluate.
#[derive(Clone)]
struct Config {
    label: String,
    /// Weight spec for the pack, or None for the base model.
    weights: Option<String>,
    /// Only these tasks (single-skill configurations under --all).
    tasks: Option<Vec<&'static str>>,
    /// A router of the pack (weights per prompt).
    router: Option<String>,
}

fn configs(args: &Args, pack: Option<&Pack>) -> anyhow::Result<Vec<Config>> {
    let mut specs = args.configs.clone();
    if specs.is_empty() {
        specs = if args.no_skills || pack.is_none() {
            vec!["base".into()]
        } else if let Some(s) = &args.skills {
            vec![format!("weights:{}", s.replace(',', "+"))]
        } else if pack.is_some_and(|p| !p.manifest.defaults.router.is_empty()) {
            vec!["router".into()]
        } else {
            vec!["uniform".into()]
        };
    }
    let mut out = Vec::new();
    for spec in specs {
        let need_pack =
            || pack.ok_or_else(|| anyhow::anyhow!("configuration `{spec}` needs --pack"));
        out.push(if spec == "base" {
            Config {
                label: spec.clone(),
                weights: None,
                tasks: None,
                router: None,
            }
        } else if spec == "uniform" {
            let p = need_pack()?;
            let n = p.manifest.skills.len() as f32;
            Config {
                label: spec.clone(),
                weights: Some(
                    p.manifest
                        .skills
                        .iter()
                        .map(|s| format!("{}={}", s.id, 1.0 / n))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                tasks: None,
                router: None,
            }
        } else if let Some(id) = spec.strip_prefix("skill:") {
            need_pack()?;
            let fits: Vec<&'static str> = TASKS
                .iter()
                .copied()
                .filter(|t| skillpack_eval::relevant_skills(t).contains(&id))
                .collect();
            Config {
                label: spec.clone(),
                weights: Some(format!("{id}=1")),
                // Under --all a single skill runs only where it fits (nowhere, for some).
                tasks: args.all.then_some(fits),
                router: None,
            }
        } else if let Some(w) = spec.strip_prefix("weights:") {
            need_pack()?;
            Config {
                label: spec.clone(),
                weights: Some(w.replace('+', ",")),
                tasks: None,
                router: None,
            }
        } else if spec == "router" || spec.starts_with("router:") {
            let p = need_pack()?;
            let requested = spec.strip_prefix("router:").unwrap_or("");
            let task_only = requested.ends_with("@task");
            let name = match requested.trim_end_matches("@task") {
                "" if p.manifest.defaults.router.is_empty() => {
                    bail!("configuration `router`: the pack has no default router")
                }
                "" => p.manifest.defaults.router.clone(),
                n => n.to_string(),
            };
            // `router:NAME@task` runs only on the router's own task under --all.
            let only = p
                .router(&name)
                .filter(|r| args.all && task_only && !r.task.is_empty())
                .map(|r| vec![tasks::task_info(&r.task).map(|i| i.name).unwrap_or("")]);
            Config {
                label: spec.trim_end_matches("@task").to_string(),
                weights: None,
                tasks: only,
                router: Some(name),
            }
        } else {
            bail!("unknown configuration `{spec}` (base, uniform, skill:ID, weights:ID=W+ID=W)");
        });
    }
    Ok(out)
}

fn load_items(args: &Args, task: &str) -> anyhow::Result<(Vec<TaskItem>, String)> {
    let (items, split) = match &args.file {
        Some(f) => (tasks::load_file(task, f)?, format!("file:{}", f.display())),
        None => {
            let split = match args.split.as_str() {
                "dev" => Split::Dev,
                "train" => Split::Train,
                other => bail!("--split must be dev or train, not `{other}`"),
            };
            (
                tasks::select(tasks::load(task, &args.raw)?, split),
                args.split.clone(),
            )
        }
    };
    let limit = args
        .limit
        .unwrap_or_else(|| skillpack_eval::default_limit(task));
    let items: Vec<TaskItem> = if limit == 0 {
        items
    } else {
        items.into_iter().take(limit).collect()
    };
    let items = match args.prompt_variant {
        tasks::PromptVariant::Standard => items,
        tasks::PromptVariant::User => items.iter().map(tasks::user_variant).collect(),
    };
    Ok((items, split))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    skillpack_data::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.prompt_variant != tasks::PromptVariant::Standard
        && args.calibration != harness::Calibration::None
    {
        bail!("--calibration content-free is defined for the standard prompts only (drop --prompt-variant or --calibration)");
    }
    let tasks_to_run: Vec<&str> = if args.all {
        TASKS.to_vec()
    } else {
        let t = args
            .task
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("give --task T or --all"))?;
        vec![tasks::task_info(t)?.name]
    };
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let pack = match &args.pack {
        Some(dir) => {
            let pack = Pack::open(dir)?;
            pack.check(&skillpack_convert::GgufInfo::open(&model_path)?)?;
            Some(pack)
        }
        None => None,
    };
    let configs = configs(&args, pack.as_ref())?;
    let mut ctx = Context::new(
        &model,
        &ContextParams {
            n_ctx: args.ctx_size,
            n_threads: args.threads,
            // Options are scored side by side, one sequence each (ChemProt has 13).
            n_seq_max: 16,
            ..Default::default()
        },
    )?;
    let mut summaries: Vec<TaskSummary> = Vec::new();
    let cache = FeatureCache::default();
    for config in &configs {
        let mut policy: Box<dyn SkillPolicy<'_>> = match (&config.weights, &pack) {
            (None, Some(pack)) if config.router.is_some() => {
                let router = skillpack_run::load_router(
                    pack,
                    config.router.as_deref(),
                    &model,
                    &model_path,
                )?
                .expect("a named router");
                let extractor = skillpack_route::FeatureExtractor::new(
                    &model,
                    &model_path,
                    router.config.features,
                    args.threads,
                )?;
                Box::new(Routed {
                    engine: SkillEngine::new(&model, pack.clone())?,
                    skills: pack.manifest.skills.iter().map(|s| s.id.clone()).collect(),
                    router,
                    extractor,
                    mode: args.mode,
                    model: &model,
                    cache: cache.clone(),
                })
            }
            (Some(spec), Some(pack)) => {
                let weights = parse_skill_weights(spec, &pack.manifest)?;
                let mut engine = SkillEngine::new(&model, pack.clone())?;
                // A fixed weighting is applied as given (the pack's top-k and minimum weight
                // are routing defaults).
                engine.top_k = 0;
                engine.min_weight = 0.0;
                Box::new(FixedWeights {
                    engine,
                    weights,
                    mode: args.mode,
                })
            }
            _ => Box::new(NoSkills),
        };
        for task in &tasks_to_run {
            if let Some(only) = &config.tasks {
                if !only.contains(task) {
                    continue;
                }
            }
            let (items, split) = load_items(&args, task)?;
            let dir = args.out.join(&config.label);
            let summary_path = dir.join(format!("{task}.summary.json"));
            if args.resume {
                if let Ok(text) = std::fs::read_to_string(&summary_path) {
                    if let Ok(s) = serde_json::from_str::<TaskSummary>(&text) {
                        if s.items == items.len()
                            && s.split == split
                            && s.calibration == args.calibration
                            && s.prompt_variant == args.prompt_variant
                        {
                            eprintln!(
                                "{} / {task}: reusing {}",
                                config.label,
                                summary_path.display()
                            );
                            summaries.push(s);
                            continue;
                        }
                    }
                }
            }
            let bar = ProgressBar::new(items.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>22} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{} / {task}", config.label));
            let run = harness::RunSpec {
                task,
                config: &config.label,
                split: &split,
                calibration: args.calibration,
                prompt_variant: args.prompt_variant,
            };
            let (predictions, summary) =
                harness::evaluate(&mut ctx, policy.as_mut(), &run, &items, |i| {
                    bar.set_position(i as u64)
                })?;
            bar.finish_and_clear();
            let mut jsonl = Vec::new();
            for p in &predictions {
                serde_json::to_writer(&mut jsonl, p)?;
                jsonl.push(b'\n');
            }
            write_atomic(&dir.join(format!("{task}.predictions.jsonl")), &jsonl)?;
            write_atomic(&summary_path, &serde_json::to_vec_pretty(&summary)?)?;
            if !args.json {
                let metrics: Vec<String> = summary
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {:.1}", v * 100.0))
                    .collect();
                let interval = summary
                    .interval
                    .map(|(lo, hi)| format!(" [95 % {:.1}–{:.1}]", lo * 100.0, hi * 100.0))
                    .unwrap_or_default();
                let balance = summary
                    .balance
                    .as_ref()
                    .map(|b| {
                        format!(
                            "  predicted `{}` {:.0} % (gold `{}` {:.0} %){}",
                            b.predicted_top,
                            b.predicted_share * 100.0,
                            b.gold_top,
                            b.gold_share * 100.0,
                            if b.collapsed { " COLLAPSED" } else { "" }
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{:<12} {:<10} {:>4} items  {}{interval}{balance}  ({:.0} s, {:.2} items/s, {:.0} tok/s)",
                    config.label,
                    task,
                    summary.items,
                    metrics.join(", "),
                    summary.wall_s,
                    summary.items_per_s,
                    summary.tokens_per_s
                );
                std::io::stdout().flush()?;
            }
            summaries.push(summary);
        }
    }
    let balance = report::balance_table(&summaries);
    let mut table = report::markdown_table(&summaries);
    table.push_str(&format!(
        "\nScores in percent with a 95 % bootstrap interval over the items; prompts: {}; option scoring: {}; ⚠ marks predictions collapsed onto one label.\n",
        args.prompt_variant.as_str(),
        args.calibration.as_str()
    ));
    if !balance.is_empty() {
        table.push_str("\nMost frequent predicted label and its share of the items:\n\n");
        table.push_str(&balance);
    }
    let no_skill = report::no_skill_table(&summaries);
    if !no_skill.is_empty() {
        table.push_str("\nShare of the items a routed configuration ran without any skill (its \"no skill\" output):\n\n");
        table.push_str(&no_skill);
    }
    if args.all || configs.len() > 1 {
        write_atomic(&args.out.join("table.md"), table.as_bytes())?;
        write_atomic(
            &args.out.join("results.json"),
            &serde_json::to_vec_pretty(&summaries)?,
        )?;
        report::bar_chart(
            &summaries,
            &args.out.join("chart.svg"),
            &format!(
                "{} — {} split",
                model_path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                args.split
            ),
        )?;
    }
    if args.json {
        super::print_json(&serde_json::json!({ "summaries": summaries, "out": args.out }))?;
    } else {
        println!("\n{table}");
        if args.all || configs.len() > 1 {
            println!(
                "table: {}  chart: {}",
                args.out.join("table.md").display(),
                args.out.join("chart.svg").display()
            );
        }
    }
    Ok(())
}
