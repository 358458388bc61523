//! `skillpack train`: train a skill adapter (AdaLoRA by default) with candle.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressStyle};
use skillpack_convert::GgufInfo;
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_train::{
    export_trained, read_jsonl, tokenize, Decay, EarlyStopping, Llama, Method, ModelWeights,
    StepMetrics, TrainConfig, Trainer,
};

/// Train a skill adapter on instruction data ({skill, context, query, output} JSONL).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skillpack train --data data/skills/ner/train.jsonl --out runs/ner --steps 300\n  skillpack train --data ner.jsonl --out runs/ner --resume          # continue after an interruption\n  skillpack train --bench                                           # tokens/s and peak memory"
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
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Measure training speed (batch × max-len tokens, loss on every token) instead of training.
    #[arg(long)]
    pub bench: bool,
    /// Print the final summary as JSON.
    #[arg(long)]
    pub json: bool,
}

fn device(spec: &str) -> anyhow::Result<Device> {
    Ok(match spec {
        "cpu" => Device::Cpu,
        s if s.starts_with("cuda") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(|n| n.parse())
                .transpose()?
                .unwrap_or(0);
            Device::new_cuda(ordinal).context("CUDA device (build with --features cuda)")?
        }
        other => bail!("unknown device `{other}` (cpu, cuda, cuda:N)"),
    })
}

/// The step budget: --steps, or --epochs passes over `records` within [--min-steps, --max-steps].
fn step_budget(args: &Args, records: usize) -> anyhow::Result<usize> {
    Ok(match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            if !(e > 0.0 && e.is_finite()) {
                bail!("--epochs must be a positive number, not {e}");
            }
            if args.min_steps > args.max_steps {
                bail!(
                    "--min-steps {} is above --max-steps {}",
                    args.min_steps,
                    args.max_steps
                );
            }
            let per_step = (args.batch.max(1) * args.accumulate.max(1)) as f64;
            let steps = (e * records as f64 / per_step).ceil() as usize;
            steps.clamp(args.min_steps, args.max_steps)
        }
        (None, None) => 300,
    })
}

/// Every `len / limit`-th record, so a dev subset spans the whole file (0 = all).
fn evenly_spaced<T>(items: Vec<T>, limit: usize) -> Vec<T> {
    if limit == 0 || items.len() <= limit {
        return items;
    }
    let n = items.len();
    let mut picked = vec![false; n];
    for i in 0..limit {
        picked[i * n / limit] = true;
    }
    items
        .into_iter()
        .zip(picked)
        .filter_map(|(x, keep)| keep.then_some(x))
        .collect()
}

fn config(args: &Args, steps: usize) -> anyhow::Result<TrainConfig> {
    let method = match args.method.as_str() {
        "adalora" => Method::AdaLora,
        "lora" => Method::Lora,
        "rslora" => Method::RsLora,
        m => bail!("unknown method `{m}` (adalora, lora, rslora)"),
    };
    let decay = match args.decay.as_str() {
        "cosine" => Decay::Cosine,
        "linear" => Decay::Linear,
        "constant" => Decay::Constant,
        d => bail!("unknown decay `{d}` (cosine, linear, constant)"),
    };
    let defaults = TrainConfig::skill_defaults(steps);
    Ok(TrainConfig {
        method,
        targets: args
            .targets
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        r: args.r,
        target_r: args.target_r,
        alpha: args.alpha,
        steps,
        batch: args.batch,
        accumulate: args.accumulate.max(1),
        max_len: args.max_len,
        lr: args.lr,
        warmup: args.warmup.unwrap_or(defaults.warmup),
        decay,
        weight_decay: args.weight_decay,
        clip: args.clip,
        seed: args.seed,
        tinit: args.tinit.unwrap_or(defaults.tinit),
        tfinal: args.tfinal.unwrap_or(defaults.tfinal),
        delta_t: args.delta_t,
        beta1: 0.85,
        beta2: 0.85,
        orth_reg_weight: args.orth_reg_weight,
        checkpoint_every: args.checkpoint_every,
        early_stopping: args.dev.as_ref().map(|_| EarlyStopping {
            eval_every: args.eval_every.max(1),
            patience: args.patience.max(1),
            min_delta: args.min_delta,
        }),
    })
}

