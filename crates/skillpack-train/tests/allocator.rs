//! Replays PEFT's recorded AdaLoRA allocator trace (params and grads per step) through ours.

mod common;

use std::collections::BTreeMap;

use candle_core::Device;
use common::fixtures;
use skillpack_train::{AdaLoraSchedule, RankAllocator, TripletView};

#[test]
fn allocator_reproduces_peft_trace_at_every_step() {
    let dir = fixtures().join("adalora-trace");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let u = |k: &str| config[k].as_u64().unwrap() as usize;
    let schedule = AdaLoraSchedule {
        init_r: u("init_r"),
        target_r: u("target_r"),
        tinit: u("tinit"),
        tfinal: u("tfinal"),
        delta_t: u("deltaT"),
        total_step: u("total_step"),
        beta1: config["beta1"].as_f64().unwrap(),
        beta2: config["beta2"].as_f64().unwrap(),
    };
    let trace =
        candle_core::safetensors::load(dir.join("trace.safetensors"), &Device::Cpu).unwrap();
    // Module prefixes, e.g. base_model.model.model.layers.0.self_attn.q_proj
    let mut modules: Vec<String> = trace
        .keys()
        .filter_map(|k| {
            k.strip_prefix("step0.")?
                .strip_suffix(".lora_E.default.param_after_opt")
                .map(String::from)
        })
        .collect();
    modules.sort();
    assert_eq!(modules.len(), 14);
    let ranks: BTreeMap<String, usize> = modules
        .iter()
        .map(|m| (m.clone(), schedule.init_r))
        .collect();
    let mut allocator = RankAllocator::new(schedule, &ranks);
    let mut masked_steps = 0;
    for step in 0..schedule.total_step {
        let get = |m: &str, part: &str, what: &str| {
            trace[&format!("step{step}.{m}.{part}.default.{what}")].clone()
        };
        let owned: Vec<(String, [candle_core::Tensor; 6])> = modules
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    [
                        get(m, "lora_A", "param_after_opt"),
                        get(m, "lora_B", "param_after_opt"),
                        get(m, "lora_E", "param_after_opt"),
                        get(m, "lora_A", "grad"),
                        get(m, "lora_B", "grad"),
                        get(m, "lora_E", "grad"),
                    ],
                )
            })
            .collect();
        let views: BTreeMap<String, TripletView> = owned
            .iter()
            .map(|(m, t)| {
                (
                    m.clone(),
                    TripletView {
                        a: &t[0],
                        b: &t[1],
                        e: &t[2],
                        grad_a: &t[3],
                        grad_b: &t[4],
                        grad_e: &t[5],
                    },
                )
            })
            .collect();
        let new_e = allocator.update_and_allocate(step, &views).unwrap();
        let mut zeros = 0;
        for (m, t) in &owned {
            let expected = get(m, "lora_E", "E_after_allocate")
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let ours = match &new_e {
                Some(map) => map[m].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                None => t[2].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            };
            for (i, (o, e)) in ours.iter().zip(&expected).enumerate() {
                assert_eq!(
                    *o == 0.0,
                    *e == 0.0,
                    "step {step} {m} rank {i}: zeroed differs (ours {o}, PEFT {e})"
                );
                assert!(
                    (o - e).abs() <= 1e-6,
                    "step {step} {m} rank {i}: {o} vs {e}"
                );
            }
            zeros += expected.iter().filter(|x| **x == 0.0).count();
        }
        masked_steps += (new_e.is_some()) as usize;
        println!(
            "step {step}: {zeros} ranks zeroed, budget {:?}",
            allocator.budget_schedule(step)
        );
    }
    assert!(
        masked_steps >= 6,
        "the trace must exercise masking ({masked_steps} steps)"
    );
    assert_eq!(
        allocator
            .rank_pattern
            .as_ref()
            .unwrap()
            .values()
            .map(|k| k.iter().filter(|x| **x).count())
            .sum::<usize>(),
        2 * 14
    );
}
