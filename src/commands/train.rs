//! `skillpack train`: train a skill adapter (AdaLoRA by default) with candle.

use std::path::{Path, PathBuf};

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use skillpack_train::{
    bench_training_on, parse_device, tokenize_records, train_skill, DevOptions, Hyperparameters,
    MatmulPrecision, SkillTrainOptions, StepBudget, TrainEvent,
};

/// Train a skill adapter on instruction data ({skill, context, query, output} JSONL).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skillpack train --data data/skills/ner/train.jsonl --out runs/ner --steps 300\n  skillpack train --data ner.jsonl --out runs/ner --resume          # continue after an interruption\n  skillpack train --bench                                           # tokens/s and peak memory\n  skillpack train --bench --data ner.jsonl --batches-out b.json     # on a skill's records, answer-only loss"
)]
pub struct Args {
    /// Instruction records (JSONL).
    #[arg(long, required_unless_present = "bench")]
    pub data: Option<PathBuf>,
    /// Output directory: checkpoints, metrics.jsonl, loss.svg, peft/, adapter.gguf.
    #[arg(long, required_unless_present = "bench")]
    pub out: Option<PathBuf>,
    /// Base model: a GGUF file or a Hugging Face directory (default: the setup's GGUF).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// GGUF whose tokenizer and chat template render the data, and the base for the GGUF export
    /// (default: --base when it is a GGUF, else the setup's model).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// adalora, lora or rslora.
    #[arg(long, default_value = "adalora")]
    pub method: String,
    /// Comma-separated projections to adapt.
    #[arg(
        long,
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    pub targets: String,
    /// LoRA rank, or AdaLoRA's init_r.
    #[arg(long, default_value_t = 12)]
    pub r: usize,
    /// AdaLoRA's target average rank.
    #[arg(long, default_value_t = 8)]
    pub target_r: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    /// Optimizer steps (the budget; early stopping may end sooner). Default 300, or from
    /// --epochs.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Set the step budget from the data: this many passes over the records, within
    /// [--min-steps, --max-steps].
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long, default_value_t = 100, requires = "epochs")]
    pub min_steps: usize,
    #[arg(long, default_value_t = 800, requires = "epochs")]
    pub max_steps: usize,
    /// Held-out records (JSONL, e.g. the skill's dev.jsonl): their loss is evaluated every
    /// --eval-every steps, the best step's adapters are exported, and training stops after
    /// --patience evaluations without improvement.
    #[arg(long)]
    pub dev: Option<PathBuf>,
    #[arg(long, default_value_t = 50, requires = "dev")]
    pub eval_every: usize,
    #[arg(long, default_value_t = 3, requires = "dev")]
    pub patience: usize,
    /// Improvement in dev loss (nats/token) needed to count as a new best.
    #[arg(long, default_value_t = 0.002, requires = "dev")]
    pub min_delta: f64,
    /// Evaluate on at most this many dev records (evenly spaced through the file; 0 = all).
    #[arg(long, default_value_t = 200, requires = "dev")]
    pub dev_limit: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Gradient accumulation (micro-batches per step).
    #[arg(long, default_value_t = 1)]
    pub accumulate: usize,
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warmup steps (default: 5 % of steps).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// cosine, linear or constant.
    #[arg(long, default_value = "cosine")]
    pub decay: String,
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// AdaLoRA tinit / tfinal / deltaT (defaults: 10 %, 20 % of steps, 10).
    #[arg(long)]
    pub tinit: Option<usize>,
    #[arg(long)]
    pub tfinal: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub delta_t: usize,
    #[arg(long, default_value_t = 0.5)]
    pub orth_reg_weight: f64,
    /// Checkpoint every N steps.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Use at most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Products against the frozen weights and in attention on the CPU: f32, or bf16 on Intel
    /// AMX tiles (operands rounded to bf16, f32 accumulation; adapters, softmax and the loss stay
    /// f32); auto: bf16 where the CPU has AMX, else f32. metrics.jsonl records it per step.
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "bf16"])]
    pub matmul: String,
    /// Measure training speed instead of training: on random batch × max-len sequences with the
    /// loss on every token, or with --data on those records (answer-only loss, the trainer's own
    /// batches; --limit caps the records read).
    #[arg(long)]
    pub bench: bool,
    /// With --bench: write the token batches the steps trained on (JSON), for another trainer
    /// to replay the same work (scripts/peft_skill_bench.py).
    #[arg(long, requires = "bench")]
    pub batches_out: Option<PathBuf>,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The adapter and optimizer settings the options name.
