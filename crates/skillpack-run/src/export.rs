//! One weighting of a pack's skills for front-ends that load a single adapter or a single model:
//! the weighting (manual, or a router's for a prompt) resolved as `run` would apply it, then
//! written as one standard GGUF LoRA ([`export_weighting`]) or merged into a copy of the base
//! model ([`merge_weighting`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skillpack_convert::{GgufInfo, OutType};
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_pack::{MergeReport, MergeType, Pack};

use crate::{parse_skill_weights, select_active, Result, RunError};

/// Where one weighting of a pack's skills comes from.
#[derive(Debug, Clone)]
pub enum WeightingSource {
    /// `SKILL=W,...`.
    Skills(String),
    /// Router `name` (`default`: the pack's default router) on the prompt in `prompt_file`.
    Router { name: String, prompt_file: PathBuf },
}

/// A weighting with the pack's selection applied.
#[derive(Debug, Clone)]
pub struct ResolvedWeighting {
    /// Active skills (index into the pack's skills, weight), as `run` would apply them.
    pub active: Vec<(usize, f32)>,
    /// Where the weights came from (`--skills`, or the router and prompt file).
    pub source: String,
    /// `skill=weight, ...` of the active skills.
    pub label: String,
}

impl ResolvedWeighting {
    /// Skill id -> weight of the active skills.
    pub fn by_skill(&self, pack: &Pack) -> BTreeMap<String, f32> {
        self.active
            .iter()
            .map(|(i, w)| (pack.manifest.skills[*i].id.clone(), *w))
            .collect()
    }
}

/// The active skills of `source` for `pack`, after its top-k and minimum weight (`None`: the
/// pack's defaults). Routing loads `model_path` to read the prompt's features.
pub fn resolve_weighting(
    pack: &Pack,
    model_path: &Path,
    source: &WeightingSource,
    top_k: Option<usize>,
    min_weight: Option<f32>,
) -> Result<ResolvedWeighting> {
    let (weights, described) = match source {
        WeightingSource::Skills(spec) => (
            parse_skill_weights(spec, &pack.manifest)?,
            "--skills".to_string(),
        ),
        WeightingSource::Router { name, prompt_file } => {
            let prompt = std::fs::read_to_string(prompt_file).map_err(|e| {
                RunError::Invalid(format!("reading {}: {e}", prompt_file.display()))
            })?;
            let model = Model::load(Backend::get(), model_path, &ModelParams::default())?;
            let requested = (name != "default").then_some(name.as_str());
            let router =
                crate::load_router(pack, requested, &model, model_path)?.ok_or_else(|| {
                    RunError::Invalid("the pack has no default router: name one".into())
                })?;
            let mut extractor = skillpack_route::FeatureExtractor::new(
                &model,
                model_path,
                router.config.features,
                None,
            )?;
            let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
            let weights = crate::route_user_message(
                &model,
                &router,
                &mut extractor,
                prompt.trim_end(),
                &skills,
            )?;
            (
                weights,
                format!(
                    "router `{}` on {}",
                    router.config.name,
                    prompt_file.display()
                ),
            )
        }
    };
    let top_k = top_k.unwrap_or(pack.manifest.defaults.top_k);
    let min_weight = min_weight.unwrap_or(pack.manifest.defaults.min_weight);
    let active = select_active(&weights, top_k, min_weight).active;
    if active.is_empty() {
        return Err(RunError::Invalid(format!(
            "no skill is left at these weights (top-k {top_k}, min weight {min_weight}): nothing to export"
        )));
    }
    let label = skillpack_pack::weighting_label(pack, &active);
    Ok(ResolvedWeighting {
        active,
        source: described,
        label,
    })
}

/// What [`export_weighting`] wrote.
#[derive(Debug, Clone)]
pub struct ExportedAdapter {
    pub weighting: ResolvedWeighting,
    /// Size of the adapter file.
    pub bytes: usize,
    /// Sum of the ranks of its modules' (stacked) factors.
    pub total_rank: usize,
}

/// Writes `weighting` of the pack in `pack_dir` (checked against `model_path`) as one standard
/// GGUF LoRA adapter at `output`, loaded at scale 1 (the weights are folded into the factors).
pub fn export_weighting(
    pack_dir: &Path,
    model_path: &Path,
    source: &WeightingSource,
    top_k: Option<usize>,
    min_weight: Option<f32>,
    outtype: OutType,
    output: &Path,
) -> Result<(Pack, ExportedAdapter)> {
    let pack = Pack::open(pack_dir)?;
    pack.check(&GgufInfo::open(model_path)?)?;
    let weighting = resolve_weighting(&pack, model_path, source, top_k, min_weight)?;
    let image = skillpack_pack::export_lora(&pack, &weighting.active, outtype)?;
    skillpack_convert::write_atomic(output, &image.bytes)?;
    let total_rank = skillpack_convert::LoraFile::read(output)?
        .pairs
        .values()
        .map(|p| p.a.rows)
        .sum();
    let exported = ExportedAdapter {
        weighting,
        bytes: image.bytes.len(),
        total_rank,
    };
    Ok((pack, exported))
}

/// What [`merge_weighting`] wrote.
#[derive(Debug, Clone)]
pub struct MergedModel {
    pub weighting: ResolvedWeighting,
    pub report: MergeReport,
    /// Wall time of the merge.
    pub seconds: f64,
}

/// Folds `weighting` of the pack in `pack_dir` into a copy of the base model `model_path`,
/// written atomically to `output` (which must not be the base model).
pub fn merge_weighting(
    pack_dir: &Path,
    model_path: &Path,
    source: &WeightingSource,
    top_k: Option<usize>,
    min_weight: Option<f32>,
    outtype: MergeType,
    output: &Path,
) -> Result<(Pack, MergedModel)> {
    let same_file = output.exists()
        && std::fs::canonicalize(output).ok() == std::fs::canonicalize(model_path).ok();
    if output == model_path || same_file {
        return Err(RunError::Invalid(format!(
            "{}: the output would replace the base model",
            output.display()
        )));
    }
    let pack = Pack::open(pack_dir)?;
    pack.check(&GgufInfo::open(model_path)?)?;
    let weighting = resolve_weighting(&pack, model_path, source, top_k, min_weight)?;
    let delta = skillpack_pack::weighted_delta(&pack, &weighting.active)?;
    let started = std::time::Instant::now();
    let report = skillpack_pack::merge_into_model(model_path, &delta, outtype, output)?;
    let merged = MergedModel {
        weighting,
        report,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((pack, merged))
}
