//! Prometheus text exposition of the server's counters, gauges and latency histograms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= b {
                *c += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    ttft: Histogram,
    prompt_tokens: u64,
    generated_tokens: u64,
    routes: BTreeMap<String, u64>,
    skills_selected: BTreeMap<String, u64>,
    skill_weight_sum: BTreeMap<String, f64>,
    rejected: BTreeMap<String, u64>,
    cancelled: u64,
}

/// The server's metrics; cheap to update from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicI64,
    /// Slots (or upstream requests) busy now.
    pub busy: AtomicI64,
    /// Slots (or upstreams) configured.
    pub capacity: AtomicI64,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        // A panic elsewhere must not take the metrics down with it.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A finished request: endpoint, HTTP status and wall time.
    pub fn request(&self, endpoint: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.requests
                .entry((endpoint.to_string(), status))
                .or_default() += 1;
            m.latency
                .entry(endpoint.to_string())
                .or_default()
                .observe(seconds);
        })
    }

    /// Time to the first generated token.
    pub fn first_token(&self, seconds: f64) {
        self.with(|m| m.ttft.observe(seconds))
    }

    /// Tokens of a finished generation.
    pub fn tokens(&self, prompt: usize, generated: usize) {
        self.with(|m| {
            m.prompt_tokens += prompt as u64;
            m.generated_tokens += generated as u64;
        })
    }

    /// A routing decision: how the weights were chosen and which skills were applied.
    pub fn routed(&self, route: &str, applied: &[(String, f32)]) {
        self.with(|m| {
            *m.routes.entry(route.to_string()).or_default() += 1;
            for (skill, w) in applied {
                *m.skills_selected.entry(skill.clone()).or_default() += 1;
                *m.skill_weight_sum.entry(skill.clone()).or_default() += *w as f64;
            }
        })
    }

    /// A request turned away before it ran (`queue_full`, `shutting_down`, …).
    pub fn rejected(&self, reason: &str) {
        self.with(|m| *m.rejected.entry(reason.to_string()).or_default() += 1)
    }

    /// A generation stopped because its client went away.
    pub fn cancelled(&self) {
        self.with(|m| m.cancelled += 1)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            &mut out,
            "skillpack_queue_depth",
            "Requests waiting for a slot.",
            self.queue_depth.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "skillpack_busy",
            "Slots or upstream requests busy now.",
            self.busy.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "skillpack_capacity",
            "Slots (serve) or upstreams (proxy) configured.",
            self.capacity.load(Ordering::Relaxed),
        );
        self.with(|m| {
            let _ = writeln!(
                out,
                "# HELP skillpack_requests_total Finished HTTP requests by endpoint and status.\n# TYPE skillpack_requests_total counter"
            );
            for ((endpoint, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "skillpack_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP skillpack_request_duration_seconds Request wall time by endpoint.\n# TYPE skillpack_request_duration_seconds histogram"
            );
            for (endpoint, h) in &m.latency {
                histogram(
                    &mut out,
                    "skillpack_request_duration_seconds",
                    &format!("endpoint=\"{endpoint}\","),
                    h,
                );
            }
            let _ = writeln!(
                out,
                "# HELP skillpack_time_to_first_token_seconds From request to the first generated token.\n# TYPE skillpack_time_to_first_token_seconds histogram"
            );
            histogram(&mut out, "skillpack_time_to_first_token_seconds", "", &m.ttft);
            let _ = writeln!(
                out,
                "# HELP skillpack_tokens_total Tokens processed.\n# TYPE skillpack_tokens_total counter\nskillpack_tokens_total{{kind=\"prompt\"}} {}\nskillpack_tokens_total{{kind=\"generated\"}} {}",
                m.prompt_tokens, m.generated_tokens
            );
            let _ = writeln!(
                out,
                "# HELP skillpack_routes_total Requests by how their skill weights were chosen.\n# TYPE skillpack_routes_total counter"
            );
            for (route, n) in &m.routes {
                let _ = writeln!(out, "skillpack_routes_total{{route=\"{route}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP skillpack_skill_selected_total Requests that applied each skill.\n# TYPE skillpack_skill_selected_total counter"
            );
            for (skill, n) in &m.skills_selected {
                let _ = writeln!(out, "skillpack_skill_selected_total{{skill=\"{skill}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP skillpack_skill_weight_sum Sum of the weights each skill was applied at.\n# TYPE skillpack_skill_weight_sum counter"
            );
            for (skill, w) in &m.skill_weight_sum {
                let _ = writeln!(out, "skillpack_skill_weight_sum{{skill=\"{skill}\"}} {w}");
            }
            let _ = writeln!(
                out,
                "# HELP skillpack_rejected_total Requests turned away before running.\n# TYPE skillpack_rejected_total counter"
            );
            for (reason, n) in &m.rejected {
                let _ = writeln!(out, "skillpack_rejected_total{{reason=\"{reason}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP skillpack_cancelled_total Generations stopped because the client disconnected.\n# TYPE skillpack_cancelled_total counter\nskillpack_cancelled_total {}",
                m.cancelled
            );
        });
        out
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (c, b) in h.counts.iter().zip(BUCKETS) {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count);
    let bare = labels.trim_end_matches(',');
    let braces = if bare.is_empty() {
        String::new()
    } else {
        format!("{{{bare}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_cumulative_buckets_and_labels() {
        let m = Metrics::default();
        m.request("chat", 200, 0.03);
        m.request("chat", 200, 0.7);
        m.request("chat", 400, 0.001);
        m.routed(
            "router:general",
            &[("ner".into(), 0.75), ("re".into(), 0.25)],
        );
        m.routed("manual", &[("ner".into(), 0.5)]);
        let text = m.render();
        assert!(text.contains("skillpack_requests_total{endpoint=\"chat\",status=\"200\"} 2"));
        assert!(text.contains(
            "skillpack_request_duration_seconds_bucket{endpoint=\"chat\",le=\"0.01\"} 1"
        ));
        assert!(text.contains(
            "skillpack_request_duration_seconds_bucket{endpoint=\"chat\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "skillpack_request_duration_seconds_bucket{endpoint=\"chat\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("skillpack_request_duration_seconds_count{endpoint=\"chat\"} 3"));
        assert!(text.contains("skillpack_skill_selected_total{skill=\"ner\"} 2"));
        assert!(text.contains("skillpack_skill_weight_sum{skill=\"ner\"} 1.25"));
        assert!(text.contains("skillpack_routes_total{route=\"router:general\"} 1"));
        assert!(text.contains("skillpack_time_to_first_token_seconds_count 0"));
    }
}
