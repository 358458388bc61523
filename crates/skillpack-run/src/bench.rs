//! Prompt and decode speed of every way of applying weighted skills, on one prompt and one set
//! of weights, in one process: the base model alone, multi-adapter, fused (exact and
//! compressed), naive (every skill as its own adapter) and merged (the weighted delta folded into
//! an f16 copy of the model's changed tensors, loaded from tmpfs), plus the fused build through
//! `fmemopen` against an unlinked temporary file ([`bench_decode`]).

use std::path::Path;
use std::time::Instant;

use skillpack_convert::{GgufInfo, OutType};
use skillpack_llama::{Backend, Context, ContextParams, Model, ModelParams};
use skillpack_pack::{MergeType, Pack};

use crate::{parse_skill_weights, FusedLoad, Mode, Result, RunError, SkillEngine};

/// The prompt, repeated up to `prompt_tokens` tokens: clinical text like the packs' data.
const PROMPT_TEXT: &str = "A 54-year-old man presents with chest pain radiating to the left arm, diaphoresis and shortness of breath. \
                His history includes hypertension, type 2 diabetes treated with metformin, and smoking. ";

/// Positions of the rows in [`DecodeBench::rows`].
const BASE: usize = 0;
const MULTI: usize = 1;
const FUSED: usize = 2;
const NAIVE: usize = 4;
const MERGED: usize = 5;

/// What [`bench_decode`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeBenchOptions {
    /// Weights `SKILL=W,...` (`None`: a router-like decay 0.45, 0.25, 0.14, … over the skills).
    pub skills: Option<String>,
    /// Skills kept by multi and fused (naive keeps all).
    pub top_k: usize,
    pub prompt_tokens: usize,
    /// Tokens decoded greedily after the prompt.
    pub gen_tokens: usize,
    pub threads: i32,
    /// Repetitions per configuration (the best is reported).
    pub reps: usize,
    /// Fraction of the fused delta's energy kept by fused-compressed.
    pub energy: f64,
    /// Storage type of fused adapters (`None`: the engine's, f16).
    pub fused_type: Option<OutType>,
    /// Layers offloaded to a GPU, for the base and the merged model alike (0: CPU only; a
    /// negative value: all; needs a build with the `gpu` feature).
    pub gpu_layers: i32,
}

impl Default for DecodeBenchOptions {
    /// The CLI's defaults: top 3, 128 prompt tokens, 64 decoded, 2 threads, best of 3.
    fn default() -> Self {
        DecodeBenchOptions {
            skills: None,
            top_k: 3,
            prompt_tokens: 128,
            gen_tokens: 64,
            threads: 2,
            reps: 3,
            energy: 0.999,
            fused_type: None,
            gpu_layers: 0,
        }
    }
}

/// One configuration's speeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecodeBenchRow {
    /// `base`, `multi`, `fused`, `fused-compressed`, `naive (all skills)` or `merged (f16)`.
    pub config: String,
    /// Adapters set on the context.
    pub adapters_set: usize,
    /// Sum of the ranks applied.
    pub total_rank: usize,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Decoded tokens per second.
    pub decode_tps: f64,
    /// Prompt speed relative to the base model's.
    pub prompt_ratio: f64,
    /// Decode speed relative to the base model's.
    pub decode_ratio: f64,
    /// Time to build the fused adapter, or to merge and load the merged model (0 where nothing
    /// is built).
    pub build_ms: f64,
    /// Resident memory after the measurement (Linux; 0 elsewhere).
    pub rss_mib: f64,
}

/// What [`bench_decode`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeBench {
    /// `base`, `multi`, `fused`, `fused-compressed`, `naive (all skills)`, `merged (f16)`, in
    /// this order.
    pub rows: Vec<DecodeBenchRow>,
    /// The fused build through an unlinked tmpfs file (fresh cache), instead of `fmemopen`.
    pub fused_build_ms_tmpfile: f64,
    /// Loading the fused adapter into llama.cpp from `fmemopen`.
    pub fused_load_ms_fmemopen: f64,
    /// Loading it from the unlinked temporary file.
    pub fused_load_ms_tmpfile: f64,
    /// Peak resident memory of the process (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
}

impl DecodeBench {
    /// The fused build through `fmemopen` (the `fused` row's).
    pub fn fused_build_ms_fmemopen(&self) -> f64 {
        self.rows[FUSED].build_ms
    }

    /// Decode speed of multi over naive.
    pub fn multi_decode_vs_naive(&self) -> f64 {
        self.rows[MULTI].decode_tps / self.rows[NAIVE].decode_tps
    }

    /// Decode speed of fused over naive.
    pub fn fused_decode_vs_naive(&self) -> f64 {
        self.rows[FUSED].decode_tps / self.rows[NAIVE].decode_tps
    }

