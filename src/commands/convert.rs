//! `skillpack convert`: PEFT adapter directory → GGUF LoRA adapter.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use skillpack_convert::{ConvertOptions, GgufInfo, OutType, PeftAdapter};

/// Convert a PEFT LoRA / rsLoRA / AdaLoRA adapter into a GGUF LoRA adapter for llama.cpp.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  skillpack convert ./peft-adapter --base models/SmolLM2-135M-Instruct.Q4_1.gguf -o adapter.gguf --outtype f16"
)]
pub struct Args {
    /// Directory with adapter_config.json and adapter_model.safetensors.
    pub peft_dir: PathBuf,
    /// The base model GGUF the adapter was trained on (shapes and q/k layout are checked against it).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Output GGUF file (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Tensor type: f32, f16, bf16 or q8_0.
    #[arg(long, default_value = "f32")]
    pub outtype: OutType,
    /// general.name of the adapter (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the conversion report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let base_path = match args.base {
        Some(p) => p,
        None => super::default_model()?,
    };
    let peft = PeftAdapter::load(&args.peft_dir)?;
    let base = GgufInfo::open(&base_path)?;
    let converted = skillpack_convert::convert(
        &peft,
        &base,
        &ConvertOptions {
            outtype: args.outtype,
            name: args.name,
        },
    )?;
    converted
        .write(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let r = &converted.report;
    if args.json {
        let mut v = serde_json::to_value(r)?;
        v["output"] = args.output.display().to_string().into();
        v["seconds"] = started.elapsed().as_secs_f64().into();
        super::print_json(&v)?;
    } else {
        println!(
            "{} ({}) -> {}: {} modules, rank {}..{}, alpha {}{}, {}, {:.1} MiB in {:.2}s",
            r.source,
            r.source_format,
            args.output.display(),
            r.modules,
            r.min_rank,
            r.max_rank,
            r.alpha,
            if r.scales_folded {
                " (per-module scales folded into lora_b)"
            } else {
                ""
            },
            serde_json::to_value(r.outtype)?.as_str().unwrap_or("?"),
            r.bytes as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64()
        );
        if r.dropped_zero_rank > 0 {
            println!(
                "  {} modules pruned to rank 0 by AdaLoRA were dropped",
                r.dropped_zero_rank
            );
        }
        if r.f16_fallbacks > 0 {
            println!(
                "  {} tensors stored as f16: rows not a multiple of 32 for q8_0",
                r.f16_fallbacks
            );
        }
    }
    Ok(())
}
