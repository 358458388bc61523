//! Token generation with streaming and stop strings.

use std::time::Instant;

use skillpack_llama::{Context, Sampler, SamplerParams, Token};

use crate::Result;

/// Generation settings.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub stops: Vec<String>,
    pub sampler: SamplerParams,
}

/// A finished generation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_ms: f64,
    pub decode_ms: f64,
    /// `eog`, `stop`, `length`, `cancelled`.
    pub finish: &'static str,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        self.prompt_tokens as f64 / (self.prompt_ms / 1e3).max(1e-9)
    }

    /// Decoded tokens per second.
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens as f64 / (self.decode_ms / 1e3).max(1e-9)
    }
}

/// Evaluates `prompt` from an empty KV cache and samples up to `max_tokens`, calling `on_text`
/// with each new piece of valid UTF-8 text.
pub fn generate(
    ctx: &mut Context<'_>,
    prompt: &[Token],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    generate_until(ctx, prompt, params, |piece| {
        on_text(piece);
        true
    })
}

/// [`generate`], stopping early (finish `cancelled`) as soon as `on_text` returns false — a
/// server's way to stop work for a client that went away.
pub fn generate_until(
    ctx: &mut Context<'_>,
    prompt: &[Token],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    let model = ctx.model();
    if prompt.is_empty() {
        return Err(crate::RunError::Invalid("empty prompt".into()));
    }
    if prompt.len() + params.max_tokens > ctx.n_ctx() {
        return Err(crate::RunError::Invalid(format!(
            "prompt ({} tokens) + max tokens ({}) exceed the context of {} tokens (--ctx-size)",
            prompt.len(),
            params.max_tokens,
            ctx.n_ctx()
        )));
    }
    let mut sampler = Sampler::new(model, &params.sampler);
    ctx.clear_memory();
    let t0 = Instant::now();
    ctx.eval(prompt, 0, false)?;
    let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut bytes: Vec<u8> = Vec::new();
    let mut emitted = 0;
    let mut generated = 0;
    let mut finish = "length";
    while generated < params.max_tokens {
        let token = sampler.sample(ctx, -1)?;
        if model.is_end_of_generation(token) {
            finish = "eog";
            break;
        }
        generated += 1;
        bytes.extend(model.token_to_bytes(token, false));
        let valid = match std::str::from_utf8(&bytes) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        let text = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
        if let Some(at) = params
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            if at > emitted {
                on_text(&text[emitted..at]); // the last piece either way
            }
            bytes.truncate(at);
            emitted = at;
            finish = "stop";
            break;
        }
        // Hold back a tail that could still grow into a stop string.
        let hold = params
            .stops
            .iter()
            .map(|s| s.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        let mut safe = valid.saturating_sub(hold).max(emitted);
        while !text.is_char_boundary(safe) {
            safe -= 1;
        }
        if safe > emitted {
            let go_on = on_text(&text[emitted..safe]);
            emitted = safe;
            if !go_on {
                finish = "cancelled";
                break;
            }
        }
        ctx.eval(&[token], prompt.len() + generated - 1, false)?;
    }
    let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if finish != "stop" && finish != "cancelled" && text.len() > emitted {
        on_text(&text[emitted..]);
    }
    Ok(Generation {
        text,
        prompt_tokens: prompt.len(),
        generated_tokens: generated,
        prompt_ms,
        decode_ms,
        finish,
    })
}