    /// Tokens one weighting must serve before a merged model, whose merge and load cost
    /// `build_ms` up front, beats fused decoding; `None` when merged decodes no faster.
    pub fn merged_pays_after_tokens(&self) -> Option<f64> {
        let (fused, merged) = (&self.rows[FUSED], &self.rows[MERGED]);
        let saved_ms_per_token = 1e3 / fused.decode_tps - 1e3 / merged.decode_tps;
        (saved_ms_per_token > 0.0).then(|| merged.build_ms / saved_ms_per_token)
    }
}

/// Best-of-`reps` prompt and decode throughput with whatever adapters `ctx` has set.
fn measure(ctx: &mut Context<'_>, prompt: &[i32], gen: usize, reps: usize) -> Result<(f64, f64)> {
    let (mut best_prompt, mut best_decode) = (0f64, 0f64);
    for _ in 0..reps {
        ctx.clear_memory();
        let t = Instant::now();
        ctx.eval(prompt, 0, false)?;
        best_prompt = best_prompt.max(prompt.len() as f64 / t.elapsed().as_secs_f64());
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
        best_decode = best_decode.max(gen as f64 / t.elapsed().as_secs_f64());
    }
    Ok((best_prompt, best_decode))
}

/// Appends a row, its speeds relative to the first (base) row.
fn push_row(
    rows: &mut Vec<DecodeBenchRow>,
    config: &str,
    adapters_set: usize,
    total_rank: usize,
    (prompt_tps, decode_tps): (f64, f64),
    build_ms: f64,
) {
    let (base_prompt, base_decode) = rows
        .get(BASE)
        .map(|r| (r.prompt_tps, r.decode_tps))
        .unwrap_or((prompt_tps, decode_tps));
    rows.push(DecodeBenchRow {
        config: config.into(),
        adapters_set,
        total_rank,
        prompt_tps,
        decode_tps,
        prompt_ratio: prompt_tps / base_prompt,
        decode_ratio: decode_tps / base_decode,
        build_ms,
        rss_mib: skillpack_convert::process_memory_mib("VmRSS:"),
    });
}

/// The context every measured configuration decodes in: the prompt in one batch, then the
/// decoded tokens.
fn measuring_params(options: &DecodeBenchOptions) -> ContextParams {
    ContextParams {
        n_ctx: (options.prompt_tokens + options.gen_tokens + 16) as u32,
        n_batch: options.prompt_tokens.max(32) as u32,
        n_threads: Some(options.threads),
        ..Default::default()
    }
}

