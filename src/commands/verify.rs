//! `skillpack verify`: does llama.cpp apply a GGUF adapter as the PEFT adapter it came from
//! computes? Compares delta logits (adapter − base) from candle (PEFT semantics, on the
//! dequantized base) and from llama.cpp, on prompts from a data file.

use std::path::PathBuf;

/// Compare a GGUF adapter in llama.cpp against its PEFT source in candle on held-out prompts.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  skillpack verify --peft runs/ner/peft --gguf runs/ner/adapter.gguf --data data/skills/ner/dev.jsonl"
)]
pub struct Args {
    /// PEFT adapter directory.
    #[arg(long)]
    pub peft: PathBuf,
    /// GGUF LoRA adapter (e.g. converted from --peft).
    #[arg(long)]
    pub gguf: PathBuf,
    /// Instruction records whose prompts are evaluated.
    #[arg(long)]
    pub data: PathBuf,
    /// Base GGUF (default: the setup's model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Number of prompts.
    #[arg(short, long, default_value_t = 5)]
    pub n: usize,
    /// Fail (exit 1) when a cosine is below this.
    #[arg(long, default_value_t = 0.99)]
    pub min_cosine: f64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let rows =
        skillpack_train::verify_adapter(&model_path, &args.peft, &args.gguf, &args.data, args.n)?;
    let min = rows.iter().map(|r| r.delta_cosine).fold(1.0, f64::min);
    if args.json {
        super::print_json(&serde_json::json!({"prompts": rows, "min_delta_cosine": min}))?;
    } else {
        for r in &rows {
            println!(
                "{}: delta cosine {:.5} (|delta| {:.2}, {} tokens, same argmax: {})",
                r.id, r.delta_cosine, r.delta_norm, r.prompt_tokens, r.same_argmax
            );
        }
        println!("min delta cosine {min:.5} over {} prompts", rows.len());
    }
    if min < args.min_cosine {
        anyhow::bail!("delta cosine {min:.5} is below {}", args.min_cosine);
    }
    Ok(())
}
