//! `skillpack serve` over loopback: OpenAI-shaped answers equal to `skillpack run` for the same
//! weights (manual, routed, none), streaming equal to non-streaming, and faults — malformed JSON,
//! a huge body, unknown skills, context overflow, a full queue, a client leaving mid-stream,
//! SIGTERM with a request in flight — each a clean error while the server keeps serving.

mod common;

use common::http::*;
use common::*;

const PROMPT: &str = "Find the chemicals: Aspirin number 3 caused gastric ulcers in rats.";

/// `skillpack run --json` with greedy sampling: (text, applied skills, the whole answer).
fn run_text(
    pack: &std::path::Path,
    extra: &[&str],
    prompt: &str,
) -> (String, serde_json::Value, serde_json::Value) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"run",
        &"--pack",
        &pack,
        &"--mode",
        &"multi",
        &"--temp",
        &"0",
        &"-n",
        &"24",
        &"--repeat-penalty",
        &"1.0",
        &"--json",
    ];
    for a in extra {
        args.push(a);
    }
    args.push(&prompt);
    let (ok, out, err) = skillpack(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["text"].as_str().unwrap().to_string(),
        v["skills"].clone(),
        v,
    )
}

fn chat_body(extra: &str, stream: bool) -> String {
    chat_body_n(extra, stream, 24)
}

fn chat_body_n(extra: &str, stream: bool, max_tokens: usize) -> String {
    format!(
        r#"{{"model":"any","messages":[{{"role":"user","content":"{PROMPT}"}}],"max_tokens":{max_tokens},"temperature":0,"repeat_penalty":1.0,"stream":{stream}{extra}}}"#
    )
}

