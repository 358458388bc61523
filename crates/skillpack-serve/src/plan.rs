//! From a parsed request to what a slot must do: the prompt, sampling, and which skills —
//! everything that can be refused without the model is refused here, naming the field.

use axum::http::StatusCode;
use skillpack_llama::{ChatMessage, Model, SamplerParams, Token};
use skillpack_pack::Manifest;
use skillpack_run::{GenerateParams, MAX_SKILL_WEIGHT};

use crate::api::{
    content_text, ApiError, ChatRequest, CommonFields, CompletionRequest, SkillsField,
};

/// What to feed the model.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, tokenized as is.
    Text(String),
}

/// Which skills a request runs with.
#[derive(Debug, Clone, PartialEq)]
pub enum SkillChoice {
    /// The base model alone.
    None,
    /// One weight per pack skill, as given (then the pack's top-k / min-weight selection).
    Manual(Vec<f32>),
    /// Weights from this router of the pack, per prompt.
    Route(String),
}

impl SkillChoice {
    /// `manual`, `none` or `router:<name>`, for reports and metrics.
    pub fn label(&self) -> String {
        match self {
            SkillChoice::None => "none".into(),
            SkillChoice::Manual(_) => "manual".into(),
            SkillChoice::Route(r) => format!("router:{r}"),
        }
    }
}

/// Server-wide limits and defaults a request is checked against.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `max_tokens` accepted.
    pub max_tokens: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Route used when a request says neither `skills` nor `route` (`auto`, `none`, a name).
    pub default_route: String,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tokens: 1024,
            default_max_tokens: 256,
            default_route: "auto".into(),
        }
    }
}

/// A checked request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub prompt: Prompt,
    pub params: GenerateParams,
    pub skills: SkillChoice,
    pub stream: bool,
}

/// The skills part of the pack a server runs with (none: base model only).
#[derive(Debug, Clone, Default)]
pub struct PackView {
    pub skills: Vec<String>,
    pub routers: Vec<String>,
    pub default_router: String,
}

impl PackView {
    /// The view of a manifest.
    pub fn of(manifest: &Manifest) -> Self {
        PackView {
            skills: manifest.skills.iter().map(|s| s.id.clone()).collect(),
            routers: manifest.routers.iter().map(|r| r.name.clone()).collect(),
            default_router: manifest.defaults.router.clone(),
        }
    }
}

/// Checks a chat request.
pub fn plan_chat(req: ChatRequest, pack: &PackView, limits: &Limits) -> Result<Plan, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer"
        ) {
            return Err(ApiError::invalid(
                &format!("messages[{i}].role"),
                format!("unknown role `{}` (system, user, assistant)", m.role),
            ));
        }
        let role = if m.role == "developer" {
            "system"
        } else {
            &m.role
        };
        messages.push(ChatMessage {
            role: role.to_string(),
            content: content_text(m, i)?,
        });
    }
    plan_common(Prompt::Chat(messages), req.common, pack, limits)
}

/// Checks a completion request.
pub fn plan_completion(
    req: CompletionRequest,
    pack: &PackView,
    limits: &Limits,
) -> Result<Plan, ApiError> {
    let mut prompts = req.prompt.into_vec();
    if prompts.len() != 1 {
        return Err(ApiError::invalid(
            "prompt",
            format!("one prompt per request ({} given)", prompts.len()),
        ));
    }
    let text = prompts.remove(0);
    if text.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    plan_common(Prompt::Text(text), req.common, pack, limits)
}

fn plan_common(
    prompt: Prompt,
    c: CommonFields,
    pack: &PackView,
    limits: &Limits,
) -> Result<Plan, ApiError> {
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::invalid("n", format!("n must be 1 ({n} given)")));
        }
    }
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => limits.default_max_tokens,
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("max_tokens must be at least 1 ({m} given)"),
            ))
        }
        Some(m) if m as u64 > limits.max_tokens as u64 => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "max_tokens {m} exceeds this server's limit of {} (--max-tokens-limit)",
                    limits.max_tokens
                ),
            ))
        }
        Some(m) => m as usize,
    };
    let finite = |name: &str, v: Option<f32>, lo: f32, hi: f32| -> Result<Option<f32>, ApiError> {
        match v {
            Some(x) if !x.is_finite() || x < lo || x > hi => Err(ApiError::invalid(
                name,
                format!("{name} must be within [{lo}, {hi}] ({x} given)"),
            )),
            v => Ok(v),
        }
    };
    // Defaults are `skillpack run`'s, so the same request answers the same way in both.
    let sampler = SamplerParams {
        temperature: finite("temperature", c.temperature, 0.0, 10.0)?.unwrap_or(0.7),
        top_k: c.top_k.unwrap_or(40).max(0),
        top_p: finite("top_p", c.top_p, 0.0, 1.0)?.unwrap_or(0.95),
        min_p: finite("min_p", c.min_p, 0.0, 1.0)?.unwrap_or(0.05),
        repeat_penalty: finite("repeat_penalty", c.repeat_penalty, 0.0, 10.0)?.unwrap_or(1.1),
        repeat_last_n: 64,
        seed: match c.seed {
            None => 0,
            Some(s) if (0..=u32::MAX as i64).contains(&s) => s as u32,
            Some(s) => return Err(ApiError::invalid("seed", format!("seed {s} is not a u32"))),
        },
    };
    let stops = c.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stops.len() > 4 || stops.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid("stop", "up to 4 non-empty stop strings"));
    }
    let skills = skill_choice(c.skills, c.route, pack, limits)?;
    Ok(Plan {
        prompt,
        params: GenerateParams {
            max_tokens,
            stops,
            sampler,
        },
        skills,
        stream: c.stream,
    })
}

