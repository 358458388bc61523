//! `skillpack inspect`: describe a model, GGUF adapter or PEFT directory.

use std::path::PathBuf;

use skillpack_convert::GgufInfo;

/// Describe a GGUF model, a GGUF LoRA adapter or a PEFT adapter directory.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  skillpack inspect adapter.gguf --base models/SmolLM2-135M-Instruct.Q4_1.gguf --json"
)]
pub struct Args {
    /// A .gguf file or a PEFT adapter directory.
    pub path: PathBuf,
    /// Also check whether the adapter fits this base model.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let base = args.base.as_deref().map(GgufInfo::open).transpose()?;
    let r = skillpack_convert::inspect(&args.path, base.as_ref())?;
    if args.json {
        return super::print_json(&r);
    }
    let kind = serde_json::to_value(r.kind)?;
    println!("{}: {}", r.path, kind.as_str().unwrap_or("?"));
    if let Some(a) = &r.architecture {
        println!("  architecture: {a}");
    }
    if let Some(f) = &r.format {
        println!("  format:       {f}");
    }
    if let (Some(l), Some(e)) = (r.n_layer, r.n_embd) {
        println!(
            "  layers {l}, n_embd {e}, heads {}/{} (q/kv)",
            r.n_head.unwrap_or(0),
            r.n_head_kv.unwrap_or(0)
        );
    }
    if let Some(fp) = &r.fingerprint {
        println!("  fingerprint:  {fp}");
    }
    let list = |m: &std::collections::BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  modules:      {} ({})", r.n_modules, list(&r.modules));
    if !r.ranks.is_empty() {
        let ranks = r
            .ranks
            .iter()
            .map(|(k, v)| format!("r{k} x{v}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!("  ranks:        {ranks}");
    }
    if let Some(a) = r.alpha {
        println!("  alpha:        {a}");
    }
    println!("  dtypes:       {}", list(&r.dtypes));
    println!(
        "  size:         {:.2} MiB",
        r.size_bytes as f64 / (1 << 20) as f64
    );
    if let Some(fit) = &r.fit {
        match &fit.reason {
            None => println!("  fits {}: yes", fit.base),
            Some(why) => println!("  fits {}: NO — {why}", fit.base),
        }
    }
    Ok(())
}
