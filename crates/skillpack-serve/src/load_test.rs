//! A bounded load test of an OpenAI-compatible server (`skillpack serve`, `skillpack proxy`, or
//! anything speaking the same API) on a mix of skill weightings.
//!
//! First every (weighting, prompt) pair is asked once, alone: those answers are the reference.
//! Then `clients` threads each send `requests` requests, cycling through the pairs; every answer
//! must equal its reference (greedy decoding: the same weighting must give the same text
//! however requests interleave), and none may fail.

use std::time::{Duration, Instant};

use crate::ServeError;

/// The prompts mixed when none are given.
pub const DEFAULT_LOAD_PROMPTS: [&str; 3] = [
    "What are the symptoms of iron deficiency anemia?",
    "Find the chemicals and diseases: Cisplatin caused nephrotoxicity in rats.",
    "Does aspirin reduce the risk of a second heart attack? Answer yes, no or maybe.",
];

/// What [`load_test`] sends.
#[derive(Debug, Clone)]
pub struct LoadTestOptions {
    /// Base URL of the server.
    pub url: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    pub max_tokens: usize,
    /// Skill weightings to mix: `ner=1`, `ner=0.5,re=0.5` (manual), `route:NAME`,
    /// `route:auto`, `route:none`.
    pub weightings: Vec<String>,
    /// Prompts to mix (empty: [`DEFAULT_LOAD_PROMPTS`]).
    pub prompts: Vec<String>,
    /// Time before a request counts as failed.
    pub timeout: Duration,
}

/// One (weighting, prompt) pair and its reference answer.
#[derive(Debug, Clone)]
pub struct LoadCase {
    pub weighting: String,
    pub prompt: String,
    body: String,
    /// The answer to the request sent alone.
    pub reference: String,
}

/// An answer under load that differs from its case's reference.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Index into [`LoadReport::cases`].
    pub case: usize,
    pub got: String,
}

/// What the load test measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The URL without a trailing `/`.
    pub url: String,
    pub clients: usize,
    pub max_tokens: usize,
    pub weightings: Vec<String>,
    pub prompts: usize,
    pub cases: Vec<LoadCase>,
    /// Requests sent under load.
    pub requests: usize,
    pub wall_s: f64,
    /// Sorted per-request latencies in seconds.
    pub latencies: Vec<f64>,
    pub errors: Vec<String>,
    pub mismatches: Vec<Mismatch>,
}

/// The value at quantile `q` of sorted `values` (nearest rank; 0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl LoadReport {
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.wall_s
    }

    /// The report as `skillpack bench load --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.url,
            "clients": self.clients,
            "requests": self.requests,
            "max_tokens": self.max_tokens,
            "weightings": self.weightings,
            "cases": self.cases.len(),
            "errors": self.errors.len(),
            "mismatches": self.mismatches.len(),
            "wall_s": self.wall_s,
            "requests_per_s": self.requests_per_s(),
            "latency_p50_s": percentile(&self.latencies, 0.5),
            "latency_p99_s": percentile(&self.latencies, 0.99),
            "latency_max_s": self.latencies.last().copied().unwrap_or(0.0),
            "first_error": self.errors.first(),
            "first_mismatch": self.mismatches.first().map(|m| {
                let case = &self.cases[m.case];
                serde_json::json!({
                    "weighting": case.weighting, "prompt": case.prompt,
                    "reference": case.reference, "got": m.got,
                })
            }),
        })
    }
}

fn request_body(weighting: &str, prompt: &str, max_tokens: usize) -> String {
    let mut v = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
    });
    if let Some(route) = weighting.strip_prefix("route:") {
        v["route"] = route.into();
    } else {
        v["skills"] = weighting.into();
    }
    v.to_string()
}

fn ask(client: &reqwest::blocking::Client, url: &str, body: &str) -> Result<String, String> {
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["choices"][0]["message"]["content"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("no message in {text}"))
}

/// Runs the load test: the reference answers first, then the concurrent requests, calling
/// `on_request` after each of those (for a progress bar).
pub fn load_test(
    options: &LoadTestOptions,
    on_request: impl Fn() + Sync,
) -> Result<LoadReport, ServeError> {
    crate::check_http_url("--url", &options.url).map_err(ServeError::Invalid)?;
    let url = options.url.trim_end_matches('/').to_string();
    let prompts: Vec<String> = if options.prompts.is_empty() {
        DEFAULT_LOAD_PROMPTS.iter().map(|p| p.to_string()).collect()
    } else {
        options.prompts.clone()
    };
    if options.weightings.is_empty() || options.clients == 0 || options.requests == 0 {
        return Err(ServeError::Invalid(
            "need at least one weighting, client and request".into(),
        ));
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(options.timeout)
        .build()
        .map_err(|e| ServeError::Invalid(format!("HTTP client: {e}")))?;
    let mut cases = Vec::new();
    for w in &options.weightings {
        for p in &prompts {
            let body = request_body(w, p, options.max_tokens);
            let reference = ask(&client, &url, &body).map_err(|e| {
                ServeError::Invalid(format!("reference answer for `{w}` on {url}: {e}"))
            })?;
            cases.push(LoadCase {
                weighting: w.clone(),
                prompt: p.clone(),
                body,
                reference,
            });
        }
    }
    let (clients, requests) = (options.clients, options.requests);
    let t0 = Instant::now();
    let results: Vec<(usize, f64, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (client, cases, url, on_request) = (&client, &cases, &url, &on_request);
                s.spawn(move || {
                    (0..requests)
                        .map(|i| {
                            // Clients start at different cases and stride by the client count,
                            // so every case is in flight beside every other.
                            let k = (c + i * clients) % cases.len();
                            let t = Instant::now();
                            let r = ask(client, url, &cases[k].body);
                            on_request();
                            (k, t.elapsed().as_secs_f64(), r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall_s = t0.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = results.iter().map(|r| r.1).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mut errors = Vec::new();
    let mut mismatches = Vec::new();
    for (k, _, r) in &results {
        match r {
            Err(e) => errors.push(e.clone()),
            Ok(text) if *text != cases[*k].reference => mismatches.push(Mismatch {
                case: *k,
                got: text.clone(),
            }),
            Ok(_) => {}
        }
    }
    Ok(LoadReport {
        url,
        clients,
        max_tokens: options.max_tokens,
        weightings: options.weightings.clone(),
        prompts: prompts.len(),
        requests: results.len(),
        cases,
        wall_s,
        latencies,
        errors,
        mismatches,
    })
}
