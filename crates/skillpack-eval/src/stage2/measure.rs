//! What a pack's routers cost and how often they are right: time to first token with routing,
//! and top-1 routing accuracy on prompts labelled with the skill they ask for.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use skillpack_data::tasks::{self, Split};
use skillpack_llama::{Context, ContextParams, Sampler, SamplerParams, Token};
use skillpack_pack::Pack;
use skillpack_route::training::median;
use skillpack_route::{FeatureExtractor, FeatureKind};

use super::{load_model, names_or_all, prompt_features, Progress};
use crate::{EvalError, Result};

/// What [`bench_routers`] measures.
#[derive(Debug, Clone)]
pub struct BenchRouters {
    /// The pack's folder.
    pub pack: PathBuf,
    /// Routers to measure (empty: all of the pack's).
    pub routers: Vec<String>,
    /// The task whose dev prompts are timed.
    pub task: String,
    /// At most this many prompts.
    pub limit: usize,
    /// The raw data folder.
    pub raw: PathBuf,
    /// The base model's GGUF file.
    pub model: PathBuf,
    /// CPU threads of llama.cpp (None: its choice).
    pub threads: Option<i32>,
}

/// Median timings of one router, in milliseconds.
#[derive(Debug, Clone)]
pub struct RouterTiming {
    /// The router's name.
    pub router: String,
    /// The features it reads.
    pub features: FeatureKind,
    /// Features, weights, applying them, then the prompt and the first token.
    pub ttft_ms: f64,
    /// Features and weights.
    pub features_ms: f64,
    /// Applying the weights to the context.
    pub apply_ms: f64,
    /// `ttft_ms` over the base model's.
    pub ratio: f64,
}

/// Time to first token with each router against the base model.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The task whose dev prompts were timed.
    pub task: String,
    /// Prompts measured.
    pub prompts: usize,
    /// Mean prompt length in tokens.
    pub mean_prompt_tokens: f64,
    /// The base model's median time to first token.
    pub base_ttft_ms: f64,
    /// One row per router, in the order asked.
    pub routers: Vec<RouterTiming>,
}

/// Time to first token with routing ÷ without (the base model), per router, on a task's dev
/// prompts, from an empty cache each time: routing includes the features, the weights and
/// applying them. Medians over the prompts, after one warm-up.
pub fn bench_routers(config: &BenchRouters) -> Result<BenchReport> {
    let model = load_model(&config.model)?;
    let pack = Pack::open(&config.pack)?;
    pack.check(&skillpack_convert::GgufInfo::open(&config.model)?)?;
    let names = names_or_all(&pack, &config.routers);
    if names.is_empty() {
        return Err(EvalError::Invalid(
            "the pack has no routers to measure".into(),
        ));
    }
    let items: Vec<_> = tasks::select(tasks::load(&config.task, &config.raw)?, Split::Dev)
        .into_iter()
        .take(config.limit)
        .collect();
    let prompts = items
        .iter()
        .map(|i| crate::harness::prompt_tokens(&model, &i.context, &i.query))
        .collect::<Result<Vec<_>>>()?;
    let Some(warm_up) = prompts.first() else {
        return Err(EvalError::Invalid(format!(
            "no {} dev prompts to measure",
            config.task
        )));
    };
    let mut ctx = Context::new(
        &model,
        &ContextParams {
            n_threads: config.threads,
            ..Default::default()
        },
    )?;
    let mut sampler = Sampler::new(&model, &SamplerParams::default());
    // Prompt evaluation and the first sampled token, from an empty cache.
    let mut first_token = |ctx: &mut Context<'_>, prompt: &[Token]| -> Result<()> {
        ctx.clear_memory();
        ctx.eval(prompt, 0, false)?;
        sampler.sample(ctx, -1)?;
        Ok(())
    };
    let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
    let mut engine = skillpack_run::SkillEngine::new(&model, pack.clone())?;
    first_token(&mut ctx, warm_up)?;
    let mut base = Vec::new();
    for p in &prompts {
        ctx.clear_adapters()?;
        let t = Instant::now();
        first_token(&mut ctx, p)?;
        base.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let base_ttft_ms = median(&mut base);
    let mut routers = Vec::new();
    for name in &names {
        let router = skillpack_run::load_router(&pack, Some(name), &model, &config.model)?
            .expect("a named router is loaded or refused");
        let mut extractor = FeatureExtractor::new(
            &model,
            &config.model,
            router.config.features,
            config.threads,
        )?;
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
        let ttft_ms = median(&mut total);
        routers.push(RouterTiming {
            router: name.clone(),
            features: router.config.features,
            ttft_ms,
            features_ms: median(&mut feature_ms),
            apply_ms: median(&mut apply_ms),
            ratio: ttft_ms / base_ttft_ms,
        });
    }
    Ok(BenchReport {
        task: config.task.clone(),
        prompts: prompts.len(),
        mean_prompt_tokens: prompts.iter().map(Vec::len).sum::<usize>() as f64
            / prompts.len() as f64,
        base_ttft_ms,
        routers,
    })
}

