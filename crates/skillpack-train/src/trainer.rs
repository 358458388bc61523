//! The training loop: AdamW with warmup and cosine/linear decay, gradient clipping and
//! accumulation, AdaLoRA's orthogonal regularisation and rank allocation, deterministic
//! batching, and atomic checkpoints that resume bit for bit on CPU.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::adalora::{orthogonal_regularization, AdaLoraSchedule, RankAllocator, TripletView};
use crate::{
    bucketed_batches, Example, Llama, LoraModule, Method, ModuleKey, Result, SeededNormal,
    TrainError, PROJECTIONS,
};

/// Learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
}

impl std::str::FromStr for Decay {
    type Err = TrainError;

    /// `cosine`, `linear` or `constant`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "cosine" => Ok(Decay::Cosine),
            "linear" => Ok(Decay::Linear),
            "constant" => Ok(Decay::Constant),
            other => Err(TrainError::Input(format!(
                "unknown decay `{other}` (cosine, linear, constant)"
            ))),
        }
    }
}

/// Everything that defines a training run (saved in checkpoints; a resume must match it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub method: Method,
    /// HF projection names to adapt.
    pub targets: Vec<String>,
    /// LoRA rank, or AdaLoRA's `init_r`.
    pub r: usize,
    /// AdaLoRA's final average rank.
    pub target_r: usize,
    pub alpha: f64,
    pub steps: usize,
    pub batch: usize,
    pub accumulate: usize,
    pub max_len: usize,
    pub lr: f64,
    pub warmup: usize,
    pub decay: Decay,
    pub weight_decay: f64,
    pub clip: f64,
    pub seed: u64,
    /// AdaLoRA: warmup steps without pruning, final steps with a frozen pattern, masking period.
    pub tinit: usize,
    pub tfinal: usize,
    pub delta_t: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub orth_reg_weight: f64,
    pub checkpoint_every: usize,
    /// Evaluate a held-out loss, keep the best step, stop when it stops improving.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// How products against the frozen weights are computed ([`crate::MatmulPrecision`]).
    #[serde(default)]
    pub matmul: crate::MatmulPrecision,
}

/// Selection and early stopping by the loss on held-out records (the skill's dev split).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct EarlyStopping {
    /// Evaluate the dev loss every this many optimizer steps (and at the last step).
    pub eval_every: usize,
    /// Stop after this many evaluations in a row without a new best.
    pub patience: usize,
    /// An evaluation is a new best only when it is lower than the best by more than this
    /// (nats per target token).
    pub min_delta: f64,
}

impl TrainConfig {
    /// Sensible defaults for a skill: AdaLoRA init_r 12 → 8 on all seven linears.
    pub fn skill_defaults(steps: usize) -> Self {
        TrainConfig {
            method: Method::AdaLora,
            targets: PROJECTIONS.iter().map(|s| s.to_string()).collect(),
            r: 12,
            target_r: 8,
            alpha: 32.0,
            steps,
            batch: 4,
            accumulate: 1,
            max_len: 256,
            lr: 1e-3,
            warmup: steps / 20,
            decay: Decay::Cosine,
            weight_decay: 0.0,
            clip: 1.0,
            seed: 42,
            tinit: steps / 10,
            tfinal: steps / 5,
            delta_t: 10,
            beta1: 0.85,
            beta2: 0.85,
            orth_reg_weight: 0.5,
            checkpoint_every: 50,
            early_stopping: None,
            matmul: crate::MatmulPrecision::F32,
        }
    }

    fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let span = (self.steps - self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Linear => self.lr * (1.0 - progress),
            Decay::Constant => self.lr,
        }
    }

    fn schedule(&self) -> AdaLoraSchedule {
        AdaLoraSchedule {
            init_r: self.r,
            target_r: self.target_r,
            tinit: self.tinit,
            tfinal: self.tfinal,
            delta_t: self.delta_t.max(1),
            total_step: self.steps,
            beta1: self.beta1,
            beta2: self.beta2,
        }
    }
}

