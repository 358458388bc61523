//! `skillpack run`: one-shot generation, streaming to the terminal.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use skillpack_llama::{
    Backend, ChatMessage, Context, ContextParams, LoraAdapter, Model, ModelParams, Sampler,
    SamplerParams,
};

/// Generate a reply to one prompt, optionally with LoRA adapters at given scales.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skillpack run \"What are the symptoms of anemia?\"\n  skillpack run --lora ner.gguf:0.7 --lora re.gguf:0.3 --temp 0 \"Find the chemicals: ...\""
)]
pub struct Args {
    /// The prompt (sent as a user message through the model's chat template unless --raw).
    pub prompt: String,
    /// GGUF model (default: models/SmolLM2-135M-Instruct.Q4_1.gguf from setup).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// GGUF LoRA adapter with an optional scale, `FILE[:SCALE]`; repeatable.
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    pub loras: Vec<String>,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Maximum tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: i32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Stop when the output contains this string; repeatable.
    #[arg(long = "stop")]
    pub stops: Vec<String>,
    /// CPU threads (default: llama.cpp's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Context length.
    #[arg(long, default_value_t = 2048)]
    pub ctx_size: u32,
    /// Print one JSON object (text, token counts, speeds) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

fn parse_lora(spec: &str) -> anyhow::Result<(PathBuf, f32)> {
    if let Some((path, scale)) = spec.rsplit_once(':') {
        if let Ok(s) = scale.parse::<f32>() {
            return Ok((PathBuf::from(path), s));
        }
    }
    Ok((PathBuf::from(spec), 1.0))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let backend = Backend::get();
    let model = Model::load(backend, &model_path, &ModelParams::default())?;
    let mut adapters = Vec::new();
    for spec in &args.loras {
        let (path, scale) = parse_lora(spec)?;
        adapters.push((LoraAdapter::load(&model, &path)?, scale));
    }
    let mut ctx = Context::new(
        &model,
        &ContextParams {
            n_ctx: args.ctx_size,
            n_threads: args.threads,
            ..Default::default()
        },
    )?;
    let refs: Vec<(&LoraAdapter, f32)> = adapters.iter().map(|(a, s)| (a, *s)).collect();
    ctx.set_adapters(&refs)?;

    let text = if args.raw {
        args.prompt.clone()
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: system.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        });
        model.apply_chat_template(&messages, true)?
    };
    let prompt_tokens = model.tokenize(&text, true, true)?;
    if prompt_tokens.len() + args.max_tokens > ctx.n_ctx() {
        bail!(
            "prompt ({} tokens) + max tokens ({}) exceed the context ({}); raise --ctx-size",
            prompt_tokens.len(),
            args.max_tokens,
            ctx.n_ctx()
        );
    }
    let mut sampler = Sampler::new(
        &model,
        &SamplerParams {
            temperature: args.temp,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: 64,
            seed: args.seed,
        },
    );

    let t0 = Instant::now();
    ctx.eval(&prompt_tokens, 0, false)
        .context("evaluating the prompt")?;
    let t_prompt = t0.elapsed();
    let t1 = Instant::now();
    let mut out_bytes: Vec<u8> = Vec::new();
    let mut printed = 0usize;
    let mut generated = 0usize;
    let mut stdout = std::io::stdout().lock();
    let mut pos = prompt_tokens.len();
    'gen: while generated < args.max_tokens {
        let token = sampler.sample(&ctx, -1)?;
        if model.is_end_of_generation(token) {
            break;
        }
        generated += 1;
        out_bytes.extend(model.token_to_bytes(token, false));
        // Stream the longest valid UTF-8 prefix not yet printed.
        let valid = match std::str::from_utf8(&out_bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let so_far = std::str::from_utf8(&out_bytes[..valid]).unwrap_or_default();
        for stop in &args.stops {
            if let Some(at) = so_far.find(stop.as_str()) {
                out_bytes.truncate(at);
                if !args.json && at > printed {
                    stdout.write_all(&out_bytes[printed..at])?;
                }
                printed = at;
                break 'gen;
            }
        }
        if !args.json && valid > printed {
            stdout.write_all(&out_bytes[printed..valid])?;
            stdout.flush()?;
            printed = valid;
        }
        ctx.eval(&[token], pos, false)?;
        pos += 1;
    }
    let t_gen = t1.elapsed();
    let text = String::from_utf8_lossy(&out_bytes).into_owned();
    if args.json {
        super::print_json(&serde_json::json!({
            "model": model_path.display().to_string(),
            "adapters": args.loras,
            "text": text,
            "prompt_tokens": prompt_tokens.len(),
            "generated_tokens": generated,
            "prompt_tokens_per_s": prompt_tokens.len() as f64 / t_prompt.as_secs_f64(),
            "decode_tokens_per_s": generated as f64 / t_gen.as_secs_f64().max(1e-9),
        }))?;
    } else {
        if printed < out_bytes.len() {
            stdout.write_all(&out_bytes[printed..])?;
        }
        writeln!(stdout)?;
        tracing::info!(
            "prompt {} tokens in {:.3}s, generated {} tokens at {:.1} tok/s",
            prompt_tokens.len(),
            t_prompt.as_secs_f64(),
            generated,
            generated as f64 / t_gen.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}
