//! `skillpack pack export` and `skillpack merge` on the default model (Q4_1) with the fixture
//! pack (real PEFT adapters):
//! * llama-server started with `--lora skills.gguf` (one exported adapter) answers with the
//!   per-token distribution of skillpack's llama.cpp layer with the pack's adapters at the same
//!   weights — the oracle of the proxy test: mean token-probability gap under 0.06 and under half
//!   the gap of the base model;
//! * a merged model keeps the delta: cosine of its logit change with the multi-adapter one over
//!   the fixture prompts, for `--outtype q8_0` and `same` (q4_1, where requantization costs part
//!   of a small delta).

mod common;

use common::http::*;
use common::*;
use skillpack_llama::LoraAdapter;

const SYSTEM: &str = "You are a medical assistant.";
const PROMPT: &str = "Find the chemicals: Aspirin number 3 caused gastric ulcers in rats.";
const WEIGHTS: [(&str, f32); 2] = [("ner", 0.5), ("re", 0.5)];
const SKILLS: &str = "ner=0.5,re=0.5";

fn pack_adapters<'m>(
    model: &'m skillpack_llama::Model,
    pack: &std::path::Path,
) -> Vec<(LoraAdapter<'m>, f32)> {
    WEIGHTS
        .iter()
        .map(|(id, w)| {
            (
                LoraAdapter::load(model, &pack.join(format!("skills/{id}.gguf"))).unwrap(),
                *w,
            )
        })
        .collect()
}

#[test]
fn exported_adapter_in_llama_server_matches_the_pack() {
    let binary = llama_server();
    let tmp = tempfile::tempdir().unwrap();
    let (pack, _) = fixture_pack(tmp.path());
    let exported = tmp.path().join("skills.gguf");
    let export = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"pack",
            &"export",
            &pack,
            &"--skills",
            &SKILLS,
            &"-o",
            &exported,
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = skillpack(&args);
        assert!(ok, "{err}");
        out
    };
    let out = export(&[&"--outtype", &"f16", &"--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["weights"]["ner"], 0.5);
    assert_eq!(v["weights"]["re"], 0.5);
    // The exported rank is the sum of the skills' (ner is AdaLoRA: its pruned rank).
    let rank_of = |p: &std::path::Path| -> usize {
        skillpack_convert::LoraFile::read(p)
            .unwrap()
            .pairs
            .values()
            .map(|p| p.a.rows)
            .sum()
    };
    assert_eq!(
        v["total_rank"].as_u64().unwrap() as usize,
        rank_of(&pack.join("skills/ner.gguf")) + rank_of(&pack.join("skills/re.gguf"))
    );
    // The plain-text report says how to load it.
    let text = export(&[]);
    assert!(
        text.contains("--lora") && text.contains("ADAPTER"),
        "{text}"
    );

    // llama-server with the exported adapter: a greedy answer with log-probabilities.
    let body = format!(
        r#"{{"messages":[{{"role":"system","content":"{SYSTEM}"}},{{"role":"user","content":"{PROMPT}"}}],"max_tokens":16,"temperature":0,"repeat_penalty":1.0,"logprobs":true,"top_logprobs":1}}"#
    );
    let port = free_port();
    let exported_flag = exported.display().to_string();
    let args = llama_server_args(
        port,
        &["-c", "2048", "--no-repack", "--lora", &exported_flag],
    );
    let server = Server::external(binary.as_os_str(), &args, port);
    let (status, _, v) = post(&format!("{}/v1/chat/completions", server.url), &body);
    assert_eq!(status, 200, "{v}");
    let (answer, theirs) = answer_logprobs(&v);

    let model = load_model(&default_model());
    let prompt = chat_prompt(&model, SYSTEM, PROMPT);
    let mean_gap = |ours: &[f64]| mean_probability_gap(ours, &theirs);
    let right = mean_gap(&our_logprobs(
        &model,
        &pack_adapters(&model, &pack),
        &prompt,
        &answer,
    ));
    let wrong = mean_gap(&our_logprobs(&model, &[], &prompt, &answer));
    println!(
        "llama-server --lora {}: mean |p(llama-server) - p(skillpack, {})| {right:.4}; vs the base model {wrong:.4}",
        exported.display(),
        SKILLS
    );
    // Not bit-exact even within one llama.cpp build: Q4_1 matmuls quantize activations to q8, so
    // rank-concatenated and separate adapters round differently (logit deltas agree to cosine
    // 0.99); the two builds differ a little as well (see the proxy test).
    assert!(right < 0.08 && right < wrong / 4.0, "{right} vs {wrong}");
}

#[test]
fn merged_model_keeps_the_delta() {
    let tmp = tempfile::tempdir().unwrap();
    let (pack, _) = fixture_pack(tmp.path());
    let model = load_model(&default_model());
    let adapters = pack_adapters(&model, &pack);
    let prompts = prompt_ids();
    let mut ctx = new_context(&model);
    let mut base = Vec::new();
    let mut multi = Vec::new();
    for ids in &prompts {
        ctx.set_adapters(&[]).unwrap();
        base.extend(last_logits(&mut ctx, ids));
        let set: Vec<(&LoraAdapter<'_>, f32)> = adapters.iter().map(|(a, w)| (a, *w)).collect();
        ctx.set_adapters(&set).unwrap();
        multi.extend(last_logits(&mut ctx, ids));
    }
    let want = sub(&multi, &base);
    for (outtype, bound) in [("f16", 0.98), ("q8_0", 0.98), ("same", 0.5)] {
        let out = tmp.path().join(format!("merged-{outtype}.gguf"));
        let (ok, json, err) = skillpack(&[
            &"merge",
            &"--pack",
            &pack,
            &"--skills",
            &SKILLS,
            &"--outtype",
            &outtype,
            &"-o",
            &out,
            &"--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let merged_model = load_model(&out);
        let mut mctx = new_context(&merged_model);
        let merged: Vec<f32> = prompts
            .iter()
            .flat_map(|ids| last_logits(&mut mctx, ids))
            .collect();
        let cos = cosine(&sub(&merged, &base), &want);
        println!(
            "merge --outtype {outtype}: delta cosine vs multi-adapter {cos:.4} over {} prompts; {}",
            prompts.len(),
            v["report"]
        );
        assert!(cos >= bound, "{outtype}: {cos}");
    }
    // The output never replaces the base model.
    let (ok, _, err) = skillpack(&[
        &"merge",
        &"--pack",
        &pack,
        &"--skills",
        &"ner=1",
        &"-o",
        &default_model(),
    ]);
    assert!(!ok && err.contains("would replace the base model"), "{err}");
}