#[test]
fn serve_answers_like_run_for_every_weighting() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = routed_fixture_pack(tmp.path());
    let server = Server::skillpack(&[
        &"serve",
        &"--pack",
        &pack,
        &"--port",
        &"0",
        &"--slots",
        &"2",
        &"--threads",
        &"1",
    ]);
    let chat = format!("{}/v1/chat/completions", server.url);
    for (extra, run_args) in [
        (
            r#","skills":{"ner":0.7,"re":0.3}"#,
            vec!["--skills", "ner=0.7,re=0.3"],
        ),
        (r#","route":"general""#, vec!["--router", "general"]),
        ("", vec![]), // the default route: the pack's default router
        (r#","route":"none""#, vec!["--no-skills"]),
    ] {
        let (expected, skills, run) = run_text(&pack, &run_args, PROMPT);
        let finish = if run["finish"] == "length" {
            "length"
        } else {
            "stop"
        };
        let (status, header, v) = post(&chat, &chat_body(extra, false));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            expected.as_str(),
            "{extra}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], finish);
        assert_eq!(v["usage"]["completion_tokens"], run["generated_tokens"]);
        assert_eq!(v["usage"]["prompt_tokens"], run["prompt_tokens"]);
        // The applied weights are reported, equal to run's.
        let weights = &v["skillpack"]["weights"];
        assert_eq!(
            weights.as_array().unwrap().len(),
            skills.as_array().unwrap().len(),
            "{v}"
        );
        for (a, b) in weights
            .as_array()
            .unwrap()
            .iter()
            .zip(skills.as_array().unwrap())
        {
            assert_eq!(a[0], b[0]);
            assert!(
                (a[1].as_f64().unwrap() - b[1].as_f64().unwrap()).abs() < 1e-5,
                "{a} {b}"
            );
        }
        if run_args.is_empty() || run_args[0] == "--router" {
            assert_eq!(v["skillpack"]["route"], "router:general");
            assert!(!header.is_empty() && header != "none", "{header}");
        }
        // Streaming gives the same text, the weights first and [DONE] last.
        let (status, events, done) = post_stream(&chat, &chat_body(extra, true));
        assert_eq!(status, 200);
        assert!(done);
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(events[0]["skillpack"]["weights"], *weights);
        assert_eq!(stream_text(&events), expected, "{extra}");
        assert_eq!(
            events.last().unwrap()["choices"][0]["finish_reason"],
            finish
        );
    }
    // /v1/completions feeds the prompt raw, like `run --raw`.
    let (expected, _, _) = run_text(
        &pack,
        &["--skills", "qa=1", "--raw"],
        "The symptoms of anemia are",
    );
    let (status, _, v) = post(
        &format!("{}/v1/completions", server.url),
        r#"{"prompt":"The symptoms of anemia are","max_tokens":24,"temperature":0,"repeat_penalty":1.0,"skills":"qa=1"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], expected.as_str());
    let models = client()
        .get(format!("{}/v1/models", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        models.contains("\"skills\":[\"ner\",\"qa\",\"re\"]"),
        "{models}"
    );
    let metrics = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("skillpack_requests_total{endpoint=\"chat\",status=\"200\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skillpack_routes_total{route=\"router:general\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skillpack_skill_selected_total{skill=\"ner\"}"),
        "{metrics}"
    );
    let status = server.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_faults_are_clean_errors_and_it_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = routed_fixture_pack(tmp.path());
    let server = Server::skillpack(&[
        &"serve",
        &"--pack",
        &pack,
        &"--port",
        &"0",
        &"--slots",
        &"1",
        &"--queue",
        &"1",
        &"--threads",
        &"2",
        &"--ctx-size",
        &"256",
        &"--max-body",
        &"65536",
    ]);
    let chat = format!("{}/v1/chat/completions", server.url);
    let long = "word ".repeat(300);
    for (body, status, needle) in [
        (
            "{\"messages\": [".to_string(),
            400,
            "malformed JSON: EOF while parsing",
        ),
        (
            chat_body(r#","skills":{"xx":1}"#, false),
            400,
            "unknown skill `xx` (pack has: ner, qa, re)",
        ),
        (
            chat_body(r#","skills":{"ner":-1}"#, false),
            400,
            "weight of `ner` must be within [0, 4] (-1 given)",
        ),
        (
            chat_body(r#","route":"nope""#, false),
            400,
            "unknown route `nope` (auto, none, general)",
        ),
        (
            chat_body_n("", false, 5000),
            400,
            "exceeds this server's limit of 1024",
        ),
        (
            format!(r#"{{"messages":[{{"role":"user","content":"{long}"}}],"max_tokens":8}}"#),
            400,
            "exceed the context of 256 tokens (--ctx-size)",
        ),
        (
            "x".repeat(70000),
            413,
            "exceeds this server's limit of 65536 bytes (--max-body)",
        ),
    ] {
        let (s, _, v) = post(&chat, &body);
        assert_eq!(s, status, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
        assert!(v["error"]["type"].is_string());
    }

    // A client that leaves mid-stream: the slot stops generating and takes the next request.
    {
        use std::io::Read;
        let mut r = client()
            .post(&chat)
            .body(chat_body_n("", true, 200))
            .send()
            .unwrap();
        let mut first = [0u8; 64];
        r.read_exact(&mut first).unwrap();
    } // dropped: connection closed
    let t0 = std::time::Instant::now();
    loop {
        let m = client()
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        if m.contains("skillpack_cancelled_total 1") {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "the disconnect was not noticed: {m}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // One slot, a queue of one: of four concurrent long requests at least one is turned away
    // with 503 + Retry-After, and every other one completes.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let chat = chat.clone();
            std::thread::spawn(move || {
                let r = client()
                    .post(&chat)
                    .body(chat_body_n("", false, 100))
                    .send()
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            })
        })
        .collect();
    let results: Vec<(u16, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.contains(&(503, true)), "{results:?}");
    assert!(
        results.iter().all(|r| r.0 == 200 || *r == (503, true)),
        "{results:?}"
    );

    // Still serving; then SIGTERM with a request in flight: it completes, the server exits 0.
    let (s, _, _) = post(&chat, &chat_body("", false));
    assert_eq!(s, 200);
    let in_flight = {
        let chat = chat.clone();
        std::thread::spawn(move || post(&chat, &chat_body_n("", false, 120)))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = server.stop();
    let (s, _, v) = in_flight.join().unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_ne!(v["choices"][0]["finish_reason"], "cancelled");
    assert!(status.success(), "{status:?}");
}
