//! The weighted mixture of frozen skill adapters inside the candle model, with per-example
//! weights that carry gradients — for training a router end to end (SA-MDKIF stage 2): only
//! the router head learns, through the language-model loss of the mixed model.
//!
//! Per adapted module the skills' factors are concatenated: `A [R, in]` (every skill's scale
//! and AdaLoRA `E` folded in), `B [out, R]`, and `column_skill [R]`; the update for rows `x` with
//! per-row skill weights `w [m, K]` is `((x Aᵀ) ⊙ w[:, column_skill]) Bᵀ` — two matmuls.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;

use crate::model::ModuleKey;
use crate::weights::unpermute_rows;
use crate::{Example, Llama, Result, TrainError, PROJECTIONS};

/// One module's concatenated skill factors.
#[derive(Debug, Clone)]
pub struct MixModule {
    pub a: Tensor,
    pub b: Tensor,
    pub column_skill: Tensor,
}

/// Frozen skill adapters to be mixed.
#[derive(Debug, Clone)]
pub struct Mixture {
    pub skills: usize,
    pub modules: BTreeMap<ModuleKey, MixModule>,
}

impl MixModule {
    /// The update for `x [m, in]` with row weights `w [m, K]`.
    pub fn forward(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let u = x.matmul(&self.a.t()?)?;
        let wcols = w.index_select(&self.column_skill, 1)?;
        Ok((u * wcols)?.matmul(&self.b.t()?)?)
    }
}

impl Mixture {
    /// Loads GGUF LoRA adapters (as llama.cpp applies them: `scale = alpha / rank`, or 1 when
    /// alpha is 0) for `model`, undoing llama.cpp's q/k row permutation of `lora_b`.
    pub fn from_gguf(model: &Llama, adapters: &[&Path]) -> Result<Self> {
        let device = model.device().clone();
        let c = &model.weights.config;
        let mut parts: BTreeMap<ModuleKey, Vec<(Tensor, Tensor, u32)>> = BTreeMap::new();
        for (k, path) in adapters.iter().enumerate() {
            let info = skillpack_convert::GgufInfo::open(path)?;
            let alpha = info
                .metadata
                .get("adapter.lora.alpha")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(0.0);
            let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
            let content = gguf_file::Content::read(&mut file)
                .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))?;
            for l in 0..c.num_hidden_layers {
                for p in PROJECTIONS {
                    let stem =
                        skillpack_convert::gguf_module_name(p).expect("a projection of the table");
                    let name = format!("blk.{l}.{stem}.weight");
                    if !content.tensor_infos.contains_key(&format!("{name}.lora_a")) {
                        continue;
                    }
                    let mut get = |suffix: &str| -> Result<Tensor> {
                        let q = content
                            .tensor(&mut file, &format!("{name}.{suffix}"), &device)
                            .map_err(|e| {
                                TrainError::Input(format!(
                                    "{}: {name}.{suffix}: {e}",
                                    path.display()
                                ))
                            })?;
                        Ok(q.dequantize(&device)?.to_dtype(DType::F32)?)
                    };
                    let a = get("lora_a")?;
                    let mut b = get("lora_b")?;
                    let rank = a.dim(0)?;
                    let w = &model.weights.layers[l].linears[p];
                    let (out_dim, in_dim) = w.dims2()?;
                    if a.dims2()? != (rank, in_dim) || b.dims2()? != (out_dim, rank) {
                        return Err(TrainError::Input(format!(
                            "{}: {name}: lora_a {:?} / lora_b {:?} do not fit the base weight [{out_dim}, {in_dim}]",
                            path.display(),
                            a.dims(),
                            b.dims()
                        )));
                    }
                    if c.arch.permute_qk && p == "q_proj" {
                        b = unpermute_rows(&b, c.num_attention_heads)?;
                    } else if c.arch.permute_qk && p == "k_proj" {
                        b = unpermute_rows(&b, c.num_key_value_heads)?;
                    }
                    let scale = if alpha != 0.0 {
                        alpha as f64 / rank as f64
                    } else {
                        1.0
                    };
                    parts
                        .entry((l, p))
                        .or_default()
                        .push(((a * scale)?, b, k as u32));
                }
            }
        }
        let mut modules = BTreeMap::new();
        for (key, list) in parts {
            let a = Tensor::cat(
                &list.iter().map(|(a, _, _)| a.clone()).collect::<Vec<_>>(),
                0,
            )?;
            let b = Tensor::cat(
                &list.iter().map(|(_, b, _)| b.clone()).collect::<Vec<_>>(),
                1,
            )?;
            let cols: Vec<u32> = list
                .iter()
                .flat_map(|(a, _, k)| std::iter::repeat_n(*k, a.dim(0).unwrap_or(0)))
                .collect();
            let column_skill = Tensor::from_vec(cols.clone(), cols.len(), &device)?;
            modules.insert(key, MixModule { a, b, column_skill });
        }
        Ok(Mixture {
            skills: adapters.len(),
            modules,
        })
    }
}

