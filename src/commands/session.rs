//! What `run` and `chat` share: the model, the pack and its weights, sampling, the context.

use std::path::PathBuf;

use anyhow::bail;
use skillpack_llama::{
    Backend, ChatMessage, Context, ContextParams, LoraAdapter, Model, ModelParams, SamplerParams,
};
use skillpack_pack::Pack;
use skillpack_run::{parse_skill_weights, Applied, GenerateParams, Mode, SkillEngine};

/// Model, skills and sampling options.
#[derive(clap::Args, Clone)]
pub struct SessionArgs {
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
    /// Route with this router of the pack (default: the pack's default router).
    #[arg(long)]
    pub router: Option<String>,
    /// Router softmax temperature (default: the router's).
    #[arg(long)]
    pub router_temperature: Option<f32>,
    /// Print the skill weights and how they were applied (stderr).
    #[arg(long)]
    pub show_weights: bool,
    /// How weighted skills are applied: multi, fused, fused-compressed, auto.
    #[arg(long, default_value = "auto")]
    pub mode: Mode,
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
    /// CPU threads (default: llama.cpp's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Context length.
    #[arg(long, default_value_t = 2048)]
    pub ctx_size: u32,
}

impl SessionArgs {
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

fn parse_lora(spec: &str) -> (PathBuf, f32) {
    if let Some((path, scale)) = spec.rsplit_once(':') {
        if let Ok(s) = scale.parse::<f32>() {
            return (PathBuf::from(path), s);
        }
    }
    (PathBuf::from(spec), 1.0)
}

/// A loaded model with its context, and the skills to apply.
pub struct Session<'m> {
    pub model: &'m Model,
    pub ctx: Context<'m>,
    pub engine: Option<SkillEngine<'m>>,
    /// One weight per pack skill (None: base model, raw --lora adapters, or routed).
    pub weights: Option<Vec<f32>>,
    /// The router and its feature extractor, when the weights come per prompt.
    pub router: Option<(
        skillpack_route::Router,
        skillpack_route::FeatureExtractor<'m>,
    )>,
    loras: Vec<(LoraAdapter<'m>, f32)>,
    args: SessionArgs,
}

/// Loads the model named by `args` and runs `f` with a ready session.
pub fn with_session<R>(
    args: &SessionArgs,
    f: impl FnOnce(&mut Session<'_>) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    if args.pack.is_some() && !args.loras.is_empty() {
        bail!("use either --pack or --lora, not both");
    }
    let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let ctx = Context::new(
        &model,
        &ContextParams {
            n_ctx: args.ctx_size,
            n_threads: args.threads,
            ..Default::default()
        },
    )?;
    let mut session = Session {
        model: &model,
        ctx,
        engine: None,
        weights: None,
        router: None,
        loras: Vec::new(),
        args: args.clone(),
    };
    if let Some(dir) = &args.pack {
        let pack = Pack::open(dir)?;
        pack.check(&skillpack_convert::GgufInfo::open(&model_path)?)?;
        let mut engine = SkillEngine::new(&model, pack)?;
        engine.energy = args.energy;
        if let Some(k) = args.top_k {
            engine.top_k = k;
        }
        if let Some(w) = args.min_weight {
            engine.min_weight = w;
        }
        if !args.no_skills {
            match &args.skills {
                Some(spec) => {
                    session.weights = Some(parse_skill_weights(spec, &engine.pack().manifest)?);
                }
                None => {
                    let router = skillpack_run::load_router(
                        engine.pack(),
                        args.router.as_deref(),
                        &model,
                        &model_path,
                    )?
                    .ok_or_else(|| {
                        anyhow::anyhow!("the pack has no router: give weights with --skills SKILL=W,... or use --no-skills")
                    })?;
                    let extractor = skillpack_route::FeatureExtractor::new(
                        &model,
                        &model_path,
                        router.config.features,
                        args.threads,
                    )?;
                    session.router = Some((router, extractor));
                }
            }
        }
        session.engine = Some(engine);
    } else if args.skills.is_some() {
        bail!("--skills needs --pack");
    }
    if !args.no_skills {
        for spec in &args.loras {
            let (path, scale) = parse_lora(spec);
            session
                .loras
                .push((LoraAdapter::load(&model, &path)?, scale));
        }
    }
    f(&mut session)
}

impl<'m> Session<'m> {
    /// Sets the session's skills on the context for `prompt` and a generation of about
    /// `expected_tokens` (routing the prompt when the pack's router decides the weights).
    pub fn apply(
        &mut self,
        prompt: &[skillpack_llama::Token],
        expected_tokens: usize,
    ) -> anyhow::Result<Option<Applied>> {
        if let (Some((router, extractor)), Some(engine)) = (&mut self.router, &self.engine) {
            let skills: Vec<String> = engine
                .pack()
                .manifest
                .skills
                .iter()
                .map(|s| s.id.clone())
                .collect();
            let features = extractor.features(prompt)?;
            self.weights =
                Some(router.weights_for(&features, self.args.router_temperature, &skills)?);
        }
        match (&mut self.engine, &self.weights) {
            (Some(engine), Some(weights)) => {
                let applied =
                    engine.apply(&mut self.ctx, weights, self.args.mode, expected_tokens)?;
                tracing::info!("skills applied as {:?}: {}", applied.mode, applied.reason);
                if self.args.show_weights {
                    let names: Vec<String> = applied
                        .selection
                        .active
                        .iter()
                        .map(|(i, w)| format!("{}={w:.3}", engine.pack().manifest.skills[*i].id))
                        .collect();
                    eprintln!(
                        "[skills] {} via {:?} ({}){}",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(" ")
                        },
                        applied.mode,
                        applied.reason,
                        if applied.build_ms > 0.0 {
                            format!(", built in {:.1} ms", applied.build_ms)
                        } else {
                            String::new()
                        }
                    );
                }
                Ok(Some(applied))
            }
            _ => {
                let set: Vec<(&LoraAdapter<'m>, f32)> =
                    self.loras.iter().map(|(a, s)| (a, *s)).collect();
                self.ctx.set_adapters(&set)?;
                if self.args.show_weights {
                    eprintln!(
                        "[skills] {}",
                        if set.is_empty() {
                            "none (base model)".to_string()
                        } else {
                            self.args.loras.join(" ")
                        }
                    );
                }
                Ok(None)
            }
        }
    }

    /// Renders `messages` with the model's chat template and tokenizes them.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> anyhow::Result<Vec<i32>> {
        let text = self.model.apply_chat_template(messages, true)?;
        Ok(self.model.tokenize(&text, true, true)?)
    }
}
