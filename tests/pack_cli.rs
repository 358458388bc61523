//! `skillpack pack` from the command line: create, add (GGUF and PEFT), check against the right
//! and a wrong base, info, with --json.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn pack_lifecycle_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("med");
    let base = default_model();
    let fx = fixtures().join("smollm2");
    let (ok, _, err) = skillpack(&[&"pack", &"new", &dir, &"--name", &"med", &"--base", &base]);
    assert!(ok, "{err}");
    // A second `new` must not clobber it.
    let (ok, _, err) = skillpack(&[&"pack", &"new", &dir, &"--name", &"other", &"--base", &base]);
    assert!(!ok && err.contains("a pack already exists"), "{err}");

    // A PEFT directory (converted on the way in) and a GGUF adapter.
    let (ok, out, err) = skillpack(&[
        &"pack",
        &"add",
        &dir,
        &fx.join("peft-adalora"),
        &"--id",
        &"ada",
        &"--title",
        &"AdaLoRA fixture",
        &"--base",
        &base,
        &"--json",
    ]);
    assert!(ok, "{err}");
    let spec: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(spec["id"], "ada");
    assert_eq!(spec["rank"], 12);
    assert_eq!(
        spec["targets"].as_array().unwrap().len(),
        6,
        "k_proj was pruned to rank 0 everywhere"
    );
    let (ok, _, err) = skillpack(&[
        &"pack",
        &"add",
        &dir,
        &fx.join("peft-lora/llamacpp-converter-output-f32.gguf"),
        &"--id",
        &"lora",
        &"--base",
        &base,
    ]);
    assert!(ok, "{err}");

    let (ok, out, err) = skillpack(&[&"pack", &"check", &dir, &"--base", &base, &"--json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            report["skills"].as_u64(),
            report["same_fingerprint"].as_bool()
        ),
        (Some(2), Some(true))
    );

    let (ok, out, _) = skillpack(&[&"pack", &"info", &dir, &"--json"]);
    assert!(ok);
    let manifest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(manifest["pack"]["name"], "med");
    assert_eq!(manifest["base"]["architecture"], "llama");
    assert_eq!(manifest["base"]["n_layer"], 30);
    assert_eq!(manifest["skill"].as_array().unwrap().len(), 2);
    assert!(Path::new(&dir).join("skills/ada.gguf").is_file());

    // The pack against another base: refused, naming the first tensor that does not fit.
    let tiny = fixtures().join("tiny-llama/tiny-llama-f32.gguf");
    let (ok, _, err) = skillpack(&[&"pack", &"check", &dir, &"--base", &tiny]);
    assert!(!ok);
    assert!(
        err.contains("skill `ada`")
            && err.contains("tensor `blk.0.attn_output.weight` is [64, 64]"),
        "{err}"
    );

    // A bad adapter is refused and the pack keeps its good skills.
    let (ok, _, err) = skillpack(&[
        &"pack", &"add", &dir, &tiny, &"--id", &"lora", &"--base", &base,
    ]);
    assert!(!ok && err.contains("not a GGUF LoRA adapter"), "{err}");
    let (ok, _, err) = skillpack(&[&"pack", &"check", &dir, &"--base", &base]);
    assert!(ok, "{err}");

    // Weighted generation through the pack, with the weights shown.
    let (ok, out, err) = skillpack(&[
        &"run",
        &"--pack",
        &dir,
        &"--skills",
        &"ada=0.6,lora=0.4",
        &"--mode",
        &"fused",
        &"--show-weights",
        &"--temp",
        &"0",
        &"-n",
        &"8",
        &"--json",
        &"What is anemia?",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("[skills] ada=0.600 lora=0.400 via Fused"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["generated_tokens"], 8);
    assert_eq!(v["skills"][0][0], "ada");
}

#[test]
fn chat_keeps_history_and_takes_commands() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_skillpack"))
        .args(["chat", "--temp", "0", "-n", "12", "--show-weights"])
        .env("SKILLPACK_MODEL", default_model())
        .env("SKILLPACK_LOG", "info")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"My name is Ada.\nWhat is my name?\n/reset\n/skills x=1\n/quit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    // Two answers; the second prompt carries the first turn (user, assistant, user).
    assert_eq!(stdout.matches("> ").count(), 5, "{stdout}");
    assert!(
        stderr.contains("(1 messages)") && stderr.contains("(3 messages)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(history cleared)") && stderr.contains("error: no --pack loaded"),
        "{stderr}"
    );
}