/// Settings of [`train_router`].
#[derive(Debug, Clone)]
pub struct RouterTrainConfig {
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub max_len: usize,
    pub seed: u64,
    /// Add a "no skill" output.
    pub none_entry: bool,
    /// Initial gain (learned as log-gain when `learn_gain`).
    pub initial_gain: f32,
    /// Learn the gain; otherwise it stays at `initial_gain` (each skill was trained at scale 1,
    /// and an LM loss favours damped skills that a task metric does not).
    pub learn_gain: bool,
    /// Start from this head (`weight [outputs, dim]`, `bias [outputs]`, already divided by the
    /// source router's temperature), e.g. the general router's: a warm start.
    pub initial_head: Option<(Vec<f32>, Vec<f32>)>,
    /// Keep a copy of the head every this many steps (0: only the last), for selection by a
    /// validation metric.
    pub snapshot_every: usize,
}

/// The head after some steps of [`train_router`].
#[derive(Debug, Clone)]
pub struct HeadSnapshot {
    pub step: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub gain: f32,
}

/// A trained linear router head: `weight [outputs, dim]`, `bias [outputs]`, `gain`.
#[derive(Debug, Clone)]
pub struct TrainedHead {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub gain: f32,
    /// Loss per step.
    pub losses: Vec<f32>,
    /// Heads every `snapshot_every` steps (and the last).
    pub snapshots: Vec<HeadSnapshot>,
}

