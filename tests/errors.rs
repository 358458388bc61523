//! Bad input gets a clear error naming the file, tensor or field: never a panic, never an abort
//! inside llama.cpp.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::gguf_file::{self, Value};
use common::*;
use skillpack_convert::{ConvertOptions, GgufInfo, PeftAdapter};
use skillpack_llama::{Backend, LoraAdapter, Model, ModelParams};

/// Runs `skillpack convert DIR --base BASE -o OUT` and returns (success, stderr).
fn convert_cli(dir: &Path, base: &Path, out: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_skillpack"))
        .args([
            "convert".as_ref(),
            dir.as_os_str(),
            "--base".as_ref(),
            base.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (output.status.success(), stderr)
}

/// A copy of the peft-lora fixture with its config edited by `edit`.
fn peft_copy(tmp: &Path, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let src = fixtures().join("smollm2/peft-lora");
    let dir = tmp.join("peft");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    dir
}

fn expect_convert_error(dir: &Path, base: &Path, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    let (ok, stderr) = convert_cli(dir, base, &out);
    assert!(!ok, "conversion should fail");
    assert!(!out.exists(), "nothing may be written on failure");
    for needle in needles {
        assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    }
}

#[test]
fn convert_refuses_dora() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = peft_copy(tmp.path(), |c| c["use_dora"] = true.into());
    expect_convert_error(
        &dir,
        &default_model(),
        &["adapter_config.json", "unsupported", "DoRA"],
    );
}

#[test]
fn convert_refuses_modules_to_save() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = peft_copy(tmp.path(), |c| {
        c["modules_to_save"] = serde_json::json!(["lm_head"])
    });
    expect_convert_error(
        &dir,
        &default_model(),
        &["adapter_config.json", "modules_to_save"],
    );
}

#[test]
fn convert_refuses_unknown_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("gpt2.gguf");
    let t = candle_core::quantized::QTensor::quantize(
        &candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap();
    let arch = Value::String("gpt2".into());
    let mut f = std::fs::File::create(&base).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &t)],
    )
    .unwrap();
    expect_convert_error(
        &fixtures().join("smollm2/peft-lora"),
        &base,
        &["gpt2.gguf", "architecture `gpt2`"],
    );
}

#[test]
fn convert_refuses_a_directory_that_is_not_peft() {
    let tmp = tempfile::tempdir().unwrap();
    expect_convert_error(
        tmp.path(),
        &default_model(),
        &["not a PEFT adapter directory", "no adapter_config.json"],
    );
    // A model file instead of a directory.
    expect_convert_error(
        &default_model(),
        &default_model(),
        &["not a PEFT adapter directory", "not a directory"],
    );
}

#[test]
fn convert_refuses_truncated_and_corrupt_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = peft_copy(tmp.path(), |_| {});
    let weights = dir.join("adapter_model.safetensors");
    let full = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &full[..full.len() / 2]).unwrap();
    expect_convert_error(
        &dir,
        &default_model(),
        &[
            "adapter_model.safetensors",
            "corrupt or truncated safetensors",
        ],
    );
    let mut garbage = full.clone();
    garbage[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&weights, &garbage).unwrap();
    expect_convert_error(
        &dir,
        &default_model(),
        &[
            "adapter_model.safetensors",
            "corrupt or truncated safetensors",
        ],
    );
    std::fs::write(&weights, b"").unwrap();
    expect_convert_error(
        &dir,
        &default_model(),
        &["corrupt or truncated safetensors"],
    );
}

#[test]
fn convert_names_the_tensor_whose_shape_does_not_fit_the_base() {
    // A SmolLM2 adapter against the tiny llama: blk.0.attn_k is [32, 64] there, [192, 576] in SmolLM2.
    let base = fixtures().join("tiny-llama/tiny-llama-f32.gguf");
    expect_convert_error(
        &fixtures().join("smollm2/peft-lora"),
        &base,
        &["shape mismatch for `blk.0.", "base weight is [", "lora_B"],
    );
}

#[test]
fn convert_refuses_an_adapter_as_base() {
    let base = fixtures().join("smollm2/peft-lora/llamacpp-converter-output-f32.gguf");
    expect_convert_error(
        &fixtures().join("smollm2/peft-lora"),
        &base,
        &["is an adapter"],
    );
}

