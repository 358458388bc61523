//! Servers under test: start `skillpack serve`/`proxy` (or llama-server) as child processes, talk
//! to them over loopback HTTP, stop them with SIGTERM.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A server child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts `skillpack ARGS` and waits (up to 3 minutes) for its "listening on URL" line.
    pub fn skillpack(args: &[&dyn AsRef<OsStr>]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skillpack"))
            .args(args.iter().map(|a| a.as_ref()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("server did not start: {:?}", child.try_wait()));
        Server { child, url }
    }

    /// Starts a process that listens on `port` and waits until `GET url/health` answers 200.
    pub fn external(program: &OsStr, args: &[String], port: u16) -> Server {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = client().get(format!("{}/health", server.url)).send() {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "{program:?} exited while starting"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "{program:?} did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then the exit status (graceful shutdown finishes in-flight requests first).
    pub fn stop(mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound once, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A blocking client with a generous timeout.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

fn send_json(url: &str, body: &str) -> reqwest::blocking::Response {
    client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

/// POSTs `body` (JSON text) to `url`; returns the status, the `x-skillpack-weights` header and
/// the JSON answer.
pub fn post(url: &str, body: &str) -> (u16, String, serde_json::Value) {
    let r = send_json(url, body);
    let status = r.status().as_u16();
    let weights = r
        .headers()
        .get("x-skillpack-weights")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, weights, value)
}

/// POSTs a streaming request; returns the status and the parsed `data:` events (without
/// `[DONE]`) and whether `[DONE]` came last.
pub fn post_stream(url: &str, body: &str) -> (u16, Vec<serde_json::Value>, bool) {
    let r = send_json(url, body);
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let mut events = Vec::new();
    let mut done = false;
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            if data == "[DONE]" {
                done = true;
            } else {
                events.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")));
            }
        }
    }
    (status, events, done)
}

/// The text of a chat stream's deltas (or a completion stream's texts).
pub fn stream_text(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .filter_map(|e| {
            let c = &e["choices"][0];
            c["delta"]["content"].as_str().or(c["text"].as_str())
        })
        .collect()
}

/// llama-server's arguments for the default model on 127.0.0.1:`port` with 2 threads and flash
/// attention off (as skillpack's own contexts), then `extra`.
pub fn llama_server_args(port: u16, extra: &[&str]) -> Vec<String> {
    let model = super::default_model();
    let port = port.to_string();
    let mut args = vec![
        "-m",
        model.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "-t",
        "2",
        "-fa",
        "off",
    ];
    args.extend_from_slice(extra);
    args.iter().map(|s| s.to_string()).collect()
}

/// The generated token ids and their log-probabilities from a chat completion with `logprobs`.
pub fn answer_logprobs(response: &serde_json::Value) -> (Vec<i32>, Vec<f64>) {
    let content = response["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    content
        .iter()
        .map(|c| {
            (
                c["id"].as_i64().unwrap() as i32,
                c["logprob"].as_f64().unwrap(),
            )
        })
        .unzip()
}
