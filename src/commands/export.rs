//! `skillpack pack export` and `skillpack merge`: a weighting of a pack's skills as one standard
//! GGUF LoRA adapter, or merged into a copy of the base model, for front-ends that load one
//! adapter (llama-server/llama-cli `--lora`, ollama `ADAPTER`, LM Studio) or one model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_pack::{MergeType, Pack};
use skillpack_run::{parse_skill_weights, select_active};

/// Which weighting to export: manual weights, or a router's weights for a prompt.
#[derive(clap::Args, Clone)]
pub struct WeightingArgs {
    /// Manual skill weights, e.g. `qa=0.7,ner=0.3`.
    #[arg(long, conflicts_with = "router")]
    pub skills: Option<String>,
    /// Route a prompt with this router of the pack (`default` = the pack's default router).
    #[arg(long, requires = "prompt_file")]
    pub router: Option<String>,
    /// The prompt to route (a user message, rendered with the model's chat template as `run`
    /// renders it).
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Keep at most this many skills (default: the pack's), as `run` does.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Drop skills below this weight (default: the pack's).
    #[arg(long)]
    pub min_weight: Option<f32>,
}

/// The active skills (index, weight) `args` select, as `run` would apply them, with a note on
/// where they came from.
fn resolve_weighting(
    pack: &Pack,
    model_path: &Path,
    args: &WeightingArgs,
) -> anyhow::Result<(Vec<(usize, f32)>, String)> {
    let (weights, source) = match (&args.skills, &args.router) {
        (Some(spec), None) => (
            parse_skill_weights(spec, &pack.manifest)?,
            "--skills".to_string(),
        ),
        (None, Some(name)) => {
            let prompt_file = args.prompt_file.as_ref().expect("clap requires it");
            let prompt = std::fs::read_to_string(prompt_file)
                .with_context(|| format!("reading {}", prompt_file.display()))?;
            let model = Model::load(Backend::get(), model_path, &ModelParams::default())?;
            let name = (name != "default").then_some(name.as_str());
            let router = skillpack_run::load_router(pack, name, &model, model_path)?
                .ok_or_else(|| anyhow::anyhow!("the pack has no default router: name one"))?;
            let mut extractor = skillpack_route::FeatureExtractor::new(
                &model,
                model_path,
                router.config.features,
                None,
            )?;
            let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
            let weights = skillpack_run::route_user_message(
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
        _ => bail!("give the weighting with --skills SKILL=W,... or --router NAME --prompt-file F"),
    };
    let top_k = args.top_k.unwrap_or(pack.manifest.defaults.top_k);
    let min_weight = args.min_weight.unwrap_or(pack.manifest.defaults.min_weight);
    let active = select_active(&weights, top_k, min_weight).active;
    if active.is_empty() {
        bail!("no skill is left at these weights (top-k {top_k}, min weight {min_weight}): nothing to export");
    }
    Ok((active, source))
}

fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `skillpack pack export`.
pub fn export(
    dir: &Path,
    weighting: &WeightingArgs,
    output: &Path,
    outtype: skillpack_convert::OutType,
    model: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let model_path = match model {
        Some(m) => m,
        None => super::default_model()?,
    };
    let pack = Pack::open(dir)?;
    pack.check(&skillpack_convert::GgufInfo::open(&model_path)?)?;
    let (active, source) = resolve_weighting(&pack, &model_path, weighting)?;
    let image = skillpack_pack::export_lora(&pack, &active, outtype)?;
    skillpack_convert::write_atomic(output, &image.bytes)?;
    let label = skillpack_pack::weighting_label(&pack, &active);
    let rank: usize = skillpack_convert::LoraFile::read(output)?
        .pairs
        .values()
        .map(|p| p.a.rows)
        .sum();
    if json {
        return super::print_json(&serde_json::json!({
            "output": output,
            "bytes": image.bytes.len(),
            "weights": active.iter().map(|(i, w)| (pack.manifest.skills[*i].id.clone(), *w)).collect::<std::collections::BTreeMap<_, _>>(),
            "source": source,
            "total_rank": rank,
            "outtype": format!("{outtype:?}").to_lowercase(),
            "base": model_path,
        }));
    }
    let base = model_path.display();
    let out = output.display();
    println!(
        "wrote {out} ({}): one LoRA adapter with {label} from {source}, total rank {rank}",
        size_text(image.bytes.len() as u64)
    );
    println!("Load it at scale 1 with the pack's base model, {base}:");
    println!("  llama-server -m {base} --lora {out}");
    println!("  llama-cli -m {base} --lora {out}");
    println!("  ollama: a Modelfile with `FROM {base}` and `ADAPTER {out}`, then `ollama create`");
    println!("  skillpack run --model {base} --lora {out} \"...\"");
    Ok(())
}

/// Fold a weighting of a pack's skills into a copy of the base model (decodes at the base
/// model's speed, with no adapter).
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skillpack merge --pack examples/packs/medical-smollm2 --skills ner=1 -o medical-ner.gguf\n  skillpack merge --pack examples/packs/medical-smollm2 --router default --prompt-file q.txt -o routed.gguf --outtype q8_0"
)]
pub struct MergeArgs {
    /// The base model (default: the setup's model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub pack: PathBuf,
    #[command(flatten)]
    pub weighting: WeightingArgs,
    /// The merged model to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Storage type of the merged tensors: f16 (default), f32, q8_0, or `same` (each as in the
    /// base model: the base's size and speed, but a coarse type keeps little of a trained skill's
    /// small delta: logit-delta cosine 0.59 for q4_1, 0.96 for q8_0, 0.99 for f16 with three
    /// medical skills on the default model). Tensors without a delta are copied unchanged.
    #[arg(long, default_value = "f16")]
    pub outtype: MergeType,
    #[arg(long)]
    pub json: bool,
}

/// `skillpack merge`.
pub fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let model_path = match &args.model {
        Some(m) => m.clone(),
        None => super::default_model()?,
    };
    if args.output == model_path
        || (args.output.exists()
            && std::fs::canonicalize(&args.output)? == std::fs::canonicalize(&model_path)?)
    {
        bail!(
            "{}: the output would replace the base model",
            args.output.display()
        );
    }
    let pack = Pack::open(&args.pack)?;
    pack.check(&skillpack_convert::GgufInfo::open(&model_path)?)?;
    let (active, source) = resolve_weighting(&pack, &model_path, &args.weighting)?;
    let delta = skillpack_pack::weighted_delta(&pack, &active)?;
    let started = std::time::Instant::now();
    let report = skillpack_pack::merge_into_model(&model_path, &delta, args.outtype, &args.output)?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        return super::print_json(&serde_json::json!({
            "report": report,
            "weights": active.iter().map(|(i, w)| (pack.manifest.skills[*i].id.clone(), *w)).collect::<std::collections::BTreeMap<_, _>>(),
            "source": source,
            "seconds": seconds,
        }));
    }
    let out = args.output.display();
    println!(
        "wrote {out} ({}) in {seconds:.1} s: {} with {} merged into {} of {} tensors ({}; requantization error {:.1} % of the delta, RMS)",
        size_text(report.bytes),
        model_path.display(),
        skillpack_pack::weighting_label(&pack, &active),
        report.merged_tensors,
        report.tensors,
        report.merged_types.join(", "),
        100.0 * report.requantization_error_vs_delta_rms
    );
    println!("Use it as a plain model, with no adapter:");
    println!("  skillpack run --model {out} \"...\"");
    println!("  llama-server -m {out}");
    println!("  ollama: a Modelfile with `FROM {out}`, then `ollama create`");
    Ok(())
}
