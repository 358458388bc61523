//! `skillpack convert` against the PEFT/PyTorch oracle: delta logits through llama.cpp, and
//! bit-for-bit tensors against llama.cpp's own converter.

mod common;

use common::*;
use skillpack_convert::{ConvertOptions, GgufInfo, OutType, PeftAdapter};
use skillpack_llama::LoraAdapter;

fn convert_to(
    dir: &std::path::Path,
    base: &std::path::Path,
    outtype: OutType,
    out: &std::path::Path,
) -> skillpack_convert::ConvertReport {
    let peft = PeftAdapter::load(dir).unwrap();
    let base = GgufInfo::open(base).unwrap();
    let converted = skillpack_convert::convert(
        &peft,
        &base,
        &ConvertOptions {
            outtype,
            name: None,
        },
    )
    .unwrap();
    converted.write(out).unwrap();
    converted.report
}

/// Converts each SmolLM2 fixture adapter, applies it with llama.cpp on the Q4_1 model and
/// compares the delta logits (adapter − base) at the last position with PyTorch's.
#[test]
fn delta_logits_match_peft_for_all_fixture_adapters() {
    let model_path = default_model();
    let model = load_model(&model_path);
    let mut ctx = new_context(&model);
    let ids = prompt_ids();
    let fx = fixtures().join("smollm2");
    let torch_base = RefLogits::open(fx.join("logits_base.safetensors"));
    let ours_base: Vec<Vec<f32>> = ids.iter().map(|p| last_logits(&mut ctx, p)).collect();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["peft-lora", "peft-lora-rslora-patterns", "peft-adalora"] {
        let out = tmp.path().join(format!("{name}.gguf"));
        let report = convert_to(&fx.join(name), &model_path, OutType::F32, &out);
        let adapter = LoraAdapter::load(&model, &out).unwrap();
        ctx.set_adapters(&[(&adapter, 1.0)]).unwrap();
        let torch_with = RefLogits::open(fx.join(name).join("logits_with_adapter.safetensors"));
        for (i, p) in ids.iter().enumerate() {
            let with = last_logits(&mut ctx, p);
            let ours_delta = sub(&with, &ours_base[i]);
            let torch_delta = sub(&torch_with.last(i), &torch_base.last(i));
            let cos = cosine(&ours_delta, &torch_delta);
            let torch_argmax = *torch_with.argmax(i).last().unwrap() as usize;
            println!(
                "{name} prompt{i}: delta cosine {cos:.5}, argmax ours {} torch {torch_argmax} (alpha {}, folded {})",
                argmax(&with),
                report.alpha,
                report.scales_folded
            );
            assert!(cos >= 0.98, "{name} prompt{i}: delta cosine {cos} < 0.98");
            assert_eq!(
                argmax(&with),
                torch_argmax,
                "{name} prompt{i}: argmax differs"
            );
        }
        ctx.clear_adapters().unwrap();
    }
}

/// On `peft-lora`, the f32 output equals llama.cpp's own converter output tensor for tensor,
/// bit for bit, and carries the KV types llama.cpp requires.
#[test]
fn peft_lora_f32_is_bit_identical_to_llama_cpp_converter() {
    let fx = fixtures().join("smollm2/peft-lora");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ours.gguf");
    let report = convert_to(&fx, &default_model(), OutType::F32, &out);
    assert_eq!(report.alpha, 16.0);
    assert!(!report.scales_folded);
    let ours = GgufInfo::open(&out).unwrap();
    let theirs = GgufInfo::open(&fx.join("llamacpp-converter-output-f32.gguf")).unwrap();
    assert_eq!(ours.tensors.len(), 420);
    assert_eq!(
        ours.tensors.keys().collect::<Vec<_>>(),
        theirs.tensors.keys().collect::<Vec<_>>(),
        "tensor names differ"
    );
    for (name, t) in &theirs.tensors {
        let o = &ours.tensors[name];
        assert_eq!(
            (&o.dims, &o.dtype),
            (&t.dims, &t.dtype),
            "{name}: shape/type"
        );
        assert!(
            ours.read_tensor_bytes(name).unwrap() == theirs.read_tensor_bytes(name).unwrap(),
            "{name}: data differs"
        );
    }
    use skillpack_convert::GgufValue as Value;
    assert!(matches!(ours.metadata.get("adapter.lora.alpha"), Some(Value::F32(a)) if *a == 16.0));
    for key in ["general.type", "adapter.type", "general.architecture"] {
        assert_eq!(
            ours.get_str(key),
            theirs.get_str(key),
            "{key} must be the same string as llama.cpp's"
        );
    }
    assert_eq!(ours.get_str("skillpack.source_format"), Some("peft-lora"));
    assert_eq!(
        ours.get_str("skillpack.base_fingerprint").map(String::from),
        Some(GgufInfo::open(&default_model()).unwrap().fingerprint())
    );
}

/// Every outtype loads in llama.cpp and stays close to the f32 conversion.
#[test]
fn outtypes_load_and_agree_with_f32() {
    let model_path = default_model();
    let model = load_model(&model_path);
    let mut ctx = new_context(&model);
    let ids = &prompt_ids()[1];
    let base = last_logits(&mut ctx, ids);
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures().join("smollm2/peft-lora-rslora-patterns");
    let mut deltas = Vec::new();
    for outtype in [OutType::F32, OutType::F16, OutType::Bf16, OutType::Q8_0] {
        let out = tmp.path().join(format!("{outtype:?}.gguf"));
        let report = convert_to(&fx, &model_path, outtype, &out);
        if outtype == OutType::Q8_0 {
            // lora_b has r (4..12) columns, fewer than a q8_0 block: those fall back to f16.
            assert_eq!(report.f16_fallbacks, 210);
        }
        let adapter = LoraAdapter::load(&model, &out).unwrap();
        ctx.set_adapters(&[(&adapter, 1.0)]).unwrap();
        deltas.push(sub(&last_logits(&mut ctx, ids), &base));
    }
    for (i, d) in deltas.iter().enumerate().skip(1) {
        let cos = cosine(d, &deltas[0]);
        println!("outtype #{i}: delta cosine to f32 {cos:.5}");
        assert!(cos > 0.99, "outtype #{i}: cosine {cos}");
    }
}
