//! Every family of the architecture table through llama.cpp, on the tiny random Qwen2, Qwen3 and
//! Gemma 3 of `fixtures/arch` (PyTorch logits as the oracle):
//! * our llama.cpp layer on `NAME-f32.gguf` gives PyTorch's logits;
//! * `convert` turns each PEFT adapter (LoRA; AdaLoRA with rank-0 modules) into a GGUF adapter
//!   whose logit change in llama.cpp is PyTorch's, and the LoRA, stored f32, equals llama.cpp's
//!   own converter output bit for bit;
//! * the router's `mean-hidden` features from llama.cpp agree with candle's;
//! * an architecture outside the table is refused by `convert`, `train`, `pack check` and
//!   `router train`, naming it and the supported ones.

mod common;

use candle_core::{DType, Device};
use common::*;
use skillpack_convert::{ConvertOptions, GgufInfo, OutType, PeftAdapter};
use skillpack_llama::LoraAdapter;
use skillpack_route::{FeatureExtractor, FeatureKind};

const FAMILIES: [&str; 3] = ["qwen2", "qwen3", "gemma3"];

fn family_dir(family: &str) -> std::path::PathBuf {
    fixtures().join("arch").join(format!("tiny-{family}"))
}

fn family_gguf(family: &str) -> std::path::PathBuf {
    family_dir(family).join(format!("tiny-{family}-f32.gguf"))
}

#[test]
fn llama_cpp_logits_match_pytorch() {
    for family in FAMILIES {
        let model = load_model(&family_gguf(family));
        assert_eq!(model.architecture(), family);
        let mut ctx = context_with(&model, true, 1);
        let reference = RefLogits::open(family_dir(family).join("logits_base.safetensors"));
        for (i, ids) in prompt_ids().iter().enumerate() {
            let ours = last_logits(&mut ctx, ids);
            let diff = max_abs_diff(&ours, &reference.last(i));
            println!("{family} prompt{i}: llama.cpp vs PyTorch max |diff| {diff:.2e}");
            assert!(diff <= 1e-2, "{family} prompt{i}: {diff}");
            assert_eq!(
                argmax(&ours) as i64,
                *reference.argmax(i).last().unwrap(),
                "{family} prompt{i}"
            );
        }
    }
}

#[test]
fn converted_adapters_match_pytorch_in_llama_cpp() {
    let tmp = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let dir = family_dir(family);
        let model_path = family_gguf(family);
        let model = load_model(&model_path);
        let mut ctx = context_with(&model, true, 1);
        let torch_base = RefLogits::open(dir.join("logits_base.safetensors"));
        let ours_base: Vec<Vec<f32>> = prompt_ids()
            .iter()
            .map(|p| last_logits(&mut ctx, p))
            .collect();
        for adapter in ["peft-lora", "peft-adalora"] {
            let peft = PeftAdapter::load(&dir.join(adapter)).unwrap();
            let converted = skillpack_convert::convert(
                &peft,
                &GgufInfo::open(&model_path).unwrap(),
                &ConvertOptions {
                    outtype: OutType::F32,
                    name: None,
                },
            )
            .unwrap();
            let out = tmp.path().join(format!("{family}-{adapter}.gguf"));
            converted.write(&out).unwrap();
            let written = GgufInfo::open(&out).unwrap();
            let rank0 = peft.modules.iter().filter(|m| m.a.rows == 0).count();
            assert_eq!(
                written.tensors.len(),
                2 * (peft.modules.len() - rank0),
                "{family} {adapter}: rank-0 modules are dropped"
            );
            if adapter == "peft-adalora" {
                assert!(rank0 > 0, "{family}: the fixture has rank-0 modules");
            }
            let lora = LoraAdapter::load(&model, &out).unwrap();
            ctx.set_adapters(&[(&lora, 1.0)]).unwrap();
            let torch_with =
                RefLogits::open(dir.join(adapter).join("logits_with_adapter.safetensors"));
            for (i, ids) in prompt_ids().iter().enumerate() {
                let with = last_logits(&mut ctx, ids);
                let cos = cosine(
                    &sub(&with, &ours_base[i]),
                    &sub(&torch_with.last(i), &torch_base.last(i)),
                );
                println!(
                    "{family} {adapter} prompt{i}: delta cosine llama.cpp vs PyTorch {cos:.6}"
                );
                assert!(cos >= 0.98, "{family} {adapter} prompt{i}: {cos}");
                assert_eq!(
                    argmax(&with) as i64,
                    *torch_with.argmax(i).last().unwrap(),
                    "{family} {adapter} prompt{i}: argmax"
                );
            }
            ctx.clear_adapters().unwrap();
            if adapter == "peft-lora" {
                let theirs =
                    GgufInfo::open(&dir.join(adapter).join("llamacpp-converter-output-f32.gguf"))
                        .unwrap();
                assert_eq!(
                    written.tensors.keys().collect::<Vec<_>>(),
                    theirs.tensors.keys().collect::<Vec<_>>(),
                    "{family}: tensor names"
                );
                for (name, t) in &theirs.tensors {
                    assert_eq!(
                        (&written.tensors[name].dims, &written.tensors[name].dtype),
                        (&t.dims, &t.dtype),
                        "{family} {name}"
                    );
                    assert!(
                        written.read_tensor_bytes(name).unwrap()
                            == theirs.read_tensor_bytes(name).unwrap(),
                        "{family} {name}: data differs from llama.cpp's converter"
                    );
                }
            }
        }
    }
}