/// Draws the loss curve of `metrics.jsonl` as an SVG, written atomically (a kill mid-write
/// leaves the previous chart).
pub fn plot_loss(metrics: &[StepMetrics], path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    if metrics.is_empty() {
        return Ok(());
    }
    let max_loss = metrics.iter().map(|m| m.loss).fold(0.0f64, f64::max) * 1.05;
    let min_loss = metrics.iter().map(|m| m.loss).fold(f64::INFINITY, f64::min) * 0.95;
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, (800, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "training loss (blue, red: 20-step mean), dev loss (green)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(
            0usize..metrics.last().map(|m| m.step).unwrap_or(1),
            min_loss..max_loss,
        )?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (nats/token)")
        .draw()?;
    chart.draw_series(LineSeries::new(
        metrics.iter().map(|m| (m.step, m.loss)),
        &BLUE,
    ))?;
    // A 20-step moving average, easier to read than the noisy per-step loss.
    let window = 20.min(metrics.len());
    let smooth: Vec<(usize, f64)> = metrics
        .windows(window)
        .map(|w| {
            (
                w[w.len() - 1].step,
                w.iter().map(|m| m.loss).sum::<f64>() / w.len() as f64,
            )
        })
        .collect();
    chart.draw_series(LineSeries::new(smooth, RED.stroke_width(2)))?;
    // The dev loss at evaluation steps, what selects the exported step.
    let dev: Vec<(usize, f64)> = metrics
        .iter()
        .filter_map(|m| m.dev_loss.map(|l| (m.step, l.clamp(min_loss, max_loss))))
        .collect();
    if !dev.is_empty() {
        chart.draw_series(LineSeries::new(dev.clone(), GREEN.stroke_width(2)))?;
        chart.draw_series(
            dev.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, GREEN.filled())),
        )?;
    }
    root.present()?;
    drop(chart);
    drop(root);
    skillpack_convert::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// The steps of a `metrics.jsonl` (a line cut by a kill is skipped).
pub fn read_metrics(path: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dev = device(&args.device)?;
    let dtype = if dev.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    };
    let base = match &args.base {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let tokenizer_path = match (&args.tokenizer, base.is_file()) {
        (Some(t), _) => t.clone(),
        (None, true) => base.clone(),
        (None, false) => super::default_model()?,
    };
    if args.bench {
        return bench(&args, &base, dev, dtype);
    }
    let (data, out) = (
        args.data.clone().expect("required by clap"),
        args.out.clone().expect("required by clap"),
    );
    let vocab = Model::load(
        Backend::get(),
        &tokenizer_path,
        &ModelParams {
            vocab_only: true,
            ..Default::default()
        },
    )?;
    let mut records = read_jsonl(&data)?;
    if let Some(n) = args.limit {
        records.truncate(n);
    }
    let examples = records
        .iter()
        .map(|r| tokenize(&vocab, r, args.max_len))
        .collect::<Result<Vec<_>, _>>()?;
    let target_tokens: usize = examples
        .iter()
        .map(|e| e.targets.iter().filter(|t| **t).count())
        .sum();
    eprintln!(
        "{} records from {} ({} tokens, {} in outputs); base {}",
        examples.len(),
        data.display(),
        examples.iter().map(|e| e.ids.len()).sum::<usize>(),
        target_tokens,
        base.display()
    );
    let dev_examples = match &args.dev {
        Some(path) => {
            let records = evenly_spaced(read_jsonl(path)?, args.dev_limit);
            let examples = records
                .iter()
                .map(|r| tokenize(&vocab, r, args.max_len))
                .collect::<Result<Vec<_>, _>>()?;
            eprintln!(
                "{} dev records from {} for selection and early stopping (every {} steps, patience {})",
                examples.len(),
                path.display(),
                args.eval_every,
                args.patience
            );
            examples
        }
        None => Vec::new(),
    };
    let cfg = config(&args, step_budget(&args, examples.len())?)?;
    let model = Llama::new(ModelWeights::load(&base, &dev, dtype)?);
    let mut trainer = Trainer::new(model, cfg.clone(), examples, &out)?;
    trainer.set_dev_examples(dev_examples)?;
    if args.resume {
        if trainer.resume()? {
            eprintln!("resumed at step {}", trainer.step());
        } else {
            eprintln!("no checkpoint in {}: starting from step 0", out.display());
        }
    } else if out.join("checkpoint").exists() {
        bail!(
            "{} holds a checkpoint: pass --resume to continue it, or choose another --out",
            out.display()
        );
    } else {
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
        let _ = std::fs::remove_dir_all(out.join("best"));
    }
    let bar = ProgressBar::new(cfg.steps as u64).with_position(trainer.step() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut tokens = 0usize;
    while !trainer.finished() {
        let m = trainer.train_step()?;
        tokens += m.tokens;
        bar.set_position(m.step as u64);
        let best = trainer
            .selection()
            .best
            .map(|(step, loss)| format!("  dev best {loss:.3} @{step}"))
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.3}  lr {:.2e}  {:.0} tok/s{}{best}",
            m.loss,
            m.lr,
            tokens as f64 / started.elapsed().as_secs_f64(),
            m.rank_budget
                .map(|b| format!("  rank budget {b}"))
                .unwrap_or_default()
        ));
        if m.step % 10 == 0 || m.step == cfg.steps || m.dev_loss.is_some() {
            plot_loss(
                &read_metrics(&out.join("metrics.jsonl")),
                &out.join("loss.svg"),
            )?;
        }
    }
    bar.finish();
    trainer.save_checkpoint()?;
    let stopped_at = trainer.step();
    let selection = trainer.selection().clone();
    let exported_step = trainer.restore_best()?.unwrap_or(stopped_at);
    let gguf_base = GgufInfo::open(&tokenizer_path)
        .ok()
        .filter(|_| tokenizer_path.is_file());
    let report = export_trained(
        &trainer,
        &out,
        &base.display().to_string(),
        gguf_base.as_ref(),
    )?;
    let metrics = read_metrics(&out.join("metrics.jsonl"));
    plot_loss(&metrics, &out.join("loss.svg"))?;
    let summary = serde_json::json!({
        "out": out.display().to_string(),
        "peft": report.peft_dir.display().to_string(),
        "gguf": report.gguf.as_ref().map(|p| p.display().to_string()),
        "modules": report.modules,
        "total_rank": report.total_rank,
        "step_budget": cfg.steps,
        "steps": stopped_at,
        "stopped_early": selection.stopped,
        "exported_step": exported_step,
        "best_dev_loss": selection.best.map(|(_, l)| l),
        "dev_losses": metrics.iter().filter_map(|m| m.dev_loss.map(|l| (m.step, l))).collect::<Vec<_>>(),
        "first_loss": metrics.first().map(|m| m.loss),
        "last_loss": metrics.last().map(|m| m.loss),
        "seconds": started.elapsed().as_secs_f64(),
        "tokens_per_s": tokens as f64 / started.elapsed().as_secs_f64(),
        "peak_rss_mib": super::proc_status_mib("VmHWM:"),
    });
    // The run's own record: step budget, where it stopped, the exported step, the dev curve.
    skillpack_convert::write_atomic(
        &out.join("train.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    if args.json {
        super::print_json(&summary)?;
    } else {
        if let Some((step, loss)) = selection.best {
            println!(
                "dev loss best {loss:.4} at step {step} of {stopped_at} ({}); exported that step",
                if selection.stopped {
                    "stopped early: no improvement"
                } else {
                    "step budget spent"
                }
            );
        }
        println!(
            "trained {} steps in {:.0}s; adapter: {} (PEFT) and {}; loss curve: {}",
            stopped_at,
            started.elapsed().as_secs_f64(),
            report.peft_dir.display(),
            report
                .gguf
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(no GGUF base)".into()),
            out.join("loss.svg").display()
        );
    }
    Ok(())
}

