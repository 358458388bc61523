//! `skillpack proxy`: routes requests locally and forwards them to llama-server instances that
//! loaded the pack's adapters (at scale 0), with the full per-request `lora` list.
//!
//! Per request: the prompt is rendered and tokenized with the local base model, the router turns
//! its features into skill weights (or the request's `skills` are taken as given), the pack's
//! top-k / min-weight selection applies, weights are rounded to `1/levels` so equal weightings
//! can share upstream batches, and the request goes to the least busy upstream with
//! `lora: [{id, scale}, …]` for every adapter and `cache_prompt: false` (llama-server would
//! otherwise reuse a prompt cache computed under another LoRA setting).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_pack::Pack;
use skillpack_run::{select_active, Routing};

use crate::api::{parse_body, sse_data, ApiError, SkillReport, SSE_DONE};
use crate::metrics::Metrics;
use crate::plan::{
    plan_chat, plan_completion, prompt_tokens, Limits, PackView, Prompt, SkillChoice,
};
use crate::server::Endpoint;
use crate::slots::{next_job, Queue};
use crate::ServeError;

/// Everything `skillpack proxy` needs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Base URLs of llama-server instances, e.g. `http://127.0.0.1:8080`.
    pub upstreams: Vec<String>,
    /// The base GGUF the upstreams serve (read locally for routing features).
    pub model: PathBuf,
    pub pack: PathBuf,
    pub addr: SocketAddr,
    /// Weights are rounded to multiples of `1/levels`.
    pub levels: u32,
    /// Threads computing routing features.
    pub route_threads: usize,
    pub limits: Limits,
    pub max_body: usize,
    /// How long to wait for the upstreams' `/lora-adapters` at start.
    pub upstream_wait: Duration,
}

/// One upstream llama-server: where, how busy, and its adapter id of each pack skill.
#[derive(Debug)]
pub struct Upstream {
    pub url: String,
    /// Adapter id of each pack skill, in pack order.
    pub skill_ids: Vec<i64>,
    /// Every adapter id the upstream has (those of other files get scale 0).
    pub adapter_ids: Vec<i64>,
    in_flight: Arc<AtomicUsize>,
}

#[derive(Debug, serde::Deserialize)]
struct UpstreamAdapter {
    id: i64,
    path: String,
}

/// Matches the pack's skills to an upstream's `GET /lora-adapters` by adapter file name.
pub fn map_adapters(
    upstream: &str,
    adapters: &[(i64, String)],
    skill_files: &[(String, String)],
) -> Result<Vec<i64>, String> {
    let file_name = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    skill_files
        .iter()
        .map(|(skill, file)| {
            let want = file_name(file);
            let hits: Vec<i64> = adapters
                .iter()
                .filter(|(_, p)| file_name(p) == want)
                .map(|(id, _)| *id)
                .collect();
            match hits.as_slice() {
                [id] => Ok(*id),
                [] => Err(format!(
                    "{upstream} has no adapter for skill `{skill}` ({want}); start llama-server with the flags of `skillpack pack llama-server-args` (it has: {})",
                    if adapters.is_empty() {
                        "no adapters".to_string()
                    } else {
                        adapters.iter().map(|(_, p)| file_name(p)).collect::<Vec<_>>().join(", ")
                    }
                )),
                _ => Err(format!(
                    "{upstream} has {} adapters named {want}: cannot tell which is skill `{skill}`",
                    hits.len()
                )),
            }
        })
        .collect()
}

/// Rounds weights to multiples of `1/levels` (those rounding to 0 are dropped).
pub fn round_weights(active: &[(usize, f32)], levels: u32) -> Vec<(usize, f32)> {
    let l = levels.max(1) as f32;
    active
        .iter()
        .map(|(i, w)| (*i, (w * l).round() / l))
        .filter(|(_, w)| *w != 0.0)
        .collect()
}

/// The order to try upstreams in: least in-flight requests first; ties rotate with `turn` so
/// equally idle upstreams share the load.
pub fn upstream_order(in_flight: &[usize], turn: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..in_flight.len()).collect();
    if !order.is_empty() {
        order.rotate_left(turn % in_flight.len());
    }
    // A stable sort keeps the rotation among equals.
    order.sort_by_key(|&i| in_flight[i]);
    order
}

