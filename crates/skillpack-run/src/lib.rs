//! The runtime: given weights over a pack's skills, apply the weighted sum of their LoRA deltas
//! to a llama.cpp context, and generate.
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

mod engine;
mod generate;
mod routing;
mod weights;

pub use engine::{Applied, FusedLoad, Mode, SkillEngine};
pub use generate::{generate, generate_until, GenerateParams, Generation};
pub use routing::{load_router, route_user_message};
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
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = RunError> = std::result::Result<T, E>;
