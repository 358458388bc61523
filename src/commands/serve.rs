//! `skillpack serve` and `skillpack proxy`: OpenAI-compatible HTTP servers of a skill pack.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use skillpack_run::Mode;
use skillpack_serve::{Limits, ProxyConfig, ServeConfig};

/// Limits every request is checked against (both servers).
#[derive(clap::Args, Clone)]
pub struct LimitArgs {
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens_limit: usize,
    /// max_tokens of a request that gives none.
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Route of a request that gives neither `skills` nor `route`: auto (the pack's default
    /// router), none (base model), or a router's name.
    #[arg(long, default_value = "auto")]
    pub route: String,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_tokens: self.max_tokens_limit,
            default_max_tokens: self.default_max_tokens.min(self.max_tokens_limit),
            default_route: self.route.clone(),
        }
    }
}

/// Serve a model and its skill pack over an OpenAI-compatible HTTP API.
#[derive(clap::Args)]
#[command(
    after_help = "Endpoints: POST /v1/chat/completions, POST /v1/completions (both with \"stream\": true), GET /v1/models, /health, /metrics.\nRequest extensions: \"skills\": {\"ner\": 0.7} (manual weights) or \"route\": \"auto\" | \"none\" | ROUTER.\n\nExamples:\n  skillpack serve --pack examples/packs/medical-smollm2 --port 8080\n  curl -s localhost:8080/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"What causes anemia?\"}],\"max_tokens\":64}'"
)]
pub struct ServeArgs {
    /// GGUF model (default: the setup's model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Skill pack directory (none: the base model only).
    #[arg(long)]
    pub pack: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the address is printed when ready).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// llama.cpp contexts serving requests concurrently, one thread each.
    #[arg(long, default_value_t = 2)]
    pub slots: usize,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Context length of each slot.
    #[arg(long, default_value_t = 2048)]
    pub ctx_size: u32,
    /// CPU threads per slot (default: llama.cpp's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Model layers offloaded to the GPU (0: none, -1: all); needs a build with `--features gpu`
    /// (scripts/build-gpu.sh).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub gpu_layers: i32,
    /// How weighted skills are applied: multi (default: the same path for every request),
    /// fused, fused-compressed, auto.
    #[arg(long, default_value = "multi")]
    pub mode: Mode,
    /// Model id in responses and /v1/models (default: the model's file stem).
    #[arg(long)]
    pub model_name: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Route requests locally and forward them to llama-server instances holding the pack's
/// adapters (start those with the flags of `skillpack pack llama-server-args`).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  llama-server -m models/SmolLM2-135M-Instruct.Q4_1.gguf --port 8081 $(skillpack pack llama-server-args examples/packs/medical-smollm2)\n  skillpack proxy --upstream http://127.0.0.1:8081 --pack examples/packs/medical-smollm2 --port 8080"
)]
pub struct ProxyArgs {
    /// llama-server base URL; repeat for several (each request goes to the least busy).
    #[arg(long = "upstream", required = true)]
    pub upstreams: Vec<String>,
    /// The base GGUF the upstreams serve (read locally for routing features).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub pack: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Round skill weights to multiples of 1/LEVELS, so equal weightings batch upstream.
    #[arg(long, default_value_t = 8)]
    pub levels: u32,
    /// Threads computing routing features.
    #[arg(long, default_value_t = 1)]
    pub route_threads: usize,
    /// Seconds to wait for the upstreams' /lora-adapters at start.
    #[arg(long, default_value_t = 60)]
    pub upstream_wait: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
}

fn address(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve --host {host}"))
}

/// Prints the bound address on stdout (scripts and tests wait for this line).
fn announce(what: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what} listening on http://{addr}");
    let _ = out.flush();
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let model = match args.model {
        Some(p) => p,
        None => super::default_model()?,
    };
    let model_name = args.model_name.unwrap_or_else(|| {
        model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let cfg = ServeConfig {
        model,
        pack: args.pack,
        addr: address(&args.host, args.port)?,
        slots: args.slots,
        queue: args.queue,
        ctx_size: args.ctx_size,
        threads: args.threads,
        gpu_layers: args.gpu_layers,
        mode: args.mode,
        limits: args.limits.limits(),
        max_body: args.limits.max_body,
        model_name,
    };
    skillpack_serve::serve(cfg, |addr| announce("skillpack serve", addr))?;
    Ok(())
}

pub fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let model = match args.model {
        Some(p) => p,
        None => super::default_model()?,
    };
    let cfg = ProxyConfig {
        upstreams: args.upstreams,
        model,
        pack: args.pack,
        addr: address(&args.host, args.port)?,
        levels: args.levels,
        route_threads: args.route_threads,
        limits: args.limits.limits(),
        max_body: args.limits.max_body,
        upstream_wait: Duration::from_secs(args.upstream_wait),
    };
    skillpack_serve::proxy(cfg, |addr| announce("skillpack proxy", addr))?;
    Ok(())
}