/// A routing request for the feature threads.
struct RouteJob {
    prompt: Prompt,
    router: String,
    reply: tokio::sync::oneshot::Sender<Result<Vec<f32>, ApiError>>,
}

struct ProxyState {
    client: reqwest::Client,
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    route_queue: Queue<RouteJob>,
    pack: PackView,
    top_k: usize,
    min_weight: f32,
    levels: u32,
    limits: Limits,
    max_body: usize,
    metrics: Arc<Metrics>,
}

/// Checks a server address given on the command line as `flag` (`--upstream`, `--url`): an
/// `http://` or `https://` URL with a host.
pub fn check_http_url(flag: &str, url: &str) -> Result<(), String> {
    let example = "e.g. http://127.0.0.1:8081";
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{flag} `{url}` is not a URL ({e}): give {example}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(format!(
            "{flag} `{url}` must be an http:// or https:// URL with a host, {example}"
        ));
    }
    Ok(())
}

/// Connects to the upstreams, loads the model for routing, and proxies until SIGINT/SIGTERM.
pub fn proxy(cfg: ProxyConfig, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    if cfg.upstreams.is_empty() {
        return Err(ServeError::Invalid(
            "give at least one --upstream URL".into(),
        ));
    }
    for url in &cfg.upstreams {
        check_http_url("--upstream", url).map_err(ServeError::Invalid)?;
    }
    let pack = Pack::open(&cfg.pack)?;
    pack.check(&skillpack_convert::GgufInfo::open(&cfg.model)?)?;
    let model = Model::load(Backend::get(), &cfg.model, &ModelParams::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // llama-server (cpp-httplib) closes idle keep-alive connections after 5 s; a pooled
        // connection reused just as the server closes it fails with "connection closed before
        // message completed". Dropping idle connections well before that avoids the race.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| ServeError::Invalid(format!("HTTP client: {e}")))?;
    let skill_files: Vec<(String, String)> = pack
        .manifest
        .skills
        .iter()
        .map(|s| (s.id.clone(), s.adapter.clone()))
        .collect();
    let mut upstreams = Vec::new();
    for url in &cfg.upstreams {
        let url = url.trim_end_matches('/').to_string();
        let adapters = runtime.block_on(fetch_adapters(&client, &url, cfg.upstream_wait))?;
        let skill_ids = map_adapters(&url, &adapters, &skill_files).map_err(ServeError::Invalid)?;
        tracing::info!("{url}: {} adapters, every skill found", adapters.len());
        upstreams.push(Upstream {
            url,
            skill_ids,
            adapter_ids: adapters.iter().map(|(id, _)| *id).collect(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        });
    }
    let metrics = Arc::new(Metrics::default());
    metrics
        .capacity
        .store(upstreams.len() as i64, Ordering::Relaxed);
    let (route_queue, route_rx) = Queue::new(
        64,
        metrics.clone(),
        "the routing queue is full; retry shortly",
    );
    let state = Arc::new(ProxyState {
        client,
        upstreams,
        next: AtomicUsize::new(0),
        route_queue,
        pack: PackView::of(&pack.manifest),
        top_k: pack.manifest.defaults.top_k,
        min_weight: pack.manifest.defaults.min_weight,
        levels: cfg.levels,
        limits: cfg.limits.clone(),
        max_body: cfg.max_body,
        metrics,
    });
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let threads = cfg.route_threads.max(1);
        for i in 0..threads {
            let (model, pack, cfg, rx, ready_tx, metrics) = (
                &model,
                &pack,
                &cfg,
                route_rx.clone(),
                ready_tx.clone(),
                &state.metrics,
            );
            std::thread::Builder::new()
                .name(format!("route-{i}"))
                .spawn_scoped(scope, move || {
                    match RouteWorker::new(model, pack, &cfg.model) {
                        Ok(worker) => {
                            let _ = ready_tx.send(Ok(()));
                            worker.serve(&rx, metrics);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..threads {
            if let Ok(Err(e)) | Err(e) = ready_rx.recv().map_err(|e| e.to_string()) {
                failure = Some(e);
            }
        }
        let result = match failure {
            Some(e) => Err(ServeError::Invalid(format!(
                "starting the router threads: {e}"
            ))),
            None => runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.addr).await.map_err(|e| {
                    ServeError::Invalid(format!("cannot listen on {}: {e}", cfg.addr))
                })?;
                let bound = listener.local_addr()?;
                on_ready(bound);
                axum::serve(listener, app(state.clone()))
                    .with_graceful_shutdown(crate::shutdown_signal())
                    .await
                    .map_err(ServeError::Io)
            }),
        };
        state.route_queue.close();
        result
    })
}

async fn fetch_adapters(
    client: &reqwest::Client,
    url: &str,
    wait: Duration,
) -> Result<Vec<(i64, String)>, ServeError> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = async {
            let r = client
                .get(format!("{url}/lora-adapters"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("GET /lora-adapters answered {status}: {text}"));
            }
            serde_json::from_str::<Vec<UpstreamAdapter>>(&text)
                .map_err(|e| format!("GET /lora-adapters: unexpected answer ({e}): {text}"))
        };
        match attempt.await {
            Ok(list) => return Ok(list.into_iter().map(|a| (a.id, a.path)).collect()),
            // llama-server answers 503 while it loads the model: wait for it.
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("{url}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(ServeError::Invalid(format!("upstream {url}: {e}"))),
        }
    }
}

/// A feature thread: tokenizes prompts with the local model and runs the pack's routers.
struct RouteWorker<'m> {
    model: &'m Model,
    routing: Routing<'m>,
}