/// Trains a linear router head end to end: for each example, its (standardized) features go
/// through `softmax(W z + b)`, the skill weights (the "no skill" entry dropped, times the gain)
/// mix the frozen skills inside `model`, and the language-model loss on the answer tokens
/// flows back into `W`, `b` and the gain only. Tunes the allocator for training
/// ([`crate::tune_allocator`]).
pub fn train_router(
    model: &mut Llama,
    mixture: Mixture,
    examples: &[Example],
    features: &[Vec<f32>],
    config: &RouterTrainConfig,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainedHead> {
    crate::tune_allocator();
    if examples.is_empty() || examples.len() != features.len() {
        return Err(TrainError::Input(format!(
            "{} examples but {} feature rows",
            examples.len(),
            features.len()
        )));
    }
    let device = model.device().clone();
    let d = features[0].len();
    let k = mixture.skills;
    let outputs = k + config.none_entry as usize;
    let (weight, bias) = match &config.initial_head {
        Some((w, b)) => {
            if w.len() != outputs * d || b.len() != outputs {
                return Err(TrainError::Input(format!(
                    "warm-start head has {} weights and {} biases, expected {outputs} × {d} and {outputs}",
                    w.len(),
                    b.len()
                )));
            }
            (
                Var::from_tensor(&Tensor::from_vec(w.clone(), (outputs, d), &device)?)?,
                Var::from_tensor(&Tensor::from_vec(b.clone(), outputs, &device)?)?,
            )
        }
        None => (
            Var::from_tensor(&Tensor::zeros((outputs, d), DType::F32, &device)?)?,
            Var::from_tensor(&Tensor::zeros(outputs, DType::F32, &device)?)?,
        ),
    };
    let log_gain = Var::from_tensor(&Tensor::new(
        &[config.initial_gain.max(1e-3).ln()],
        &device,
    )?)?;
    let mut trained = vec![weight.clone(), bias.clone()];
    if config.learn_gain {
        trained.push(log_gain.clone());
    }
    let mut optimizer = candle_nn::AdamW::new(
        trained,
        candle_nn::ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    model.mixture = Some(mixture);
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    let mut batches = Vec::new();
    let mut epoch = 0u64;
    let mut losses = Vec::with_capacity(config.steps);
    let mut snapshots = Vec::new();
    let to_vec = |v: &Var| -> Result<Vec<f32>> { Ok(v.as_tensor().flatten_all()?.to_vec1()?) };
    for step in 0..config.steps {
        if batches.is_empty() {
            batches = crate::bucketed_batches(&lengths, config.batch, config.seed + epoch);
            batches.reverse();
            epoch += 1;
        }
        let batch = batches.pop().expect("refilled above");
        let z: Vec<f32> = batch.iter().flat_map(|&i| features[i].clone()).collect();
        let z = Tensor::from_vec(z, (batch.len(), d), &device)?;
        let logits = z
            .matmul(&weight.as_tensor().t()?)?
            .broadcast_add(bias.as_tensor())?;
        let probs = candle_nn::ops::softmax(&logits, 1)?.narrow(1, 0, k)?;
        let w = probs.broadcast_mul(&log_gain.as_tensor().exp()?)?; // [B, K]
        let t = batch
            .iter()
            .map(|&i| examples[i].ids.len().min(config.max_len))
            .max()
            .unwrap_or(1);
        let row_example: Vec<u32> = (0..batch.len() as u32)
            .flat_map(|b| std::iter::repeat_n(b, t))
            .collect();
        let row_weights = w.index_select(&Tensor::new(row_example.as_slice(), &device)?, 0)?;
        model.mixture_weights = Some(row_weights);
        // The forward and backward pass on a worker of candle's pool (see `Trainer::train_step`).
        let value = device.with_context(|| -> Result<f32> {
            let loss = lm_loss(model, examples, &batch, t)?;
            optimizer.backward_step(&loss)?;
            Ok(loss.to_scalar::<f32>()?)
        })?;
        losses.push(value);
        on_step(step + 1, value);
        let done = step + 1;
        if done == config.steps || (config.snapshot_every > 0 && done % config.snapshot_every == 0)
        {
            snapshots.push(HeadSnapshot {
                step: done,
                weight: to_vec(&weight)?,
                bias: to_vec(&bias)?,
                gain: to_vec(&log_gain)?[0].exp(),
            });
        }
    }
    model.mixture = None;
    model.mixture_weights = None;
    Ok(TrainedHead {
        weight: to_vec(&weight)?,
        bias: to_vec(&bias)?,
        gain: to_vec(&log_gain)?[0].exp(),
        losses,
        snapshots,
    })
}

/// Mean cross-entropy over the answer tokens of `batch` (examples cut to `t` tokens, keeping
/// their ends).
fn lm_loss(model: &Llama, examples: &[Example], batch: &[usize], t: usize) -> Result<Tensor> {
    let device = model.device();
    let mut ids = Vec::with_capacity(batch.len() * t);
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (bi, &i) in batch.iter().enumerate() {
        let ex = &examples[i];
        let skip = ex.ids.len().saturating_sub(t);
        let (ex_ids, ex_targets) = (&ex.ids[skip..], &ex.targets[skip..]);
        for pos in 0..t {
            ids.push(*ex_ids.get(pos).unwrap_or(&0));
            if pos + 1 < ex_ids.len() && ex_targets[pos + 1] {
                rows.push((bi * t + pos) as u32);
                labels.push(ex_ids[pos + 1]);
            }
        }
    }
    if rows.is_empty() {
        return Err(TrainError::Input("a batch has no answer tokens".into()));
    }
    let ids = Tensor::from_vec(ids, (batch.len(), t), device)?;
    let hidden = model.hidden(&ids)?;
    let h = hidden.dim(2)?;
    let picked = hidden
        .reshape((batch.len() * t, h))?
        .index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
    model.head_loss(&picked, &labels, true)
}

/// Mean-pooled last hidden states (after the final norm) of each prompt, without adapters —
/// the router's `mean-hidden` features as candle computes them.
pub fn mean_hidden(model: &Llama, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
    let device: &Device = model.device();
    prompts
        .iter()
        .map(|p| {
            let ids = Tensor::from_vec(p.clone(), (1, p.len()), device)?;
            Ok(model
                .hidden(&ids)?
                .to_dtype(DType::F32)?
                .mean(1)?
                .flatten_all()?
                .to_vec1()?)
        })
        .collect()
}
