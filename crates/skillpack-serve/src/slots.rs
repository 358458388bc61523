//! Slots: one OS thread per llama.cpp context, each with its own skill engine and routers,
//! fed from one bounded queue. A slot clears its KV cache for every request, so no cache is
//! ever reused across two weightings (or two requests).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use skillpack_llama::{Context, ContextParams, Model, Token};
use skillpack_pack::Pack;
use skillpack_run::{generate_until, Generation, Mode, Routing, SkillEngine};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{ApiError, SkillReport};
use crate::metrics::Metrics;
use crate::plan::{prompt_tokens, Plan, SkillChoice};

/// What a slot reports back about one request, in order: `Start`, any `Text`, then `Done` —
/// or a single `Error` instead of all of them.
#[derive(Debug)]
pub enum Event {
    /// The prompt is accepted and the skills are set.
    Start {
        prompt_tokens: usize,
        report: SkillReport,
    },
    /// A piece of generated text.
    Text(String),
    /// The generation finished.
    Done(Generation),
    /// The request failed (before or during generation).
    Error(ApiError),
}

/// One request for a slot.
pub struct Job {
    pub plan: Plan,
    pub events: UnboundedSender<Event>,
    pub enqueued: Instant,
}

/// How slots are built.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    pub model_path: PathBuf,
    pub pack: Option<PathBuf>,
    pub ctx_size: u32,
    pub threads: Option<i32>,
    /// How weighted skills are applied. `multi` by default: `auto` picks per request from
    /// timings, so equal requests could take different (numerically close) paths.
    pub mode: Mode,
}

/// The sending side of a bounded queue of work for worker threads (slots, or the proxy's
/// routing threads); its depth is the `skillpack_queue_depth` gauge.
pub struct Queue<J> {
    tx: Mutex<Option<SyncSender<J>>>,
    metrics: Arc<Metrics>,
    /// The 503 message when the queue is full.
    full: &'static str,
}

impl<J> Queue<J> {
    /// A queue holding up to `capacity` waiting jobs, and its receiving side for the workers.
    pub fn new(
        capacity: usize,
        metrics: Arc<Metrics>,
        full: &'static str,
    ) -> (Self, Arc<Mutex<Receiver<J>>>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (
            Queue {
                tx: Mutex::new(Some(tx)),
                metrics,
                full,
            },
            Arc::new(Mutex::new(rx)),
        )
    }

    /// Queues `job`, or answers 503 with `Retry-After` when the queue is full.
    pub fn submit(&self, job: J) -> Result<(), ApiError> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            self.metrics.rejected("shutting_down");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        };
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                let (reason, message) = match e {
                    TrySendError::Full(_) => ("queue_full", self.full),
                    TrySendError::Disconnected(_) => {
                        ("shutting_down", "the server is shutting down")
                    }
                };
                self.metrics.rejected(reason);
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
                err.retry_after = Some(1);
                Err(err)
            }
        }
    }

    /// Stops taking requests; workers finish what is queued, then exit.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The next job for a worker, counted out of the queue depth; `None` once the queue is closed
/// and drained.
pub fn next_job<J>(rx: &Mutex<Receiver<J>>, metrics: &Metrics) -> Option<J> {
    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv().ok()?;
    metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
    Some(job)
}

/// One slot's state: a context and the pack's skills and routers for it.
pub struct Slot<'m> {
    model: &'m Model,
    ctx: Context<'m>,
    engine: Option<SkillEngine<'m>>,
    routing: Option<Routing<'m>>,
    mode: Mode,
}

impl<'m> Slot<'m> {
    /// Builds a slot: its context, the pack's adapters and every router of the pack (each
    /// checked against the model).
    pub fn new(model: &'m Model, cfg: &SlotConfig) -> Result<Self, String> {
        let ctx = Context::new(
            model,
            &ContextParams {
                n_ctx: cfg.ctx_size,
                n_threads: cfg.threads,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let mut slot = Slot {
            model,
            ctx,
            engine: None,
            routing: None,
            mode: cfg.mode,
        };
        if let Some(dir) = &cfg.pack {
            let pack = Pack::open(dir).map_err(|e| e.to_string())?;
            slot.routing = Some(
                Routing::all(model, &pack, &cfg.model_path, cfg.threads)
                    .map_err(|e| e.to_string())?,
            );
            slot.engine = Some(SkillEngine::new(model, pack).map_err(|e| e.to_string())?);
        }
        Ok(slot)
    }

    /// Serves requests from `queue` until it closes.
    pub fn serve(mut self, queue: &Mutex<Receiver<Job>>, metrics: &Metrics) {
        while let Some(job) = next_job(queue, metrics) {
            if job.events.is_closed() {
                // The client left while the request was queued.
                metrics.cancelled();
                continue;
            }
            metrics.busy.fetch_add(1, Ordering::Relaxed);
            self.run(job, metrics);
            metrics.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn set_skills(
        &mut self,
        choice: &SkillChoice,
        tokens: &[Token],
        expected: usize,
    ) -> Result<SkillReport, ApiError> {
        let weights = match choice {
            SkillChoice::None => None,
            SkillChoice::Manual(w) => Some(w.clone()),
            SkillChoice::Route(name) => Some(
                self.routing
                    .as_mut()
                    .ok_or_else(|| ApiError::invalid("route", "this server has no pack"))?
                    .weights(name, tokens, None)?,
            ),
        };
        let mut report = SkillReport {
            route: choice.label(),
            weights: Vec::new(),
            mode: None,
            upstream: None,
        };
        match (weights, &mut self.engine) {
            (Some(w), Some(engine)) => {
                let applied = engine.apply(&mut self.ctx, &w, self.mode, expected)?;
                report.weights = engine.named_weights(&applied.selection);
                report.mode = Some(applied.mode.as_str().to_string());
            }
            _ => {
                self.ctx
                    .clear_adapters()
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            }
        }
        Ok(report)
    }

    fn run(&mut self, job: Job, metrics: &Metrics) {
        let Job {
            plan,
            events,
            enqueued,
        } = job;
        let result = (|| -> Result<(), ApiError> {
            let tokens = prompt_tokens(self.model, &plan.prompt)?;
            let n_ctx = self.ctx.n_ctx();
            if tokens.len() + plan.params.max_tokens > n_ctx {
                return Err(ApiError::invalid(
                    "max_tokens",
                    format!(
                        "the prompt ({} tokens) + max_tokens ({}) exceed the context of {n_ctx} tokens (--ctx-size)",
                        tokens.len(),
                        plan.params.max_tokens
                    ),
                ));
            }
            let report =
                self.set_skills(&plan.skills, &tokens, tokens.len() + plan.params.max_tokens)?;
            metrics.routed(&report.route, &report.weights);
            if events
                .send(Event::Start {
                    prompt_tokens: tokens.len(),
                    report,
                })
                .is_err()
            {
                metrics.cancelled();
                return Ok(());
            }
            let mut first = true;
            let generation = generate_until(&mut self.ctx, &tokens, &plan.params, |piece| {
                if first {
                    metrics.first_token(enqueued.elapsed().as_secs_f64());
                    first = false;
                }
                events.send(Event::Text(piece.to_string())).is_ok()
            })?;
            metrics.tokens(generation.prompt_tokens, generation.generated_tokens);
            if generation.finish == "cancelled" {
                metrics.cancelled();
            } else {
                let _ = events.send(Event::Done(generation));
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = events.send(Event::Error(e));
        }
    }
}
