//! One call that trains a skill end to end: read and tokenize the records, build the
//! configuration from the options, resume from a checkpoint, stop early on the dev loss, export
//! the best step as PEFT and GGUF, and keep `metrics.jsonl`, `loss.svg` and `train.json` in the
//! output directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use skillpack_convert::GgufInfo;
use skillpack_llama::{Backend, Model, ModelParams};

use crate::{
    export_trained, plot_loss, read_jsonl, read_metrics, tokenize, tune_allocator, Decay,
    EarlyStopping, Example, ExportReport, Llama, Method, ModelWeights, Result, Selection,
    StepMetrics, TrainConfig, TrainError, Trainer, PROJECTIONS,
};

/// How many optimizer steps a run may take (early stopping may end it sooner).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepBudget {
    /// Exactly this many steps.
    Steps(usize),
    /// `epochs` passes over the records, kept within `[min_steps, max_steps]`.
    Epochs {
        epochs: f64,
        min_steps: usize,
        max_steps: usize,
    },
}

impl Default for StepBudget {
    /// 300 steps, the CLI's default.
    fn default() -> Self {
        StepBudget::Steps(300)
    }
}

impl StepBudget {
    /// The number of steps for `records` training records when each step consumes
    /// `records_per_step` of them (batch × accumulation).
    pub fn steps(&self, records: usize, records_per_step: usize) -> Result<usize> {
        match *self {
            StepBudget::Steps(steps) => Ok(steps),
            StepBudget::Epochs {
                epochs,
                min_steps,
                max_steps,
            } => {
                if !(epochs > 0.0 && epochs.is_finite()) {
                    return Err(TrainError::Input(format!(
                        "--epochs must be a positive number, not {epochs}"
                    )));
                }
                if min_steps > max_steps {
                    return Err(TrainError::Input(format!(
                        "--min-steps {min_steps} is above --max-steps {max_steps}"
                    )));
                }
                let steps = (epochs * records as f64 / records_per_step.max(1) as f64).ceil();
                Ok((steps as usize).clamp(min_steps, max_steps))
            }
        }
    }
}

/// Held-out records that pick the exported step and stop training when their loss stops
/// improving.
#[derive(Debug, Clone, PartialEq)]
pub struct DevOptions {
    /// Records (JSONL), e.g. the skill's `dev.jsonl`.
    pub path: PathBuf,
    /// Evaluate the dev loss every this many steps (and at the last step).
    pub eval_every: usize,
    /// Stop after this many evaluations without a new best.
    pub patience: usize,
    /// Improvement in dev loss (nats/token) needed to count as a new best.
    pub min_delta: f64,
    /// Evaluate on at most this many records, evenly spaced through the file (0 = all).
    pub limit: usize,
}

impl DevOptions {
    /// The CLI's defaults: every 50 steps, patience 3, min delta 0.002, at most 200 records.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DevOptions {
            path: path.into(),
            eval_every: 50,
            patience: 3,
            min_delta: 0.002,
            limit: 200,
        }
    }

    /// The trainer's stopping rule for these options.
    pub fn early_stopping(&self) -> EarlyStopping {
        EarlyStopping {
            eval_every: self.eval_every.max(1),
            patience: self.patience.max(1),
            min_delta: self.min_delta,
        }
    }
}

/// The adapter and optimizer settings of a run, before the step budget is known (warmup and
/// AdaLoRA's schedule default to fractions of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    pub method: Method,
    /// Hugging Face projection names to adapt (`q_proj`, …, `down_proj`).
    pub targets: Vec<String>,
    /// LoRA rank, or AdaLoRA's `init_r`.
    pub r: usize,
    /// AdaLoRA's target average rank.
    pub target_r: usize,
    pub alpha: f64,
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub accumulate: usize,
    /// Tokens per example (longer ones are cut).
    pub max_len: usize,
    pub lr: f64,
    /// Warmup steps (`None`: 5 % of the steps).
    pub warmup: Option<usize>,
    pub decay: Decay,
    pub clip: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// AdaLoRA's `tinit` (`None`: 10 % of the steps).
    pub tinit: Option<usize>,
    /// AdaLoRA's `tfinal` (`None`: 20 % of the steps).
    pub tfinal: Option<usize>,
    /// AdaLoRA's `deltaT`.
    pub delta_t: usize,
    pub orth_reg_weight: f64,
    /// Checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// How products against the frozen weights are computed.
    pub matmul: crate::MatmulPrecision,
}

