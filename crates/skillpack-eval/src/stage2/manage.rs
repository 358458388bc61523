//! A pack's routers as they are: the list, a prompt's routing, another commit mode, and the
//! softmax temperature calibrated on the skills' own records.

use std::fmt;
use std::path::{Path, PathBuf};

use skillpack_pack::{Pack, RouterSpec};
use skillpack_route::training::{calibrate_temperature, TemperatureFit};
use skillpack_route::{Commit, FeatureExtractor, Router};

use super::{load_model, prompt_features, record_prompts, skill_samples, Progress};
use crate::{EvalError, Result};

/// The routers of a pack and its default.
#[derive(Debug, Clone)]
pub struct RouterList {
    /// The default router's name (empty when none).
    pub default: String,
    /// Every router of the manifest, in its order.
    pub routers: Vec<RouterSpec>,
}

/// The routers of the pack in `pack_dir`.
pub fn list_routers(pack_dir: &Path) -> Result<RouterList> {
    let pack = Pack::open(pack_dir)?;
    Ok(RouterList {
        default: pack.manifest.defaults.router,
        routers: pack.manifest.routers,
    })
}

impl RouterList {
    /// `{"default", "routers"}` as `skillpack router list --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"default": self.default, "routers": self.routers})
    }
}

impl fmt::Display for RouterList {
    /// One line per router (the default marked `*`): name, kind, features, task.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.routers.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}{:<24} {:<10} {:<15} task {}",
                if r.name == self.default { "* " } else { "  " },
                r.name,
                r.kind,
                r.features,
                if r.task.is_empty() { "-" } else { &r.task }
            )?;
        }
        Ok(())
    }
}

/// What [`show_routing`] routes.
#[derive(Debug, Clone)]
pub struct ShowRouting {
    /// The pack's folder.
    pub pack: PathBuf,
    /// Router name (None: the pack's default router).
    pub router: Option<String>,
    /// The base model's GGUF file.
    pub model: PathBuf,
    /// The user message.
    pub prompt: String,
}

/// A prompt's skill weights under a router.
#[derive(Debug, Clone)]
pub struct RoutingShown {
    /// The router's name.
    pub router: String,
    /// `(skill, weight)` in the router's output order.
    pub weights: Vec<(String, f32)>,
}

/// The skill weights a router gives one prompt.
pub fn show_routing(config: &ShowRouting) -> Result<RoutingShown> {
    let model = load_model(&config.model)?;
    let pack = Pack::open(&config.pack)?;
    let router =
        skillpack_run::load_router(&pack, config.router.as_deref(), &model, &config.model)?
            .ok_or_else(|| EvalError::Invalid("the pack has no router".into()))?;
    let mut extractor = FeatureExtractor::new(&model, &config.model, router.config.features, None)?;
    let tokens = crate::harness::prompt_tokens(&model, "", &config.prompt)?;
    let weights = router.skill_weights(&extractor.features(&tokens)?, None)?;
    Ok(RoutingShown {
        router: router.config.name,
        weights,
    })
}

impl RoutingShown {
    /// `{"router", "weights"}` as `skillpack router show --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"router": self.router, "weights": self.weights})
    }
}

impl fmt::Display for RoutingShown {
    /// One `skill weight` line per skill.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (s, w)) in self.weights.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{s:<6} {w:.3}")?;
        }
        Ok(())
    }
}

/// What [`commit_router`] changes.
#[derive(Debug, Clone)]
pub struct CommitRouter {
    /// The pack's folder.
    pub pack: PathBuf,
    /// The router to change (None: the pack's default router).
    pub router: Option<String>,
    /// `softmax`, `sparsemax`, `top1:THRESHOLD` or `blend:THRESHOLD` (see [`Commit::parse`]).
    pub mode: String,
    /// Save as a new router with this name (None: change the router in place).
    pub new_name: Option<String>,
    /// Make the result the pack's default router.
    pub make_default: bool,
}

/// The router [`commit_router`] wrote.
#[derive(Debug, Clone)]
pub struct CommitReport {
    /// The router's name.
    pub router: String,
    /// The router it was made from (itself when changed in place).
    pub from: String,
    /// The commit mode's label.
    pub commit: String,
    /// Whether it is now the pack's default router.
    pub made_default: bool,
}

/// Sets how a router's scores become weights, in place or as a new router sharing its head
/// (which records where it came from), and registers it in the pack.
pub fn commit_router(config: &CommitRouter) -> Result<CommitReport> {
    let commit = Commit::parse(&config.mode).map_err(EvalError::Invalid)?;
    let mut pack = Pack::open(&config.pack)?;
    let source = config
        .router
        .clone()
        .unwrap_or_else(|| pack.manifest.defaults.router.clone());
    let spec = pack
        .router(&source)
        .ok_or_else(|| EvalError::Invalid(format!("the pack has no router `{source}`")))?
        .clone();
    let mut router = Router::load(&pack.dir.join(&spec.file))?;
    router.config.commit = commit;
    let target = config.new_name.clone().unwrap_or_else(|| source.clone());
    if target != source {
        if pack.router(&target).is_some() {
            return Err(EvalError::Invalid(format!(
                "the pack already has a router `{target}`: choose another --name"
            )));
        }
        router.config.name = target.clone();
        router.config.training = serde_json::json!({
            "derived_from": source, "commit": commit.label(),
        });
    }
    let file = router.save(&pack.dir.join("routers"))?;
    pack.set_router(
        RouterSpec {
            name: target.clone(),
            file: format!("routers/{file}"),
            ..spec
        },
        config.make_default,
    )?;
    Ok(CommitReport {
        router: target,
        from: source,
        commit: commit.label(),
        made_default: config.make_default,
    })
}

