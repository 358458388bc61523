//! A trained adapter exported through PEFT format and the GGUF converter is applied by llama.cpp
//! exactly as candle trained it, for every family of the architecture table.

mod common;

use candle_core::{DType, Device};
use common::*;
use skillpack_convert::GgufInfo;
use skillpack_llama::{Backend, Context, ContextParams, LoraAdapter, Model, ModelParams};
use skillpack_train::{
    export_trained, load_peft, tokenize, Llama, Method, ModelWeights, Record, TrainConfig, Trainer,
};

fn llama_cpp_last(ctx: &mut Context<'_>, ids: &[u32]) -> Vec<f32> {
    let ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    ctx.clear_memory();
    ctx.eval(&ids, 0, false).unwrap();
    ctx.logits(-1).unwrap().to_vec()
}

#[test]
fn exported_adapters_match_candle_in_llama_cpp() {
    // Every method on the tiny llama; AdaLoRA on the tiny model of every other family.
    check_family(
        &fixtures().join("tiny-llama/tiny-llama-f32.gguf"),
        &[Method::AdaLora, Method::Lora, Method::RsLora],
    );
    for family in ["qwen2", "qwen3", "gemma3"] {
        check_family(
            &fixtures().join(format!("arch/tiny-{family}/tiny-{family}-f32.gguf")),
            &[Method::AdaLora],
        );
    }
}

fn check_family(path: &std::path::Path, methods: &[Method]) {
    let path = path.to_path_buf();
    let family = GgufInfo::open(&path)
        .unwrap()
        .architecture()
        .unwrap()
        .to_string();
    let backend = Backend::get();
    let cpp_model = Model::load(backend, &path, &ModelParams::default()).unwrap();
    let records: Vec<Record> = (0..12)
        .map(|i| Record {
            id: i.to_string(),
            skill: "re".into(),
            context: format!("Drug {i} causes condition {}.", i * 7 % 5),
            query: "Which relation holds?".into(),
            output: format!("causes({i}, {})", i * 7 % 5),
        })
        .collect();
    let examples: Vec<_> = records
        .iter()
        .map(|r| tokenize(&cpp_model, r, 64).unwrap())
        .collect();
    for &method in methods {
        let tmp = tempfile::tempdir().unwrap();
        let model = Llama::new(ModelWeights::load(&path, &Device::Cpu, DType::F32).unwrap());
        let config = TrainConfig {
            method,
            targets: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
            r: 6,
            target_r: 3,
            alpha: 12.0,
            lr: 2e-2,
            warmup: 1,
            tinit: 3,
            tfinal: 5,
            delta_t: 2,
            checkpoint_every: 0,
            ..TrainConfig::skill_defaults(16)
        };
        let mut trainer = Trainer::new(model, config, examples.clone(), tmp.path()).unwrap();
        for _ in 0..16 {
            trainer.train_step().unwrap();
        }
        let report = export_trained(
            &trainer,
            tmp.path(),
            &family,
            Some(&GgufInfo::open(&path).unwrap()),
        )
        .unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(report.peft_dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        if method == Method::AdaLora {
            // PEFT refuses an AdaLoRA config without its schedule.
            assert_eq!(
                (
                    config["peft_type"].as_str(),
                    config["total_step"].as_u64(),
                    config["init_r"].as_u64()
                ),
                (Some("ADALORA"), Some(16), Some(6))
            );
        } else {
            assert_eq!(
                config["use_rslora"].as_bool(),
                Some(method == Method::RsLora)
            );
        }
        // PEFT round trip: reloading the PEFT directory reproduces the trained model's logits.
        let mut reloaded = Llama::new(ModelWeights::load(&path, &Device::Cpu, DType::F32).unwrap());
        load_peft(&mut reloaded, &report.peft_dir).unwrap();
        let base = Llama::new(ModelWeights::load(&path, &Device::Cpu, DType::F32).unwrap());
        let adapter = LoraAdapter::load(&cpp_model, report.gguf.as_ref().unwrap()).unwrap();
        let mut ctx = Context::new(
            &cpp_model,
            &ContextParams {
                n_ctx: 128,
                n_threads: Some(2),
                kv_f32: true,
                ..Default::default()
            },
        )
        .unwrap();
        for ids in prompt_ids() {
            let (trained, _) = run(&trainer.model, &ids);
            let (again, _) = run(&reloaded, &ids);
            assert!(
                max_abs_diff(&trained, &again) < 1e-4,
                "{family} {method:?}: PEFT round trip differs"
            );
            let (candle_base, _) = run(&base, &ids);
            ctx.clear_adapters().unwrap();
            let cpp_base = llama_cpp_last(&mut ctx, &ids);
            ctx.set_adapters(&[(&adapter, 1.0)]).unwrap();
            let cpp_with = llama_cpp_last(&mut ctx, &ids);
            let cos = cosine(&sub(&cpp_with, &cpp_base), &sub(&trained, &candle_base));
            let size = max_abs_diff(&trained, &candle_base);
            println!("{family} {method:?}: delta cosine llama.cpp vs candle {cos:.6} (delta up to {size:.3}; rank {})", report.total_rank);
            assert!(
                size > 1e-3,
                "{family} {method:?}: training must have changed the model"
            );
            assert!(cos >= 0.999, "{family} {method:?}: cosine {cos}");
        }
    }
}