impl Default for Hyperparameters {
    /// The CLI's defaults: AdaLoRA init_r 12 → 8 on all seven projections.
    fn default() -> Self {
        Hyperparameters {
            method: Method::AdaLora,
            targets: PROJECTIONS.iter().map(|p| p.to_string()).collect(),
            r: 12,
            target_r: 8,
            alpha: 32.0,
            batch: 4,
            accumulate: 1,
            max_len: 256,
            lr: 1e-3,
            warmup: None,
            decay: Decay::Cosine,
            clip: 1.0,
            weight_decay: 0.0,
            seed: 42,
            tinit: None,
            tfinal: None,
            delta_t: 10,
            orth_reg_weight: 0.5,
            checkpoint_every: 50,
            matmul: crate::MatmulPrecision::F32,
        }
    }
}

impl Hyperparameters {
    /// Records one optimizer step consumes.
    pub fn records_per_step(&self) -> usize {
        self.batch.max(1) * self.accumulate.max(1)
    }

    /// The trainer's configuration for a run of `steps` steps.
    pub fn train_config(&self, steps: usize, early_stopping: Option<EarlyStopping>) -> TrainConfig {
        let defaults = TrainConfig::skill_defaults(steps);
        TrainConfig {
            method: self.method,
            targets: self.targets.clone(),
            r: self.r,
            target_r: self.target_r,
            alpha: self.alpha,
            steps,
            batch: self.batch,
            accumulate: self.accumulate.max(1),
            max_len: self.max_len,
            lr: self.lr,
            warmup: self.warmup.unwrap_or(defaults.warmup),
            decay: self.decay,
            weight_decay: self.weight_decay,
            clip: self.clip,
            seed: self.seed,
            tinit: self.tinit.unwrap_or(defaults.tinit),
            tfinal: self.tfinal.unwrap_or(defaults.tfinal),
            delta_t: self.delta_t,
            beta1: defaults.beta1,
            beta2: defaults.beta2,
            orth_reg_weight: self.orth_reg_weight,
            checkpoint_every: self.checkpoint_every,
            early_stopping,
            matmul: self.matmul,
        }
    }
}

/// Everything [`train_skill`] needs.
#[derive(Debug, Clone)]
pub struct SkillTrainOptions {
    /// Instruction records (JSONL of `{skill, context, query, output}`).
    pub data: PathBuf,
    /// Output directory: checkpoints, `metrics.jsonl`, `loss.svg`, `train.json`, `peft/`,
    /// `adapter.gguf`.
    pub out: PathBuf,
    /// Base model: a GGUF file or a Hugging Face directory.
    pub base: PathBuf,
    /// GGUF whose tokenizer and chat template render the records; when it is a file, also the
    /// base of the GGUF export.
    pub tokenizer: PathBuf,
    /// Where to train ([`parse_device`] reads `cpu` / `cuda:N`).
    pub device: Device,
    pub hyperparameters: Hyperparameters,
    pub budget: StepBudget,
    /// Dev records for selection and early stopping (`None`: export the last step).
    pub dev: Option<DevOptions>,
    /// Use at most this many training records.
    pub limit: Option<usize>,
    /// Continue from the checkpoint in `out`. Without it, a checkpoint in `out` is an error.
    pub resume: bool,
}

impl SkillTrainOptions {
    /// Trains on `data` into `out` from `base` (a GGUF, which also tokenizes) on the CPU with
    /// the CLI's defaults.
    pub fn new(
        data: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
        base: impl Into<PathBuf>,
    ) -> Self {
        let base = base.into();
        SkillTrainOptions {
            data: data.into(),
            out: out.into(),
            tokenizer: base.clone(),
            base,
            device: Device::Cpu,
            hyperparameters: Hyperparameters::default(),
            budget: StepBudget::default(),
            dev: None,
            limit: None,
            resume: false,
        }
    }
}

