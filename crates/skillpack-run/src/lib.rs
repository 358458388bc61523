//! The runtime: given weights over a pack's skills, apply the weighted sum of their LoRA deltas
//! to a llama.cpp context, and generate.
//!
//! ```rust
//! use std::path::{Path, PathBuf};
//!
//! use skillpack_llama::{ChatMessage, SamplerParams};
//! use skillpack_pack::{synth_pack, SynthSpec, ALL_LINEAR};
//! use skillpack_run::{with_session, GenerateParams, Mode, RunError, SessionOptions};
//!
//! // The tiny random llama of the test fixtures, and a pack of two random skills for it.
//! let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
//!     .map(PathBuf::from)
//!     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let model = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
//! let pack_dir = tempfile::tempdir()?;
//! let spec = SynthSpec {
//!     skills: 2,
//!     rank: 4,
//!     targets: ALL_LINEAR.iter().map(|t| t.to_string()).collect(),
//!     b_std: 0.1,
//!     decay: 0.4,
//!     seed: 7,
//! };
//! synth_pack(pack_dir.path(), &skillpack_convert::GgufInfo::open(&model)?, &spec)?;
//!
//! // Both skills at manual weights, applied as two adapters in one call.
//! let mut options = SessionOptions::new(&model);
//! options.pack = Some(pack_dir.path().to_path_buf());
//! options.skills = Some("s00=0.7,s01=0.3".into());
//! options.mode = Mode::Multi;
//! options.ctx_size = 128;
//! let generation = with_session(&options, |session| {
//!     let prompt = session.prompt_tokens(&[ChatMessage {
//!         role: "user".into(),
//!         content: "What is anemia?".into(),
//!     }])?;
//!     let params = GenerateParams {
//!         max_tokens: 4,
//!         stops: Vec::new(),
//!         sampler: SamplerParams { temperature: 0.0, ..Default::default() },
//!     };
//!     let applied = session
//!         .apply(&prompt, prompt.len() + params.max_tokens)?
//!         .expect("the pack's skills are applied");
//!     assert_eq!(applied.mode, Mode::Multi);
//!     assert_eq!(session.skill_weights(&applied)[0], ("s00".to_string(), 0.7));
//!     assert!(session.describe_applied(Some(&applied)).starts_with("[skills] s00=0.700 s01=0.300"));
//!     session.generate(&prompt, &params, |_piece| {})
//! })?;
//! assert!(generation.generated_tokens <= 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * [`Mode::Multi`]: every skill is loaded once; the active ones are set with their weights in
//!   one `llama_set_adapters_lora` call. Inactive skills cost nothing.
//! * [`Mode::Fused`]: the active skills are concatenated into one adapter per module (optionally
//!   compressed by truncated SVD), built in memory, loaded through `fmemopen` (or an unlinked
//!   temporary file), and cached in a small LRU keyed by the quantized weights.
//! * [`Mode::Auto`]: picks per prompt from measured costs.
//!
//! The KV cache is never reused across two weightings: `Context::set_adapters` clears it
//! whenever the effective adapters or scales change.
//!
//! [`Session`] is what `skillpack run` and `chat` stand on: a model's context with a pack's
//! skills at manual or routed weights, or raw adapters. [`Routing`] holds a pack's routers with
//! their feature extractors for one thread (a server builds one per worker).

mod bench;
mod engine;
mod export;
mod generate;
mod routing;
mod session;
mod weights;

pub use bench::{bench_decode, DecodeBench, DecodeBenchOptions, DecodeBenchRow};
pub use engine::{Applied, FusedLoad, Mode, SkillEngine};
pub use export::{
    export_weighting, merge_weighting, resolve_weighting, ExportedAdapter, MergedModel,
    ResolvedWeighting, WeightingSource,
};
pub use generate::{generate, generate_until, GenerateParams, Generation};
pub use routing::{load_router, route_user_message, Routing};
pub use session::{with_session, Session, SessionOptions};
pub use weights::{parse_skill_weights, select_active, Selection, MAX_SKILL_WEIGHT};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Llama(#[from] skillpack_llama::LlamaError),
    #[error(transparent)]
    Pack(#[from] skillpack_pack::PackError),
    #[error(transparent)]
    Convert(#[from] skillpack_convert::ConvertError),
    #[error(transparent)]
    Route(#[from] skillpack_route::RouteError),
    /// A request named a router that is not loaded.
    #[error("no router `{0}`")]
    UnknownRouter(String),
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = RunError> = std::result::Result<T, E>;
