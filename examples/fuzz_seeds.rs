//! Writes the fuzzers' assets and seed corpora (run by `scripts/fuzz.sh`):
//!
//! * `fuzz/assets/tiny-model.gguf` — a complete one-layer llama (8 wide, 5-token BPE vocabulary)
//!   that llama.cpp loads, and `tiny-adapter.gguf`, a LoRA adapter that fits it. Targets load
//!   them as the base of their checks, so fuzzed inputs reach llama.cpp's loaders.
//! * `fuzz/corpus/<target>/seed-*` — valid inputs of every fuzzed format (GGUF models and
//!   adapters, PEFT adapters, pack manifests, routers, instruction JSONL, server requests), plus
//!   the heads of the fixtures' GGUF files and PEFT's own adapter configs.
//!
//! Every asset is loaded here through the same code the CLI uses, so a seed that stopped being
//! valid fails this program instead of silently weakening the fuzzing.
//!
//! ```text
//! cargo run --release --example fuzz_seeds -- fuzz
//! ```

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use skillpack_convert::{write_lora_gguf, GgufInfo, Matrix, OutType, PeftAdapter};
use skillpack_llama::{Backend, LoraAdapter, Model, ModelParams};

const N_EMBD: usize = 8;
const N_FF: usize = 16;
const TOKENS: [&str; 5] = ["a", "b", "c", "ab", "<|endoftext|>"];

/// Deterministic small values (no RNG needed: seeds must be byte-identical run to run).
fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + salt * 13) % 17) as f32 - 8.0) / 16.0)
        .collect()
}

fn tensor(rows: usize, cols: usize, salt: usize) -> Result<QTensor> {
    let t = Tensor::from_vec(values(rows * cols, salt), (rows, cols), &Device::Cpu)?;
    Ok(QTensor::quantize(&t, GgmlDType::F32)?)
}

fn vector(n: usize) -> Result<QTensor> {
    Ok(QTensor::quantize(
        &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?,
        GgmlDType::F32,
    )?)
}

/// A one-layer llama GGUF with a byte-level BPE vocabulary of five tokens.
fn tiny_model() -> Result<Vec<u8>> {
    let s = |v: &str| Value::String(v.into());
    let strings = |v: &[&str]| Value::Array(v.iter().map(|t| s(t)).collect());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("general.name", s("tiny")),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(N_EMBD as u32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.feed_forward_length", Value::U32(N_FF as u32)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.rope.dimension_count", Value::U32(4)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("default")),
        ("tokenizer.ggml.tokens", strings(&TOKENS)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vec![1, 1, 1, 1, 3].into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strings(&["a b"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(4)),
        ("tokenizer.ggml.eos_token_id", Value::U32(4)),
    ];
    let vocab = TOKENS.len();
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), tensor(vocab, N_EMBD, 1)?),
        ("output_norm.weight".into(), vector(N_EMBD)?),
        ("blk.0.attn_norm.weight".into(), vector(N_EMBD)?),
        ("blk.0.ffn_norm.weight".into(), vector(N_EMBD)?),
    ];
    for (i, name) in ["attn_q", "attn_k", "attn_v", "attn_output"]
        .iter()
        .enumerate()
    {
        tensors.push((
            format!("blk.0.{name}.weight"),
            tensor(N_EMBD, N_EMBD, i + 2)?,
        ));
    }
    tensors.push(("blk.0.ffn_gate.weight".into(), tensor(N_FF, N_EMBD, 7)?));
    tensors.push(("blk.0.ffn_up.weight".into(), tensor(N_FF, N_EMBD, 8)?));
    tensors.push(("blk.0.ffn_down.weight".into(), tensor(N_EMBD, N_FF, 9)?));
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts)?;
    Ok(out.into_inner())
}

fn matrix(rows: usize, cols: usize, salt: usize) -> Matrix {
    Matrix {
        rows,
        cols,
        data: values(rows * cols, salt),
    }
}