/// What [`train_skill`] reports while it runs, in this order.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// The training records are read and tokenized.
    DataLoaded {
        records: usize,
        /// Tokens in all examples.
        tokens: usize,
        /// Tokens the loss covers (the outputs).
        target_tokens: usize,
    },
    /// The dev records are read and tokenized (only with [`SkillTrainOptions::dev`]).
    DevLoaded { records: usize },
    /// The run continues from the checkpoint at `step`.
    Resumed { step: usize },
    /// `resume` was asked but the output directory has no checkpoint: starting from step 0.
    NoCheckpoint,
    /// The training loop starts at `step` (0, or where a resume left off) of `step_budget`.
    Started { step: usize, step_budget: usize },
    /// An optimizer step is done.
    Step {
        metrics: &'a StepMetrics,
        /// Tokens per second since [`TrainEvent::Started`].
        tokens_per_s: f64,
        /// The best dev loss so far and its step.
        best_dev: Option<(usize, f64)>,
    },
    /// The loop is over (budget spent or early stop); the checkpoint and export follow.
    Finished { step: usize },
}

/// The result of [`train_skill`], also written to `train.json` (see [`TrainOutcome::summary`]).
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The output directory.
    pub out: PathBuf,
    /// Where the adapter was written.
    pub export: ExportReport,
    /// Steps the run could take.
    pub step_budget: usize,
    /// The step training stopped at.
    pub steps: usize,
    /// The dev-loss selection: best step and whether patience ran out.
    pub selection: Selection,
    /// The step whose adapters were exported (the best dev step, else the last).
    pub exported_step: usize,
    /// Every step's metrics, as `metrics.jsonl` holds them.
    pub metrics: Vec<StepMetrics>,
    /// Wall time of the training loop and export.
    pub seconds: f64,
    /// Training throughput of this invocation (a resumed run counts only its own steps).
    pub tokens_per_s: f64,
    /// Peak resident memory of the process (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
}

impl TrainOutcome {
    /// The loss chart.
    pub fn loss_chart(&self) -> PathBuf {
        self.out.join("loss.svg")
    }

    /// Steps per matmul precision (`{"f32": 300, "bf16": 100}`): a resumed run may change it.
    pub fn matmul_steps(&self) -> BTreeMap<String, usize> {
        let mut steps = BTreeMap::new();
        for m in &self.metrics {
            *steps.entry(m.matmul.as_str().to_string()).or_insert(0) += 1;
        }
        steps
    }

    /// The dev loss at each evaluation step.
    pub fn dev_losses(&self) -> Vec<(usize, f64)> {
        self.metrics
            .iter()
            .filter_map(|m| m.dev_loss.map(|l| (m.step, l)))
            .collect()
    }

    /// The run's record as `train.json` holds it: outputs, step budget, where it stopped, the
    /// exported step and the dev curve.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "out": self.out.display().to_string(),
            "peft": self.export.peft_dir.display().to_string(),
            "gguf": self.export.gguf.as_ref().map(|p| p.display().to_string()),
            "modules": self.export.modules,
            "total_rank": self.export.total_rank,
            "step_budget": self.step_budget,
            "steps": self.steps,
            "stopped_early": self.selection.stopped,
            "exported_step": self.exported_step,
            "best_dev_loss": self.selection.best.map(|(_, l)| l),
            "dev_losses": self.dev_losses(),
            "first_loss": self.metrics.first().map(|m| m.loss),
            "last_loss": self.metrics.last().map(|m| m.loss),
            "seconds": self.seconds,
            "tokens_per_s": self.tokens_per_s,
            "peak_rss_mib": self.peak_rss_mib,
            "matmul": self.matmul_steps(),
        })
    }
}

/// Reads a device name: `cpu`, `cuda` or `cuda:N` (CUDA needs the `cuda` feature).
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s.starts_with("cuda") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|e: std::num::ParseIntError| TrainError::Input(e.to_string()))?,
                None => 0,
            };
            Device::new_cuda(ordinal).map_err(TrainError::Device)
        }
        other => Err(TrainError::Input(format!(
            "unknown device `{other}` (cpu, cuda, cuda:N)"
        ))),
    }
}

