//! Realistic mistakes, command by command: each must fail with exit status 1 or 2 (never a
//! signal, a panic or an abort inside llama.cpp) and a message naming the file, tensor, field or
//! line at fault. The whole table runs even when a row fails, and is printed (input → message)
//! with `--nocapture`. A second test fills the disk during writes: nothing half-written may be
//! left behind, and files that existed keep their content.

mod common;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// One realistic mistake.
struct Case {
    command: &'static str,
    mistake: &'static str,
    args: Vec<OsString>,
    /// Every one of these must appear in stderr.
    expect: Vec<&'static str>,
}

fn case(
    command: &'static str,
    mistake: &'static str,
    args: &[&dyn AsRef<OsStr>],
    expect: &[&'static str],
) -> Case {
    Case {
        command,
        mistake,
        args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
        expect: expect.to_vec(),
    }
}

/// Runs a case; returns the error line printed, or why the case failed.
fn check(c: &Case) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_skillpack"))
        .args(&c.args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code();
    if !matches!(code, Some(1) | Some(2)) {
        return Err(format!(
            "exit status {:?} (want 1 or 2): {stderr}",
            out.status
        ));
    }
    if stderr.contains("panicked") || stderr.contains("GGML_ASSERT") {
        return Err(format!("panic or assertion: {stderr}"));
    }
    let missing: Vec<_> = c.expect.iter().filter(|n| !stderr.contains(*n)).collect();
    if !missing.is_empty() {
        return Err(format!("missing {missing:?} in: {stderr}"));
    }
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or(stderr.trim())
        .to_string();
    Ok(line)
}

/// A copy of a PEFT fixture directory with its safetensors cut to `keep` bytes.
fn truncated_peft(src: &Path, dst: &Path, keep: usize) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(
        src.join("adapter_config.json"),
        dst.join("adapter_config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    std::fs::write(dst.join("adapter_model.safetensors"), &bytes[..keep]).unwrap();
}

#[test]
fn every_command_refuses_bad_input_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = default_model();
    let fx = fixtures();
    let other_base = fx.join("tiny-llama/tiny-llama-f32.gguf");
    let peft = fx.join("smollm2/peft-lora");
    let adapter = peft.join("llamacpp-converter-output-f32.gguf");
    let pack = routed_fixture_pack(&t.join("routed"));
    let out = t.join("out.gguf");

    // Broken inputs.
    let trunc = t.join("trunc.gguf");
    std::fs::write(&trunc, &std::fs::read(&model).unwrap()[..1000]).unwrap();
    let empty = t.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let dir = t.join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let missing = t.join("missing.gguf");
    let through_file = model.join("x.gguf");
    let trunc_peft = t.join("trunc-peft");
    truncated_peft(&peft, &trunc_peft, 5000);
    let jsonl = |name: &str, bytes: &[u8]| {
        let p = t.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let no_output = jsonl(
        "no-output.jsonl",
        b"{\"query\":\"What is anemia?\",\"output\":\"A lack of red cells.\"}\n{\"query\":\"What is gout?\"}\n",
    );
    let not_utf8 = jsonl(
        "latin1.jsonl",
        b"{\"query\":\"q\",\"output\":\"o\"}\n\n{\"query\":\"caf\xe9\",\"output\":\"o\"}\n",
    );
    let no_records = jsonl("empty.jsonl", b"\n\n");
    let escaping_pack = t.join("escaping-pack");
    std::fs::create_dir(&escaping_pack).unwrap();
    let manifest = std::fs::read_to_string(pack.join("pack.toml")).unwrap();
    std::fs::write(
        escaping_pack.join("pack.toml"),
        manifest.replacen("adapter = \"skills/", "adapter = \"/etc/../skills/", 1),
    )
    .unwrap();
    let empty_manifest = t.join("empty-manifest");
    std::fs::create_dir(&empty_manifest).unwrap();
    std::fs::write(empty_manifest.join("pack.toml"), b"").unwrap();
    let broken_router = t.join("broken-router");
    std::fs::create_dir(&broken_router).unwrap();
    for entry in files_under(&pack) {
        let rel = entry.strip_prefix(&pack).unwrap();
        std::fs::create_dir_all(broken_router.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(&entry, broken_router.join(rel)).unwrap();
    }
    let router_file = broken_router.join("routers/general.safetensors");
    let bytes = std::fs::read(&router_file).unwrap();
    std::fs::write(&router_file, &bytes[..bytes.len() / 2]).unwrap();
    let long_prompt = "word ".repeat(400);
    let not_utf8_arg = OsStr::from_bytes(b"caf\xe9 au lait?");
    let peft_dir = t.join("not-peft");
    std::fs::create_dir(&peft_dir).unwrap();

    let m: &dyn AsRef<OsStr> = &model;
    let mut cases = vec![
        // convert
        case(
            "convert",
            "adapter for another base model",
            &[&"convert", &peft, &"--base", &other_base, &"-o", &out],
            &["shape mismatch for `blk.0.", "but the base weight is"],
        ),
        case(
            "convert",
            "directory without adapter_config.json",
            &[&"convert", &peft_dir, &"--base", m, &"-o", &out],
            &["not-peft", "no adapter_config.json"],
        ),
        case(
            "convert",
            "truncated adapter_model.safetensors",
            &[&"convert", &trunc_peft, &"--base", m, &"-o", &out],
            &[
                "adapter_model.safetensors",
                "corrupt or truncated safetensors",
            ],
        ),
        case(
            "convert",
            "zero-length base model",
            &[&"convert", &peft, &"--base", &empty, &"-o", &out],
            &["empty.gguf", "empty file"],
        ),
        case(
            "convert",
            "directory as base model",
            &[&"convert", &peft, &"--base", &dir, &"-o", &out],
            &["a-directory", "is a directory"],
        ),
        case(
            "convert",
            "base model that does not exist",
            &[&"convert", &peft, &"--base", &missing, &"-o", &out],
            &["missing.gguf", "No such file"],
        ),
        case(
            "convert",
            "output path is a directory",
            &[&"convert", &peft, &"--base", m, &"-o", &dir],
            &["a-directory", "Is a directory"],
        ),
        // inspect
        case(
            "inspect",
            "truncated GGUF",
            &[&"inspect", &trunc],
            &["trunc.gguf", "not a valid GGUF file", "truncated?"],
        ),
        case(
            "inspect",
            "zero-length GGUF",
            &[&"inspect", &empty],
            &["empty.gguf", "empty file"],
        ),
        case(
            "inspect",
            "path through a file",
            &[&"inspect", &through_file],
            &["x.gguf", "Not a directory"],
        ),
        // pack
        case(
            "pack",
            "check against another base model",
            &[&"pack", &"check", &pack, &"--base", &other_base],
            &["skill `ner`", "tensor `blk.0.", "tiny-llama-f32.gguf"],
        ),
        case(
            "pack",
            "add a truncated GGUF",
            &[&"pack", &"add", &pack, &trunc, &"--id", &"x"],
            &["trunc.gguf", "not a valid GGUF file"],
        ),
        case(
            "pack",
            "skill id with a space",
            &[&"pack", &"add", &pack, &peft, &"--id", &"my skill"],
            &["skill id `my skill`", "ASCII letters"],
        ),
        case(
            "pack",
            "directory without pack.toml",
            &[&"pack", &"info", &dir],
            &["a-directory/pack.toml", "cannot read"],
        ),
        case(
            "pack",
            "zero-length pack.toml",
            &[&"pack", &"info", &empty_manifest],
            &["pack.toml", "missing field `pack`"],
        ),
        case(
            "pack",
            "adapter path escaping the pack",
            &[&"pack", &"info", &escaping_pack],
            &["pack.toml", "must be inside the pack"],
        ),
        // run
        case(
            "run",
            "truncated model",
            &[&"run", &"--model", &trunc, &"hi"],
            &["trunc.gguf", "not a valid GGUF file"],
        ),
        // This build's llama.cpp has no GPU backend: refused before loading, not ignored.
        case(
            "run",
            "GPU layers on a CPU-only build",
            &[&"run", &"--gpu-layers", &"8", &"--no-skills", &"hi"],
            &["8 GPU layers requested", "--features gpu"],
        ),
        case(
            "run",
            "adapter given as the model",
            &[&"run", &"--model", &adapter, &"hi"],
            &[
                "llamacpp-converter-output-f32.gguf",
                "is an adapter, not a model",
            ],
        ),
        case(
            "run",
            "unknown skill in --skills",
            &[&"run", &"--pack", &pack, &"--skills", &"nope=1", &"hi"],
            &["unknown skill `nope`", "pack has: ner, qa, re"],
        ),
        case(
            "run",
            "negative weight",
            &[&"run", &"--pack", &pack, &"--skills", &"qa=-1", &"hi"],
            &["`qa=-1`", "within [0, 4]"],
        ),
        case(
            "run",
            "NaN weight",
            &[&"run", &"--pack", &pack, &"--skills", &"qa=NaN", &"hi"],
            &["`qa=NaN`", "within [0, 4]"],
        ),
        case(
            "run",
            "weight that is not a number",
            &[&"run", &"--pack", &pack, &"--skills", &"qa=high", &"hi"],
            &["`qa=high`", "not a number"],
        ),
        case(
            "run",
            "empty prompt",
            &[&"run", &"--pack", &pack, &"  "],
            &["prompt is empty"],
        ),
        case(
            "run",
            "prompt longer than the context",
            &[&"run", &"--ctx-size", &"256", &long_prompt],
            &["exceed the context of 256 tokens", "--ctx-size"],
        ),
        case(
            "run",
            "non-UTF-8 prompt",
            &[&"run", &not_utf8_arg],
            &["invalid UTF-8"],
        ),
        case(
            "run",
            "LoRA adapter for another base model",
            &[&"run", &"--model", &other_base, &"--lora", &adapter, &"hi"],
            &[
                "llamacpp-converter-output-f32.gguf",
                "incorrect shape",
                "wrong base model",
            ],
        ),
        case(
            "run",
            "unknown router",
            &[&"run", &"--pack", &pack, &"--router", &"nope", &"hi"],
            &["no router `nope`", "routers: general"],
        ),
        // chat
        case(
            "chat",
            "unknown skill in --skills",
            &[&"chat", &"--pack", &pack, &"--skills", &"nope=1"],
            &["unknown skill `nope`"],
        ),
        // bench
        case(
            "bench",
            "zero-length model",
            &[&"bench", &"--pack", &pack, &"--model", &empty],
            &["empty.gguf"],
        ),
        case(
            "bench",
            "load test against an address that is not a URL",
            &[
                &"bench",
                &"load",
                &"--url",
                &"localhost:8080",
                &"--requests",
                &"1",
            ],
            &["--url `localhost:8080`", "http://"],
        ),
        // train
        case(
            "train",
            "JSONL line without `output`",
            &[&"train", &"--data", &no_output, &"--out", &t.join("t1")],
            &["no-output.jsonl:2", "missing field `output`"],
        ),
        case(
            "train",
            "non-UTF-8 JSONL",
            &[&"train", &"--data", &not_utf8, &"--out", &t.join("t2")],
            &["latin1.jsonl:3", "not UTF-8"],
        ),
        case(
            "train",
            "JSONL without records",
            &[&"train", &"--data", &no_records, &"--out", &t.join("t3")],
            &["empty.jsonl", "no records"],
        ),
        case(
            "train",
            "directory as data",
            &[&"train", &"--data", &dir, &"--out", &t.join("t4")],
            &["a-directory", "is a directory"],
        ),
        case(
            "train",
            "truncated base model",
            &[
                &"train",
                &"--data",
                &no_records,
                &"--base",
                &trunc,
                &"--out",
                &t.join("t5"),
            ],
            &["trunc.gguf"],
        ),
        // data
        case(
            "data",
            "raw folder without the datasets",
            &[&"data", &"build", &"--raw", &dir, &"--out", &t.join("d")],
            &["pqal_trainval.json", "No such file"],
        ),
        // eval
        case(
            "eval",
            "unknown task",
            &[&"eval", &"--task", &"nope"],
            &["unknown task `nope`", "pubmedqa"],
        ),
        case(
            "eval",
            "pack directory without pack.toml",
            &[&"eval", &"--task", &"pubmedqa", &"--pack", &dir],
            &["a-directory/pack.toml"],
        ),
        // verify
        case(
            "verify",
            "PEFT directory without config",
            &[
                &"verify", &"--peft", &peft_dir, &"--gguf", &adapter, &"--data", &no_output,
            ],
            &["not-peft", "no adapter_config.json"],
        ),
        // router
        case(
            "router",
            "unknown router",
            &[
                &"router",
                &"show",
                &"--pack",
                &pack,
                &"--router",
                &"nope",
                &"hi",
            ],
            &["no router `nope`", "routers: general"],
        ),
        case(
            "router",
            "truncated router weights",
            &[&"router", &"show", &"--pack", &broken_router, &"hi"],
            &["general.safetensors", "not a safetensors file"],
        ),
        case(
            "router",
            "training data folder without the skills",
            &[
                &"router",
                &"train",
                &"--pack",
                &pack,
                &"--data",
                &dir,
                &"--name",
                &"g",
                &"--method",
                &"supervised",
                &"--features",
                &"mean-embedding",
            ],
            &["a-directory/", "train.jsonl", "data build"],
        ),
        // serve
        case(
            "serve",
            "pack for another base model",
            &[&"serve", &"--pack", &pack, &"--model", &other_base],
            &["skill `ner`", "tensor `blk.0."],
        ),
        case(
            "serve",
            "zero-length model",
            &[&"serve", &"--model", &empty],
            &["empty.gguf"],
        ),
        // proxy
        case(
            "proxy",
            "upstream that is not a URL",
            &[&"proxy", &"--upstream", &"localhost-8081", &"--pack", &pack],
            &["--upstream `localhost-8081`", "not a URL"],
        ),
        case(
            "proxy",
            "pack that does not exist",
            &[
                &"proxy",
                &"--upstream",
                &"http://127.0.0.1:9",
                &"--pack",
                &missing,
            ],
            &["missing.gguf/pack.toml"],
        ),
    ];

    // Permission bits do not stop root (as in CI containers); elsewhere, an unreadable file.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let locked = t.join("locked.gguf");
        std::fs::copy(&model, &locked).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        cases.push(case(
            "inspect",
            "unreadable file",
            &[&"inspect", &locked],
            &["locked.gguf", "Permission denied"],
        ));
    }

    let mut failures = Vec::new();
    println!("| command | mistake | message |\n|---|---|---|");
    for c in &cases {
        match check(c) {
            Ok(line) => println!(
                "| {} | {} | {} |",
                c.command,
                c.mistake,
                line.replace(t.to_str().unwrap(), "$TMP")
                    .replace(fx.to_str().unwrap(), "$FIXTURES")
                    .replace(repo().to_str().unwrap(), "$REPO")
                    .replace('|', "\\|")
            ),
            Err(why) => failures.push(format!("{} / {}: {why}", c.command, c.mistake)),
        }
    }
    assert!(!out.exists(), "a failed conversion wrote {}", out.display());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A small filesystem that fills up: a 512 KiB tmpfs where mounting is allowed (root), else a
/// directory under a per-process file size limit (writes past 512 KiB fail with EFBIG).
struct SmallDisk {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl SmallDisk {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        SmallDisk { dir, mounted }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `skillpack ARGS` with the disk's limit in force; returns (success, stderr).
    fn run(&self, args: &[&dyn AsRef<OsStr>]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skillpack"));
        cmd.args(args.iter().map(|a| a.as_ref()));
        if !self.mounted {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: 512 << 10,
                        rlim_max: 512 << 10,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.success(), stderr)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// Names of the files under `dir` (relative), sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = files_under(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_full_disk_leaves_nothing_half_written() {
    let disk = SmallDisk::new();
    let d = disk.path();
    println!(
        "disk: {}",
        if disk.mounted {
            "512 KiB tmpfs (ENOSPC)"
        } else {
            "RLIMIT_FSIZE 512 KiB (EFBIG)"
        }
    );
    let model = default_model();
    let peft = fixtures().join("smollm2/peft-lora");

    // convert: a 9.8 MB adapter onto a full disk over an existing file.
    let out = d.join("ner.gguf");
    std::fs::write(&out, b"the user's previous adapter").unwrap();
    let (ok, stderr) = disk.run(&[&"convert", &peft, &"--base", &model, &"-o", &out]);
    assert!(!ok, "conversion onto a full disk succeeded");
    assert!(
        stderr.contains("ner.gguf")
            && (stderr.contains("No space left") || stderr.contains("too large")),
        "{stderr}"
    );
    println!("convert → {}", stderr.trim());
    assert_eq!(std::fs::read(&out).unwrap(), b"the user's previous adapter");
    assert_eq!(listing(d), ["ner.gguf"], "temporary files left behind");

    // pack add: the pack's manifest and skills stay as they were.
    std::fs::remove_file(&out).unwrap();
    let pack = d.join("pack");
    let (ok, stderr) = disk.run(&[&"pack", &"new", &pack, &"--name", &"p", &"--base", &model]);
    assert!(ok, "{stderr}");
    let manifest = std::fs::read(pack.join("pack.toml")).unwrap();
    let before = listing(&pack);
    let (ok, stderr) = disk.run(&[&"pack", &"add", &pack, &peft, &"--id", &"qa"]);
    assert!(!ok, "adding a skill to a full disk succeeded");
    println!("pack add → {}", stderr.trim());
    assert!(
        stderr.contains("No space left") || stderr.contains("too large"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(pack.join("pack.toml")).unwrap(), manifest);
    assert_eq!(listing(&pack), before, "files left behind in the pack");
    let (ok, stderr) = disk.run(&[&"pack", &"info", &pack]);
    assert!(ok, "the pack no longer opens: {stderr}");
}
