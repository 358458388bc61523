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

/// A small deterministic generator for the kill schedule (xorshift64*).
struct Schedule(u64);

impl Schedule {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The checkpoint a resume would read, if any, must be complete: its state parses and its
/// tensors file is a whole safetensors file.
fn assert_checkpoint_whole(out: &Path) {
    for name in ["checkpoint", "checkpoint.old"] {
        let dir = out.join(name);
        if !dir.join("state.json").is_file() {
            continue;
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("state.json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}/state.json is half-written: {e}"));
        assert!(state["step"].as_u64().unwrap().is_multiple_of(5));
        let tensors = std::fs::read(dir.join("state.safetensors")).unwrap();
        safetensors::SafeTensors::deserialize(&tensors)
            .unwrap_or_else(|e| panic!("{name}/state.safetensors is half-written: {e}"));
        return;
    }
}

#[test]
fn kill_dash_nine_then_resume_matches_an_uninterrupted_run() {
    // Kill points are random (step and moment within it, checkpoint writes included); the seed
    // is printed and can be replayed with SKILLPACK_KILL_SEED.
    let seed = std::env::var("SKILLPACK_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("kill schedule seed {seed}");
    let mut schedule = Schedule(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data.jsonl");
    write_data(&data);
    let (straight, killed) = (tmp.path().join("straight"), tmp.path().join("killed"));
    let status = train(&data, &straight, false).status().unwrap();
    assert!(status.success());

    let mut resumed_from = Vec::new();
    for kill in 0..3 {
        let mut child = train(&data, &killed, kill > 0).spawn().unwrap();
        let target = (metric_lines(&killed) + 1 + schedule.below(10) as usize).min(36);
        let started = Instant::now();
        while metric_lines(&killed) < target {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "training made no progress"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "training ended before it could be killed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Anywhere inside the next step (a step here takes tens of milliseconds).
        std::thread::sleep(Duration::from_millis(schedule.below(40)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let done = metric_lines(&killed);
        assert_checkpoint_whole(&killed);
        resumed_from.push(done);
        println!("kill {}: SIGKILL after {done} steps", kill + 1);
    }
    let out = train(&data, &killed, true).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let resumed_at: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("resumed at step "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resume line in {stderr}"));
    let done = *resumed_from.last().unwrap();
    println!("resumed at step {resumed_at} after the last kill at {done}");
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
            "{file} differs between the uninterrupted and the resumed run (seed {seed})"
        );
    }
    assert!(straight.join("loss.svg").is_file());
}

/// `train --bench --data` times the trainer on the records and writes the batches it trained
/// on: five of them (warmup + four timed), each a batch of tokenized records whose loss tokens
/// are the answer's (a suffix), and the reported loss tokens per step are those of the timed
/// batches — what PEFT replays in scripts/peft_skill_bench.py.
#[test]
fn bench_on_records_writes_the_batches_it_trained_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data.jsonl");
    write_data(&data);
    let batches_path = tmp.path().join("batches.json");
    let tiny = fixtures().join("tiny-llama/tiny-llama-f32.gguf");
    let (ok, stdout, stderr) = skillpack(&[
        &"train",
        &"--bench",
        &"--r",
        &"4",
        &"--target-r",
        &"2",
        &"--max-len",
        &"64",
        &"--batch",
        &"3",
        &"--json",
        &"--base",
        &tiny,
        &"--data",
        &data,
        &"--batches-out",
        &batches_path,
    ]);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(summary["tokens_per_s"].as_f64().unwrap() > 0.0);
    let dump: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&batches_path).unwrap()).unwrap();
    let batches = dump["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 5);
    let mut timed_targets = 0usize;
    for (step, batch) in batches.iter().enumerate() {
        assert_eq!(batch.as_array().unwrap().len(), 3);
        for example in batch.as_array().unwrap() {
            let ids = example["ids"].as_array().unwrap();
            let targets: Vec<bool> = example["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_bool().unwrap())
                .collect();
            assert_eq!(ids.len(), targets.len());
            let first = targets.iter().position(|t| *t).expect("an answer token");
            assert!(first > 0, "the prompt carries no loss");
            assert!(
                targets[first..].iter().all(|t| *t),
                "the answer is a suffix"
            );
            if step > 0 {
                timed_targets += targets[1..].iter().filter(|t| **t).count();
            }
        }
    }
    let reported = summary["target_tokens_per_step"].as_f64().unwrap();
    assert_eq!(reported, timed_targets as f64 / 4.0);
    assert_eq!(dump["method"], "adalora");
}
