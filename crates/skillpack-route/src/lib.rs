//! Skill routers (stage 2 of SA-MDKIF): a prompt's features go through a small head to weights
//! over the pack's skills. Here a supervised head is fitted on the tiny test llama's token
//! embeddings of requests of two skills, then routes a request it has not seen:
//!
//! ```rust
//! use std::path::{Path, PathBuf};
//!
//! use skillpack_llama::{Backend, Model, ModelParams};
//! use skillpack_route::training::{fit_supervised, one_hot, standardize_rows, HeldOut};
//! use skillpack_route::{fit, Commit, FeatureExtractor, FeatureKind, Router, RouterConfig};
//!
//! let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
//!     .map(PathBuf::from)
//!     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let model_path = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
//! let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
//! // Mean token embeddings: a table lookup, no forward pass.
//! let kind = FeatureKind::MeanEmbedding;
//! let mut extractor = FeatureExtractor::new(&model, &model_path, kind, None)?;
//! let mut features_of = |text: &str| extractor.features(&model.tokenize(text, true, false)?);
//!
//! let skills = ["ner".to_string(), "ts".to_string()];
//! let requests = [
//!     (0, "List the chemicals mentioned in the text."),
//!     (0, "List the diseases mentioned in the text."),
//!     (0, "List the chemicals and the diseases in the abstract."),
//!     (0, "Which chemicals does the text mention? List them."),
//!     (0, "List every disease named in the abstract."),
//!     (1, "Summarize the question in one short sentence."),
//!     (1, "Summarize this question briefly."),
//!     (1, "Write a one-sentence summary of the question."),
//!     (1, "Summarize the patient's question in a sentence."),
//!     (1, "Give a short summary of this question."),
//! ];
//! let labels: Vec<usize> = requests.iter().map(|(k, _)| *k).collect();
//! let features = requests
//!     .iter()
//!     .map(|(_, text)| features_of(text))
//!     .collect::<Result<Vec<_>, _>>()?;
//! // Standardized features, one-hot labels, every fifth request held out.
//! let (mean, std) = fit::standardization(&features);
//! let inputs = standardize_rows(&features, &mean, &std);
//! let held_out = HeldOut::from_phrasings(&[""; 10]);
//! let fitted = fit_supervised(&inputs, &one_hot(&labels, 2), &labels, &held_out);
//! assert_eq!(fitted.head.accuracy, 1.0, "{fitted}");
//!
//! let router = Router {
//!     config: RouterConfig {
//!         name: "general".into(),
//!         kind: "linear".into(),
//!         method: "supervised".into(),
//!         task: String::new(),
//!         features: kind,
//!         dim: kind.width(model.n_embd()),
//!         skills: skills.to_vec(),
//!         none_entry: false,
//!         gain: 1.0,
//!         temperature: 1.0,
//!         commit: Commit::Softmax,
//!         normalize_input: false,
//!         base_fingerprint: String::new(),
//!         training: serde_json::Value::Null,
//!     },
//!     feature_mean: mean,
//!     feature_std: std,
//!     weight: fitted.head.weight,
//!     bias: fitted.head.bias,
//! };
//! let weights = router.skill_weights(&features_of("List the diseases named in the text.")?, None)?;
//! assert_eq!(skillpack_route::training::top_skill(&weights).0, "ner", "{weights:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Features are the base model's last hidden state mean-pooled over the prompt
//! ([`FeatureKind::MeanHidden`], one extra forward pass through llama.cpp) or pooled token
//! embeddings ([`FeatureKind::MeanEmbedding`] and the segment kinds, no forward pass). A head
//! gives a softmax over the pack's skills (plus an optional "no skill" entry), scaled by a gain.
//! Heads are fitted here ([`fit`]; [`training`] holds the rest of the model-free training math:
//! labels, held-out rows, calibration, warm starts, candidate choice); measuring features,
//! losses and validation scores through llama.cpp is `skillpack_eval::stage2`, and end-to-end
//! training through the model lives in `skillpack-train`.

pub mod features;
pub mod fit;
pub mod router;
pub mod training;

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