impl<'m> RouteWorker<'m> {
    fn new(model: &'m Model, pack: &Pack, model_path: &Path) -> Result<Self, String> {
        Ok(RouteWorker {
            model,
            routing: Routing::all(model, pack, model_path, None).map_err(|e| e.to_string())?,
        })
    }

    fn serve(mut self, rx: &Mutex<Receiver<RouteJob>>, metrics: &Metrics) {
        while let Some(job) = next_job(rx, metrics) {
            let result = prompt_tokens(self.model, &job.prompt)
                .and_then(|tokens| Ok(self.routing.weights(&job.router, &tokens, None)?));
            let _ = job.reply.send(result);
        }
    }
}

fn app(state: Arc<ProxyState>) -> axum::Router {
    axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(|s, b| forward(s, b, Endpoint::Chat)),
        )
        .route(
            "/v1/completions",
            post(|s, b| forward(s, b, Endpoint::Completion)),
        )
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(crate::not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

async fn forward(
    State(st): State<Arc<ProxyState>>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Response {
    let t0 = Instant::now();
    let label = endpoint.label();
    match forward_inner(&st, body, endpoint, t0).await {
        Ok(r) => r,
        Err(e) => {
            st.metrics
                .request(label, e.status.as_u16(), t0.elapsed().as_secs_f64());
            e.into_response()
        }
    }
}

async fn forward_inner(
    st: &Arc<ProxyState>,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
    t0: Instant,
) -> Result<Response, ApiError> {
    let bytes = crate::read_body(body, st.max_body)?;
    // The same checks as `serve` (typed), while the request goes upstream as it came (a map:
    // fields skillpack does not know are llama-server's business).
    let plan = match endpoint {
        Endpoint::Chat => plan_chat(parse_body(&bytes)?, &st.pack, &st.limits)?,
        Endpoint::Completion => plan_completion(parse_body(&bytes)?, &st.pack, &st.limits)?,
    };
    let mut request: serde_json::Map<String, serde_json::Value> = parse_body(&bytes)?;
    request.remove("skills");
    request.remove("route");
    if !request.contains_key("max_tokens") && !request.contains_key("max_completion_tokens") {
        request.insert("max_tokens".into(), plan.params.max_tokens.into());
    }
    let (choice, stream) = (plan.skills, plan.stream);
    let weights = match &choice {
        SkillChoice::None => None,
        SkillChoice::Manual(w) => Some(w.clone()),
        SkillChoice::Route(name) => {
            let (reply, wait) = tokio::sync::oneshot::channel();
            let job = RouteJob {
                prompt: plan.prompt,
                router: name.clone(),
                reply,
            };
            st.route_queue.submit(job)?;
            Some(wait.await.map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "routing ended without an answer",
                )
            })??)
        }
    };
    let active = match &weights {
        Some(w) => round_weights(&select_active(w, st.top_k, st.min_weight).active, st.levels),
        None => Vec::new(),
    };
    let mut report = SkillReport {
        route: choice.label(),
        weights: active
            .iter()
            .map(|(i, w)| (st.pack.skills[*i].clone(), *w))
            .collect(),
        mode: Some("upstream-lora".into()),
        upstream: None,
    };
    st.metrics.routed(&report.route, &report.weights);
    request.insert("cache_prompt".into(), false.into());

    // Least busy upstream first; on a connection failure, the next one.
    let busy: Vec<usize> = st
        .upstreams
        .iter()
        .map(|u| u.in_flight.load(Ordering::Relaxed))
        .collect();
    let order = upstream_order(&busy, st.next.fetch_add(1, Ordering::Relaxed));
    let mut failures = Vec::new();
    for i in order {
        let up = &st.upstreams[i];
        let lora: Vec<serde_json::Value> = up
            .adapter_ids
            .iter()
            .map(|id| {
                let scale = active
                    .iter()
                    .find(|(k, _)| up.skill_ids[*k] == *id)
                    .map(|(_, w)| *w)
                    .unwrap_or(0.0);
                serde_json::json!({"id": id, "scale": scale})
            })
            .collect();
        request.insert("lora".into(), lora.into());
        let guard = InFlight::new(&up.in_flight, &st.metrics);
        let sent = st
            .client
            .post(format!("{}{}", up.url, endpoint.path()))
            .json(&request)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                failures.push(format!("{}: {e}", up.url));
                continue;
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("upstream {} failed: {}", up.url, error_chain(&e)),
                ))
            }
        };
        report.upstream = Some(up.url.clone());
        return relay(st, response, report, stream, endpoint, t0, guard).await;
    }
    Err(ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("no upstream reachable: {}", failures.join("; ")),
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Counts a request against its upstream (and the busy gauge) until dropped.
struct InFlight {
    counter: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>, metrics: &Arc<Metrics>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics.busy.fetch_add(1, Ordering::Relaxed);
        InFlight {
            counter: counter.clone(),
            metrics: metrics.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
        self.metrics.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upstream error bodies are llama-server's (OpenAI-shaped); keep their message.
fn upstream_error(url: &str, status: reqwest::StatusCode, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect());
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    // A client mistake stays the client's; the upstream's own failures are a bad gateway.
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    ApiError::new(
        status,
        format!("upstream {url} answered {}: {message}", status.as_u16()),
    )
}

async fn relay(
    st: &Arc<ProxyState>,
    response: reqwest::Response,
    report: SkillReport,
    stream: bool,
    endpoint: Endpoint,
    t0: Instant,
    guard: InFlight,
) -> Result<Response, ApiError> {
    let url = report.upstream.clone().unwrap_or_default();
    let label = endpoint.label();
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Err(upstream_error(&url, status, &body));
    }
    if !stream {
        let body = response.bytes().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("upstream {url} ended mid-response: {}", error_chain(&e)),
            )
        })?;
        let mut value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("upstream {url} answered something other than JSON: {e}"),
            )
        })?;
        if let Some(usage) = value.get("usage") {
            st.metrics.tokens(
                usage["prompt_tokens"].as_u64().unwrap_or(0) as usize,
                usage["completion_tokens"].as_u64().unwrap_or(0) as usize,
            );
        }
        value["skillpack"] = serde_json::to_value(&report).unwrap_or_default();
        drop(guard);
        st.metrics.request(label, 200, t0.elapsed().as_secs_f64());
        let mut r = axum::Json(value).into_response();
        r.headers_mut()
            .insert("x-skillpack-weights", report.header());
        return Ok(r);
    }
    // Streaming: pass the upstream's events through; a broken upstream becomes an error event.
    let st2 = st.clone();
    let mut first = true;
    let upstream = response.bytes_stream();
    let body = futures_util::stream::unfold(
        (upstream, Some(guard), false),
        move |(mut upstream, guard, ended)| {
            let (st, url) = (st2.clone(), url.clone());
            let was_first = std::mem::replace(&mut first, false);
            async move {
                if ended {
                    return None;
                }
                match upstream.next().await {
                    Some(Ok(bytes)) => {
                        if was_first {
                            st.metrics.first_token(t0.elapsed().as_secs_f64());
                        }
                        Some((bytes, (upstream, guard, false)))
                    }
                    Some(Err(e)) => {
                        st.metrics.request(label, 502, t0.elapsed().as_secs_f64());
                        let e = ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            format!("upstream {url} ended mid-stream: {}", error_chain(&e)),
                        );
                        let text = format!("{}{SSE_DONE}", sse_data(&e.body()));
                        drop(guard);
                        Some((Bytes::from(text), (upstream, None, true)))
                    }
                    None => {
                        st.metrics.request(label, 200, t0.elapsed().as_secs_f64());
                        drop(guard);
                        None
                    }
                }
            }
        },
    );
    Ok(crate::sse_response(body, &report))
}