/// Where merged models are written: shared memory when the system has it (no disk write), else
/// the temporary directory.
fn merge_dir() -> std::path::PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Measures prompt and decode speed of the model at `model_path` with the skills of the pack in
/// `pack_dir` applied every way the runtime can: the base model alone, multi-adapter, fused
/// (exact and compressed) and naive (every skill as its own adapter), each the best of
/// `options.reps` runs of one prompt and a fixed-length greedy decode; plus the fused build
/// through `fmemopen` against an unlinked temporary file.
///
/// ```rust
/// use std::path::{Path, PathBuf};
///
/// use skillpack_pack::{synth_pack, SynthSpec, ALL_LINEAR};
/// use skillpack_run::{bench_decode, DecodeBenchOptions};
///
/// let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
///     .map(PathBuf::from)
///     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
/// let model = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
/// let pack = tempfile::tempdir()?;
/// let spec = SynthSpec {
///     skills: 4,
///     rank: 4,
///     targets: ALL_LINEAR.iter().map(|t| t.to_string()).collect(),
///     b_std: 0.1,
///     decay: 0.5,
///     seed: 1,
/// };
/// synth_pack(pack.path(), &skillpack_convert::GgufInfo::open(&model)?, &spec)?;
///
/// let options = DecodeBenchOptions {
///     prompt_tokens: 16,
///     gen_tokens: 4,
///     reps: 1,
///     ..Default::default()
/// };
/// let bench = bench_decode(&model, pack.path(), &options)?;
/// let configs: Vec<&str> = bench.rows.iter().map(|r| r.config.as_str()).collect();
/// assert_eq!(
///     configs,
///     ["base", "multi", "fused", "fused-compressed", "naive (all skills)", "merged (f16)"]
/// );
/// assert_eq!(bench.rows[1].adapters_set, 3); // top 3 of 4 skills
/// assert!(bench.multi_decode_vs_naive() > 0.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn bench_decode(
    model_path: &Path,
    pack_dir: &Path,
    options: &DecodeBenchOptions,
) -> Result<DecodeBench> {
    let model_params = ModelParams {
        n_gpu_layers: options.gpu_layers,
        ..Default::default()
    };
    let model = Model::load(Backend::get(), model_path, &model_params)?;
    let pack = Pack::open(pack_dir)?;
    pack.check(&GgufInfo::open(model_path)?)?;
    let n = pack.manifest.skills.len();
    if n == 0 {
        return Err(RunError::Invalid(format!(
            "{} has no skills",
            pack_dir.display()
        )));
    }
    let weights = match &options.skills {
        Some(spec) => parse_skill_weights(spec, &pack.manifest)?,
        None => {
            let raw: Vec<f32> = (0..n).map(|i| (-0.6 * i as f32).exp()).collect();
            let sum: f32 = raw.iter().sum();
            raw.iter().map(|w| w / sum).collect()
        }
    };
    let mut engine = SkillEngine::new(&model, pack)?;
    engine.min_weight = 0.0;
    engine.energy = options.energy;
    if let Some(t) = options.fused_type {
        engine.fused_outtype = t;
    }
    let mut ctx = Context::new(&model, &measuring_params(options))?;
    let mut prompt = Vec::new();
    while prompt.len() < options.prompt_tokens {
        prompt.extend(model.tokenize(PROMPT_TEXT, prompt.is_empty(), false)?);
    }
    prompt.truncate(options.prompt_tokens);
    let timed = |ctx: &mut Context<'_>| measure(ctx, &prompt, options.gen_tokens, options.reps);

    let mut rows = Vec::new();
    ctx.clear_adapters()?;
    let speeds = timed(&mut ctx)?;
    push_row(&mut rows, "base", 0, 0, speeds, 0.0);

    engine.top_k = options.top_k;
    let mut fused_load_ms_fmemopen = 0.0;
    for (label, mode) in [
        ("multi", Mode::Multi),
        ("fused", Mode::Fused),
        ("fused-compressed", Mode::FusedCompressed),
    ] {
        let applied = engine.apply(&mut ctx, &weights, mode, 0)?;
        if mode == Mode::Fused {
            fused_load_ms_fmemopen = engine.last_load_ms;
        }
        let speeds = timed(&mut ctx)?;
        let set = if mode == Mode::Multi {
            applied.selection.active.len()
        } else {
            1
        };
        push_row(
            &mut rows,
            label,
            set,
            applied.total_rank,
            speeds,
            applied.build_ms,
        );
    }
    // The fused build through an unlinked tmpfs file instead of fmemopen (fresh cache).
    let (fused_build_ms_tmpfile, fused_load_ms_tmpfile) = {
        let mut other = SkillEngine::new(&model, engine.pack().clone())?;
        other.top_k = options.top_k;
        other.min_weight = 0.0;
        other.fused_load = FusedLoad::TmpFile;
        let mut scratch = Context::new(
            &model,
            &ContextParams {
                n_ctx: 64,
                n_threads: Some(options.threads),
                ..Default::default()
            },
        )?;
        let build_ms = other
            .apply(&mut scratch, &weights, Mode::Fused, 0)?
            .build_ms;
        (build_ms, other.last_load_ms)
    };
    // Naive: every skill as its own adapter.
    engine.top_k = 0;
    let applied = engine.apply(&mut ctx, &weights, Mode::Multi, 0)?;
    let speeds = timed(&mut ctx)?;
    push_row(
        &mut rows,
        "naive (all skills)",
        applied.selection.active.len(),
        applied.total_rank,
        speeds,
        0.0,
    );
    // Merged: multi's active skills folded into a copy of the model (changed tensors in f16),
    // written to tmpfs and loaded as a model of its own; build = merge + load.
    {
        let active = crate::select_active(&weights, options.top_k, 0.0).active;
        let started = Instant::now();
        let delta = skillpack_pack::weighted_delta(engine.pack(), &active)?;
        let dir = tempfile::Builder::new()
            .prefix("skillpack-merged-")
            .tempdir_in(merge_dir())
            .map_err(|e| RunError::Invalid(format!("temporary directory: {e}")))?;
        let merged_path = dir.path().join("merged.gguf");
        skillpack_pack::merge_into_model(model_path, &delta, MergeType::F16, &merged_path)?;
        let merged = Model::load(Backend::get(), &merged_path, &model_params)?;
        let build_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut merged_ctx = Context::new(&merged, &measuring_params(options))?;
        let speeds = measure(&mut merged_ctx, &prompt, options.gen_tokens, options.reps)?;
        push_row(&mut rows, "merged (f16)", 0, 0, speeds, build_ms);
    }
    Ok(DecodeBench {
        rows,
        fused_build_ms_tmpfile,
        fused_load_ms_fmemopen,
        fused_load_ms_tmpfile,
        peak_rss_mib: skillpack_convert::process_memory_mib("VmHWM:"),
    })
}