/// Metrics of one optimizer step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub orth_reg: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub target_tokens: usize,
    pub seconds: f64,
    /// AdaLoRA: total rank kept.
    pub rank_budget: Option<usize>,
    /// Resident memory after the step (Linux; 0 elsewhere).
    #[serde(default)]
    pub rss_mib: f64,
    /// Mean loss per target token on the dev records, at evaluation steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_loss: Option<f64>,
    /// How the step's products against the frozen weights ran (lines written before the
    /// setting existed were f32).
    #[serde(default)]
    pub matmul: crate::MatmulPrecision,
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * 4096.0 / 1048576.0)
        .unwrap_or(0.0)
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    step: usize,
    rank_pattern: Option<BTreeMap<String, Vec<bool>>>,
    adam_t: usize,
    #[serde(default)]
    selection: Selection,
}

/// Where the dev-loss selection stands (checkpointed with the run).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Selection {
    /// The step with the lowest dev loss so far and that loss.
    pub best: Option<(usize, f64)>,
    /// Evaluations since the best one.
    pub evals_since_best: usize,
    /// Patience ran out: training is over.
    pub stopped: bool,
}

/// The best step's adapters, as `best/` holds them.
#[derive(Serialize, Deserialize)]
struct BestState {
    step: usize,
    dev_loss: f64,
    /// AdaLoRA: the ranks in use at that step (the frozen pattern, or the non-zero E entries).
    rank_pattern: Option<BTreeMap<String, Vec<bool>>>,
}

/// A training run over tokenized examples.
pub struct Trainer {
    pub model: Llama,
    pub config: TrainConfig,
    examples: Vec<Example>,
    step: usize,
    adam_m: BTreeMap<String, Tensor>,
    adam_v: BTreeMap<String, Tensor>,
    adam_t: usize,
    allocator: Option<RankAllocator>,
    out_dir: PathBuf,
    /// The current epoch's batches (epoch index, batches of example indices).
    epoch_batches: Option<(usize, Vec<Vec<usize>>)>,
    /// Held-out records for the dev loss (empty: no evaluation).
    dev: Vec<Example>,
    selection: Selection,
}

fn module_name((layer, p): &ModuleKey) -> String {
    format!("{layer}.{p}")
}

fn projection(name: &str) -> Result<&'static str> {
    PROJECTIONS
        .iter()
        .copied()
        .find(|p| *p == name)
        .ok_or_else(|| TrainError::Input(format!("unknown target module `{name}` (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")))
}

impl Trainer {
    /// Attaches freshly initialised adapters (seeded) to `model`. Tunes the allocator for
    /// training ([`crate::tune_allocator`]).
    pub fn new(
        mut model: Llama,
        config: TrainConfig,
        examples: Vec<Example>,
        out_dir: &Path,
    ) -> Result<Self> {
        crate::tune_allocator();
        crate::check_matmul_precision(config.matmul)?;
        if examples.is_empty() {
            return Err(TrainError::Input("no training examples".into()));
        }
        if config.method == Method::AdaLora && config.tinit + config.tfinal >= config.steps {
            return Err(TrainError::Input(format!(
                "AdaLoRA needs tinit + tfinal < steps ({} + {} >= {})",
                config.tinit, config.tfinal, config.steps
            )));
        }
        let mut rng = SeededNormal::new(config.seed);
        let device = model.device().clone();
        model.adapters.clear();
        let c = model.weights.config.clone();
        let targets: Vec<&'static str> = config
            .targets
            .iter()
            .map(|t| projection(t))
            .collect::<Result<_>>()?;
        for layer in 0..c.num_hidden_layers {
            for &p in &targets {
                let shape = model.weights.layers[layer].linears[p].dims2()?;
                let m = LoraModule::init(
                    config.method,
                    config.r,
                    shape,
                    config.alpha,
                    &mut rng,
                    &device,
                )?;
                model.adapters.insert((layer, p), m);
            }
        }
        let allocator = (config.method == Method::AdaLora).then(|| {
            let ranks: BTreeMap<String, usize> = model
                .adapters
                .keys()
                .map(|k| (module_name(k), config.r))
                .collect();
            RankAllocator::new(config.schedule(), &ranks)
        });
        std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
        Ok(Trainer {
            model,
            config,
            examples,
            step: 0,
            adam_m: BTreeMap::new(),
            adam_v: BTreeMap::new(),
            adam_t: 0,
            allocator,
            out_dir: out_dir.into(),
            epoch_batches: None,
            dev: Vec::new(),
            selection: Selection::default(),
        })
    }

