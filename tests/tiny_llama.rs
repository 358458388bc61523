//! The llama.cpp layer's decode/logits path against PyTorch on the tiny f32 llama.

mod common;

use common::*;

#[test]
fn tiny_llama_logits_match_pytorch() {
    let fx = fixtures().join("tiny-llama");
    let model = load_model(&fx.join("tiny-llama-f32.gguf"));
    assert_eq!(
        (
            model.n_layer(),
            model.n_embd(),
            model.n_head(),
            model.n_head_kv()
        ),
        (2, 64, 4, 2)
    );
    assert_eq!(model.n_vocab(), 49152);
    let reference = RefLogits::open(fx.join("logits_base.safetensors"));
    let mut ctx = new_context(&model);
    for (i, ids) in prompt_ids().iter().enumerate() {
        ctx.clear_memory();
        ctx.eval(ids, 0, true).unwrap();
        let last = ctx.logits(ids.len() as i32 - 1).unwrap().to_vec();
        let diff = max_abs_diff(&last, &reference.last(i));
        // Argmax at every position, from the per-position logits rows.
        let ours: Vec<i64> = (0..ids.len())
            .map(|t| argmax(ctx.logits(t as i32).unwrap()) as i64)
            .collect();
        let agree = ours
            .iter()
            .zip(reference.argmax(i))
            .filter(|(a, b)| **a == *b)
            .count();
        println!(
            "prompt{i}: max |diff| {diff:.2e}, argmax agrees at {agree}/{} positions",
            ids.len()
        );
        assert!(diff <= 1e-2, "prompt{i}: max |diff| {diff}");
        assert_eq!(agree, ids.len(), "prompt{i}: argmax differs");
    }
}

#[test]
fn tokenizer_and_chat_template_come_from_the_gguf() {
    let model = load_model(&default_model());
    let ids = prompt_ids();
    let text = std::fs::read_to_string(fixtures().join("prompts.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompts: Vec<String> = v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().into())
        .collect();
    for (p, expected) in prompts.iter().zip(&ids) {
        // The fixture ids came from the GGUF's tokenizer; special tokens are parsed.
        assert_eq!(&model.tokenize(p, false, true).unwrap(), expected, "{p:?}");
        assert_eq!(model.detokenize(expected, true), *p);
    }
    let rendered = model
        .apply_chat_template(
            &[skillpack_llama::ChatMessage {
                role: "user".into(),
                content: "What are the common symptoms of type 2 diabetes?".into(),
            }],
            true,
        )
        .unwrap();
    assert!(rendered.ends_with(&prompts[0]), "{rendered:?}");
    assert_eq!(model.architecture(), "llama");
    assert_eq!(model.meta("general.architecture").as_deref(), Some("llama"));
}