/// A rank-2 LoRA adapter on the tiny model's q and v projections.
fn tiny_adapter() -> Result<Vec<u8>> {
    let pairs: Vec<_> = ["attn_q", "attn_v"]
        .iter()
        .enumerate()
        .map(|(i, m)| skillpack_convert::LoraPair {
            name: format!("blk.0.{m}.weight"),
            a: matrix(2, N_EMBD, i),
            b: matrix(N_EMBD, 2, i + 5),
        })
        .collect();
    Ok(write_lora_gguf("llama", 4.0, &pairs, OutType::F32, &[])?.bytes)
}

/// A PEFT LoRA directory for the tiny model: `adapter_config.json` and the safetensors bytes.
fn tiny_peft(kind: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut tensors = Vec::new();
    for (i, proj) in ["q_proj", "v_proj"].iter().enumerate() {
        let prefix = format!("base_model.model.model.layers.0.self_attn.{proj}");
        tensors.push((format!("{prefix}.lora_A.weight"), vec![2, N_EMBD], i));
        tensors.push((format!("{prefix}.lora_B.weight"), vec![N_EMBD, 2], i + 3));
        if kind == "ADALORA" {
            tensors.push((format!("{prefix}.lora_E.weight"), vec![2, 1], i + 6));
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, salt)| {
            let n = shape.iter().product();
            let bytes = values(n, salt)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("shape matches the data");
            (name.clone(), view)
        })
        .collect();
    let weights = safetensors::serialize(views, None)?;
    let mut config = serde_json::json!({
        "peft_type": kind,
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["q_proj", "v_proj"],
        "use_rslora": false,
        "use_dora": false,
        "fan_in_fan_out": false,
        "bias": "none",
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    if kind == "ADALORA" {
        config["init_r"] = 2.into();
        config["target_r"] = 1.into();
    }
    Ok((serde_json::to_vec_pretty(&config)?, weights))
}

/// Frames two byte strings as one fuzz input: a little-endian u32 length, the first, the second.
fn framed(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = (first.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(first);
    out.extend_from_slice(second);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    skillpack_convert::write_atomic(&dir.join(name), bytes)?;
    Ok(())
}

fn main() -> Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz".into()));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let assets = root.join("assets");
    let corpus = root.join("corpus");

    // Assets, checked through the real loaders.
    let model_bytes = tiny_model()?;
    let adapter_bytes = tiny_adapter()?;
    write(&assets, "tiny-model.gguf", &model_bytes)?;
    write(&assets, "tiny-adapter.gguf", &adapter_bytes)?;
    let backend = Backend::get();
    let model = Model::load(
        backend,
        &assets.join("tiny-model.gguf"),
        &ModelParams::default(),
    )?;
    ensure!(model.n_vocab() == TOKENS.len() && model.n_embd() == N_EMBD);
    LoraAdapter::load(&model, &assets.join("tiny-adapter.gguf"))?;
    let base = GgufInfo::open(&assets.join("tiny-model.gguf"))?;

    // GGUF: the tiny model and adapter, and an adapter without alpha.
    let gguf = corpus.join("gguf");
    write(&gguf, "seed-model.gguf", &model_bytes)?;
    write(&gguf, "seed-adapter.gguf", &adapter_bytes)?;

    // From the oracles in ../shared/fixtures (or $SKILLPACK_FIXTURES), when present: the head of
    // a real model and of llama.cpp's own converter output (whole files exceed the fuzzers'
    // input size), and PEFT's own adapter configs framed with the tiny weights.
    let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/fixtures"));
    let peft = corpus.join("peft");
    if fixtures.join("prompts.json").is_file() {
        for (name, file) in [
            (
                "seed-tiny-llama-head.gguf",
                "tiny-llama/tiny-llama-f32.gguf",
            ),
            (
                "seed-llamacpp-converter-head.gguf",
                "smollm2/peft-lora/llamacpp-converter-output-f32.gguf",
            ),
        ] {
            let bytes = std::fs::read(fixtures.join(file))?;
            write(&gguf, name, &bytes[..bytes.len().min(64 << 10)])?;
        }
        let (_, weights) = tiny_peft("LORA")?;
        for kind in ["peft-lora", "peft-adalora", "peft-lora-rslora-patterns"] {
            let config = std::fs::read(
                fixtures
                    .join("smollm2")
                    .join(kind)
                    .join("adapter_config.json"),
            )?;
            write(
                &peft,
                &format!("seed-fixture-{kind}"),
                &framed(&config, &weights),
            )?;
        }
    } else {
        eprintln!(
            "{} not found: seeding without the fixtures",
            fixtures.display()
        );
    }

    // PEFT: LoRA and AdaLoRA for the tiny model, each converting cleanly.
    for kind in ["LORA", "ADALORA"] {
        let (config, weights) = tiny_peft(kind)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("adapter_config.json"), &config)?;
        std::fs::write(dir.path().join("adapter_model.safetensors"), &weights)?;
        let adapter = PeftAdapter::load(dir.path())?;
        skillpack_convert::convert(&adapter, &base, &Default::default())
            .with_context(|| format!("{kind} seed does not convert"))?;
        write(&peft, &format!("seed-{kind}"), &framed(&config, &weights))?;
    }

    // Pack manifests: the committed medical pack's, and one for the tiny model.
    let packs = corpus.join("pack");
    let medical = std::fs::read(repo.join("examples/packs/medical-smollm2/pack.toml"))?;
    write(&packs, "seed-medical.toml", &medical)?;
    let spec = skillpack_pack::BaseSpec::of(&base)?;
    let tiny_manifest = format!(
        "[pack]\nname = \"tiny\"\nversion = \"0.1.0\"\n\n[base]\narchitecture = \"{}\"\nn_embd = {}\nn_layer = {}\nfingerprint = \"{}\"\n\n[defaults]\ntop_k = 2\nmin_weight = 0.05\ntemperature = 1.0\n\n[[skill]]\nid = \"a\"\ntitle = \"A\"\nadapter = \"skills/a.gguf\"\ntargets = [\"attn_q\", \"attn_v\"]\nrank = 2\n",
        spec.architecture, spec.n_embd, spec.n_layer, spec.fingerprint
    );
    skillpack_pack::Manifest::parse(&tiny_manifest).map_err(anyhow::Error::msg)?;
    write(&packs, "seed-tiny.toml", tiny_manifest.as_bytes())?;

    // Routers: the medical pack's (config + weights).
    let routers = corpus.join("router");
    let router_dir = repo.join("examples/packs/medical-smollm2/routers");
    for name in ["general-embedding", "prototype"] {
        let config = std::fs::read(router_dir.join(format!("{name}.json")))?;
        let weights = std::fs::read(router_dir.join(format!("{name}.safetensors")))?;
        skillpack_route::Router::from_bytes(&config, &weights, Path::new("seed.safetensors"))?;
        write(
            &routers,
            &format!("seed-{name}"),
            &framed(&config, &weights),
        )?;
    }

    // Instruction JSONL.
    let jsonl = corpus.join("jsonl");
    let records = [
        serde_json::json!({"id": "r1", "skill": "ner", "context": "Aspirin caused nausea.", "query": "List the chemicals.", "output": "Chemicals: aspirin"}),
        serde_json::json!({"query": "What is anemia?", "output": "A lack of red blood cells."}),
    ];
    let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    write(&jsonl, "seed-records.jsonl", lines.join("\n").as_bytes())?;
    skillpack_train::parse_jsonl(lines.join("\n").as_bytes(), "seed")?;

    // Server requests: chat and completion bodies with the extensions.
    let requests = corpus.join("request");
    let bodies = [
        serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "skills": {"a": 0.7, "b": 0.3}, "max_tokens": 8, "temperature": 0.2, "stop": ["\n"]}),
        serde_json::json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "route": "general", "stream": true, "top_p": 0.9}),
        serde_json::json!({"prompt": "Once", "skills": "a=1", "max_tokens": 4, "min_p": 0.1, "seed": 3}),
        serde_json::json!({"prompt": ["x", "y"], "route": "none", "n": 1}),
    ];
    for (i, body) in bodies.iter().enumerate() {
        write(
            &requests,
            &format!("seed-{i}.json"),
            body.to_string().as_bytes(),
        )?;
    }
    println!(
        "fuzz assets in {}, seed corpora in {}",
        assets.display(),
        corpus.display()
    );
    Ok(())
}
