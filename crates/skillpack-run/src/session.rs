//! A session: one model and context with the skills to apply to every prompt — a pack's skills
//! at manual weights or at the weights its router gives each prompt, raw GGUF LoRA adapters, or
//! none. What `skillpack run` and `skillpack chat` stand on.

use std::path::{Path, PathBuf};

use skillpack_llama::{
    Backend, ChatMessage, Context, ContextParams, LoraAdapter, Model, ModelParams, Token,
};
use skillpack_pack::Pack;

use crate::{
    generate, parse_skill_weights, Applied, GenerateParams, Generation, Mode, Result, Routing,
    RunError, SkillEngine,
};

/// What a [`Session`] loads and how it applies skills. Error messages name the command-line
/// flags these fields stand for (`--pack`, `--skills`, ...).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The GGUF model.
    pub model: PathBuf,
    /// A skill pack directory, checked against the model.
    pub pack: Option<PathBuf>,
    /// Manual weights for the pack's skills, `id=weight,id=weight` (instead of its router).
    pub skills: Option<String>,
    /// The base model only: neither the pack's skills nor any adapter is applied.
    pub no_skills: bool,
    /// The pack router that weights each prompt (None: the pack's default router).
    pub router: Option<String>,
    /// Router softmax temperature (None: the router's own).
    pub router_temperature: Option<f32>,
    /// How weighted skills are applied.
    pub mode: Mode,
    /// Fraction of the fused delta's Frobenius energy kept by [`Mode::FusedCompressed`].
    pub energy: f64,
    /// Keep at most this many skills (None: the pack's setting).
    pub top_k: Option<usize>,
    /// Drop skills below this weight (None: the pack's setting).
    pub min_weight: Option<f32>,
    /// GGUF LoRA adapters applied as they are, each `FILE[:SCALE]` (scale 1 when omitted);
    /// only without a pack.
    pub loras: Vec<String>,
    /// Context length in tokens.
    pub ctx_size: u32,
    /// CPU threads (None: llama.cpp's choice).
    pub threads: Option<i32>,
    /// Layers offloaded to the GPU (0: none, -1: all); needs a `gpu` build.
    pub gpu_layers: i32,
}

impl SessionOptions {
    /// The base model at `model` with the command line's defaults: no pack, no adapters,
    /// [`Mode::Auto`], energy 0.999, a 2048-token context.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        SessionOptions {
            model: model.into(),
            pack: None,
            skills: None,
            no_skills: false,
            router: None,
            router_temperature: None,
            mode: Mode::Auto,
            energy: 0.999,
            top_k: None,
            min_weight: None,
            loras: Vec::new(),
            ctx_size: 2048,
            threads: None,
            gpu_layers: 0,
        }
    }

    /// The combinations that cannot work, refused before anything loads.
    fn check(&self) -> Result<()> {
        if self.pack.is_some() && !self.loras.is_empty() {
            return Err(RunError::Invalid(
                "use either --pack or --lora, not both".into(),
            ));
        }
        if self.pack.is_none() && self.skills.is_some() {
            return Err(RunError::Invalid("--skills needs --pack".into()));
        }
        Ok(())
    }
}

/// `FILE[:SCALE]`: a trailing `:SCALE` counts only when it parses as a number, so paths with
/// colons still work.
fn parse_lora_spec(spec: &str) -> (PathBuf, f32) {
    if let Some((path, scale)) = spec.rsplit_once(':') {
        if let Ok(scale) = scale.parse::<f32>() {
            return (PathBuf::from(path), scale);
        }
    }
    (PathBuf::from(spec), 1.0)
}