impl BenchReport {
    /// The report as `skillpack router bench --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .routers
            .iter()
            .map(|r| {
                serde_json::json!({
                    "router": r.router,
                    "features": r.features.as_str(),
                    "ttft_ms": r.ttft_ms,
                    "features_ms": r.features_ms,
                    "apply_ms": r.apply_ms,
                    "ratio": r.ratio,
                })
            })
            .collect();
        serde_json::json!({
            "task": self.task, "prompts": self.prompts, "mean_prompt_tokens": self.mean_prompt_tokens,
            "base_ttft_ms": self.base_ttft_ms, "routers": rows,
        })
    }
}

impl fmt::Display for BenchReport {
    /// A header line with the base model's time, then one line per router.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} prompts of {} (mean {:.0} tokens); base TTFT {:.1} ms (median)",
            self.prompts, self.task, self.mean_prompt_tokens, self.base_ttft_ms
        )?;
        for r in &self.routers {
            write!(
                f,
                "\n{:<28} {:<15} TTFT {:>7.1} ms  features {:>6.1} ms  apply {:>6.1} ms  ratio {:.3}",
                r.router,
                r.features.as_str(),
                r.ttft_ms,
                r.features_ms,
                r.apply_ms,
                r.ratio
            )?;
        }
        Ok(())
    }
}

/// What [`routing_accuracy`] scores.
#[derive(Debug, Clone)]
pub struct RoutingAccuracy {
    /// The pack's folder.
    pub pack: PathBuf,
    /// JSONL of [`RoutingPrompt`]s.
    pub set: PathBuf,
    /// Routers to score (empty: all of the pack's).
    pub routers: Vec<String>,
    /// The base model's GGUF file.
    pub model: PathBuf,
    /// CPU threads of llama.cpp (None: its choice).
    pub threads: Option<i32>,
}

/// A free-form prompt and the skill it asks for.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RoutingPrompt {
    /// The prompt's id.
    pub id: String,
    /// The skill the prompt asks for.
    pub skill: String,
    /// The user message.
    pub prompt: String,
}

/// A prompt whose heaviest skill is not the intended one.
#[derive(Debug, Clone)]
pub struct RoutingMiss {
    /// The prompt's id.
    pub id: String,
    /// The intended skill.
    pub skill: String,
    /// The heaviest skill (`none` when no weight is positive).
    pub top: String,
    /// The heaviest skill's weight.
    pub weight: f32,
}

/// One router's top-1 accuracy.
#[derive(Debug, Clone)]
pub struct RouterAccuracy {
    /// The router's name.
    pub router: String,
    /// The features it reads.
    pub features: FeatureKind,
    /// Its commit mode's label.
    pub commit: String,
    /// Prompts whose heaviest skill is the intended one.
    pub correct: usize,
    /// Prompts measured.
    pub prompts: usize,
    /// `(correct, prompts)` per intended skill.
    pub per_skill: BTreeMap<String, (usize, usize)>,
    /// The prompts it routed elsewhere.
    pub misses: Vec<RoutingMiss>,
}

impl RouterAccuracy {
    /// The share of prompts whose heaviest skill is the intended one.
    pub fn top1(&self) -> f64 {
        self.correct as f64 / self.prompts as f64
    }
}

/// Top-1 routing accuracy of a pack's routers on one prompt set.
#[derive(Debug, Clone)]
pub struct AccuracyReport {
    /// The prompt set scored.
    pub set: PathBuf,
    /// One row per router, in the order asked.
    pub routers: Vec<RouterAccuracy>,
}

