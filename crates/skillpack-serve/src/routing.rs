//! Every router of a pack with the feature extractors they read, for one thread.

use std::collections::HashMap;
use std::path::Path;

use axum::http::StatusCode;
use skillpack_llama::{Model, Token};
use skillpack_pack::Pack;
use skillpack_route::{FeatureExtractor, FeatureKind, Router};

use crate::api::ApiError;

/// A pack's routers (each checked against the model) and one extractor per feature kind (a
/// mean-hidden extractor owns a llama.cpp context, so this is per thread).
pub struct Routing<'m> {
    routers: HashMap<String, Router>,
    extractors: HashMap<FeatureKind, FeatureExtractor<'m>>,
    skills: Vec<String>,
}

impl<'m> Routing<'m> {
    /// Loads and checks every router of `pack`.
    pub fn new(
        model: &'m Model,
        pack: &Pack,
        model_path: &Path,
        threads: Option<i32>,
    ) -> Result<Self, String> {
        let mut routing = Routing {
            routers: HashMap::new(),
            extractors: HashMap::new(),
            skills: pack.manifest.skills.iter().map(|s| s.id.clone()).collect(),
        };
        for spec in &pack.manifest.routers {
            let router = skillpack_run::load_router(pack, Some(&spec.name), model, model_path)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("router `{}` did not load", spec.name))?;
            let kind = router.config.features;
            if let std::collections::hash_map::Entry::Vacant(slot) = routing.extractors.entry(kind)
            {
                slot.insert(
                    FeatureExtractor::new(model, model_path, kind, threads)
                        .map_err(|e| e.to_string())?,
                );
            }
            routing.routers.insert(spec.name.clone(), router);
        }
        Ok(routing)
    }

    /// One weight per pack skill from router `name` for a tokenized prompt.
    pub fn weights(&mut self, name: &str, tokens: &[Token]) -> Result<Vec<f32>, ApiError> {
        let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e);
        let router = self
            .routers
            .get(name)
            .ok_or_else(|| ApiError::invalid("route", format!("no router `{name}`")))?;
        let extractor = self
            .extractors
            .get_mut(&router.config.features)
            .ok_or_else(|| internal(format!("no feature extractor for router `{name}`")))?;
        let features = extractor
            .features(tokens)
            .map_err(|e| internal(e.to_string()))?;
        router
            .weights_for(&features, None, &self.skills)
            .map_err(|e| internal(e.to_string()))
    }
}

/// Renders (chat) and tokenizes a prompt as `skillpack run` does.
pub fn prompt_tokens(model: &Model, prompt: &crate::plan::Prompt) -> Result<Vec<Token>, ApiError> {
    let internal = |e: skillpack_llama::LlamaError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    let (tokens, field) = match prompt {
        crate::plan::Prompt::Chat(messages) => {
            let text = model
                .apply_chat_template(messages, true)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            (
                model.tokenize(&text, true, true).map_err(internal)?,
                "messages",
            )
        }
        crate::plan::Prompt::Text(text) => (
            model.tokenize(text, true, true).map_err(internal)?,
            "prompt",
        ),
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid(field, "the prompt has no tokens"));
    }
    Ok(tokens)
}
