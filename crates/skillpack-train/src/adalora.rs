//! AdaLoRA's rank allocator, as PEFT 0.21 implements it: sensitivity `|p ⊙ ∇p|` smoothed by an
//! EMA (β1) with an uncertainty EMA (β2), element scores `ipt · unc`, triplet scores
//! `score(E_i) + mean_j score(A_ij) + mean_j score(B_ji)`, a cubic budget schedule from `init_r`
//! to `target_r` ranks per module between `tinit` and `total_step - tfinal`, masking every
//! `deltaT` steps, a forced final allocation at `total_step - tfinal`, and a frozen rank pattern
//! re-applied afterwards.

use std::collections::BTreeMap;

use candle_core::{Tensor, D};

use crate::Result;

/// AdaLoRA's schedule settings (PEFT's `AdaLoraConfig` names).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdaLoraSchedule {
    pub init_r: usize,
    pub target_r: usize,
    pub tinit: usize,
    pub tfinal: usize,
    pub delta_t: usize,
    pub total_step: usize,
    pub beta1: f64,
    pub beta2: f64,
}

/// One module's parameters and gradients, as the allocator sees them after an optimizer step.
pub struct TripletView<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub e: &'a Tensor,
    pub grad_a: &'a Tensor,
    pub grad_b: &'a Tensor,
    pub grad_e: &'a Tensor,
}

#[derive(Clone)]
struct Ema {
    ipt: Tensor,
    unc: Tensor,
}

/// The allocator's state (checkpointed with training).
pub struct RankAllocator {
    pub schedule: AdaLoraSchedule,
    init_budget: usize,
    target_budget: usize,
    /// EMAs by (module, part) where part is 0 = A, 1 = B, 2 = E.
    ema: BTreeMap<(String, u8), Ema>,
    /// The final rank pattern (set at `total_step - tfinal`).
    pub rank_pattern: Option<BTreeMap<String, Vec<bool>>>,
}

impl RankAllocator {
    /// An allocator for modules of the given ranks.
    pub fn new(schedule: AdaLoraSchedule, ranks: &BTreeMap<String, usize>) -> Self {
        RankAllocator {
            schedule,
            init_budget: ranks.values().sum(),
            target_budget: schedule.target_r * ranks.len(),
            ema: BTreeMap::new(),
            rank_pattern: None,
        }
    }

    /// (budget, whether to mask) at `step`.
    pub fn budget_schedule(&self, step: usize) -> (usize, bool) {
        let s = &self.schedule;
        if step <= s.tinit {
            (self.init_budget, false)
        } else if step > s.total_step - s.tfinal {
            (self.target_budget, true)
        } else {
            let mul = 1.0 - (step - s.tinit) as f64 / (s.total_step - s.tfinal - s.tinit) as f64;
            let budget = ((self.init_budget - self.target_budget) as f64 * mul.powi(3)
                + self.target_budget as f64) as usize;
            (budget, step.is_multiple_of(s.delta_t))
        }
    }

    fn update_ipt(&mut self, modules: &BTreeMap<String, TripletView<'_>>) -> Result<()> {
        let (b1, b2) = (self.schedule.beta1, self.schedule.beta2);
        for (name, m) in modules {
            for (part, p, g) in [(0u8, m.a, m.grad_a), (1, m.b, m.grad_b), (2, m.e, m.grad_e)] {
                // Detached: the EMAs must not keep a graph of every past step alive.
                let ipt = (p.detach() * g.detach())?.abs()?;
                let key = (name.clone(), part);
                let prev = match self.ema.get(&key) {
                    Some(e) => e.clone(),
                    None => Ema {
                        ipt: ipt.zeros_like()?,
                        unc: ipt.zeros_like()?,
                    },
                };
                let avg = ((prev.ipt * b1)? + (&ipt * (1.0 - b1))?)?;
                let unc = ((prev.unc * b2)? + ((&ipt - &avg)?.abs()? * (1.0 - b2))?)?;
                self.ema.insert(key, Ema { ipt: avg, unc });
            }
        }
        Ok(())
    }

    fn score(&self, name: &str, part: u8) -> Result<Tensor> {
        let e = &self.ema[&(name.to_string(), part)];
        Ok((&e.ipt * &e.unc)?)
    }

