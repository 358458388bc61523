//! Flags that `run`, `chat` and `eval` share, and their conversion to the library's options.

use std::path::PathBuf;

use skillpack_llama::{ChatMessage, SamplerParams};
use skillpack_run::{GenerateParams, Mode, SessionOptions};

/// The model, the skill pack and the context: what every command running the model takes.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// GGUF model (default: models/SmolLM2-135M-Instruct.Q4_1.gguf from setup).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Skill pack directory.
    #[arg(long)]
    pub pack: Option<PathBuf>,
    /// Manual skill weights, e.g. `ner=0.7,re=0.3`.
    #[arg(long)]
    pub skills: Option<String>,
    /// Run the base model without any skill.
    #[arg(long)]
    pub no_skills: bool,
    /// How weighted skills are applied: multi, fused, fused-compressed, auto.
    #[arg(long, default_value = "auto")]
    pub mode: Mode,
    /// CPU threads (default: llama.cpp's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Context length.
    #[arg(long, default_value_t = 2048)]
    pub ctx_size: u32,
    /// Model layers offloaded to the GPU (0: none, -1: all); needs a build with `--features gpu`
    /// (scripts/build-gpu.sh).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gpu_layers: i32,
}

impl ModelArgs {
    /// `--model`, or the installed default model.
    pub fn model_path(&self) -> anyhow::Result<PathBuf> {
        match &self.model {
            Some(path) => Ok(path.clone()),
            None => super::default_model(),
        }
    }
}

/// Model, skills and sampling options.
#[derive(clap::Args, Clone)]
pub struct SessionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Route with this router of the pack (default: the pack's default router).
    #[arg(long)]
    pub router: Option<String>,
    /// Router softmax temperature (default: the router's).
    #[arg(long)]
    pub router_temperature: Option<f32>,
    /// Print the skill weights and how they were applied (stderr).
    #[arg(long)]
    pub show_weights: bool,
    /// Fraction of the fused delta's Frobenius energy kept by fused-compressed.
    #[arg(long, default_value_t = 0.999)]
    pub energy: f64,
    /// Keep at most this many skills (default: the pack's).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Drop skills below this weight (default: the pack's).
    #[arg(long)]
    pub min_weight: Option<f32>,
    /// A GGUF LoRA adapter with an optional scale, `FILE[:SCALE]`; repeatable (without --pack).
    #[arg(long = "lora", value_name = "FILE[:SCALE]")]
    pub loras: Vec<String>,
    /// System message.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k_tokens: i32,
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
}

impl SessionArgs {
    /// The library's session options (the default model when --model is omitted).
    pub fn options(&self) -> anyhow::Result<SessionOptions> {
        Ok(SessionOptions {
            model: self.model.model_path()?,
            pack: self.model.pack.clone(),
            skills: self.model.skills.clone(),
            no_skills: self.model.no_skills,
            router: self.router.clone(),
            router_temperature: self.router_temperature,
            mode: self.model.mode,
            energy: self.energy,
            top_k: self.top_k,
            min_weight: self.min_weight,
            loras: self.loras.clone(),
            ctx_size: self.model.ctx_size,
            gpu_layers: self.model.gpu_layers,
            threads: self.model.threads,
        })
    }

    pub fn generate_params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.max_tokens,
            stops: self.stops.clone(),
            sampler: SamplerParams {
                temperature: self.temp,
                top_k: self.top_k_tokens,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: 64,
                seed: self.seed,
            },
        }
    }

    pub fn system_message(&self) -> Option<ChatMessage> {
        self.system.as_ref().map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        })
    }
}