/// The weights' type on `device`: bf16 on CUDA, f32 on the CPU.
pub fn training_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Every `len / limit`-th item, so a subset spans the whole list (`limit` 0 = all).
pub fn evenly_spaced<T>(items: Vec<T>, limit: usize) -> Vec<T> {
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
        .filter_map(|(item, keep)| keep.then_some(item))
        .collect()
}

fn tokenize_all(
    vocab: &Model,
    path: &Path,
    max_len: usize,
    keep: impl FnOnce(Vec<crate::Record>) -> Vec<crate::Record>,
) -> Result<Vec<Example>> {
    keep(read_jsonl(path)?)
        .iter()
        .map(|r| tokenize(vocab, r, max_len))
        .collect()
}

/// The first `limit` records (all with `None`) of the instruction JSONL at `data`, tokenized as
/// [`train_skill`] does with the vocabulary of the GGUF `tokenizer` (loss on the answers).
pub fn tokenize_records(
    tokenizer: &Path,
    data: &Path,
    max_len: usize,
    limit: Option<usize>,
) -> Result<Vec<Example>> {
    tokenize_all(&load_vocab(tokenizer)?, data, max_len, |records| {
        first_records(records, limit)
    })
}

/// The tokenizer of the GGUF at `path` (its vocabulary only, no weights).
fn load_vocab(path: &Path) -> Result<Model> {
    Ok(Model::load(
        Backend::get(),
        path,
        &ModelParams {
            vocab_only: true,
            ..Default::default()
        },
    )?)
}

/// The first `limit` records (all with `None`).
fn first_records(mut records: Vec<crate::Record>, limit: Option<usize>) -> Vec<crate::Record> {
    if let Some(n) = limit {
        records.truncate(n);
    }
    records
}