    /// Held-out records whose loss selects the best step and stops training (needs
    /// `config.early_stopping`).
    pub fn set_dev_examples(&mut self, dev: Vec<Example>) -> Result<()> {
        if self.config.early_stopping.is_some() && dev.is_empty() {
            return Err(TrainError::Input(
                "early stopping needs dev records (none given)".into(),
            ));
        }
        self.dev = dev;
        Ok(())
    }

    /// The dev-loss selection so far.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Whether training is over: the step budget is spent or the dev loss stopped improving.
    pub fn finished(&self) -> bool {
        self.step >= self.config.steps || self.selection.stopped
    }

    /// Optimizer steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The final AdaLoRA rank pattern (after `steps - tfinal`).
    pub fn rank_pattern(&self) -> Option<&BTreeMap<String, Vec<bool>>> {
        self.allocator
            .as_ref()
            .and_then(|a| a.rank_pattern.as_ref())
    }

    /// The micro-batch (example indices) used at global micro-step `micro`. Each epoch is a
    /// fresh seeded shuffle, so the order depends only on the seed and the position; the epoch's
    /// batches are computed once, not on every step.
    pub(crate) fn micro_batch(&mut self, micro: usize) -> Vec<usize> {
        // The number of batches per epoch depends only on the dataset size, not on the seed.
        let lengths = || {
            self.examples
                .iter()
                .map(|e| e.ids.len())
                .collect::<Vec<_>>()
        };
        let per_epoch = match &self.epoch_batches {
            Some((_, b)) => b.len(),
            None => bucketed_batches(&lengths(), self.config.batch, self.config.seed).len(),
        };
        let epoch = micro / per_epoch;
        if self.epoch_batches.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let seed = self.config.seed.wrapping_add(epoch as u64);
            let batches = bucketed_batches(&lengths(), self.config.batch, seed);
            self.epoch_batches = Some((epoch, batches));
        }
        let (_, batches) = self.epoch_batches.as_ref().expect("set above");
        batches[micro % per_epoch].clone()
    }

    fn vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::new();
        for (k, m) in &self.model.adapters {
            let n = module_name(k);
            out.push((format!("{n}.a"), &m.a));
            out.push((format!("{n}.b"), &m.b));
            if let Some(e) = &m.e {
                out.push((format!("{n}.e"), e));
            }
        }
        out
    }

    /// Mean cross-entropy over the target tokens of `batch` (indices of training examples), and
    /// the token counts (all positions, target positions).
    pub fn batch_loss(&self, batch: &[usize]) -> Result<(Tensor, usize, usize)> {
        let _precision = crate::MatmulPrecisionScope::enter(self.config.matmul)?;
        let examples: Vec<&Example> = batch.iter().map(|&i| &self.examples[i]).collect();
        self.loss_of(&examples, true)
    }

    /// Mean cross-entropy over the target tokens of `examples` (one padded batch),
    /// differentiable when `with_gradient`.
    fn loss_of(
        &self,
        examples: &[&Example],
        with_gradient: bool,
    ) -> Result<(Tensor, usize, usize)> {
        let device = self.model.device();
        let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * t);
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        for (bi, ex) in examples.iter().enumerate() {
            for pos in 0..t {
                ids.push(*ex.ids.get(pos).unwrap_or(&0));
                // Position pos predicts ids[pos + 1].
                if pos + 1 < ex.ids.len() && ex.targets[pos + 1] {
                    rows.push((bi * t + pos) as u32);
                    labels.push(ex.ids[pos + 1]);
                }
            }
        }
        if rows.is_empty() {
            return Err(TrainError::Input(
                "a batch has no target tokens (outputs truncated away?)".into(),
            ));
        }
        let ids = Tensor::from_vec(ids, (examples.len(), t), device)?;
        let hidden = self.model.hidden(&ids)?;
        let h = hidden.dim(2)?;
        // Only the rows that predict a target go through the (vocabulary-sized) output layer.
        let picked = hidden
            .reshape((examples.len() * t, h))?
            .index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
        let loss = self.model.head_loss(&picked, &labels, with_gradient)?;
        Ok((loss, examples.len() * t, rows.len()))
    }

    /// Mean loss per target token over the dev records with the current adapters (batches of
    /// similar lengths, in a fixed order, so the figure is reproducible).
    pub fn dev_loss(&self) -> Result<f64> {
        // On candle's pool, as `train_step`.
        self.model.device().with_context(|| self.dev_loss_here())
    }

    fn dev_loss_here(&self) -> Result<f64> {
        let _precision = crate::MatmulPrecisionScope::enter(self.config.matmul)?;
        if self.dev.is_empty() {
            return Err(TrainError::Input("no dev records to evaluate".into()));
        }
        let mut order: Vec<&Example> = self
            .dev
            .iter()
            .filter(|e| e.targets.iter().skip(1).any(|t| *t))
            .collect();
        order.sort_by_key(|e| e.ids.len());
        let (mut sum, mut count) = (0f64, 0usize);
        for chunk in order.chunks(self.config.batch.max(1)) {
            let (loss, _, n) = self.loss_of(chunk, false)?;
            sum += loss.detach().to_scalar::<f32>()? as f64 * n as f64;
            count += n;
        }
        if count == 0 {
            return Err(TrainError::Input(
                "the dev records have no target tokens (outputs truncated away?)".into(),
            ));
        }
        Ok(sum / count as f64)
    }

    /// Evaluates the dev loss, keeps the adapters when it is a new best, and decides whether
    /// patience ran out. Returns the dev loss.
    fn evaluate_and_select(&mut self, rule: EarlyStopping) -> Result<f64> {
        let loss = self.dev_loss()?;
        let improved = match self.selection.best {
            None => true,
            Some((_, best)) => loss < best - rule.min_delta,
        };
        if improved {
            self.save_best(loss)?;
            self.selection.best = Some((self.step, loss));
            self.selection.evals_since_best = 0;
        } else {
            self.selection.evals_since_best += 1;
            if self.selection.evals_since_best >= rule.patience.max(1) {
                self.selection.stopped = true;
            }
        }
        Ok(loss)
    }

    /// The ranks in use now: AdaLoRA's frozen pattern once set, else the triplets whose
    /// singular value is not masked to zero (a zero E contributes nothing, as in PEFT).
    fn current_rank_pattern(&self) -> Result<Option<BTreeMap<String, Vec<bool>>>> {
        if self.allocator.is_none() {
            return Ok(None);
        }
        if let Some(p) = self.rank_pattern() {
            return Ok(Some(p.clone()));
        }
        let mut pattern = BTreeMap::new();
        for (k, m) in &self.model.adapters {
            let e = m.e.as_ref().expect("AdaLoRA modules have E");
            let values = e
                .as_tensor()
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            pattern.insert(module_name(k), values.iter().map(|v| *v != 0.0).collect());
        }
        Ok(Some(pattern))
    }

    fn best_dir(&self) -> PathBuf {
        self.out_dir.join("best")
    }

    /// Sets every adapter parameter from `param.NAME` tensors read from `dir`.
    fn set_params(&self, tensors: &HashMap<String, Tensor>, dir: &Path) -> Result<()> {
        for (n, v) in self.vars() {
            let t = tensors.get(&format!("param.{n}")).ok_or_else(|| {
                TrainError::Input(format!("{}: the saved state lacks {n}", dir.display()))
            })?;
            v.set(t)?;
        }
        Ok(())
    }

    /// The adapters as `param.NAME` tensors (what [`Self::set_params`] reads back).
    fn param_tensors(&self) -> HashMap<String, Tensor> {
        self.vars()
            .into_iter()
            .map(|(n, v)| (format!("param.{n}"), v.as_tensor().clone()))
            .collect()
    }

    /// Writes the adapters of the current step as the best ones (atomically, like checkpoints).
    fn save_best(&self, dev_loss: f64) -> Result<()> {
        let state = BestState {
            step: self.step,
            dev_loss,
            rank_pattern: self.current_rank_pattern()?,
        };
        write_state_dir(&self.best_dir(), &self.param_tensors(), &state)
    }

    /// Puts the best step's adapters (and, for AdaLoRA, its rank pattern) back into the model,
    /// so an export writes them. Returns that step, or `None` when no evaluation ran.
    pub fn restore_best(&mut self) -> Result<Option<usize>> {
        if self.selection.best.is_none() {
            return Ok(None);
        }
        let Some(dir) = state_dir_or_old(&self.best_dir()) else {
            return Ok(None);
        };
        let (state, tensors): (BestState, _) = read_state_dir(&dir, self.model.device())?;
        self.set_params(&tensors, &dir)?;
        if let Some(a) = &mut self.allocator {
            a.rank_pattern = state.rank_pattern;
        }
        Ok(Some(state.step))
    }

    /// Runs one optimizer step (with gradient accumulation) and returns its metrics.
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        // On a worker of candle's CPU pool: the step's parallel loops (ours, gemm's) then start
        // from a thread of their own pool instead of waking it from outside (about 8 % faster
        // on two cores). The precision scope is per thread, so it is entered there.
        let device = self.model.device().clone();
        device.with_context(|| self.train_step_here())
    }

    fn train_step_here(&mut self) -> Result<StepMetrics> {
        let _precision = crate::MatmulPrecisionScope::enter(self.config.matmul)?;
        let started = std::time::Instant::now();
        let cfg = self.config.clone();
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let (mut loss_sum, mut orth_sum, mut tokens, mut target_tokens) = (0.0, 0.0, 0, 0);
        for k in 0..cfg.accumulate {
            let batch = self.micro_batch(self.step * cfg.accumulate + k);
            let (loss, n, nt) = self.batch_loss(&batch)?;
            tokens += n;
            target_tokens += nt;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            let mut total = loss;
            if cfg.method == Method::AdaLora && cfg.orth_reg_weight > 0.0 {
                let pairs: Vec<(&Tensor, &Tensor)> = self
                    .model
                    .adapters
                    .values()
                    .map(|m| (m.a.as_tensor(), m.b.as_tensor()))
                    .collect();
                if let Some(reg) = orthogonal_regularization(&pairs)? {
                    orth_sum += reg.to_scalar::<f32>()? as f64;
                    total = (total + (reg * cfg.orth_reg_weight)?)?;
                }
            }
            let total = (total / cfg.accumulate as f64)?;
            let store = total.backward()?;
            for (name, var) in self.vars() {
                // Detached: a gradient can carry the graph of its own computation, and the AdamW
                // moments built from it would then chain every past step together (a leak).
                let g = store
                    .get(var.as_tensor())
                    .ok_or_else(|| TrainError::Input(format!("no gradient reached {name}")))?
                    .detach();
                let g = match grads.remove(&name) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                grads.insert(name, g);
            }
        }
        // Global-norm clipping.
        let mut sq = 0f64;
        for g in grads.values() {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        let grad_norm = sq.sqrt();
        if cfg.clip > 0.0 && grad_norm > cfg.clip {
            let f = cfg.clip / (grad_norm + 1e-6);
            for g in grads.values_mut() {
                *g = (&*g * f)?;
            }
        }
        // AdamW (torch semantics: decoupled weight decay, bias-corrected moments).
        let lr = cfg.lr_at(self.step);
        self.adam_t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let bc1 = 1.0 - b1.powi(self.adam_t as i32);
        let bc2 = 1.0 - b2.powi(self.adam_t as i32);
        let names: Vec<(String, Var)> = self
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.clone()))
            .collect();
        for (name, var) in &names {
            let g = &grads[name];
            let m = match self.adam_m.get(name) {
                Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
                None => (g * (1.0 - b1))?,
            };
            let v = match self.adam_v.get(name) {
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                None => (g.sqr()? * (1.0 - b2))?,
            };
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + eps)?)?;
            let mut p = var.as_tensor().clone();
            if cfg.weight_decay > 0.0 {
                p = (p * (1.0 - lr * cfg.weight_decay))?;
            }
            var.set(&(p - (update * lr)?)?)?;
            self.adam_m.insert(name.clone(), m);
            self.adam_v.insert(name.clone(), v);
        }
        let mut rank_budget = None;
        if let Some(allocator) = &mut self.allocator {
            let owned: Vec<(String, &LoraModule)> = self
                .model
                .adapters
                .iter()
                .map(|(k, m)| (module_name(k), m))
                .collect();
            let mut views = BTreeMap::new();
            for (n, m) in &owned {
                let e = m.e.as_ref().expect("AdaLoRA modules have E");
                views.insert(
                    n.clone(),
                    TripletView {
                        a: m.a.as_tensor(),
                        b: m.b.as_tensor(),
                        e: e.as_tensor(),
                        grad_a: &grads[&format!("{n}.a")],
                        grad_b: &grads[&format!("{n}.b")],
                        grad_e: &grads[&format!("{n}.e")],
                    },
                );
            }
            if let Some(new_e) = allocator.update_and_allocate(self.step, &views)? {
                for (n, m) in &owned {
                    if let (Some(e), Some(new)) = (&m.e, new_e.get(n)) {
                        e.set(new)?;
                    }
                }
            }
            rank_budget = Some(allocator.budget_schedule(self.step).0);
        }
        self.step += 1;
        let mut dev_loss = None;
        let mut evaluated = false;
        if let Some(rule) = cfg.early_stopping {
            if self.step.is_multiple_of(rule.eval_every.max(1)) || self.step == cfg.steps {
                dev_loss = Some(self.evaluate_and_select(rule)?);
                evaluated = true;
            }
        }
        let metrics = StepMetrics {
            step: self.step,
            loss: loss_sum / cfg.accumulate as f64,
            orth_reg: orth_sum / cfg.accumulate as f64,
            lr,
            grad_norm,
            tokens,
            target_tokens,
            seconds: started.elapsed().as_secs_f64(),
            rank_budget,
            rss_mib: rss_mib(),
            dev_loss,
            matmul: cfg.matmul,
        };
        let line = serde_json::to_string(&metrics).map_err(|e| TrainError::Input(e.to_string()))?;
        let metrics_path = self.out_dir.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| TrainError::io(&metrics_path, e))?;
        writeln!(f, "{line}").map_err(|e| TrainError::io(&metrics_path, e))?;
        // After an evaluation the checkpoint records the selection, so a resumed run neither
        // repeats nor loses a stopping decision.
        if evaluated || (cfg.checkpoint_every > 0 && self.step.is_multiple_of(cfg.checkpoint_every))
        {
            self.save_checkpoint()?;
        }
        Ok(metrics)
    }

    fn checkpoint_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoint")
    }

    /// Writes the full state (adapters, AdamW moments, allocator) atomically: a new directory is
    /// written and synced, then swapped in; a crash leaves the previous checkpoint intact.
    pub fn save_checkpoint(&self) -> Result<()> {
        let mut tensors = self.param_tensors();
        for (n, t) in &self.adam_m {
            tensors.insert(format!("adam_m.{n}"), t.clone());
        }
        for (n, t) in &self.adam_v {
            tensors.insert(format!("adam_v.{n}"), t.clone());
        }
        if let Some(a) = &self.allocator {
            for (n, t) in a.state_tensors() {
                tensors.insert(format!("alloc.{n}"), t);
            }
        }
        let state = CheckpointState {
            config: self.config.clone(),
            step: self.step,
            rank_pattern: self.rank_pattern().cloned(),
            adam_t: self.adam_t,
            selection: self.selection.clone(),
        };
        write_state_dir(&self.checkpoint_dir(), &tensors, &state)
    }

    /// Drops the lines of `metrics.jsonl` past `step` (and any line a kill cut short).
    fn drop_metrics_after(&self, step: usize) -> Result<()> {
        let metrics = self.out_dir.join("metrics.jsonl");
        if let Ok(text) = std::fs::read_to_string(&metrics) {
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<StepMetrics>(l)
                        .map(|m| m.step <= step)
                        .unwrap_or(false)
                })
                .collect();
            let body = if kept.is_empty() {
                String::new()
            } else {
                kept.join("\n") + "\n"
            };
            skillpack_convert::write_atomic(&metrics, body.as_bytes())?;
        }
        Ok(())
    }

    /// Restores the state of the checkpoint in the output directory; the configuration must match.
    pub fn resume(&mut self) -> Result<bool> {
        let Some(dir) = state_dir_or_old(&self.checkpoint_dir()) else {
            // Killed before the first checkpoint: the run starts over, so must its metrics.
            self.drop_metrics_after(0)?;
            return Ok(false);
        };
        let (state, tensors): (CheckpointState, _) = read_state_dir(&dir, self.model.device())?;
        // The matmul precision may change between runs (a speed choice, like the thread count).
        let saved = TrainConfig {
            matmul: self.config.matmul,
            ..state.config.clone()
        };
        if saved != self.config {
            return Err(TrainError::Input(format!(
                "{}: the checkpoint was made with other settings; resume with the same options or use a new --out",
                dir.display()
            )));
        }
        self.set_params(&tensors, &dir)?;
        self.adam_m.clear();
        self.adam_v.clear();
        let mut alloc = HashMap::new();
        for (k, t) in tensors {
            if let Some(n) = k.strip_prefix("adam_m.") {
                self.adam_m.insert(n.to_string(), t);
            } else if let Some(n) = k.strip_prefix("adam_v.") {
                self.adam_v.insert(n.to_string(), t);
            } else if let Some(n) = k.strip_prefix("alloc.") {
                alloc.insert(n.to_string(), t);
            }
        }
        if let Some(a) = &mut self.allocator {
            a.restore(&alloc)?;
            a.rank_pattern = state.rank_pattern;
        }
        self.adam_t = state.adam_t;
        self.step = state.step;
        self.selection = state.selection;
        // Metrics after the checkpoint are replayed: drop the lines past it.
        self.drop_metrics_after(self.step)?;
        Ok(true)
    }
}

