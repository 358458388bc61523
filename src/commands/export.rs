//! `skillpack pack export` and `skillpack merge`: a weighting of a pack's skills as one standard
//! GGUF LoRA adapter, or merged into a copy of the base model, for front-ends that load one
//! adapter (llama-server/llama-cli `--lora`, ollama `ADAPTER`, LM Studio) or one model.

use std::path::{Path, PathBuf};

use anyhow::bail;
use skillpack_pack::MergeType;
use skillpack_run::WeightingSource;

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

impl WeightingArgs {
    fn source(&self) -> anyhow::Result<WeightingSource> {
        Ok(match (&self.skills, &self.router) {
            (Some(spec), None) => WeightingSource::Skills(spec.clone()),
            (None, Some(name)) => WeightingSource::Router {
                name: name.clone(),
                prompt_file: self.prompt_file.clone().expect("clap requires it"),
            },
            _ => bail!(
                "give the weighting with --skills SKILL=W,... or --router NAME --prompt-file F"
            ),
        })
    }
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
    let (pack, exported) = skillpack_run::export_weighting(
        dir,
        &model_path,
        &weighting.source()?,
        weighting.top_k,
        weighting.min_weight,
        outtype,
        output,
    )?;
    let w = &exported.weighting;
    if json {
        return super::print_json(&serde_json::json!({
            "output": output,
            "bytes": exported.bytes,
            "weights": w.by_skill(&pack),
            "source": w.source,
            "total_rank": exported.total_rank,
            "outtype": format!("{outtype:?}").to_lowercase(),
            "base": model_path,
        }));
    }
    let base = model_path.display();
    let out = output.display();
    println!(
        "wrote {out} ({}): one LoRA adapter with {} from {}, total rank {}",
        size_text(exported.bytes as u64),
        w.label,
        w.source,
        exported.total_rank
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
    let (pack, merged) = skillpack_run::merge_weighting(
        &args.pack,
        &model_path,
        &args.weighting.source()?,
        args.weighting.top_k,
        args.weighting.min_weight,
        args.outtype,
        &args.output,
    )?;
    let (report, w) = (&merged.report, &merged.weighting);
    if args.json {
        return super::print_json(&serde_json::json!({
            "report": report,
            "weights": w.by_skill(&pack),
            "source": w.source,
            "seconds": merged.seconds,
        }));
    }
    let out = args.output.display();
    println!(
        "wrote {out} ({}) in {:.1} s: {} with {} merged into {} of {} tensors ({}; requantization error {:.1} % of the delta, RMS)",
        size_text(report.bytes),
        merged.seconds,
        model_path.display(),
        w.label,
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