fn hyperparameters(args: &Args) -> anyhow::Result<Hyperparameters> {
    Ok(Hyperparameters {
        method: args.method.parse()?,
        targets: args
            .targets
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        r: args.r,
        target_r: args.target_r,
        alpha: args.alpha,
        batch: args.batch,
        accumulate: args.accumulate,
        max_len: args.max_len,
        lr: args.lr,
        warmup: args.warmup,
        decay: args.decay.parse()?,
        clip: args.clip,
        weight_decay: args.weight_decay,
        seed: args.seed,
        tinit: args.tinit,
        tfinal: args.tfinal,
        delta_t: args.delta_t,
        orth_reg_weight: args.orth_reg_weight,
        checkpoint_every: args.checkpoint_every,
        matmul: match args.matmul.as_str() {
            // bf16 runs on AMX, i.e. only for CPU training.
            "auto" if args.device == "cpu" && skillpack_train::amx::available() => {
                MatmulPrecision::Bf16
            }
            "auto" => MatmulPrecision::F32,
            other => other.parse()?,
        },
    })
}

/// --steps, or --epochs within [--min-steps, --max-steps], or the default 300 steps.
fn step_budget(args: &Args) -> StepBudget {
    match (args.steps, args.epochs) {
        (Some(steps), _) => StepBudget::Steps(steps),
        (None, Some(epochs)) => StepBudget::Epochs {
            epochs,
            min_steps: args.min_steps,
            max_steps: args.max_steps,
        },
        (None, None) => StepBudget::default(),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let base = match &args.base {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let tokenizer = match (&args.tokenizer, base.is_file()) {
        (Some(t), _) => t.clone(),
        (None, true) => base.clone(),
        (None, false) => super::default_model()?,
    };
    let hyperparameters = hyperparameters(&args)?;
    if args.bench {
        return bench(&args, &base, &tokenizer, &device, &hyperparameters);
    }
    let options = SkillTrainOptions {
        data: args.data.clone().expect("required by clap"),
        out: args.out.clone().expect("required by clap"),
        base,
        tokenizer,
        device,
        hyperparameters,
        budget: step_budget(&args),
        dev: args.dev.as_ref().map(|path| DevOptions {
            path: path.clone(),
            eval_every: args.eval_every,
            patience: args.patience,
            min_delta: args.min_delta,
            limit: args.dev_limit,
        }),
        limit: args.limit,
        resume: args.resume,
    };
    let mut bar = None;
    let outcome = train_skill(&options, |event| report(&options, event, &mut bar))?;
    if args.json {
        super::print_json(&outcome.summary())?;
    } else {
        let selection = &outcome.selection;
        if let Some((step, loss)) = selection.best {
            println!(
                "dev loss best {loss:.4} at step {step} of {} ({}); exported that step",
                outcome.steps,
                if selection.stopped {
                    "stopped early: no improvement"
                } else {
                    "step budget spent"
                }
            );
        }
        println!(
            "trained {} steps in {:.0}s; adapter: {} (PEFT) and {}; loss curve: {}",
            outcome.steps,
            outcome.seconds,
            outcome.export.peft_dir.display(),
            outcome
                .export
                .gguf
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no GGUF base)".into()),
            outcome.loss_chart().display()
        );
    }
    Ok(())
}

/// Progress on stderr: what was loaded, then a bar with the step's loss, learning rate,
/// throughput, best dev loss and AdaLoRA's rank budget.
fn report(options: &SkillTrainOptions, event: TrainEvent<'_>, bar: &mut Option<ProgressBar>) {
    match event {
        TrainEvent::DataLoaded {
            records,
            tokens,
            target_tokens,
        } => eprintln!(
            "{records} records from {} ({tokens} tokens, {target_tokens} in outputs); base {}; {} matmuls",
            options.data.display(),
            options.base.display(),
            options.hyperparameters.matmul.as_str()
        ),
        TrainEvent::DevLoaded { records } => {
            if let Some(dev) = &options.dev {
                eprintln!(
                    "{records} dev records from {} for selection and early stopping (every {} steps, patience {})",
                    dev.path.display(),
                    dev.eval_every,
                    dev.patience
                );
            }
        }
        TrainEvent::Resumed { step } => eprintln!("resumed at step {step}"),
        TrainEvent::NoCheckpoint => eprintln!(
            "no checkpoint in {}: starting from step 0",
            options.out.display()
        ),
        TrainEvent::Started { step, step_budget } => {
            let started = ProgressBar::new(step_budget as u64).with_position(step as u64);
            started.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                    .expect("valid template"),
            );
            *bar = Some(started);
        }
        TrainEvent::Step {
            metrics: m,
            tokens_per_s,
            best_dev,
        } => {
            let Some(bar) = bar else { return };
            bar.set_position(m.step as u64);
            let best = best_dev
                .map(|(step, loss)| format!("  dev best {loss:.3} @{step}"))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.3}  lr {:.2e}  {tokens_per_s:.0} tok/s{}{best}",
                m.loss,
                m.lr,
                m.rank_budget
                    .map(|b| format!("  rank budget {b}"))
                    .unwrap_or_default()
            ));
        }
        TrainEvent::Finished { .. } => {
            if let Some(bar) = bar {
                bar.finish();
            }
        }
    }
}