/// `dir` with `suffix` appended to its name (`checkpoint.tmp`, `best.old`).
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// `dir` when it holds a saved state, else `dir.old` when a crash between the two renames of
/// [`write_state_dir`] left only that one.
fn state_dir_or_old(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), sibling(dir, ".old")]
        .into_iter()
        .find(|d| d.join("state.json").is_file())
}

/// Writes `state.safetensors` and `state.json` into `dir` atomically: a sibling `.tmp`
/// directory is written and synced, then swapped in; a crash leaves the previous one intact (or
/// `dir.old`, which [`state_dir_or_old`] falls back to).
fn write_state_dir<S: Serialize>(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    state: &S,
) -> Result<()> {
    let tmp = sibling(dir, ".tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    candle_core::safetensors::save(tensors, tmp.join("state.safetensors"))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Input(e.to_string()))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| TrainError::io(&tmp, e))?;
    for f in ["state.safetensors", "state.json"] {
        std::fs::File::open(tmp.join(f))
            .and_then(|f| f.sync_all())
            .map_err(|e| TrainError::io(&tmp, e))?;
    }
    let old = sibling(dir, ".old");
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Reads what [`write_state_dir`] wrote.
fn read_state_dir<S: serde::de::DeserializeOwned>(
    dir: &Path,
    device: &candle_core::Device,
) -> Result<(S, HashMap<String, Tensor>)> {
    let state: S = serde_json::from_slice(
        &std::fs::read(dir.join("state.json")).map_err(|e| TrainError::io(dir, e))?,
    )
    .map_err(|e| TrainError::Input(format!("{}: {e}", dir.display())))?;
    let tensors = candle_core::safetensors::load(dir.join("state.safetensors"), device)?;
    Ok((state, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MatmulPrecision;

    /// Optimizer moments and allocator EMAs must be plain tensors: any autograd history in
    /// them chains every step together (this leaked ~250 MiB per step on SmolLM2 before).
    #[test]
    fn optimizer_and_allocator_state_carry_no_graph() {
        let fixtures =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
        let path = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
        let model = Llama::new(
            crate::ModelWeights::load(&path, &candle_core::Device::Cpu, DType::F32).unwrap(),
        );
        let examples: Vec<Example> = (0..8)
            .map(|i| Example {
                ids: (0..16).map(|t| (t * 7 + i) as u32 % 1000).collect(),
                targets: (0..16).map(|t| t >= 8).collect(),
            })
            .collect();
        let config = TrainConfig {
            r: 4,
            target_r: 2,
            tinit: 1,
            tfinal: 2,
            delta_t: 1,
            checkpoint_every: 0,
            ..TrainConfig::skill_defaults(6)
        };
        let tmp = std::env::temp_dir().join(format!("skillpack-graph-test-{}", std::process::id()));
        let mut trainer = Trainer::new(model, config, examples, &tmp).unwrap();
        for _ in 0..3 {
            trainer.train_step().unwrap();
        }
        assert!(!trainer.adam_m.is_empty());
        for t in trainer.adam_m.values().chain(trainer.adam_v.values()) {
            assert!(!t.track_op(), "an AdamW moment carries autograd history");
        }
        for (name, t) in trainer.allocator.as_ref().unwrap().state_tensors() {
            assert!(
                !t.track_op(),
                "allocator state {name} carries autograd history"
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    /// bf16 products on AMX follow the f32 run: the same losses and gradient norms step by
    /// step to bf16 rounding, on the tiny llama from the same initialisation.
    #[test]
    fn bf16_matmuls_track_the_f32_run() {
        if !crate::amx::available() {
            eprintln!("AMX bf16 not available here: skipped");
            assert!(crate::check_matmul_precision(MatmulPrecision::Bf16).is_err());
            return;
        }
        let fixtures =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
        let path = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
        let run = |matmul: MatmulPrecision| -> Vec<(f64, f64)> {
            let model = Llama::new(
                crate::ModelWeights::load(&path, &candle_core::Device::Cpu, DType::F32).unwrap(),
            );
            let examples: Vec<Example> = (0..8)
                .map(|i| Example {
                    ids: (0..40).map(|t| (t * 13 + i * 5) as u32 % 1000).collect(),
                    targets: (0..40).map(|t| t >= 10).collect(),
                })
                .collect();
            let config = TrainConfig {
                method: Method::Lora,
                r: 8,
                checkpoint_every: 0,
                matmul,
                ..TrainConfig::skill_defaults(8)
            };
            let tmp = std::env::temp_dir().join(format!(
                "skillpack-bf16-test-{matmul:?}-{}",
                std::process::id()
            ));
            let mut trainer = Trainer::new(model, config, examples, &tmp).unwrap();
            let steps = (0..5)
                .map(|_| {
                    let m = trainer.train_step().unwrap();
                    assert_eq!(m.matmul, matmul, "the step records its precision");
                    (m.loss, m.grad_norm)
                })
                .collect();
            let _ = std::fs::remove_dir_all(&tmp);
            steps
        };
        let (exact, fast) = (run(MatmulPrecision::F32), run(MatmulPrecision::Bf16));
        for (step, ((l32, g32), (l16, g16))) in exact.iter().zip(&fast).enumerate() {
            assert!(
                (l32 - l16).abs() < 1e-3 * l32.abs(),
                "step {step}: loss {l32} vs {l16}"
            );
            assert!(
                (g32 - g16).abs() < 1.5e-2 * g32.abs(),
                "step {step}: grad norm {g32} vs {g16}"
            );
        }
        // The losses moved, and the bf16 run did round (it is not the f32 run twice).
        assert!(exact[4].0 < exact[0].0);
        assert_ne!(exact, fast);
        // The setting is scoped: nothing of it is left on this thread.
        assert!(!crate::ops::bf16_matmuls());
    }
}
