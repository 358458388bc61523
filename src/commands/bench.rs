//! `skillpack bench`: base vs multi vs fused (exact and compressed) vs naive application, on one
//! prompt and one set of weights, in one process.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use skillpack_llama::{Backend, Context, ContextParams, Model, ModelParams};
use skillpack_pack::Pack;
use skillpack_run::{parse_skill_weights, FusedLoad, Mode, SkillEngine};

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
    /// Storage type of fused adapters (default: the engine's, f16).
    #[arg(long)]
    pub fused_type: Option<skillpack_convert::OutType>,
    #[arg(long)]
    pub json: bool,
}

/// Other benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Load-test a running OpenAI-compatible server (serve or proxy) with mixed weightings.
    Load(super::load::LoadArgs),
}

#[derive(serde::Serialize)]
struct Row {
    config: String,
    adapters_set: usize,
    total_rank: usize,
    prompt_tps: f64,
    decode_tps: f64,
    prompt_ratio: f64,
    decode_ratio: f64,
    build_ms: f64,
    rss_mib: f64,
}

/// Best-of-`reps` prompt and decode throughput with whatever adapters `ctx` has set.
fn measure(
    ctx: &mut Context<'_>,
    prompt: &[i32],
    gen: usize,
    reps: usize,
) -> anyhow::Result<(f64, f64)> {
    let (mut best_p, mut best_d) = (0f64, 0f64);
    for _ in 0..reps {
        ctx.clear_memory();
        let t = Instant::now();
        ctx.eval(prompt, 0, false)?;
        best_p = best_p.max(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for i in 0..gen {
            // Greedy, fixed length: the same work for every configuration.
            let logits = ctx.logits(-1)?;
            let next = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as i32)
                .unwrap_or(0);
            ctx.eval(&[next], prompt.len() + i, false)?;
        }
        best_d = best_d.max(gen as f64 / t.elapsed().as_secs_f64());
    }
    Ok((best_p, best_d))
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
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let pack = Pack::open(&pack_dir)?;
    pack.check(&skillpack_convert::GgufInfo::open(&model_path)?)?;
    let n = pack.manifest.skills.len();
    if n == 0 {
        bail!("{} has no skills", pack_dir.display());
    }
    let weights = match &args.skills {
        Some(spec) => parse_skill_weights(spec, &pack.manifest)?,
        None => {
            let raw: Vec<f32> = (0..n).map(|i| (-0.6 * i as f32).exp()).collect();
            let sum: f32 = raw.iter().sum();
            raw.iter().map(|w| w / sum).collect()
        }
    };
    let mut engine = SkillEngine::new(&model, pack)?;
    engine.min_weight = 0.0;
    engine.energy = args.energy;
    if let Some(t) = args.fused_type {
        engine.fused_outtype = t;
    }
    let mut ctx = Context::new(
        &model,
        &ContextParams {
            n_ctx: (args.prompt_tokens + args.gen_tokens + 16) as u32,
            n_batch: args.prompt_tokens.max(32) as u32,
            n_threads: Some(args.threads),
            ..Default::default()
        },
    )?;
    let text = "A 54-year-old man presents with chest pain radiating to the left arm, diaphoresis and shortness of breath. \
                His history includes hypertension, type 2 diabetes treated with metformin, and smoking. ";
    let mut prompt = Vec::new();
    while prompt.len() < args.prompt_tokens {
        prompt.extend(model.tokenize(text, prompt.is_empty(), false)?);
    }
    prompt.truncate(args.prompt_tokens);

    let mut rows: Vec<Row> = Vec::new();
    let push = |config: &str,
                set: usize,
                rank: usize,
                (p, d): (f64, f64),
                build_ms: f64,
                rows: &mut Vec<Row>| {
        let (bp, bd) = rows
            .first()
            .map(|r| (r.prompt_tps, r.decode_tps))
            .unwrap_or((p, d));
        rows.push(Row {
            config: config.into(),
            adapters_set: set,
            total_rank: rank,
            prompt_tps: p,
            decode_tps: d,
            prompt_ratio: p / bp,
            decode_ratio: d / bd,
            build_ms,
            rss_mib: super::proc_status_mib("VmRSS:"),
        });
    };

    ctx.clear_adapters()?;
    let base = measure(&mut ctx, &prompt, args.gen_tokens, args.reps)?;
    push("base", 0, 0, base, 0.0, &mut rows);

    engine.top_k = args.top_k;
    let mut mem_load_ms = 0.0;
    for (label, mode) in [
        ("multi", Mode::Multi),
        ("fused", Mode::Fused),
        ("fused-compressed", Mode::FusedCompressed),
    ] {
        let applied = engine.apply(&mut ctx, &weights, mode, 0)?;
        if mode == Mode::Fused {
            mem_load_ms = engine.last_load_ms;
        }
        let speeds = measure(&mut ctx, &prompt, args.gen_tokens, args.reps)?;
        let set = if mode == Mode::Multi {
            applied.selection.active.len()
        } else {
            1
        };
        push(
            label,
            set,
            applied.total_rank,
            speeds,
            applied.build_ms,
            &mut rows,
        );
    }
    // Fused build through an unlinked tmpfs file instead of fmemopen (fresh cache).
    let (tmp_engine_ms, tmp_load_ms) = {
        let mut other = SkillEngine::new(&model, engine.pack().clone())?;
        other.top_k = args.top_k;
        other.min_weight = 0.0;
        other.fused_load = FusedLoad::TmpFile;
        let mut scratch = Context::new(
            &model,
            &ContextParams {
                n_ctx: 64,
                n_threads: Some(args.threads),
                ..Default::default()
            },
        )?;
        let build_ms = other
            .apply(&mut scratch, &weights, Mode::Fused, 0)?
            .build_ms;
        (build_ms, other.last_load_ms)
    };
    engine.top_k = 0;
    let applied = engine.apply(&mut ctx, &weights, Mode::Multi, 0)?;
    let naive = measure(&mut ctx, &prompt, args.gen_tokens, args.reps)?;
    push(
        "naive (all skills)",
        applied.selection.active.len(),
        applied.total_rank,
        naive,
        0.0,
        &mut rows,
    );

    let peak = super::proc_status_mib("VmHWM:");
    let multi_vs_naive = rows[1].decode_tps / rows[4].decode_tps;
    let fused_vs_naive = rows[2].decode_tps / rows[4].decode_tps;
    if args.json {
        super::print_json(&serde_json::json!({
            "model": model_path.display().to_string(),
            "pack": pack_dir.display().to_string(),
            "threads": args.threads,
            "prompt_tokens": args.prompt_tokens,
            "gen_tokens": args.gen_tokens,
            "rows": rows,
            "fused_build_ms_fmemopen": rows[2].build_ms,
            "fused_build_ms_tmpfile": tmp_engine_ms,
            "fused_load_ms_fmemopen": mem_load_ms,
            "fused_load_ms_tmpfile": tmp_load_ms,
            "peak_rss_mib": peak,
            "multi_decode_vs_naive": multi_vs_naive,
            "fused_decode_vs_naive": fused_vs_naive,
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
        for r in &rows {
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
            "fused build: {:.1} ms via fmemopen (load {mem_load_ms:.1} ms), {:.1} ms via unlinked tmpfs file (load {tmp_load_ms:.1} ms); peak RSS {:.1} MiB",
            rows[2].build_ms, tmp_engine_ms, peak
        );
        println!("decode speed vs naive: multi {multi_vs_naive:.2}×, fused {fused_vs_naive:.2}×");
    }
    Ok(())
}