/// `--bench`: training throughput on synthetic full-length batches.
fn bench(
    args: &Args,
    base: &Path,
    tokenizer: &Path,
    device: &Device,
    hyperparameters: &Hyperparameters,
) -> anyhow::Result<()> {
    let examples = match &args.data {
        Some(data) => Some(tokenize_records(
            tokenizer,
            data,
            hyperparameters.max_len,
            args.limit,
        )?),
        None => None,
    };
    let result = bench_training_on(base, device, hyperparameters, examples)?;
    let cfg = &result.config;
    if let Some(path) = &args.batches_out {
        let batches: Vec<Vec<serde_json::Value>> = result
            .batches
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .map(|e| serde_json::json!({"ids": e.ids, "targets": e.targets}))
                    .collect()
            })
            .collect();
        let document = serde_json::json!({
            "base": base.display().to_string(),
            "method": args.method,
            "targets": cfg.targets,
            "r": cfg.r,
            "target_r": cfg.target_r,
            "alpha": cfg.alpha,
            "lr": cfg.lr,
            "accumulate": cfg.accumulate,
            "warmup_steps": skillpack_train::WARMUP_STEPS,
            "batches": batches,
        });
        skillpack_data::write_atomic(path, serde_json::to_string(&document)?.as_bytes())?;
    }
    if args.json {
        super::print_json(&serde_json::json!({
            "base": base.display().to_string(),
            "device": args.device,
            "threads": result.threads,
            "method": args.method,
            "r": cfg.r,
            "targets": cfg.targets,
            "batch": cfg.batch,
            "seq_len": cfg.max_len,
            "data": args.data.as_ref().map(|p| p.display().to_string()),
            "target_tokens_per_step": result.target_tokens_per_step,
            "matmul": cfg.matmul,
            "matmul_option": args.matmul,
            "warmup_step_seconds": result.warmup_step_seconds,
            "seconds_per_step": result.seconds_per_step,
            "tokens_per_s": result.tokens_per_s,
            "peak_rss_mib": result.peak_rss_mib,
        }))?;
    } else {
        let work = match &args.data {
            Some(data) => format!(
                "batches of {} records of {} up to {} tokens, {:.0} loss tokens per step",
                cfg.batch,
                data.display(),
                cfg.max_len,
                result.target_tokens_per_step
            ),
            None => format!("batch {} × {} tokens", cfg.batch, cfg.max_len),
        };
        println!(
            "{:.1} tokens/s ({:.2} s/step, {work}, {} r={} on {}, {} matmuls), peak RSS {:.0} MiB",
            result.tokens_per_s,
            result.seconds_per_step,
            args.method,
            cfg.r,
            cfg.targets.join(","),
            cfg.matmul.as_str(),
            result.peak_rss_mib
        );
    }
    Ok(())
}
