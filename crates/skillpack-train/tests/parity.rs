//! The candle decoder against PyTorch: base logits from the HF and GGUF copies of the tiny llama
//! and from the default Q4_1 GGUF.

mod common;

use candle_core::{DType, Device};
use common::*;
use skillpack_train::{Llama, ModelWeights};

#[test]
fn tiny_llama_base_logits_match_pytorch_from_hf_and_gguf() {
    let fx = fixtures().join("tiny-llama");
    for source in [fx.join("hf"), fx.join("tiny-llama-f32.gguf")] {
        let model = Llama::new(ModelWeights::load(&source, &Device::Cpu, DType::F32).unwrap());
        for (i, ids) in prompt_ids().iter().enumerate() {
            let (last, argmax) = run(&model, ids);
            let (ref_last, ref_argmax) = reference(fx.join("logits_base.safetensors"), i);
            let diff = max_abs_diff(&last, &ref_last);
            println!("{} prompt{i}: max |diff| {diff:.2e}", source.display());
            assert!(
                diff <= 1e-3,
                "{}: prompt{i} max |diff| {diff}",
                source.display()
            );
            assert_eq!(argmax, ref_argmax, "{}: prompt{i} argmax", source.display());
        }
    }
}

#[test]
fn smollm2_q4_1_base_logits_match_pytorch() {
    let model = Llama::new(ModelWeights::load(&default_model(), &Device::Cpu, DType::F32).unwrap());
    let reference_file = fixtures().join("smollm2/logits_base.safetensors");
    for (i, ids) in prompt_ids().iter().enumerate() {
        let (last, argmax) = run(&model, ids);
        let (ref_last, ref_argmax) = reference(reference_file.clone(), i);
        let cos = cosine(&last, &ref_last);
        let agree = argmax
            .iter()
            .zip(&ref_argmax)
            .filter(|(a, b)| a == b)
            .count();
        println!(
            "prompt{i}: cosine {cos:.6}, argmax agrees at {agree}/{} positions",
            ids.len()
        );
        assert!(cos >= 0.999, "prompt{i}: cosine {cos}");
        assert_eq!(
            argmax.last(),
            ref_argmax.last(),
            "prompt{i}: argmax at the last position"
        );
    }
}

#[test]
fn peft_fixture_adapters_give_pytorchs_delta_logits() {
    let mut model =
        Llama::new(ModelWeights::load(&default_model(), &Device::Cpu, DType::F32).unwrap());
    let fx = fixtures().join("smollm2");
    let ids = prompt_ids();
    let base: Vec<Vec<f32>> = ids.iter().map(|p| run(&model, p).0).collect();
    for name in ["peft-lora", "peft-lora-rslora-patterns", "peft-adalora"] {
        skillpack_train::load_peft(&mut model, &fx.join(name)).unwrap();
        for (i, p) in ids.iter().enumerate() {
            let (with, _) = run(&model, p);
            let (torch_with, _) =
                reference(fx.join(name).join("logits_with_adapter.safetensors"), i);
            let (torch_base, _) = reference(fx.join("logits_base.safetensors"), i);
            let cos = cosine(&sub(&with, &base[i]), &sub(&torch_with, &torch_base));
            println!("{name} prompt{i}: delta cosine {cos:.6}");
            assert!(cos >= 0.99, "{name} prompt{i}: delta cosine {cos}");
        }
    }
}