/// Resolves `skills` / `route` (or the server's default route) against the pack.
pub fn skill_choice(
    skills: Option<SkillsField>,
    route: Option<String>,
    pack: &PackView,
    limits: &Limits,
) -> Result<SkillChoice, ApiError> {
    if let Some(field) = skills {
        if route.is_some() {
            return Err(ApiError::invalid(
                "route",
                "give either `skills` (manual weights) or `route`, not both",
            ));
        }
        let pairs: Vec<(String, f64)> = match field {
            SkillsField::Map(m) => m.into_iter().collect(),
            SkillsField::Spec(spec) => {
                let mut v = Vec::new();
                for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (id, w) = part.split_once('=').ok_or_else(|| {
                        ApiError::invalid("skills", format!("`{part}`: expected SKILL=WEIGHT"))
                    })?;
                    let w: f64 = w.trim().parse().map_err(|_| {
                        ApiError::invalid("skills", format!("`{part}`: `{w}` is not a number"))
                    })?;
                    v.push((id.trim().to_string(), w));
                }
                v
            }
        };
        if pack.skills.is_empty() && !pairs.is_empty() {
            return Err(ApiError::invalid(
                "skills",
                "this server runs without a skill pack (--pack)",
            ));
        }
        let mut weights = vec![0.0f32; pack.skills.len()];
        for (id, w) in pairs {
            let i = pack.skills.iter().position(|s| *s == id).ok_or_else(|| {
                ApiError::invalid(
                    "skills",
                    format!(
                        "unknown skill `{id}` (pack has: {})",
                        pack.skills.join(", ")
                    ),
                )
            })?;
            if !w.is_finite() || !(0.0..=f64::from(MAX_SKILL_WEIGHT)).contains(&w) {
                return Err(ApiError::invalid(
                    "skills",
                    format!("weight of `{id}` must be within [0, {MAX_SKILL_WEIGHT}] ({w} given)"),
                ));
            }
            weights[i] = w as f32;
        }
        return Ok(SkillChoice::Manual(weights));
    }
    let route = route.unwrap_or_else(|| limits.default_route.clone());
    match route.as_str() {
        "none" => Ok(SkillChoice::None),
        "auto" if pack.default_router.is_empty() => Ok(SkillChoice::None),
        "auto" => Ok(SkillChoice::Route(pack.default_router.clone())),
        name if pack.routers.iter().any(|r| r == name) => Ok(SkillChoice::Route(name.into())),
        name => Err(ApiError::invalid(
            "route",
            format!(
                "unknown route `{name}` (auto, none{})",
                pack.routers
                    .iter()
                    .map(|r| format!(", {r}"))
                    .collect::<String>()
            ),
        )),
    }
}

/// Renders (chat) and tokenizes a prompt as `skillpack run` does.
pub fn prompt_tokens(model: &Model, prompt: &Prompt) -> Result<Vec<Token>, ApiError> {
    let internal = |e: skillpack_llama::LlamaError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    let (tokens, field) = match prompt {
        Prompt::Chat(messages) => {
            let text = model
                .apply_chat_template(messages, true)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            (
                model.tokenize(&text, true, true).map_err(internal)?,
                "messages",
            )
        }
        Prompt::Text(text) => (
            model.tokenize(text, true, true).map_err(internal)?,
            "prompt",
        ),
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid(field, "the prompt has no tokens"));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse_body;

    fn pack() -> PackView {
        PackView {
            skills: vec!["ner".into(), "re".into()],
            routers: vec!["general".into()],
            default_router: "general".into(),
        }
    }

    fn chat(body: &str) -> Result<Plan, ApiError> {
        plan_chat(parse_body(body.as_bytes())?, &pack(), &Limits::default())
    }

    #[test]
    fn skills_and_routes_resolve_against_the_pack() {
        let p =
            chat(r#"{"messages":[{"role":"user","content":"x"}],"skills":{"re":0.5}}"#).unwrap();
        assert_eq!(p.skills, SkillChoice::Manual(vec![0.0, 0.5]));
        let p = chat(r#"{"messages":[{"role":"user","content":"x"}],"skills":"ner=1, re=0.25"}"#)
            .unwrap();
        assert_eq!(p.skills, SkillChoice::Manual(vec![1.0, 0.25]));
        let p = chat(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert_eq!(p.skills, SkillChoice::Route("general".into()));
        let p = chat(r#"{"messages":[{"role":"user","content":"x"}],"route":"none"}"#).unwrap();
        assert_eq!(p.skills, SkillChoice::None);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param, needle) in [
            (
                r#"{"messages":[{"role":"user","content":"x"}],"skills":{"xx":1}}"#,
                "skills",
                "unknown skill `xx` (pack has: ner, re)",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"skills":{"ner":-1}}"#,
                "skills",
                "within [0, 4]",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"route":"nope"}"#,
                "route",
                "unknown route `nope` (auto, none, general)",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"route":"none","skills":{"ner":1}}"#,
                "route",
                "not both",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":100000}"#,
                "max_tokens",
                "limit of 1024",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
                "at least 1",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":-1}"#,
                "temperature",
                "within",
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#,
                "n",
                "n must be 1",
            ),
            (r#"{"messages":[]}"#, "messages", "empty"),
            (
                r#"{"messages":[{"role":"robot","content":"x"}]}"#,
                "messages[0].role",
                "unknown role",
            ),
        ] {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }
}