#[test]
fn existing_output_survives_a_failed_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("keep.gguf");
    std::fs::write(&out, b"precious").unwrap();
    let (ok, _) = convert_cli(tmp.path(), &default_model(), &out);
    assert!(!ok);
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
}

/// Rewrites a GGUF adapter with one metadata value replaced.
fn with_metadata(src: &Path, dst: &Path, key: &str, value: Value) {
    let mut reader = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut metadata: Vec<(String, Value)> = content.metadata.clone().into_iter().collect();
    metadata.retain(|(k, _)| k != key);
    metadata.push((key.into(), value));
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| {
            (
                n.clone(),
                content
                    .tensor(&mut reader, n, &candle_core::Device::Cpu)
                    .unwrap(),
            )
        })
        .collect();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &md, &ts).unwrap();
}

#[test]
fn llama_layer_refuses_bad_adapters_without_aborting() {
    let fx = fixtures();
    let tiny = fx.join("tiny-llama/tiny-llama-f32.gguf");
    let model = load_model(&tiny);
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.gguf");
    let peft = PeftAdapter::load(&fx.join("adalora-trace/final-adapter")).unwrap();
    skillpack_convert::convert(
        &peft,
        &GgufInfo::open(&tiny).unwrap(),
        &ConvertOptions::default(),
    )
    .unwrap()
    .write(&good)
    .unwrap();
    let err = |path: &Path| LoraAdapter::load(&model, path).unwrap_err().to_string();

    // A wrong KV type makes llama.cpp abort the process; it must be refused first.
    let bad_alpha = tmp.path().join("alpha-u32.gguf");
    with_metadata(&good, &bad_alpha, "adapter.lora.alpha", Value::U32(16));
    let e = err(&bad_alpha);
    assert!(
        e.contains("alpha-u32.gguf") && e.contains("`adapter.lora.alpha` must be f32, found u32"),
        "{e}"
    );

    let bad_type = tmp.path().join("type-int.gguf");
    with_metadata(&good, &bad_type, "general.type", Value::I32(1));
    let e = err(&bad_type);
    assert!(
        e.contains("`general.type` must be a string, found i32"),
        "{e}"
    );

    let other_arch = tmp.path().join("qwen.gguf");
    with_metadata(
        &good,
        &other_arch,
        "general.architecture",
        Value::String("qwen2".into()),
    );
    let e = err(&other_arch);
    assert!(
        e.contains("architecture `qwen2` but the model is `llama`"),
        "{e}"
    );

    // A model is not an adapter.
    let e = err(&tiny);
    assert!(
        e.contains("tiny-llama-f32.gguf") && e.contains("general.type"),
        "{e}"
    );

    // Truncated adapter.
    let truncated = tmp.path().join("truncated.gguf");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&truncated);
    assert!(e.contains("truncated.gguf"), "{e}");

    // An adapter for another base: llama.cpp's own shape check refuses it; its reason is kept.
    let smol = tmp.path().join("smol.gguf");
    let peft = PeftAdapter::load(&fx.join("smollm2/peft-lora")).unwrap();
    skillpack_convert::convert(
        &peft,
        &GgufInfo::open(&default_model()).unwrap(),
        &ConvertOptions::default(),
    )
    .unwrap()
    .write(&smol)
    .unwrap();
    let e = err(&smol);
    assert!(
        e.contains("smol.gguf") && (e.contains("incorrect shape") || e.contains("does not exist")),
        "{e}"
    );

    // Missing file.
    let e = err(&tmp.path().join("nope.gguf"));
    assert!(e.contains("nope.gguf") && e.contains("No such file"), "{e}");

    // The good one still loads after all that.
    LoraAdapter::load(&model, &good).unwrap();
}

#[test]
fn llama_layer_refuses_bad_models() {
    let backend = Backend::get();
    let adapter = fixtures().join("smollm2/peft-lora/llamacpp-converter-output-f32.gguf");
    let e = Model::load(backend, &adapter, &ModelParams::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is an adapter, not a model"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let e = Model::load(backend, &junk, &ModelParams::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("junk.gguf") && e.contains("not a valid GGUF"),
        "{e}"
    );
}
