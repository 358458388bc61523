//! `skillpack eval`: the nine medical tasks through the runtime, per configuration (base model,
//! fixed skill weightings), with per-item predictions, summaries, a table and a chart.

use std::io::Write;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use skillpack_data::tasks::PromptVariant;
use skillpack_eval::harness::Calibration;
use skillpack_eval::{EvalOptions, EvalProgress, TaskSummary};

use super::session::ModelArgs;

/// Evaluate the base model or a skill pack on the medical tasks.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  skillpack eval --task pubmedqa --no-skills --limit 50
  skillpack eval --all --no-skills --out eval-out/base
  skillpack eval --all --pack examples/packs/medical-smollm2 --configs base,uniform,skill:ner
  skillpack eval --task meqsum --file my-meqsum-test.csv --no-skills --limit 0
  skillpack eval --all --pack P --configs base,router --limit 0 --out full --resume --reuse first-items

Runs are resumable item by item: every prediction is appended to
OUT/CONFIG/TASK.predictions.partial.jsonl as it is made, and --resume continues from there.
A configuration whose weights equal an earlier one's on every prompt (a task router that fell
back to `general`, a zero-gain router and the base model) is evaluated once; the copy's
summary names it in `same_as`.

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
    #[command(flatten)]
    pub model: ModelArgs,
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
    /// Reuse summaries already in OUT (same config, task, split and item count) and continue
    /// an interrupted run from its per-item checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// An earlier output folder (repeatable) whose predictions of the same configuration on a
    /// task's first items — same split, scoring and wording — are taken instead of evaluating
    /// those items again (e.g. a run on the first 200 items before one on the whole split).
    #[arg(long, value_name = "DIR")]
    pub reuse: Vec<PathBuf>,
    /// Option scoring on every task it applies to, for base and packs alike: none
    /// (log-likelihood), content-free (minus each option's log-likelihood after a content-free
    /// prompt) or permutation (MedQA/MedMCQA: averaged over the options' rotations).
    #[arg(long, default_value = "none")]
    pub calibration: Calibration,
    /// Per-task option scoring overriding --calibration, comma-separated: e.g.
    /// `medqa=permutation,medmcqa=permutation,healthver=content-free`. permutation (lettered
    /// options only: each text's log-likelihood averaged over the rotations of the texts among
    /// the letters) applies to medqa and medmcqa.
    #[arg(long, value_delimiter = ',', value_name = "TASK=SCORING", value_parser = parse_task_calibration)]
    pub task_calibration: Vec<(String, Calibration)>,
    /// Prompt wording: standard (laid out like the skills' records) or user (one message in
    /// words no skill template uses, the request before the text).
    #[arg(long, default_value = "standard")]
    pub prompt_variant: PromptVariant,
    #[arg(long)]
    pub json: bool,
}

/// `TASK=SCORING` of --task-calibration.
fn parse_task_calibration(value: &str) -> Result<(String, Calibration), String> {
    let (task, scoring) = value
        .split_once('=')
        .ok_or_else(|| format!("`{value}`: expected TASK=SCORING, e.g. medqa=permutation"))?;
    Ok((task.to_string(), scoring.parse()?))
}

impl Args {
    /// The library's options (the default model when --model is omitted).
    fn options(&self) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            task: self.task.clone(),
            all: self.all,
            split: self.split.clone(),
            file: self.file.clone(),
            raw: self.raw.clone(),
            model: self.model.model_path()?,
            pack: self.model.pack.clone(),
            skills: self.model.skills.clone(),
            no_skills: self.model.no_skills,
            configs: self.configs.clone(),
            limit: self.limit,
            out: self.out.clone(),
            resume: self.resume,
            reuse_from: self.reuse.clone(),
            calibration: self.calibration,
            task_calibration: self.task_calibration.clone(),
            prompt_variant: self.prompt_variant,
            mode: self.model.mode,
            threads: self.model.threads,
            ctx_size: self.model.ctx_size,
            gpu_layers: self.model.gpu_layers,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut bar = ProgressBar::hidden();
    let report = skillpack_eval::run_evaluation(&args.options()?, |event| {
        match event {
        EvalProgress::Reused {
            config,
            task,
            summary,
        } => eprintln!("{config} / {task}: reusing {}", summary.display()),
        EvalProgress::Copied {
            config,
            task,
            same_as,
        } => eprintln!("{config} / {task}: the same weights as {same_as} on every prompt; copying its predictions"),
        EvalProgress::Started {
            config,
            task,
            items,
            reused,
        } => {
            if reused > 0 {
                eprintln!("{config} / {task}: {reused} of {items} items from earlier predictions");
            }
            bar = ProgressBar::new(items as u64);
            bar.set_position(reused as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>22} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{config} / {task}"));
        }
        EvalProgress::Items(done) => bar.set_position(done as u64),
        EvalProgress::Finished(summary) => {
            bar.finish_and_clear();
            if !args.json {
                println!("{}", summary_line(summary));
                let _ = std::io::stdout().flush();
            }
        }
    }
    })?;
    if args.json {
        super::print_json(&serde_json::json!({ "summaries": report.summaries, "out": args.out }))?;
    } else {
        println!("\n{}", report.table);
        if report.wrote_table {
            println!(
                "table: {}  chart: {}",
                args.out.join("table.md").display(),
                args.out.join("chart.svg").display()
            );
        }
    }
    Ok(())
}

/// One run's line: its metrics in percent, the interval, and where predictions collapsed.
fn summary_line(summary: &TaskSummary) -> String {
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
    format!(
        "{:<12} {:<10} {:>4} items  {}{interval}{balance}  ({:.0} s, {:.2} items/s, {:.0} tok/s)",
        summary.config,
        summary.task,
        summary.items,
        metrics.join(", "),
        summary.wall_s,
        summary.items_per_s,
        summary.tokens_per_s
    )
}
