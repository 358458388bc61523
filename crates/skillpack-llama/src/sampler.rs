//! llama.cpp's sampler chain.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use crate::{Context, Model, Result, Token};

/// Sampling settings. `temperature <= 0` means greedy.
#[derive(Debug, Clone)]
pub struct SamplerParams {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    /// Repetition penalty (1.0 = off) over the last `repeat_last_n` tokens.
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub seed: u32,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A llama.cpp sampler chain, freed on drop.
pub struct Sampler {
    ptr: NonNull<sys::llama_sampler>,
}

// SAFETY: the chain is plain owned state; it is never shared.
unsafe impl Send for Sampler {}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain owns the samplers added to it; freed once.
        unsafe { sys::llama_sampler_free(self.ptr.as_ptr()) }
    }
}

impl Sampler {
    /// Builds penalties → top-k → top-p → min-p → temperature → dist (or greedy).
    pub fn new(model: &Model, params: &SamplerParams) -> Self {
        let n_vocab = model.n_vocab() as i32;
        // SAFETY: each init returns an owned sampler that the chain takes over.
        unsafe {
            let chain =
                sys::llama_sampler_chain_init(sys::llama_sampler_chain_params { no_perf: true });
            let add = |s: *mut sys::llama_sampler| sys::llama_sampler_chain_add(chain, s);
            if params.repeat_penalty != 1.0 {
                add(sys::llama_sampler_init_penalties(
                    n_vocab,
                    params.repeat_last_n,
                    params.repeat_penalty,
                    0.0,
                    0.0,
                ));
            }
            if params.temperature <= 0.0 {
                add(sys::llama_sampler_init_greedy());
            } else {
                if params.top_k > 0 {
                    add(sys::llama_sampler_init_top_k(params.top_k));
                }
                if params.top_p < 1.0 {
                    add(sys::llama_sampler_init_top_p(params.top_p, 1));
                }
                if params.min_p > 0.0 {
                    add(sys::llama_sampler_init_min_p(params.min_p, 1));
                }
                add(sys::llama_sampler_init_temp(params.temperature));
                add(sys::llama_sampler_init_dist(params.seed));
            }
            Sampler {
                ptr: NonNull::new(chain).expect("llama_sampler_chain_init never returns null"),
            }
        }
    }

    /// Samples from output row `idx` of the context's last decode and accepts the token.
    pub fn sample(&mut self, ctx: &Context<'_>, idx: i32) -> Result<Token> {
        ctx.logits(idx)?; // validates the row exists
                          // SAFETY: valid chain and context; the row exists.
        let token = unsafe { sys::llama_sampler_sample(self.ptr.as_ptr(), ctx.as_ptr(), idx) };
        Ok(token)
    }

    /// Forgets accepted tokens (penalty history) and reseeds nothing.
    pub fn reset(&mut self) {
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_reset(self.ptr.as_ptr()) }
    }
}
