//! Serving routed skill packs over HTTP, in OpenAI's shapes.
//!
//! ```rust
//! use std::io::{Read, Write};
//! use std::path::{Path, PathBuf};
//!
//! use skillpack_pack::{synth_pack, SynthSpec, ALL_LINEAR};
//! use skillpack_serve::{serve_until, Limits, ServeConfig};
//!
//! // The tiny random llama of the test fixtures, and a pack of two random skills for it.
//! let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
//!     .map(PathBuf::from)
//!     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let model = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
//! let pack_dir = tempfile::tempdir()?;
//! let spec = SynthSpec {
//!     skills: 2,
//!     rank: 4,
//!     targets: ALL_LINEAR.iter().map(|t| t.to_string()).collect(),
//!     b_std: 0.1,
//!     decay: 0.4,
//!     seed: 7,
//! };
//! synth_pack(pack_dir.path(), &skillpack_convert::GgufInfo::open(&model)?, &spec)?;
//!
//! // One slot on any free local port, until `stop` fires.
//! let cfg = ServeConfig {
//!     model,
//!     pack: Some(pack_dir.path().to_path_buf()),
//!     addr: "127.0.0.1:0".parse()?,
//!     slots: 1,
//!     queue: 4,
//!     ctx_size: 256,
//!     threads: Some(2),
//!     gpu_layers: 0,
//!     mode: skillpack_run::Mode::Multi,
//!     limits: Limits::default(),
//!     max_body: 1 << 20,
//!     model_name: "tiny".into(),
//! };
//! let (ready_tx, ready) = std::sync::mpsc::channel();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = std::thread::spawn(move || {
//!     serve_until(cfg, move |addr| ready_tx.send(addr).unwrap(), async {
//!         let _ = stopped.await;
//!     })
//! });
//! let addr = ready.recv()?;
//!
//! // A chat completion with manual skill weights, over plain HTTP/1.1.
//! let body = r#"{"messages":[{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"skills":{"s01":1}}"#;
//! let mut stream = std::net::TcpStream::connect(addr)?;
//! write!(
//!     stream,
//!     "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
//!     body.len()
//! )?;
//! let mut response = String::new();
//! stream.read_to_string(&mut response)?;
//! assert!(response.starts_with("HTTP/1.1 200"), "{response}");
//! let (_headers, json) = response.split_once("\r\n\r\n").expect("a body");
//! let json: serde_json::Value = serde_json::from_str(json)?;
//! assert_eq!(json["object"], "chat.completion");
//! assert_eq!(json["skillpack"]["weights"][0][0], "s01");
//!
//! stop.send(()).unwrap();
//! server.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * [`server`] — `skillpack serve`: N llama.cpp contexts ("slots"), each on its own thread with
//!   its own skill engine and routers ([`skillpack_run::Routing`]), behind a bounded queue
//!   (503 + `Retry-After` when full). Requests may carry `skills` (manual weights) or `route`
//!   (`auto`, `none`, a router's name); responses carry the applied weights in a `skillpack`
//!   field and an `x-skillpack-weights` header.
//! * [`proxy`](mod@proxy) — `skillpack proxy`: the same API in front of one or more llama-server
//!   instances that loaded the pack's adapters at scale 0; it routes locally (the base GGUF
//!   gives the features) and sends each request's full per-adapter `lora` list upstream.

pub mod api;
pub mod load_test;
pub mod metrics;
pub mod plan;
pub mod proxy;
pub mod server;
pub mod slots;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub use api::{ApiError, SkillReport};
pub use plan::Limits;
pub use proxy::{check_http_url, proxy, ProxyConfig};
pub use server::{serve, serve_until, ServeConfig};

/// Errors that stop a server from starting (or end it).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Llama(#[from] skillpack_llama::LlamaError),
    #[error(transparent)]
    Pack(#[from] skillpack_pack::PackError),
    #[error(transparent)]
    Convert(#[from] skillpack_convert::ConvertError),
    #[error(transparent)]
    Run(#[from] skillpack_run::RunError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Resolves on SIGINT or SIGTERM: stop accepting, finish what is in flight.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// The body, or the OpenAI-shaped error for one that could not be read (413 names the limit).
pub(crate) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!(
                    "the request body exceeds this server's limit of {limit} bytes (--max-body)"
                ),
            )
        } else {
            ApiError::new(status, format!("cannot read the request body: {rejection}"))
        }
    })
}

/// 404 for unknown paths, in OpenAI's shape.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no endpoint {} (try /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics)", uri.path()),
    )
    .into_response()
}

/// `GET /metrics`: the Prometheus text of `metrics`.
pub(crate) fn metrics_response(metrics: &metrics::Metrics) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics.render(),
    )
        .into_response()
}

/// A `text/event-stream` response over `events`, with the applied weights in its header.
pub(crate) fn sse_response<S>(events: S, report: &SkillReport) -> Response
where
    S: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    use axum::http::{header, HeaderValue};
    use futures_util::StreamExt;
    let mut response = Response::new(axum::body::Body::from_stream(
        events.map(Ok::<_, std::convert::Infallible>),
    ));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-skillpack-weights", report.header());
    response
}