#[test]
fn mean_hidden_features_agree_between_llama_cpp_and_candle() {
    for family in FAMILIES {
        let path = family_gguf(family);
        let model = load_model(&path);
        let decoder = skillpack_train::Llama::new(
            skillpack_train::ModelWeights::load(&path, &Device::Cpu, DType::F32).unwrap(),
        );
        let prompts = prompt_ids();
        let candle = skillpack_train::mean_hidden(
            &decoder,
            &prompts
                .iter()
                .map(|p| p.iter().map(|&t| t as u32).collect())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let mut extractor =
            FeatureExtractor::new(&model, &path, FeatureKind::MeanHidden, Some(2)).unwrap();
        for (i, ids) in prompts.iter().enumerate() {
            let c = cosine(&extractor.features(ids).unwrap(), &candle[i]);
            println!("{family} prompt{i}: mean-hidden cosine llama.cpp vs candle {c:.6}");
            assert!(c >= 0.99, "{family} prompt{i}: {c}");
        }
    }
}

/// tiny-qwen2 relabelled `phi3`: a well-formed GGUF of an architecture outside the table.
fn unsupported_model(dir: &std::path::Path) -> std::path::PathBuf {
    use candle_core::quantized::gguf_file;
    let src = family_gguf("qwen2");
    let mut file = std::fs::File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.replace("qwen2.", "phi3."), v.clone()))
        .collect();
    for (k, v) in &mut metadata {
        if k == "general.architecture" {
            *v = gguf_file::Value::String("phi3".into());
        }
    }
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut file, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    let out = dir.join("tiny-phi3.gguf");
    let mut w = std::fs::File::create(&out).unwrap();
    gguf_file::write(
        &mut w,
        &metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect::<Vec<_>>(),
        &tensors
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    out
}

#[test]
fn an_unsupported_architecture_is_refused_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let model = unsupported_model(tmp.path());
    let expected = "architecture `phi3` is not supported (supported: llama, qwen2, qwen3, gemma3)";
    let adapter = family_dir("qwen2").join("peft-lora");
    let (ok, _, err) = skillpack(&[
        &"convert",
        &adapter,
        &"--base",
        &model,
        &"-o",
        &tmp.path().join("a.gguf"),
    ]);
    assert!(!ok && err.contains(expected), "convert: {err}");
    write_skill_data(&tmp.path().join("data"));
    let (ok, _, err) = skillpack(&[
        &"train",
        &"--base",
        &model,
        &"--data",
        &tmp.path().join("data/ner/train.jsonl"),
        &"--out",
        &tmp.path().join("run"),
        &"--steps",
        &"2",
    ]);
    assert!(!ok && err.contains(expected), "train: {err}");
    // A pack built for the qwen2 model, checked against the relabelled one.
    let pack = tmp.path().join("pack");
    let qwen = family_gguf("qwen2");
    let (ok, _, err) = skillpack(&[&"pack", &"new", &pack, &"--name", &"t", &"--base", &qwen]);
    assert!(ok, "{err}");
    let (ok, _, err) = skillpack(&[
        &"pack", &"add", &pack, &adapter, &"--id", &"ner", &"--base", &qwen,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = skillpack(&[&"pack", &"check", &pack, &"--base", &model]);
    assert!(!ok && err.contains(expected), "pack check: {err}");
    let (ok, _, err) = skillpack(&[
        &"router",
        &"train",
        &"--pack",
        &pack,
        &"--model",
        &model,
        &"--method",
        &"supervised",
        &"--features",
        &"mean-embedding",
        &"--data",
        &tmp.path().join("data"),
    ]);
    assert!(!ok && err.contains(expected), "router train: {err}");
}