/// A model's context with the skills to apply to each prompt.
pub struct Session<'m> {
    model: &'m Model,
    ctx: Context<'m>,
    engine: Option<SkillEngine<'m>>,
    /// One weight per pack skill: manual, or the last prompt's routed weights. None for the base
    /// model and raw adapters.
    weights: Option<Vec<f32>>,
    /// The router that weights each prompt, by name.
    routing: Option<(Routing<'m>, String)>,
    loras: Vec<(LoraAdapter<'m>, f32)>,
    options: SessionOptions,
}

/// Loads the model of `options`, builds a [`Session`] on it and runs `f` with it (the session
/// borrows the model, which lives for the call).
pub fn with_session<R, E: From<RunError>>(
    options: &SessionOptions,
    f: impl FnOnce(&mut Session<'_>) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    options.check()?;
    let params = ModelParams {
        n_gpu_layers: options.gpu_layers,
        ..ModelParams::default()
    };
    let model = Model::load(Backend::get(), &options.model, &params).map_err(RunError::from)?;
    let mut session = Session::new(&model, options)?;
    f(&mut session)
}

impl<'m> Session<'m> {
    /// A session on `model` (loaded from `options.model`): its context, the pack (checked
    /// against the model) with its manual weights or router, or the raw adapters.
    pub fn new(model: &'m Model, options: &SessionOptions) -> Result<Self> {
        options.check()?;
        let ctx = Context::new(
            model,
            &ContextParams {
                n_ctx: options.ctx_size,
                n_threads: options.threads,
                ..Default::default()
            },
        )?;
        let mut session = Session {
            model,
            ctx,
            engine: None,
            weights: None,
            routing: None,
            loras: Vec::new(),
            options: options.clone(),
        };
        if let Some(dir) = &options.pack {
            let engine = load_engine(model, dir, options)?;
            if !options.no_skills {
                match &options.skills {
                    Some(spec) => {
                        session.weights = Some(parse_skill_weights(spec, &engine.pack().manifest)?)
                    }
                    None => session.routing = Some(load_routing(model, engine.pack(), options)?),
                }
            }
            session.engine = Some(engine);
        } else if !options.no_skills {
            for spec in &options.loras {
                let (path, scale) = parse_lora_spec(spec);
                session
                    .loras
                    .push((LoraAdapter::load(model, &path)?, scale));
            }
        }
        Ok(session)
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// The pack's skill engine, when a pack is loaded.
    pub fn engine(&self) -> Option<&SkillEngine<'m>> {
        self.engine.as_ref()
    }

    /// The loaded pack.
    pub fn pack(&self) -> Option<&Pack> {
        self.engine.as_ref().map(|e| e.pack())
    }

    /// The context length in tokens.
    pub fn n_ctx(&self) -> usize {
        self.ctx.n_ctx()
    }

    /// Sets manual weights for the pack's skills from `id=weight,...` (a router, when the
    /// session has one, still weights the next prompt).
    pub fn set_skill_weights(&mut self, spec: &str) -> Result<()> {
        let engine = self
            .engine
            .as_ref()
            .ok_or_else(|| RunError::Invalid("no pack loaded".into()))?;
        self.weights = Some(parse_skill_weights(spec, &engine.pack().manifest)?);
        Ok(())
    }

    /// Renders `messages` with the model's prompt format (with the generation prompt) and
    /// tokenizes them.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<Token>> {
        let text = self.model.apply_chat_template(messages, true)?;
        Ok(self.model.tokenize(&text, true, true)?)
    }

    /// Sets the session's skills on the context for `prompt` and a generation of about
    /// `expected_tokens` in all, routing the prompt when the pack's router decides the weights.
    /// Returns how the pack's skills were applied; None when the base model or raw adapters run.
    pub fn apply(&mut self, prompt: &[Token], expected_tokens: usize) -> Result<Option<Applied>> {
        if let Some((routing, name)) = &mut self.routing {
            self.weights = Some(routing.weights(name, prompt, self.options.router_temperature)?);
        }
        match (&mut self.engine, &self.weights) {
            (Some(engine), Some(weights)) => {
                let applied =
                    engine.apply(&mut self.ctx, weights, self.options.mode, expected_tokens)?;
                tracing::info!("skills applied as {:?}: {}", applied.mode, applied.reason);
                Ok(Some(applied))
            }
            _ => {
                let adapters: Vec<(&LoraAdapter<'m>, f32)> =
                    self.loras.iter().map(|(a, s)| (a, *s)).collect();
                self.ctx.set_adapters(&adapters)?;
                Ok(None)
            }
        }
    }

    /// The active skills of `applied` by id, strongest first.
    pub fn skill_weights(&self, applied: &Applied) -> Vec<(String, f32)> {
        match &self.engine {
            Some(engine) => engine.named_weights(&applied.selection),
            None => Vec::new(),
        }
    }

    /// One line on what [`Session::apply`] set: `[skills] ner=0.700 qa=0.300 via Fused (...)`,
    /// the raw adapters as given, or `none (base model)`.
    pub fn describe_applied(&self, applied: Option<&Applied>) -> String {
        match applied {
            Some(applied) => {
                let names: Vec<String> = self
                    .skill_weights(applied)
                    .iter()
                    .map(|(id, w)| format!("{id}={w:.3}"))
                    .collect();
                format!(
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
                )
            }
            None if self.loras.is_empty() => "[skills] none (base model)".to_string(),
            None => format!("[skills] {}", self.options.loras.join(" ")),
        }
    }

    /// Generates from `prompt` under the skills last applied, calling `on_text` with each new
    /// piece of text.
    pub fn generate(
        &mut self,
        prompt: &[Token],
        params: &GenerateParams,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        generate(&mut self.ctx, prompt, params, on_text)
    }
}

/// The pack at `dir`, checked against the model, in an engine with the session's settings.
fn load_engine<'m>(
    model: &'m Model,
    dir: &Path,
    options: &SessionOptions,
) -> Result<SkillEngine<'m>> {
    let pack = Pack::open(dir)?;
    pack.check(&skillpack_convert::GgufInfo::open(&options.model)?)?;
    let mut engine = SkillEngine::new(model, pack)?;
    engine.energy = options.energy;
    if let Some(k) = options.top_k {
        engine.top_k = k;
    }
    if let Some(w) = options.min_weight {
        engine.min_weight = w;
    }
    Ok(engine)
}

/// The router of `options` (or the pack's default) with its feature extractor.
fn load_routing<'m>(
    model: &'m Model,
    pack: &Pack,
    options: &SessionOptions,
) -> Result<(Routing<'m>, String)> {
    let name =
        match &options.router {
            Some(name) => name.clone(),
            None if pack.manifest.defaults.router.is_empty() => return Err(RunError::Invalid(
                "the pack has no router: give weights with --skills SKILL=W,... or use --no-skills"
                    .into(),
            )),
            None => pack.manifest.defaults.router.clone(),
        };
    let routing = Routing::with_routers(model, pack, &[&name], &options.model, options.threads)?;
    Ok((routing, name))
}
