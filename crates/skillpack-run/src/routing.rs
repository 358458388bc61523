//! Loading a pack's router for a model, with every check done before it routes anything.

use std::path::Path;

use skillpack_llama::{ChatMessage, Model};
use skillpack_pack::Pack;
use skillpack_route::{FeatureExtractor, Router};

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
    let name = match name {
        Some(n) => n.to_string(),
        None if pack.manifest.defaults.router.is_empty() => return Ok(None),
        None => pack.manifest.defaults.router.clone(),
    };
    let spec = pack.router(&name).ok_or_else(|| {
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
    Ok(Some(router))
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
