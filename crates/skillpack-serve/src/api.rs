//! The OpenAI-compatible wire format: requests, responses, stream chunks and errors, plus
//! skillpack's extensions (`skills`, `route` in requests; `skillpack` in responses).

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// Seconds a client should wait before retrying (503 only).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 naming the field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
            retry_after: None,
        }
    }

    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// OpenAI's error `type` for this status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 413 | 422 => "invalid_request_error",
            503 => "overloaded_error",
            502 | 504 => "upstream_error",
            _ => "server_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.status.as_u16(),
            }
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

/// A runtime error as the server answers it: an unknown router is the request's fault (400 on
/// `route`), anything else is the server's (500).
impl From<skillpack_run::RunError> for ApiError {
    fn from(e: skillpack_run::RunError) -> Self {
        match e {
            skillpack_run::RunError::UnknownRouter(_) => ApiError::invalid("route", e.to_string()),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// A string or a list of strings (`stop`, `prompt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Message content: a string, or OpenAI's list of typed parts (only text parts are accepted).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a multi-part message.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// Manual skill weights: `{"ner": 0.7, "re": 0.3}` or `"ner=0.7,re=0.3"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SkillsField {
    Map(BTreeMap<String, f64>),
    Spec(String),
}

/// The fields `/v1/chat/completions` and `/v1/completions` share. Unknown fields are ignored,
/// as OpenAI clients send more than a local model can use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonFields {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub stream: bool,
    pub n: Option<i64>,
    /// Extension: manual skill weights.
    pub skills: Option<SkillsField>,
    /// Extension: `auto` (the default router), `none` (base model) or a router's name.
    pub route: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub common: CommonFields,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: OneOrMany,
    #[serde(flatten)]
    pub common: CommonFields,
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    /// Usage from the two counts.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The response extension: which skills were applied, at which weights, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkillReport {
    /// `manual`, `none`, or `router:<name>`.
    pub route: String,
    /// The applied skills and weights, strongest first.
    pub weights: Vec<(String, f32)>,
    /// How they were applied (`multi`, `fused`, …), when any were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The upstream server that answered (proxy only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl SkillReport {
    /// The `x-skillpack-weights` header: `id=w,id=w` (3 decimals), or `none`.
    pub fn header(&self) -> HeaderValue {
        if self.weights.is_empty() {
            return HeaderValue::from_static("none");
        }
        let text = self
            .weights
            .iter()
            .map(|(s, w)| format!("{s}={w:.3}"))
            .collect::<Vec<_>>()
            .join(",");
        // Skill ids come from a checked pack manifest; anything unprintable is still refused.
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("invalid"))
    }
}

/// OpenAI's `finish_reason` for a generation's finish.
pub fn finish_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "length",
        "cancelled" => "cancelled",
        _ => "stop",
    }
}

/// Seconds since the Unix epoch (`created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses a request body, answering malformed JSON with a 400 that says where it broke.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError::new(StatusCode::BAD_REQUEST, format!("{what}: {e}"))
    })
}

/// Flattens a message's content to text; non-text parts are refused.
pub fn content_text(message: &Message, index: usize) -> Result<String, ApiError> {
    match &message.content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => out.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            &format!("messages[{index}].content"),
                            format!("content parts of type `{kind}` are not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// A server-sent event carrying `value` as JSON.
pub fn sse_data(value: &serde_json::Value) -> String {
    format!("data: {value}\n\n")
}

/// The stream's terminator.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_a_400_that_says_where() {
        let e = parse_body::<ChatRequest>(b"{\"messages\": [").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
        assert!(e.message.contains("line 1"), "{}", e.message);
        let e = parse_body::<ChatRequest>(b"{\"messages\": 3}").unwrap_err();
        assert!(e.message.starts_with("invalid request"), "{}", e.message);
    }

    #[test]
    fn requests_accept_openai_shapes_and_extensions() {
        let r: ChatRequest = parse_body(
            br#"{"model":"x","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stop":"\n","stream":true,"skills":{"ner":0.5},"user":"ignored","logprobs":false}"#,
        )
        .unwrap();
        assert!(r.common.stream);
        assert_eq!(content_text(&r.messages[0], 0).unwrap(), "hi");
        assert_eq!(r.common.stop.unwrap().into_vec(), vec!["\n".to_string()]);
        assert!(matches!(r.common.skills, Some(SkillsField::Map(m)) if m["ner"] == 0.5));
        let r: CompletionRequest =
            parse_body(br#"{"prompt":["a"],"skills":"ner=1","route":"none"}"#).unwrap();
        assert!(matches!(r.common.skills, Some(SkillsField::Spec(ref s)) if s == "ner=1"));
        assert_eq!(r.common.route.as_deref(), Some("none"));
    }

    #[test]
    fn errors_have_openai_shape_and_retry_after() {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue full");
        e.retry_after = Some(2);
        assert_eq!(e.body()["error"]["type"], "overloaded_error");
        let response = e.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