    /// Masks the lowest-scoring triplets so that `budget` ranks remain; returns the masked E of
    /// every module and the mask.
    fn mask_to_budget(
        &self,
        modules: &BTreeMap<String, TripletView<'_>>,
        budget: usize,
    ) -> Result<BTreeMap<String, (Tensor, Vec<bool>)>> {
        let mut triplet: BTreeMap<&String, Vec<f32>> = BTreeMap::new();
        for name in modules.keys() {
            let a = self
                .score(name, 0)?
                .mean_keepdim(D::Minus1)?
                .flatten_all()?; // [r]
            let b = self.score(name, 1)?.mean(0)?.flatten_all()?; // [r]
            let e = self.score(name, 2)?.flatten_all()?; // [r]
                                                         // PEFT sums E + (A, B) in that order; f32 like torch.
            let sum = (e + (a + b)?)?;
            triplet.insert(
                name,
                sum.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
            );
        }
        let mut all: Vec<f32> = triplet.values().flatten().copied().collect();
        let k = self.init_budget.saturating_sub(budget);
        let threshold = if k == 0 {
            f32::NEG_INFINITY
        } else {
            let (_, kth, _) = all.select_nth_unstable_by(k - 1, |x, y| x.total_cmp(y));
            *kth
        };
        let mut out = BTreeMap::new();
        for (name, scores) in triplet {
            // PEFT masks `score <= threshold` (a NaN score is kept, as in torch).
            let keep: Vec<bool> = scores
                .iter()
                .map(|s| {
                    !matches!(
                        s.partial_cmp(&threshold),
                        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                    )
                })
                .collect();
            out.insert(name.clone(), (apply_mask(modules[name].e, &keep)?, keep));
        }
        Ok(out)
    }

    /// PEFT's `update_and_allocate(step)`, called after the optimizer step with every module's
    /// parameters and gradients. Returns the new E of every module when it changed.
    pub fn update_and_allocate(
        &mut self,
        step: usize,
        modules: &BTreeMap<String, TripletView<'_>>,
    ) -> Result<Option<BTreeMap<String, Tensor>>> {
        let s = self.schedule;
        let final_step = s.total_step - s.tfinal;
        if step < final_step {
            self.update_ipt(modules)?;
            let (budget, mask) = self.budget_schedule(step);
            if !mask {
                return Ok(None);
            }
            let masked = self.mask_to_budget(modules, budget)?;
            Ok(Some(masked.into_iter().map(|(n, (e, _))| (n, e)).collect()))
        } else if step == final_step {
            let (budget, _) = self.budget_schedule(step);
            let masked = self.mask_to_budget(modules, budget)?;
            self.rank_pattern = Some(
                masked
                    .iter()
                    .map(|(n, (_, keep))| (n.clone(), keep.clone()))
                    .collect(),
            );
            self.ema.clear();
            Ok(Some(masked.into_iter().map(|(n, (e, _))| (n, e)).collect()))
        } else {
            let pattern = self.rank_pattern.as_ref().ok_or_else(|| {
                crate::TrainError::Input(
                    "AdaLoRA: no rank pattern after the final allocation step".into(),
                )
            })?;
            let mut out = BTreeMap::new();
            for (name, m) in modules {
                if let Some(keep) = pattern.get(name) {
                    out.insert(name.clone(), apply_mask(m.e, keep)?);
                }
            }
            Ok(Some(out))
        }
    }

    /// The EMA state as named tensors (for checkpoints).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.ema
            .iter()
            .flat_map(|((n, p), e)| {
                [
                    (format!("{n}.{p}.ipt"), e.ipt.clone()),
                    (format!("{n}.{p}.unc"), e.unc.clone()),
                ]
            })
            .collect()
    }

    /// Restores the EMA state saved by [`Self::state_tensors`].
    pub fn restore(&mut self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        self.ema.clear();
        for (key, t) in tensors {
            let Some(base) = key.strip_suffix(".ipt") else {
                continue;
            };
            let (name, part) = base
                .rsplit_once('.')
                .ok_or_else(|| crate::TrainError::Input(format!("bad allocator key {key}")))?;
            let part: u8 = part
                .parse()
                .map_err(|_| crate::TrainError::Input(format!("bad allocator key {key}")))?;
            let unc = tensors.get(&format!("{base}.unc")).ok_or_else(|| {
                crate::TrainError::Input(format!("allocator state lacks {base}.unc"))
            })?;
            self.ema.insert(
                (name.to_string(), part),
                Ema {
                    ipt: t.clone(),
                    unc: unc.clone(),
                },
            );
        }
        Ok(())
    }
}

fn apply_mask(e: &Tensor, keep: &[bool]) -> Result<Tensor> {
    let mask: Vec<f32> = keep.iter().map(|k| if *k { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, e.shape(), e.device())?.to_dtype(e.dtype())?;
    Ok((e * mask)?)
}

/// PEFT's orthogonal regularisation: the mean over A and B matrices of ‖AAᵀ − I‖_F and
/// ‖BᵀB − I‖_F.
pub fn orthogonal_regularization(pairs: &[(&Tensor, &Tensor)]) -> Result<Option<Tensor>> {
    let mut terms = Vec::new();
    for (a, b) in pairs {
        for cov in [a.matmul(&a.t()?)?, b.t()?.matmul(b)?] {
            let n = cov.dim(0)?;
            if n == 0 {
                continue;
            }
            let eye = Tensor::eye(n, cov.dtype(), cov.device())?;
            terms.push((cov - eye)?.sqr()?.sum_all()?.sqrt()?);
        }
    }
    if terms.is_empty() {
        return Ok(None);
    }
    let n = terms.len() as f64;
    Ok(Some((Tensor::stack(&terms, 0)?.sum_all()? / n)?))
}
