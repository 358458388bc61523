//! `skillpack router`: train a pack's skill routers (supervised by skill labels, end to end on
//! a task, or prototypes), list them, and show a prompt's routing. The work is
//! `skillpack_eval::stage2`; this parses the arguments and prints.

use std::fmt::Display;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use skillpack_eval::stage2::{self, Phase};
use skillpack_route::FeatureKind;

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
    Train(Box<TrainArgs>),
    /// The pack's routers.
    List {
        #[arg(long)]
        pack: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove a router from the pack (its manifest entry and files); not the default one.
    Remove {
        #[arg(long)]
        pack: PathBuf,
        /// The router's name.
        #[arg(long)]
        router: String,
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
        /// softmax, sparsemax, top1:THRESHOLD (the top skill alone when sure) or blend:THRESHOLD (sparsemax when sure, every skill alike when not).
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
    /// Router name (default: METHOD, -TASK and -embedding appended where they apply).
    #[arg(long)]
    pub name: Option<String>,
    /// Make it the pack's default router.
    #[arg(long)]
    pub default: bool,
    /// Records per skill (supervised, prototype).
    #[arg(long, default_value_t = 120)]
    pub per_skill: usize,
    /// Supervised, prototype: also train on these whole user messages labelled with their skill
    /// (`{id, skill, prompt}` JSON lines, the format of `router accuracy --set`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// How many times each of --prompts counts against the skill records.
    #[arg(long, default_value_t = 1, requires = "prompts")]
    pub prompt_repeats: usize,
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
    /// End-to-end: how the held-out items' options are scored (none, content-free,
    /// permutation); default: as the pack's evaluation scores the task (permutation for MedQA
    /// and MedMCQA, plain otherwise).
    #[arg(long)]
    pub validation_scoring: Option<skillpack_eval::harness::Calibration>,
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
    let model_or_default = |model: Option<PathBuf>| model.map_or_else(super::default_model, Ok);
    let mut bars = Bars(None);
    match args.command {
        RouterCommand::Train(t) => {
            let json = t.json;
            let config = t.into_config(model_or_default)?;
            let trained = stage2::train_router(&config, &mut bars)?;
            print(json, trained.to_json(), trained)
        }
        RouterCommand::List { pack, json } => {
            let list = stage2::list_routers(&pack)?;
            print(json, list.to_json(), list)
        }
        RouterCommand::Remove { pack, router, json } => {
            let spec = skillpack_pack::Pack::open(&pack)?.remove_router(&router)?;
            print(
                json,
                serde_json::json!({"removed": spec.name, "file": spec.file}),
                format!("removed router `{}` ({})", spec.name, spec.file),
            )
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
        } => {
            let report = stage2::bench_routers(&stage2::BenchRouters {
                pack,
                routers,
                task,
                limit,
                raw,
                model: model_or_default(model)?,
                threads,
            })?;
            print(json, report.to_json(), report)
        }
        RouterCommand::Calibrate {
            pack,
            router,
            data,
            split,
            per_skill,
            model,
            threads,
            json,
        } => {
            let config = stage2::TemperatureCalibration {
                pack,
                router,
                data,
                split,
                per_skill,
                model: model_or_default(model)?,
                threads,
            };
            let calibration = stage2::calibrate_router(&config, &mut bars)?;
            print(json, calibration.to_json(), calibration)
        }
        RouterCommand::Commit {
            pack,
            router,
            mode,
            name,
            default,
            json,
        } => {
            let report = stage2::commit_router(&stage2::CommitRouter {
                pack,
                router,
                mode,
                new_name: name,
                make_default: default,
            })?;
            print(json, report.to_json(), report)
        }
        RouterCommand::Accuracy {
            pack,
            set,
            routers,
            model,
            threads,
            json,
        } => {
            let config = stage2::RoutingAccuracy {
                pack,
                set,
                routers,
                model: model_or_default(model)?,
                threads,
            };
            let report = stage2::routing_accuracy(&config, &mut bars)?;
            print(json, report.to_json(), report)
        }
        RouterCommand::Show {
            pack,
            router,
            model,
            json,
            prompt,
        } => {
            let shown = stage2::show_routing(&stage2::ShowRouting {
                pack,
                router,
                model: model_or_default(model)?,
                prompt,
            })?;
            print(json, shown.to_json(), shown)
        }
    }
}

impl TrainArgs {
    /// The library's training configuration (the model resolved by `model_or_default`).
    fn into_config(
        self,
        model_or_default: impl Fn(Option<PathBuf>) -> anyhow::Result<PathBuf>,
    ) -> anyhow::Result<stage2::RouterTraining> {
        Ok(stage2::RouterTraining {
            method: self.method.parse()?,
            model: model_or_default(self.model)?,
            pack: self.pack,
            task: self.task,
            data: self.data,
            raw: self.raw,
            features: self.features,
            name: self.name,
            make_default: self.default,
            per_skill: self.per_skill,
            prompts: self.prompts,
            prompt_repeats: self.prompt_repeats,
            warm_start: self.warm_start,
            learn_gain: self.learn_gain,
            validation_share: self.validation_share,
            validation_limit: self.validation_limit,
            validation_scoring: self.validation_scoring,
            select_every: self.select_every,
            none_entry: self.none_entry,
            soft_labels: self.soft_labels,
            soft_tau: self.soft_tau,
            steps: self.steps,
            batch: self.batch,
            learning_rate: self.lr,
            max_len: self.max_len,
            gain: self.gain,
            temperature: self.temperature,
            seed: self.seed,
            limit: self.limit,
            threads: self.threads,
        })
    }
}

/// `value` as pretty JSON with `--json`, else `text` (nothing when it is empty).
fn print(json: bool, value: serde_json::Value, text: impl Display) -> anyhow::Result<()> {
    if json {
        return super::print_json(&value);
    }
    let text = text.to_string();
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(())
}

/// Progress bars on stderr for the library's phases; its notes go to stderr as lines.
struct Bars(Option<ProgressBar>);

impl stage2::Progress for Bars {
    fn start(&mut self, phase: Phase, label: &str, total: usize) {
        let template = match phase {
            Phase::Features | Phase::Validation => {
                "{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}"
            }
            Phase::SoftLabels => "{prefix:>12} [{bar:30}] {pos}/{len} eta {eta}",
            Phase::EndToEnd => "{prefix:>12} [{bar:30}] {pos}/{len} loss {msg} eta {eta}",
        };
        let style = ProgressStyle::with_template(template).expect("valid template");
        let bar = ProgressBar::new(total as u64).with_style(style.progress_chars("=> "));
        bar.set_prefix(label.to_string());
        self.0 = Some(bar);
    }

    fn update(&mut self, done: usize, loss: Option<f32>) {
        if let Some(bar) = &self.0 {
            bar.set_position(done as u64);
            if let Some(loss) = loss {
                bar.set_message(format!("{loss:.3}"));
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }

    fn note(&mut self, message: &str) {
        eprintln!("{message}");
    }
}
