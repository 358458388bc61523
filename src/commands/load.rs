//! `skillpack bench load`: a bounded load test of an OpenAI-compatible server (`skillpack serve`,
//! `skillpack proxy`, or anything speaking the same API) on a mix of skill weightings.
//!
//! First every (weighting, prompt) pair is asked once, alone: those answers are the reference.
//! Then `clients` threads each send `requests` requests, cycling through the pairs; every answer
//! must equal its reference (greedy decoding: the same weighting must give the same text
//! however requests interleave), and none may fail.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Load-test a running server with a mix of skill weightings.
#[derive(clap::Args)]
#[command(
    after_help = "Weightings are separated by ';': `ner=1`, `ner=0.5,re=0.5` (manual), `route:NAME`, `route:auto`, `route:none`.\n\nExample:\n  skillpack bench load --url http://127.0.0.1:8080 --clients 16 --requests 50 --max-tokens 8 --weightings 'qa=1;ner=0.5,re=0.5;route:auto;route:none'"
)]
pub struct LoadArgs {
    /// Base URL of the server.
    #[arg(long)]
    pub url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Requests per client.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    #[arg(long, default_value_t = 8)]
    pub max_tokens: usize,
    /// Skill weightings to mix (';'-separated).
    #[arg(long, default_value = "route:auto;route:none")]
    pub weightings: String,
    /// Prompts to mix (repeatable; default: three medical questions).
    #[arg(long = "prompt")]
    pub prompts: Vec<String>,
    /// Seconds before a request counts as failed.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    #[arg(long)]
    pub json: bool,
}

/// One (weighting, prompt) pair and its reference answer.
struct Case {
    weighting: String,
    prompt: String,
    body: String,
    reference: String,
}

fn body(weighting: &str, prompt: &str, max_tokens: usize) -> anyhow::Result<String> {
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
    Ok(serde_json::to_string(&v)?)
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    skillpack_serve::check_http_url("--url", &args.url).map_err(anyhow::Error::msg)?;
    let url = args.url.trim_end_matches('/').to_string();
    let prompts = if args.prompts.is_empty() {
        vec![
            "What are the symptoms of iron deficiency anemia?".to_string(),
            "Find the chemicals and diseases: Cisplatin caused nephrotoxicity in rats.".to_string(),
            "Does aspirin reduce the risk of a second heart attack? Answer yes, no or maybe."
                .to_string(),
        ]
    } else {
        args.prompts.clone()
    };
    let weightings: Vec<String> = args
        .weightings
        .split(';')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    if weightings.is_empty() || args.clients == 0 || args.requests == 0 {
        bail!("need at least one weighting, client and request");
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()?;
    let mut cases = Vec::new();
    for w in &weightings {
        for p in &prompts {
            let body = body(w, p, args.max_tokens)?;
            let reference = ask(&client, &url, &body)
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("reference answer for `{w}` on {url}"))?;
            cases.push(Case {
                weighting: w.clone(),
                prompt: p.clone(),
                body,
                reference,
            });
        }
    }
    let bar = indicatif::ProgressBar::new((args.clients * args.requests) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix("load");
    let t0 = Instant::now();
    let results: Vec<(usize, f64, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let (client, cases, url, bar) = (&client, &cases, &url, &bar);
                s.spawn(move || {
                    (0..args.requests)
                        .map(|i| {
                            let k = (c + i * args.clients) % cases.len();
                            let t = Instant::now();
                            let r = ask(client, url, &cases[k].body);
                            bar.inc(1);
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
    let wall = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut latencies: Vec<f64> = results.iter().map(|r| r.1).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let errors: Vec<&String> = results.iter().filter_map(|r| r.2.as_ref().err()).collect();
    let mismatches: Vec<(usize, &String)> = results
        .iter()
        .filter_map(|(k, _, r)| match r {
            Ok(text) if *text != cases[*k].reference => Some((*k, text)),
            _ => None,
        })
        .collect();
    let report = serde_json::json!({
        "url": url,
        "clients": args.clients,
        "requests": results.len(),
        "max_tokens": args.max_tokens,
        "weightings": weightings,
        "cases": cases.len(),
        "errors": errors.len(),
        "mismatches": mismatches.len(),
        "wall_s": wall,
        "requests_per_s": results.len() as f64 / wall,
        "latency_p50_s": percentile(&latencies, 0.5),
        "latency_p99_s": percentile(&latencies, 0.99),
        "latency_max_s": latencies.last().copied().unwrap_or(0.0),
        "first_error": errors.first(),
        "first_mismatch": mismatches.first().map(|(k, text)| serde_json::json!({
            "weighting": cases[*k].weighting, "prompt": cases[*k].prompt,
            "reference": cases[*k].reference, "got": text,
        })),
    });
    if args.json {
        super::print_json(&report)?;
    } else {
        println!(
            "{} requests ({} clients, {} weightings x {} prompts, max_tokens {}) in {:.1} s: {:.2} req/s, latency p50 {:.3} s, p99 {:.3} s; {} errors, {} answers differing from the single-request answer",
            results.len(), args.clients, weightings.len(), prompts.len(), args.max_tokens, wall,
            results.len() as f64 / wall, percentile(&latencies, 0.5), percentile(&latencies, 0.99),
            errors.len(), mismatches.len()
        );
        if let Some(e) = errors.first() {
            println!("first error: {e}");
        }
        if let Some(m) = report.get("first_mismatch").filter(|m| !m.is_null()) {
            println!("first mismatch: {m}");
        }
    }
    if !errors.is_empty() || !mismatches.is_empty() {
        bail!(
            "{} errors and {} mismatches under load",
            errors.len(),
            mismatches.len()
        );
    }
    Ok(())
}
