//! `skillpack bench`: base vs multi vs fused (exact and compressed) vs naive application, on one
//! prompt and one set of weights, in one process.

use std::path::PathBuf;

use anyhow::bail;
use skillpack_run::{bench_decode, DecodeBenchOptions};

/// Measure prompt and decode speed of every way of applying weighted skills.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skillpack pack synth /tmp/synth12 && skillpack bench --pack /tmp/synth12 --threads 2 --json\n  skillpack bench load --url http://127.0.0.1:8080 --clients 16 --requests 50",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Skill pack (e.g. from `skillpack pack synth`).
    #[arg(long, required = true)]
    pub pack: Option<PathBuf>,
    /// GGUF model (default: the setup's model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Weights `SKILL=W,...` (default: a router-like decay 0.45, 0.25, 0.14, ... over the skills).
    #[arg(long)]
    pub skills: Option<String>,
    /// Skills kept by multi / fused (naive keeps all).
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: usize,
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// Repetitions per configuration (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Fraction of the fused delta's energy kept by fused-compressed.
    #[arg(long, default_value_t = 0.999)]
    pub energy: f64,
    /// Storage type of fused adapters (default: the engine's, q8_0).
    #[arg(long)]
    pub fused_type: Option<skillpack_convert::OutType>,
    /// Layers to offload to a GPU for every configuration (-1: all); needs a build with the
    /// `gpu` feature (scripts/build-gpu.sh).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gpu_layers: i32,
    #[arg(long)]
    pub json: bool,
}

/// Other benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Load-test a running OpenAI-compatible server (serve or proxy) with mixed weightings.
    Load(super::load::LoadArgs),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(BenchCommand::Load(load)) = args.command {
        return super::load::run(load);
    }
    let Some(pack_dir) = args.pack.clone() else {
        bail!("--pack is required");
    };
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let bench = bench_decode(
        &model_path,
        &pack_dir,
        &DecodeBenchOptions {
            skills: args.skills.clone(),
            top_k: args.top_k,
            prompt_tokens: args.prompt_tokens,
            gen_tokens: args.gen_tokens,
            threads: args.threads,
            reps: args.reps,
            energy: args.energy,
            fused_type: args.fused_type,
            gpu_layers: args.gpu_layers,
        },
    )?;
    let multi_vs_naive = bench.multi_decode_vs_naive();
    let fused_vs_naive = bench.fused_decode_vs_naive();
    if args.json {
        super::print_json(&serde_json::json!({
            "model": model_path.display().to_string(),
            "pack": pack_dir.display().to_string(),
            "threads": args.threads,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "rows": bench.rows,
            "fused_build_ms_fmemopen": bench.fused_build_ms_fmemopen(),
            "fused_build_ms_tmpfile": bench.fused_build_ms_tmpfile,
            "fused_load_ms_fmemopen": bench.fused_load_ms_fmemopen,
            "fused_load_ms_tmpfile": bench.fused_load_ms_tmpfile,
            "peak_rss_mib": bench.peak_rss_mib,
            "multi_decode_vs_naive": multi_vs_naive,
            "fused_decode_vs_naive": fused_vs_naive,
            "merged_pays_after_tokens": bench.merged_pays_after_tokens(),
        }))?;
    } else {
        println!(
            "{} on {} threads, prompt {} tokens, decode {} tokens, best of {}",
            model_path.display(),
            args.threads,
            args.prompt_tokens,
            args.gen_tokens,
            args.reps
        );
        println!(
            "{:<20} {:>4} {:>6} {:>10} {:>7} {:>10} {:>7} {:>9} {:>8}",
            "config",
            "set",
            "rank",
            "prompt t/s",
            "×base",
            "decode t/s",
            "×base",
            "build ms",
            "RSS MiB"
        );
        for r in &bench.rows {
            println!(
                "{:<20} {:>4} {:>6} {:>10.1} {:>7.3} {:>10.1} {:>7.3} {:>9.1} {:>8.1}",
                r.config,
                r.adapters_set,
                r.total_rank,
                r.prompt_tps,
                r.prompt_ratio,
                r.decode_tps,
                r.decode_ratio,
                r.build_ms,
                r.rss_mib
            );
        }
        println!(
            "fused build: {:.1} ms via fmemopen (load {:.1} ms), {:.1} ms via unlinked tmpfs file (load {:.1} ms); peak RSS {:.1} MiB",
            bench.fused_build_ms_fmemopen(),
            bench.fused_load_ms_fmemopen,
            bench.fused_build_ms_tmpfile,
            bench.fused_load_ms_tmpfile,
            bench.peak_rss_mib
        );
        println!("decode speed vs naive: multi {multi_vs_naive:.2}×, fused {fused_vs_naive:.2}×");
        match bench.merged_pays_after_tokens() {
            Some(tokens) => {
                println!("merged pays off against fused after {tokens:.0} tokens of one weighting")
            }
            None => println!("merged decodes no faster than fused here"),
        }
    }
    Ok(())
}
