//! Shared helpers for the integration tests: where the fixtures and the default model are,
//! reading reference logits, and comparing vectors.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use skillpack_llama::{Backend, Context, ContextParams, LoraAdapter, Model, ModelParams};

pub mod http;
mod paths;

pub use paths::*;

/// `../shared/data/raw` (or `$SKILLPACK_RAW_DATA`), checked like the fixtures.
pub fn raw_data() -> PathBuf {
    let dir = std::env::var_os("SKILLPACK_RAW_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/raw"));
    assert!(
        dir.join("pubmedqa/pqal_trainval.json").is_file(),
        "raw data not found at {} (set SKILLPACK_RAW_DATA)",
        dir.display()
    );
    dir
}

/// Runs the `skillpack` binary; returns (success, stdout, stderr) and fails on a panic.
pub fn skillpack(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skillpack"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stdout, stderr)
}

/// Token ids of the fixture prompts.
pub fn prompt_ids() -> Vec<Vec<i32>> {
    fixture_prompt_ids()
}

/// Reference logits file: `prompt{i}.last` (f32) and `prompt{i}.argmax` (i64).
pub struct RefLogits {
    bytes: Vec<u8>,
}

impl RefLogits {
    pub fn open(path: PathBuf) -> Self {
        RefLogits {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    pub fn last(&self, prompt: usize) -> Vec<f32> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(&format!("prompt{prompt}.last")).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn argmax(&self, prompt: usize) -> Vec<i64> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(&format!("prompt{prompt}.argmax")).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I64);
        t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

#[allow(unused_imports)] // not every test file compares vectors
pub use skillpack_train::cosine;

pub fn load_model(path: &std::path::Path) -> Model {
    Model::load(Backend::get(), path, &ModelParams::default()).unwrap()
}

pub fn new_context(model: &Model) -> Context<'_> {
    context_with(model, false, 1)
}

/// A 256-token, 2-thread context with the given KV precision and sequence count.
pub fn context_with(model: &Model, kv_f32: bool, n_seq_max: u32) -> Context<'_> {
    Context::new(
        model,
        &ContextParams {
            n_ctx: 256,
            n_batch: 256,
            n_threads: Some(2),
            kv_f32,
            n_seq_max,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Logits at the last position of `ids`, from a fresh KV cache.
pub fn last_logits(ctx: &mut Context<'_>, ids: &[i32]) -> Vec<f32> {
    ctx.clear_memory();
    ctx.eval(ids, 0, false).unwrap();
    ctx.logits(-1).unwrap().to_vec()
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Checks RSS samples taken at regular intervals for a leak: returns the median growth per
/// interval in bytes and panics when it (a steady rise) or the total exceeds its bound. A one-off
/// heap extension by the allocator moves neither the median nor, within 8 MiB, the total.
pub fn assert_rss_flat(samples: &[i64], median_bound: i64) -> i64 {
    let mut deltas: Vec<i64> = samples.windows(2).map(|w| w[1] - w[0]).collect();
    deltas.sort();
    let median = deltas[deltas.len() / 2];
    let total = samples[samples.len() - 1] - samples[0];
    assert!(median < median_bound, "RSS rises steadily: {samples:?}");
    assert!(total < 8 << 20, "RSS grew by {total} bytes: {samples:?}");
    median
}

/// Tiny skill data in the `data build` layout for skills ner, qa and re: three clearly
/// different prompt styles, 12 records each.
pub fn write_skill_data(dir: &Path) {
    // Tiny skill data in the `data build` layout: two clearly different prompt styles.
    for (skill, make) in [
        (
            "ner",
            (|i: usize| {
                format!("{{\"id\":\"n{i}\",\"skill\":\"ner\",\"source\":\"t\",\"context\":\"Aspirin number {i} caused gastric ulcers and bleeding in rats given ibuprofen.\",\"query\":\"List the chemicals and diseases mentioned in the text.\",\"output\":\"Chemicals: aspirin\\nDiseases: ulcers\"}}")
            }) as fn(usize) -> String,
        ),
        ("qa", |i: usize| {
            format!("{{\"id\":\"q{i}\",\"skill\":\"qa\",\"source\":\"t\",\"context\":\"\",\"query\":\"What are the symptoms of condition {i}?\",\"output\":\"Fatigue.\"}}")
        }),
        ("re", |i: usize| {
            format!("{{\"id\":\"r{i}\",\"skill\":\"re\",\"source\":\"t\",\"context\":\"<< Drug{i} >> inhibits [[ KINASE{i} ]] in cells.\",\"query\":\"What is the relation of the chemical to the gene?\",\"output\":\"INHIBITOR\"}}")
        }),
    ] {
        std::fs::create_dir_all(dir.join(skill)).unwrap();
        let lines: Vec<String> = (0..12).map(make).collect();
        std::fs::write(dir.join(skill).join("train.jsonl"), lines.join("\n") + "\n").unwrap();
    }
}

/// A pack of three fixture adapters for the default model (ner: AdaLoRA, qa: LoRA, re: rsLoRA)
/// in `dir/pack`, and skill data for them in `dir/data`; returns (pack, data).
pub fn fixture_pack(dir: &Path) -> (PathBuf, PathBuf) {
    let pack = dir.join("pack");
    let data = dir.join("data");
    write_skill_data(&data);
    let fx = fixtures().join("smollm2");
    let (ok, _, err) = skillpack(&[&"pack", &"new", &pack, &"--name", &"t"]);
    assert!(ok, "{err}");
    for (id, sub) in [
        ("ner", "peft-adalora"),
        ("qa", "peft-lora"),
        ("re", "peft-lora-rslora-patterns"),
    ] {
        let (ok, _, err) = skillpack(&[&"pack", &"add", &pack, &fx.join(sub), &"--id", &id]);
        assert!(ok, "{err}");
    }
    (pack, data)
}

/// `skillpack router train --method supervised` on `pack` with skill records `data`, the router
/// `name` on `features`, then `extra` arguments.
pub fn train_supervised(
    pack: &Path,
    data: &Path,
    features: &str,
    name: &str,
    extra: &[&dyn AsRef<std::ffi::OsStr>],
) -> (bool, String, String) {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"router",
        &"train",
        &"--pack",
        &pack,
        &"--method",
        &"supervised",
        &"--features",
        &features,
        &"--data",
        &data,
        &"--name",
        &name,
    ];
    args.extend_from_slice(extra);
    skillpack(&args)
}

/// [`fixture_pack`] with a supervised mean-embedding router `general` as its default router.
pub fn routed_fixture_pack(dir: &Path) -> PathBuf {
    let (pack, data) = fixture_pack(dir);
    let (ok, _, err) = train_supervised(
        &pack,
        &data,
        "mean-embedding",
        "general",
        &[&"--default", &"--threads", &"2"],
    );
    assert!(ok, "{err}");
    pack
}

/// Every file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(files_under(&p));
        } else {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// The llama-server binary built by `scripts/llama-server.sh` (built on first use, then cached).
pub fn llama_server() -> std::path::PathBuf {
    let out = std::process::Command::new(repo().join("scripts/llama-server.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Log-probabilities of `answer` after `prompt` with `adapters` at their scales, from
/// skillpack's own llama.cpp layer (teacher forcing).
pub fn our_logprobs(
    model: &skillpack_llama::Model,
    adapters: &[(LoraAdapter<'_>, f32)],
    prompt: &[i32],
    answer: &[i32],
) -> Vec<f64> {
    let mut ctx = new_context(model);
    let set: Vec<(&LoraAdapter<'_>, f32)> = adapters.iter().map(|(a, w)| (a, *w)).collect();
    ctx.set_adapters(&set).unwrap();
    let all: Vec<i32> = prompt.iter().chain(answer).copied().collect();
    ctx.eval(&all, 0, true).unwrap();
    answer
        .iter()
        .enumerate()
        .map(|(i, &tok)| {
            let logits = ctx.logits((prompt.len() + i - 1) as i32).unwrap();
            let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
            logits[tok as usize] as f64 - max - sum.ln()
        })
        .collect()
}

/// `system` + `user` rendered with the model's chat template (generation prompt added), tokenized.
pub fn chat_prompt(model: &Model, system: &str, user: &str) -> Vec<i32> {
    let message = |role: &str, content: &str| skillpack_llama::ChatMessage {
        role: role.into(),
        content: content.into(),
    };
    let text = model
        .apply_chat_template(&[message("system", system), message("user", user)], true)
        .unwrap();
    model.tokenize(&text, true, true).unwrap()
}

/// Mean over tokens of |p_a − p_b|, from two lists of log-probabilities of the same tokens.
pub fn mean_probability_gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.exp() - y.exp()).abs())
        .sum::<f64>()
        / b.len() as f64
}
