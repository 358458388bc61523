//! The candle decoder on every family of the architecture table against PyTorch (the tiny random
//! Qwen2, Qwen3 and Gemma 3 of `fixtures/arch`): base logits from the HF checkpoint and from
//! llama.cpp's f32 GGUF, and the logit change of each PEFT adapter (LoRA, and AdaLoRA with
//! rank-0 modules).

mod common;

use candle_core::{DType, Device};
use common::*;
use skillpack_train::{Llama, ModelWeights};

const FAMILIES: [&str; 3] = ["qwen2", "qwen3", "gemma3"];

fn family_dir(family: &str) -> std::path::PathBuf {
    fixtures().join("arch").join(format!("tiny-{family}"))
}

#[test]
fn base_logits_match_pytorch_from_hf_and_gguf() {
    for family in FAMILIES {
        let dir = family_dir(family);
        for source in [dir.join("hf"), dir.join(format!("tiny-{family}-f32.gguf"))] {
            let model = Llama::new(ModelWeights::load(&source, &Device::Cpu, DType::F32).unwrap());
            assert_eq!(model.weights.config.arch.name, family);
            for (i, ids) in prompt_ids().iter().enumerate() {
                let (last, argmax) = run(&model, ids);
                let (ref_last, ref_argmax) = reference(dir.join("logits_base.safetensors"), i);
                let diff = max_abs_diff(&last, &ref_last);
                println!("{}: prompt{i} max |diff| {diff:.2e}", source.display());
                assert!(diff <= 1e-3, "{}: prompt{i} {diff}", source.display());
                assert_eq!(argmax, ref_argmax, "{}: prompt{i} argmax", source.display());
            }
        }
    }
}

#[test]
fn peft_adapters_give_pytorchs_delta_logits() {
    for family in FAMILIES {
        let dir = family_dir(family);
        for source in [dir.join("hf"), dir.join(format!("tiny-{family}-f32.gguf"))] {
            let mut model =
                Llama::new(ModelWeights::load(&source, &Device::Cpu, DType::F32).unwrap());
            for adapter in ["peft-lora", "peft-adalora"] {
                skillpack_train::load_peft(&mut model, &dir.join(adapter)).unwrap();
                for (i, ids) in prompt_ids().iter().enumerate() {
                    let (with, _) = run(&model, ids);
                    let (torch_with, _) =
                        reference(dir.join(adapter).join("logits_with_adapter.safetensors"), i);
                    let (torch_base, _) = reference(dir.join("logits_base.safetensors"), i);
                    model.adapters.clear();
                    let (base, _) = run(&model, ids);
                    skillpack_train::load_peft(&mut model, &dir.join(adapter)).unwrap();
                    let cos = cosine(&sub(&with, &base), &sub(&torch_with, &torch_base));
                    println!(
                        "{family} {adapter} ({}): prompt{i} delta cosine {cos:.6}",
                        source.file_name().unwrap().to_string_lossy()
                    );
                    assert!(cos >= 0.999, "{family} {adapter} prompt{i}: {cos}");
                }
            }
        }
    }
}