/// Trains a skill adapter as `options` say and exports it, reporting progress to `on_event`.
///
/// The output directory ends with `peft/` (the adapter as PEFT saves it), `adapter.gguf` (when
/// the tokenizer is a GGUF file), `metrics.jsonl` (one line per step), `loss.svg` (redrawn every
/// 10 steps and at evaluations) and `train.json` ([`TrainOutcome::summary`]). With
/// [`SkillTrainOptions::dev`], the best dev step is exported and training stops when the dev
/// loss stops improving. A checkpoint is kept every `checkpoint_every` steps; a run killed at
/// any point resumes (`resume`) to the same result as an uninterrupted one on the CPU.
///
/// It tunes the process's allocator for training first ([`tune_allocator`]).
pub fn train_skill(
    options: &SkillTrainOptions,
    on_event: impl FnMut(TrainEvent<'_>),
) -> Result<TrainOutcome> {
    let outcome = train_skill_inner(options, on_event);
    // The bf16 copies of the frozen weights go with the model.
    crate::release_packed_weights();
    outcome
}

fn train_skill_inner(
    options: &SkillTrainOptions,
    mut on_event: impl FnMut(TrainEvent<'_>),
) -> Result<TrainOutcome> {
    tune_allocator();
    let hyper = &options.hyperparameters;
    let out = &options.out;
    let vocab = load_vocab(&options.tokenizer)?;
    let examples = tokenize_all(&vocab, &options.data, hyper.max_len, |records| {
        first_records(records, options.limit)
    })?;
    on_event(TrainEvent::DataLoaded {
        records: examples.len(),
        tokens: examples.iter().map(|e| e.ids.len()).sum(),
        target_tokens: examples
            .iter()
            .map(|e| e.targets.iter().filter(|t| **t).count())
            .sum(),
    });
    let dev_examples = match &options.dev {
        Some(dev) => {
            let examples = tokenize_all(&vocab, &dev.path, hyper.max_len, |records| {
                evenly_spaced(records, dev.limit)
            })?;
            on_event(TrainEvent::DevLoaded {
                records: examples.len(),
            });
            examples
        }
        None => Vec::new(),
    };
    let steps = options
        .budget
        .steps(examples.len(), hyper.records_per_step())?;
    let config = hyper.train_config(steps, options.dev.as_ref().map(DevOptions::early_stopping));
    let model = Llama::new(ModelWeights::load(
        &options.base,
        &options.device,
        training_dtype(&options.device),
    )?);
    let mut trainer = Trainer::new(model, config, examples, out)?;
    trainer.set_dev_examples(dev_examples)?;
    if options.resume {
        if trainer.resume()? {
            on_event(TrainEvent::Resumed {
                step: trainer.step(),
            });
        } else {
            on_event(TrainEvent::NoCheckpoint);
        }
    } else if out.join("checkpoint").exists() {
        return Err(TrainError::Input(format!(
            "{} holds a checkpoint: pass --resume to continue it, or choose another --out",
            out.display()
        )));
    } else {
        // A fresh run: the metrics and best step of an earlier, finished run would mix in.
        let _ = std::fs::remove_file(out.join("metrics.jsonl"));
        let _ = std::fs::remove_dir_all(out.join("best"));
    }
    on_event(TrainEvent::Started {
        step: trainer.step(),
        step_budget: steps,
    });
    let metrics_path = out.join("metrics.jsonl");
    let chart_path = out.join("loss.svg");
    let started = Instant::now();
    let mut tokens = 0usize;
    while !trainer.finished() {
        let m = trainer.train_step()?;
        tokens += m.tokens;
        on_event(TrainEvent::Step {
            metrics: &m,
            tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64(),
            best_dev: trainer.selection().best,
        });
        if m.step % 10 == 0 || m.step == steps || m.dev_loss.is_some() {
            plot_loss(&read_metrics(&metrics_path), &chart_path)?;
        }
    }
    on_event(TrainEvent::Finished {
        step: trainer.step(),
    });
    trainer.save_checkpoint()?;
    let stopped_at = trainer.step();
    let selection = trainer.selection().clone();
    let exported_step = trainer.restore_best()?.unwrap_or(stopped_at);
    let gguf_base = GgufInfo::open(&options.tokenizer)
        .ok()
        .filter(|_| options.tokenizer.is_file());
    let export = export_trained(
        &trainer,
        out,
        &options.base.display().to_string(),
        gguf_base.as_ref(),
    )?;
    let metrics = read_metrics(&metrics_path);
    plot_loss(&metrics, &chart_path)?;
    let outcome = TrainOutcome {
        out: out.clone(),
        export,
        step_budget: steps,
        steps: stopped_at,
        selection,
        exported_step,
        metrics,
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_s: tokens as f64 / started.elapsed().as_secs_f64(),
        peak_rss_mib: crate::peak_rss_mib(),
    };
    let summary = serde_json::to_string_pretty(&outcome.summary())
        .map_err(|e| TrainError::Input(e.to_string()))?;
    skillpack_convert::write_atomic(&out.join("train.json"), summary.as_bytes())?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_set_the_budget_within_bounds() {
        let epochs = |epochs, min_steps, max_steps| StepBudget::Epochs {
            epochs,
            min_steps,
            max_steps,
        };
        assert_eq!(StepBudget::Steps(7).steps(1000, 4).unwrap(), 7);
        assert_eq!(epochs(2.0, 1, 800).steps(100, 4).unwrap(), 50);
        assert_eq!(epochs(1.0, 1, 800).steps(101, 4).unwrap(), 26);
        assert_eq!(epochs(1.0, 100, 800).steps(40, 4).unwrap(), 100);
        assert_eq!(epochs(10.0, 1, 800).steps(1000, 4).unwrap(), 800);
        assert!(epochs(0.0, 1, 800).steps(10, 4).is_err());
        assert!(epochs(f64::NAN, 1, 800).steps(10, 4).is_err());
        assert!(epochs(1.0, 900, 800).steps(10, 4).is_err());
    }

    #[test]
    fn evenly_spaced_spans_the_list() {
        let items: Vec<usize> = (0..10).collect();
        assert_eq!(evenly_spaced(items.clone(), 0), items);
        assert_eq!(evenly_spaced(items.clone(), 20), items);
        assert_eq!(evenly_spaced(items.clone(), 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(evenly_spaced(items, 3), vec![0, 3, 6]);
    }

    #[test]
    fn devices_are_named_like_the_cli() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        let err = parse_device("tpu").unwrap_err().to_string();
        assert_eq!(err, "unknown device `tpu` (cpu, cuda, cuda:N)");
        assert!(parse_device("cuda:x").is_err());
    }
}