/// Reads a routing set: one [`RoutingPrompt`] per non-empty line.
pub(crate) fn read_routing_set(set: &Path) -> Result<Vec<RoutingPrompt>> {
    let text = std::fs::read_to_string(set).map_err(|source| EvalError::Read {
        context: format!("reading {}", set.display()),
        source,
    })?;
    let prompts: Vec<RoutingPrompt> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                EvalError::Data(skillpack_data::DataError::Format {
                    file: set.display().to_string(),
                    line: i + 1,
                    reason: format!("not a {{id, skill, prompt}} line: {e}"),
                })
            })
        })
        .collect::<Result<_>>()?;
    if prompts.is_empty() {
        return Err(EvalError::Invalid(format!("{}: no prompts", set.display())));
    }
    Ok(prompts)
}

/// Whether each router's heaviest skill is the one each prompt of the set asks for. Prompts
/// are featurized once per feature kind, shared by the routers that read it.
pub fn routing_accuracy(
    config: &RoutingAccuracy,
    progress: &mut dyn Progress,
) -> Result<AccuracyReport> {
    let prompts = read_routing_set(&config.set)?;
    let model = load_model(&config.model)?;
    let pack = Pack::open(&config.pack)?;
    let names = names_or_all(&pack, &config.routers);
    let pairs: Vec<(String, String)> = prompts
        .iter()
        .map(|p| (String::new(), p.prompt.clone()))
        .collect();
    let mut by_kind: Vec<(FeatureKind, Vec<Vec<f32>>)> = Vec::new();
    let mut routers = Vec::new();
    for name in &names {
        let router = skillpack_run::load_router(&pack, Some(name), &model, &config.model)?
            .ok_or_else(|| EvalError::Invalid(format!("the pack has no router `{name}`")))?;
        let kind = router.config.features;
        if !by_kind.iter().any(|(k, _)| *k == kind) {
            let mut extractor = FeatureExtractor::new(&model, &config.model, kind, config.threads)?;
            let features =
                prompt_features(&mut extractor, &model, &pairs, kind.as_str(), progress)?;
            by_kind.push((kind, features));
        }
        let features = &by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("featurized above")
            .1;
        let mut per_skill: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        let mut misses = Vec::new();
        for (p, f) in prompts.iter().zip(features) {
            let (top, weight) = router.top_output(f, None)?;
            let entry = per_skill.entry(p.skill.clone()).or_default();
            entry.1 += 1;
            if top == p.skill {
                entry.0 += 1;
            } else {
                misses.push(RoutingMiss {
                    id: p.id.clone(),
                    skill: p.skill.clone(),
                    top: top.to_string(),
                    weight,
                });
            }
        }
        routers.push(RouterAccuracy {
            router: name.clone(),
            features: kind,
            commit: router.config.commit.label(),
            correct: per_skill.values().map(|(c, _)| c).sum(),
            prompts: prompts.len(),
            per_skill,
            misses,
        });
    }
    Ok(AccuracyReport {
        set: config.set.clone(),
        routers,
    })
}

impl AccuracyReport {
    /// The report as `skillpack router accuracy --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .routers
            .iter()
            .map(|r| {
                let misses: Vec<serde_json::Value> = r
                    .misses
                    .iter()
                    .map(|m| {
                        serde_json::json!({"id": m.id, "skill": m.skill, "top": m.top, "weight": m.weight})
                    })
                    .collect();
                serde_json::json!({
                    "router": r.router,
                    "features": r.features.as_str(),
                    "commit": r.commit,
                    "correct": r.correct,
                    "prompts": r.prompts,
                    "top1": r.top1(),
                    "per_skill": r.per_skill.iter().map(|(s, (c, n))| (s.clone(), serde_json::json!([c, n]))).collect::<serde_json::Map<_, _>>(),
                    "misses": misses,
                })
            })
            .collect();
        serde_json::json!({"set": self.set, "routers": rows})
    }
}

impl fmt::Display for AccuracyReport {
    /// One line per router: its top-1 accuracy, then per intended skill.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.routers.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let per: Vec<String> = r
                .per_skill
                .iter()
                .map(|(s, (c, n))| format!("{s} {c}/{n}"))
                .collect();
            write!(
                f,
                "{:<24} top-1 {}/{} ({:.1} %)  {}",
                r.router,
                r.correct,
                r.prompts,
                r.top1() * 100.0,
                per.join(", ")
            )?;
        }
        Ok(())
    }
}
