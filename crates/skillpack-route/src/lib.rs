//! Skill routers (stage 2 of SA-MDKIF): a prompt's features — the base model's last hidden state
//! mean-pooled over the prompt ([`FeatureKind::MeanHidden`], one extra forward pass through
//! llama.cpp) or the mean of its token embeddings ([`FeatureKind::MeanEmbedding`], no forward
//! pass) — go through a small head to a softmax over the pack's skills (plus an optional "no
//! skill" entry), scaled by a gain. Heads are fitted here ([`fit`]: supervised by skill labels,
//! or prototypes for tasks without data); end-to-end training through the model lives in
//! `skillpack-train`.

pub mod features;
pub mod fit;
pub mod router;

pub use features::{FeatureExtractor, FeatureKind, TokenEmbeddings};
pub use router::{Commit, Router, RouterConfig};

/// Errors of routing, naming the file or the mismatch.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Llama(#[from] skillpack_llama::LlamaError),
    #[error(transparent)]
    Convert(#[from] skillpack_convert::ConvertError),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl From<candle_core::Error> for RouteError {
    fn from(e: candle_core::Error) -> Self {
        RouteError::Invalid(skillpack_convert::candle_message(&e))
    }
}

/// Result alias for this crate.
pub type Result<T, E = RouteError> = std::result::Result<T, E>;
