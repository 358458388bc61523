//! `skillpack bench load`: a bounded load test of an OpenAI-compatible server (`skillpack serve`,
//! `skillpack proxy`, or anything speaking the same API) on a mix of skill weightings.
//!
//! First every (weighting, prompt) pair is asked once, alone: those answers are the reference.
//! Then `clients` threads each send `requests` requests, cycling through the pairs; every answer
//! must equal its reference (greedy decoding: the same weighting must give the same text
//! however requests interleave), and none may fail.

use std::time::Duration;

use anyhow::bail;

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

/// `skillpack bench load`.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let options = skillpack_serve::load_test::LoadTestOptions {
        url: args.url.clone(),
        clients: args.clients,
        requests: args.requests,
        max_tokens: args.max_tokens,
        weightings: args
            .weightings
            .split(';')
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty())
            .collect(),
        prompts: args.prompts.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    let bar = indicatif::ProgressBar::new((args.clients * args.requests) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix("load");
    let report = skillpack_serve::load_test::load_test(&options, || bar.inc(1))?;
    bar.finish_and_clear();
    let json = report.to_json();
    if args.json {
        super::print_json(&json)?;
    } else {
        use skillpack_serve::load_test::percentile;
        println!(
            "{} requests ({} clients, {} weightings x {} prompts, max_tokens {}) in {:.1} s: {:.2} req/s, latency p50 {:.3} s, p99 {:.3} s; {} errors, {} answers differing from the single-request answer",
            report.requests, report.clients, report.weightings.len(), report.prompts, report.max_tokens,
            report.wall_s, report.requests_per_s(), percentile(&report.latencies, 0.5),
            percentile(&report.latencies, 0.99), report.errors.len(), report.mismatches.len()
        );
        if let Some(e) = report.errors.first() {
            println!("first error: {e}");
        }
        if let Some(m) = json.get("first_mismatch").filter(|m| !m.is_null()) {
            println!("first mismatch: {m}");
        }
    }
    if !report.errors.is_empty() || !report.mismatches.is_empty() {
        bail!(
            "{} errors and {} mismatches under load",
            report.errors.len(),
            report.mismatches.len()
        );
    }
    Ok(())
}
