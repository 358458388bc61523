//! `skillpack serve`: the OpenAI-compatible HTTP front of the slots.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_pack::Pack;
use skillpack_run::Mode;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{
    finish_reason, parse_body, sse_data, unix_now, ApiError, ChatRequest, CompletionRequest,
    SkillReport, Usage, SSE_DONE,
};
use crate::metrics::Metrics;
use crate::plan::{plan_chat, plan_completion, Limits, PackView, Plan};
use crate::slots::{Event, Job, Queue, Slot, SlotConfig};
use crate::ServeError;

/// Everything `skillpack serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub model: PathBuf,
    pub pack: Option<PathBuf>,
    /// Address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// llama.cpp contexts, each on its own thread.
    pub slots: usize,
    /// Requests that may wait for a slot before new ones get 503.
    pub queue: usize,
    pub ctx_size: u32,
    /// CPU threads per slot (default: llama.cpp's choice).
    pub threads: Option<i32>,
    /// Layers offloaded to the GPU (0: none, -1: all); needs a `gpu` build.
    pub gpu_layers: i32,
    pub mode: Mode,
    pub limits: Limits,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// The model id reported by `/v1/models` and in responses.
    pub model_name: String,
}

/// State shared by the handlers.
pub(crate) struct AppState {
    queue: Queue<Job>,
    metrics: Arc<Metrics>,
    pack: PackView,
    limits: Limits,
    model_name: String,
    max_body: usize,
}

/// Which OpenAI endpoint a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completion => "completions",
        }
    }

    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }
}

/// Loads the model and pack, starts the slots, and serves until SIGINT/SIGTERM (then finishes
/// in-flight requests). `on_ready` gets the bound address once requests can be taken.
pub fn serve(cfg: ServeConfig, on_ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    serve_until(cfg, on_ready, crate::shutdown_signal())
}

/// [`serve`], shutting down when `shutdown` resolves instead of on a signal (an embedding
/// program or a test decides when the server ends).
pub fn serve_until(
    cfg: ServeConfig,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if cfg.slots == 0 {
        return Err(ServeError::Invalid("--slots must be at least 1".into()));
    }
    let params = ModelParams {
        n_gpu_layers: cfg.gpu_layers,
        ..ModelParams::default()
    };
    let model = Model::load(Backend::get(), &cfg.model, &params)?;
    let pack_view = match &cfg.pack {
        Some(dir) => {
            let pack = Pack::open(dir)?;
            pack.check(&skillpack_convert::GgufInfo::open(&cfg.model)?)?;
            PackView::of(&pack.manifest)
        }
        None => PackView::default(),
    };
    let metrics = Arc::new(Metrics::default());
    metrics.capacity.store(cfg.slots as i64, Ordering::Relaxed);
    let (queue, receiver) = Queue::new(
        cfg.queue,
        metrics.clone(),
        "all slots are busy and the queue is full; retry shortly",
    );
    let slot_cfg = SlotConfig {
        model_path: cfg.model.clone(),
        pack: cfg.pack.clone(),
        ctx_size: cfg.ctx_size,
        threads: cfg.threads,
        mode: cfg.mode,
    };
    let state = Arc::new(AppState {
        queue,
        metrics: metrics.clone(),
        pack: pack_view,
        limits: cfg.limits.clone(),
        model_name: cfg.model_name.clone(),
        max_body: cfg.max_body,
    });
    std::thread::scope(|scope| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for i in 0..cfg.slots {
            let (model, slot_cfg, receiver, metrics, ready_tx) = (
                &model,
                slot_cfg.clone(),
                receiver.clone(),
                metrics.clone(),
                ready_tx.clone(),
            );
            std::thread::Builder::new()
                .name(format!("slot-{i}"))
                .spawn_scoped(scope, move || match Slot::new(model, &slot_cfg) {
                    Ok(slot) => {
                        let _ = ready_tx.send(Ok(()));
                        slot.serve(&receiver, &metrics);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(ServeError::Io)?;
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..cfg.slots {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some("a slot thread ended while starting".into()),
            }
        }
        let result = match failure {
            Some(e) => Err(ServeError::Invalid(format!("starting the slots: {e}"))),
            None => run_http(cfg.addr, state.clone(), on_ready, shutdown),
        };
        // Let the slots drain what is queued and exit, whatever happened.
        state.queue.close();
        result
    })
}

fn run_http(
    addr: SocketAddr,
    state: Arc<AppState>,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Io)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Invalid(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(ServeError::Io)?;
        let app = router(state);
        on_ready(bound);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Io)
    })
}

fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(crate::not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let t0 = Instant::now();
    let planned = crate::read_body(body, st.max_body)
        .and_then(|b| parse_body::<ChatRequest>(&b))
        .and_then(|r| plan_chat(r, &st.pack, &st.limits));
    respond(st, planned, Endpoint::Chat, t0).await
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let t0 = Instant::now();
    let planned = crate::read_body(body, st.max_body)
        .and_then(|b| parse_body::<CompletionRequest>(&b))
        .and_then(|r| plan_completion(r, &st.pack, &st.limits));
    respond(st, planned, Endpoint::Completion, t0).await
}

async fn respond(
    st: Arc<AppState>,
    planned: Result<Plan, ApiError>,
    endpoint: Endpoint,
    t0: Instant,
) -> Response {
    match start(&st, planned).await {
        Err(e) => {
            st.metrics.request(
                endpoint.label(),
                e.status.as_u16(),
                t0.elapsed().as_secs_f64(),
            );
            e.into_response()
        }
        Ok((stream, prompt_tokens, report, events)) => {
            let reply = Reply {
                id: format!("{}-{}", endpoint_prefix(endpoint), next_id()),
                created: unix_now(),
                model: st.model_name.clone(),
                endpoint,
                prompt_tokens,
                report,
            };
            if stream {
                stream_response(st, reply, events, t0)
            } else {
                full_response(st, reply, events, t0).await
            }
        }
    }
}

type Started = (bool, usize, SkillReport, UnboundedReceiver<Event>);

/// Queues the request and waits for its slot to accept it (or refuse it).
async fn start(st: &AppState, planned: Result<Plan, ApiError>) -> Result<Started, ApiError> {
    let plan = planned?;
    let stream = plan.stream;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    st.queue.submit(Job {
        plan,
        events: tx,
        enqueued: Instant::now(),
    })?;
    match rx.recv().await {
        Some(Event::Start {
            prompt_tokens,
            report,
        }) => Ok((stream, prompt_tokens, report, rx)),
        Some(Event::Error(e)) => Err(e),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the slot ended the request without an answer",
        )),
    }
}

fn endpoint_prefix(e: Endpoint) -> &'static str {
    match e {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    }
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What every chunk and the final body of one response share.
struct Reply {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    prompt_tokens: usize,
    report: SkillReport,
}