/// Training throughput on synthetic batches: every position is a target, as in a plain causal
/// LM fine-tune (the comparison PEFT's figure uses).
fn bench(args: &Args, base: &Path, dev: Device, dtype: DType) -> anyhow::Result<()> {
    let cfg = TrainConfig {
        checkpoint_every: 0,
        early_stopping: None,
        ..config(args, 1000)?
    };
    let model = Llama::new(ModelWeights::load(base, &dev, dtype)?);
    let vocab = model.weights.config.vocab_size as u32;
    let mut rng = skillpack_train::SeededNormal::new(7);
    let examples: Vec<skillpack_train::Example> = (0..cfg.batch * 8)
        .map(|_| skillpack_train::Example {
            ids: (0..args.max_len)
                .map(|_| rng.below(vocab as usize) as u32)
                .collect(),
            targets: vec![true; args.max_len],
        })
        .collect();
    let tmp = std::env::temp_dir().join(format!("skillpack-bench-train-{}", std::process::id()));
    let mut trainer = Trainer::new(model, cfg.clone(), examples, &tmp)?;
    let warm = trainer.train_step()?;
    let steps = 4;
    let t = Instant::now();
    let mut tokens = 0;
    for _ in 0..steps {
        tokens += trainer.train_step()?.tokens;
    }
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&tmp);
    let result = serde_json::json!({
        "base": base.display().to_string(),
        "device": args.device,
        "threads": candle_core::utils::get_num_threads(),
        "method": args.method,
        "r": cfg.r,
        "targets": cfg.targets,
        "batch": cfg.batch,
        "seq_len": args.max_len,
        "warmup_step_seconds": warm.seconds,
        "seconds_per_step": secs / steps as f64,
        "tokens_per_s": tokens as f64 / secs,
        "peak_rss_mib": super::proc_status_mib("VmHWM:"),
    });
    if args.json {
        super::print_json(&result)?;
    } else {
        println!(
            "{:.1} tokens/s ({:.2} s/step, batch {} × {} tokens, {} r={} on {}), peak RSS {:.0} MiB",
            tokens as f64 / secs,
            secs / steps as f64,
            cfg.batch,
            args.max_len,
            args.method,
            cfg.r,
            cfg.targets.join(","),
            super::proc_status_mib("VmHWM:")
        );
    }
    Ok(())
}
