//! `skillpack train` from the command line: `kill -9` mid-run loses at most one checkpoint
//! interval, and the resumed run ends bit-identical to an uninterrupted one.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn write_data(path: &Path) {
    let words = [
        "aspirin", "fever", "insulin", "asthma", "tumor", "cortisol", "anemia", "lupus",
    ];
    let lines: Vec<String> = (0..24)
        .map(|i| {
            serde_json::json!({
                "id": format!("r{i}"),
                "skill": "ner",
                "context": format!("Patient {i} received {} for {}.", words[i % 8], words[(i + 3) % 8]),
                "query": "List the entities.",
                "output": format!("{}; {}", words[i % 8], words[(i + 3) % 8]),
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn train(data: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillpack"));
    cmd.args([
        "train",
        "--steps",
        "40",
        "--r",
        "4",
        "--target-r",
        "2",
        "--lr",
        "0.02",
        "--max-len",
        "64",
        "--checkpoint-every",
        "5",
    ])
    .arg("--base")
    .arg(fixtures().join("tiny-llama/tiny-llama-f32.gguf"))
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

fn metric_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn kill_dash_nine_then_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data.jsonl");
    write_data(&data);
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let status = train(&data, &straight, false).status().unwrap();
    assert!(status.success());

    let mut child = train(&data, &killed, false).spawn().unwrap();
    let started = Instant::now();
    while metric_lines(&killed) < 13 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done = metric_lines(&killed);
    let out = train(&data, &killed, true).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let resumed_at: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resumed at step "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resume line in {stderr}"));
    println!("killed after {done} steps, resumed at step {resumed_at}");
    assert!(
        done - resumed_at <= 5,
        "lost more than one checkpoint interval ({done} -> {resumed_at})"
    );
    assert_eq!(metric_lines(&killed), 40);
    for file in ["peft/adapter_model.safetensors", "adapter.gguf"] {
        let a = std::fs::read(straight.join(file)).unwrap();
        let b = std::fs::read(killed.join(file)).unwrap();
        assert!(
            a == b,
            "{file} differs between the uninterrupted and the resumed run"
        );
    }
    assert!(straight.join("loss.svg").is_file());
}