impl Reply {
    fn full(&self, text: &str, finish: &str, completion_tokens: usize) -> serde_json::Value {
        let usage = Usage::new(self.prompt_tokens, completion_tokens);
        let choice = match self.endpoint {
            Endpoint::Chat => serde_json::json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason(finish),
            }),
            Endpoint::Completion => serde_json::json!({
                "index": 0, "text": text, "logprobs": null,
                "finish_reason": finish_reason(finish),
            }),
        };
        serde_json::json!({
            "id": self.id,
            "object": match self.endpoint { Endpoint::Chat => "chat.completion", Endpoint::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
            "skillpack": self.report,
        })
    }

    fn chunk(&self, text: Option<&str>, finish: Option<&str>, first: bool) -> serde_json::Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let mut delta = serde_json::Map::new();
                if first {
                    delta.insert("role".into(), "assistant".into());
                }
                if let Some(t) = text {
                    delta.insert("content".into(), t.into());
                }
                serde_json::json!({"index": 0, "delta": delta, "finish_reason": finish.map(finish_reason)})
            }
            Endpoint::Completion => serde_json::json!({
                "index": 0, "text": text.unwrap_or(""), "logprobs": null,
                "finish_reason": finish.map(finish_reason),
            }),
        };
        let mut v = serde_json::json!({
            "id": self.id,
            "object": match self.endpoint { Endpoint::Chat => "chat.completion.chunk", Endpoint::Completion => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if first {
            v["skillpack"] = serde_json::to_value(&self.report).unwrap_or_default();
        }
        v
    }
}

async fn full_response(
    st: Arc<AppState>,
    reply: Reply,
    mut events: UnboundedReceiver<Event>,
    t0: Instant,
) -> Response {
    let mut text = String::new();
    loop {
        match events.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(g)) => {
                st.metrics
                    .request(reply.endpoint.label(), 200, t0.elapsed().as_secs_f64());
                let mut response =
                    axum::Json(reply.full(&g.text, g.finish, g.generated_tokens)).into_response();
                response
                    .headers_mut()
                    .insert("x-skillpack-weights", reply.report.header());
                return response;
            }
            Some(Event::Error(e)) => {
                st.metrics.request(
                    reply.endpoint.label(),
                    e.status.as_u16(),
                    t0.elapsed().as_secs_f64(),
                );
                return e.into_response();
            }
            Some(Event::Start { .. }) | None => {
                let e = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the slot ended the request without finishing it",
                );
                st.metrics
                    .request(reply.endpoint.label(), 500, t0.elapsed().as_secs_f64());
                return e.into_response();
            }
        }
    }
}

fn stream_response(
    st: Arc<AppState>,
    reply: Reply,
    events: UnboundedReceiver<Event>,
    t0: Instant,
) -> Response {
    let report = reply.report.clone();
    let first = sse_data(&reply.chunk(None, None, true));
    let reply = Arc::new(reply);
    let body = futures_util::stream::once(async move { first })
        .chain(futures_util::stream::unfold(
            (events, false),
            move |(mut events, done)| {
                let (st, reply) = (st.clone(), reply.clone());
                async move {
                    if done {
                        return None;
                    }
                    let label = reply.endpoint.label();
                    match events.recv().await {
                        Some(Event::Text(t)) => Some((
                            sse_data(&reply.chunk(Some(&t), None, false)),
                            (events, false),
                        )),
                        Some(Event::Done(g)) => {
                            st.metrics.request(label, 200, t0.elapsed().as_secs_f64());
                            let mut last = reply.chunk(None, Some(g.finish), false);
                            last["usage"] = serde_json::to_value(Usage::new(
                                reply.prompt_tokens,
                                g.generated_tokens,
                            ))
                            .unwrap_or_default();
                            Some((format!("{}{SSE_DONE}", sse_data(&last)), (events, true)))
                        }
                        Some(Event::Error(e)) => {
                            st.metrics.request(
                                label,
                                e.status.as_u16(),
                                t0.elapsed().as_secs_f64(),
                            );
                            Some((format!("{}{SSE_DONE}", sse_data(&e.body())), (events, true)))
                        }
                        Some(Event::Start { .. }) | None => None,
                    }
                }
            },
        ))
        .map(Bytes::from);
    crate::sse_response(body, &report)
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": st.model_name,
            "object": "model",
            "created": unix_now(),
            "owned_by": "skillpack",
            "skillpack": {"skills": st.pack.skills, "routers": st.pack.routers, "default_router": st.pack.default_router},
        }],
    }))
    .into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let m = &st.metrics;
    axum::Json(serde_json::json!({
        "status": "ok",
        "slots": m.capacity.load(Ordering::Relaxed),
        "busy": m.busy.load(Ordering::Relaxed),
        "queue_depth": m.queue_depth.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    crate::metrics_response(&st.metrics)
}
