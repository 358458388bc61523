//! Loading a pack's routers for a model, with every check done before they route anything, and
//! routing prompts through them.

use std::collections::HashMap;
use std::path::Path;

use skillpack_llama::{ChatMessage, Model, Token};
use skillpack_pack::Pack;
use skillpack_route::{FeatureExtractor, FeatureKind, Router};

use crate::{Result, RunError};

/// Loads router `name` of `pack` (`None`: the pack's default router; `Ok(None)` when the pack
/// has none) and checks it against the model loaded from `model_path`: width, base fingerprint
/// and the pack's skill list.
pub fn load_router(
    pack: &Pack,
    name: Option<&str>,
    model: &Model,
    model_path: &Path,
) -> Result<Option<Router>> {
    match name {
        Some(name) => load_named_router(pack, name, model, model_path).map(Some),
        None if pack.manifest.defaults.router.is_empty() => Ok(None),
        None => {
            load_named_router(pack, &pack.manifest.defaults.router, model, model_path).map(Some)
        }
    }
}

/// [`load_router`] for a router given by name.
fn load_named_router(pack: &Pack, name: &str, model: &Model, model_path: &Path) -> Result<Router> {
    let spec = pack.router(name).ok_or_else(|| {
        let names: Vec<&str> = pack.manifest.routers.iter().map(|r| r.name.as_str()).collect();
        RunError::Invalid(if names.is_empty() {
            format!("the pack has no router `{name}`: it has no routers (train one with `skillpack router train`)")
        } else {
            format!("the pack has no router `{name}` (routers: {})", names.join(", "))
        })
    })?;
    let router = Router::load(&pack.dir.join(&spec.file))?;
    let skills: Vec<String> = pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
    let fingerprint = skillpack_convert::GgufInfo::open(model_path)?.fingerprint();
    router
        .check(model.n_embd(), &fingerprint, &skills)
        .map_err(|m| RunError::Invalid(format!("{}: {m}", spec.file)))?;
    Ok(router)
}

/// The weights `router` gives one user message (rendered in the model's prompt format with the
/// generation prompt, as `skillpack run` renders a prompt without a system message), one per
/// skill of `skills`, before top-k.
pub fn route_user_message(
    model: &Model,
    router: &Router,
    extractor: &mut FeatureExtractor<'_>,
    message: &str,
    skills: &[String],
) -> Result<Vec<f32>> {
    let text = model.apply_chat_template(
        &[ChatMessage {
            role: "user".into(),
            content: message.to_string(),
        }],
        true,
    )?;
    let tokens = model.tokenize(&text, true, true)?;
    Ok(router.weights_for(&extractor.features(&tokens)?, None, skills)?)
}

/// Routers of a pack, each checked against the model, with one feature extractor per feature
/// kind they read. A mean-hidden extractor owns a llama.cpp context, so a `Routing` serves one
/// thread: a server builds one per worker.
pub struct Routing<'m> {
    routers: HashMap<String, Router>,
    extractors: HashMap<FeatureKind, FeatureExtractor<'m>>,
    /// The pack's skill ids, in pack order: the order of every weight vector.
    skills: Vec<String>,
}

impl<'m> Routing<'m> {
    /// Loads and checks every router of `pack` for `model` (loaded from `model_path`);
    /// `threads` are the CPU threads of the feature extractors (None: llama.cpp's choice).
    pub fn all(
        model: &'m Model,
        pack: &Pack,
        model_path: &Path,
        threads: Option<i32>,
    ) -> Result<Self> {
        let names: Vec<&str> = pack
            .manifest
            .routers
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        Self::with_routers(model, pack, &names, model_path, threads)
    }

    /// Loads and checks the routers `names` of `pack` (an unknown name is an error that lists
    /// the pack's routers).
    pub fn with_routers(
        model: &'m Model,
        pack: &Pack,
        names: &[&str],
        model_path: &Path,
        threads: Option<i32>,
    ) -> Result<Self> {
        let mut routing = Routing {
            routers: HashMap::new(),
            extractors: HashMap::new(),
            skills: pack.manifest.skills.iter().map(|s| s.id.clone()).collect(),
        };
        for name in names {
            let router = load_named_router(pack, name, model, model_path)?;
            let kind = router.config.features;
            // Routers reading the same features share one extractor (and its context).
            if let std::collections::hash_map::Entry::Vacant(slot) = routing.extractors.entry(kind)
            {
                slot.insert(FeatureExtractor::new(model, model_path, kind, threads)?);
            }
            routing.routers.insert(name.to_string(), router);
        }
        Ok(routing)
    }

    /// Whether router `name` is loaded.
    pub fn has_router(&self, name: &str) -> bool {
        self.routers.contains_key(name)
    }

    /// One weight per pack skill (in pack order, before top-k) from router `name` for a
    /// tokenized prompt, at softmax `temperature` (None: the router's own).
    /// [`RunError::UnknownRouter`] when no router of that name is loaded.
    pub fn weights(
        &mut self,
        name: &str,
        tokens: &[Token],
        temperature: Option<f32>,
    ) -> Result<Vec<f32>> {
        let router = self
            .routers
            .get(name)
            .ok_or_else(|| RunError::UnknownRouter(name.to_string()))?;
        let extractor = self
            .extractors
            .get_mut(&router.config.features)
            .ok_or_else(|| {
                RunError::Invalid(format!("no feature extractor for router `{name}`"))
            })?;
        let features = extractor.features(tokens)?;
        Ok(router.weights_for(&features, temperature, &self.skills)?)
    }
}