async fn models(State(st): State<Arc<ProxyState>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": "skillpack-proxy",
            "object": "model",
            "owned_by": "skillpack",
            "skillpack": {
                "skills": st.pack.skills,
                "routers": st.pack.routers,
                "upstreams": st.upstreams.iter().map(|u| &u.url).collect::<Vec<_>>(),
            },
        }],
    }))
    .into_response()
}

async fn health(State(st): State<Arc<ProxyState>>) -> Response {
    axum::Json(serde_json::json!({
        "status": "ok",
        "upstreams": st.upstreams.iter().map(|u| serde_json::json!({
            "url": u.url, "in_flight": u.in_flight.load(Ordering::Relaxed),
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn metrics_text(State(st): State<Arc<ProxyState>>) -> Response {
    crate::metrics_response(&st.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_map_by_file_name_with_clear_errors() {
        let skills = vec![
            ("ner".to_string(), "skills/ner.gguf".to_string()),
            ("re".to_string(), "skills/re.gguf".to_string()),
        ];
        let up = vec![
            (0, "/srv/pack/skills/re.gguf".into()),
            (1, "/srv/pack/skills/ner.gguf".into()),
        ];
        assert_eq!(map_adapters("u", &up, &skills).unwrap(), vec![1, 0]);
        let e = map_adapters("u", &up[..1], &skills).unwrap_err();
        assert!(
            e.contains("no adapter for skill `ner` (ner.gguf)") && e.contains("it has: re.gguf"),
            "{e}"
        );
        let dup = vec![
            (0, "a/ner.gguf".into()),
            (1, "b/ner.gguf".into()),
            (2, "re.gguf".into()),
        ];
        assert!(map_adapters("u", &dup, &skills)
            .unwrap_err()
            .contains("2 adapters named ner.gguf"));
    }

    #[test]
    fn least_busy_upstream_first_and_ties_rotate() {
        assert_eq!(upstream_order(&[2, 0, 1], 0), vec![1, 2, 0]);
        assert_eq!(upstream_order(&[0, 0, 0], 0), vec![0, 1, 2]);
        assert_eq!(upstream_order(&[0, 0, 0], 1), vec![1, 2, 0]);
        assert_eq!(upstream_order(&[1, 0, 0], 2), vec![2, 1, 0]);
        assert!(upstream_order(&[], 3).is_empty());
    }

    #[test]
    fn weights_round_to_levels() {
        assert_eq!(
            round_weights(&[(3, 0.62), (1, 0.3), (2, 0.05)], 8),
            vec![(3, 0.625), (1, 0.25)]
        );
    }
}