impl CommitReport {
    /// `{"router", "from", "commit", "default"}` as `skillpack router commit --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "router": self.router, "from": self.from, "commit": self.commit,
            "default": self.made_default,
        })
    }
}

impl fmt::Display for CommitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "router `{}` ({} of `{}`'s scores){}",
            self.router,
            self.commit,
            self.from,
            if self.made_default {
                ", now the default"
            } else {
                ""
            }
        )
    }
}

/// What [`calibrate_router`] calibrates, on which records.
#[derive(Debug, Clone)]
pub struct TemperatureCalibration {
    /// The pack's folder.
    pub pack: PathBuf,
    /// Router name (None: the pack's default router).
    pub router: Option<String>,
    /// Skill data from `skillpack data build`.
    pub data: PathBuf,
    /// Which file of each skill: `dev` or `train`.
    pub split: String,
    /// Records per skill.
    pub per_skill: usize,
    /// The base model's GGUF file.
    pub model: PathBuf,
    /// CPU threads of llama.cpp (None: its choice).
    pub threads: Option<i32>,
}

/// A router's temperature before and after [`calibrate_router`].
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The router's name.
    pub router: String,
    /// Records it was calibrated on.
    pub records: usize,
    /// The records' split (`dev` or `train`).
    pub split: String,
    /// The temperature and the fit before and after.
    pub fit: TemperatureFit,
    /// The router's weights file as saved (its name inside the pack's routers folder).
    pub file: String,
}

/// Sets a router's softmax temperature by held-out NLL of each record's own skill on the
/// skills' records (temperature scaling), and saves the router in place.
pub fn calibrate_router(
    config: &TemperatureCalibration,
    progress: &mut dyn Progress,
) -> Result<Calibration> {
    let split = config.split.as_str();
    if split != "dev" && split != "train" {
        return Err(EvalError::Invalid(format!(
            "--split must be dev or train, not `{split}`"
        )));
    }
    let model = load_model(&config.model)?;
    let pack = Pack::open(&config.pack)?;
    let mut router =
        skillpack_run::load_router(&pack, config.router.as_deref(), &model, &config.model)?
            .ok_or_else(|| EvalError::Invalid("the pack has no router".into()))?;
    let spec = pack
        .router(&router.config.name)
        .ok_or_else(|| {
            EvalError::Invalid(format!(
                "router `{}` is not in the pack",
                router.config.name
            ))
        })?
        .clone();
    let samples = skill_samples(&config.data, split, &router.config.skills, config.per_skill)?;
    let prompts = record_prompts(samples.iter().map(|(_, r)| r));
    let mut extractor = FeatureExtractor::new(
        &model,
        &config.model,
        router.config.features,
        config.threads,
    )?;
    let features = prompt_features(&mut extractor, &model, &prompts, "features", progress)?;
    let logits: Vec<(usize, Vec<f32>)> = samples
        .iter()
        .zip(&features)
        .map(|((k, _), f)| Ok((*k, router.logits(f)?)))
        .collect::<Result<_>>()?;
    let fit = calibrate_temperature(&logits, router.config.temperature);
    router.config.temperature = fit.temperature;
    let dir = Path::new(&spec.file).parent().unwrap_or(Path::new(""));
    let file = router.save(&pack.dir.join(dir))?;
    Ok(Calibration {
        router: router.config.name,
        records: logits.len(),
        split: split.to_string(),
        fit,
        file,
    })
}

impl Calibration {
    /// The temperatures, NLLs and own-skill weights as `skillpack router calibrate --json`
    /// prints them.
    pub fn to_json(&self) -> serde_json::Value {
        let fit = &self.fit;
        serde_json::json!({
            "router": self.router,
            "records": self.records,
            "split": self.split,
            "temperature_before": fit.temperature_before,
            "temperature": fit.temperature,
            "nll_before": fit.nll_before,
            "nll": fit.nll,
            "own_skill_weight_before": fit.own_weight_before,
            "own_skill_weight": fit.own_weight,
        })
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fit = &self.fit;
        write!(
            f,
            "router `{}`: temperature {} -> {} on {} {} records; NLL {:.3} -> {:.3}; mean weight on the record's own skill {:.3} -> {:.3} (saved {})",
            self.router,
            fit.temperature_before,
            fit.temperature,
            self.records,
            self.split,
            fit.nll_before,
            fit.nll,
            fit.own_weight_before,
            fit.own_weight,
            self.file,
        )
    }
}
