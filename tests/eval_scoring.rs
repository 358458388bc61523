//! Log-likelihood scoring of the evaluation harness on the tiny f32 llama: single-token scores
//! against PyTorch's logits, and the KV-reusing paths (shared prompt prefix, options batched as
//! sequences sharing the prompt's cells) against fresh evaluation.

mod common;

use common::*;
use skillpack_eval::Scorer;
use skillpack_llama::{Context, Model};

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits.iter().map(|&l| l as f64 - max - z.ln()).collect()
}

fn context(model: &Model, n_seq_max: u32) -> Context<'_> {
    context_with(model, true, n_seq_max)
}

/// The log-likelihood of `continuation` after `prompt`, one fresh evaluation per token.
fn fresh_score(model: &Model, prompt: &[i32], continuation: &[i32]) -> f64 {
    let mut ctx = context(model, 1);
    let mut ids = prompt.to_vec();
    let mut total = 0.0;
    for &t in continuation {
        let logits = last_logits(&mut ctx, &ids);
        total += log_softmax(&logits)[t as usize];
        ids.push(t);
    }
    total
}

#[test]
fn single_token_scores_match_pytorch() {
    let fx = fixtures().join("tiny-llama");
    let model = load_model(&fx.join("tiny-llama-f32.gguf"));
    let reference = RefLogits::open(fx.join("logits_base.safetensors"));
    let mut ctx = context(&model, 4);
    let mut scorer = Scorer::new(&mut ctx);
    for (i, ids) in prompt_ids().iter().enumerate() {
        let expected = log_softmax(&reference.last(i));
        let best = argmax(&reference.last(i)) as i32;
        let options: Vec<Vec<i32>> = vec![vec![best], vec![17], vec![4242]];
        let scores = scorer.score(ids, &options).unwrap();
        for (o, s) in options.iter().zip(&scores) {
            let want = expected[o[0] as usize];
            println!("prompt{i} token {}: ours {s:.5}, PyTorch {want:.5}", o[0]);
            assert!(
                (s - want).abs() < 5e-3,
                "prompt{i} token {}: {s} vs {want}",
                o[0]
            );
        }
        assert!(scores[0] >= scores[1] && scores[0] >= scores[2]);
    }
}

#[test]
fn reused_and_batched_scores_equal_fresh_evaluation() {
    let fx = fixtures().join("tiny-llama");
    let model = load_model(&fx.join("tiny-llama-f32.gguf"));
    let prompts = prompt_ids();
    let long = prompts.iter().max_by_key(|p| p.len()).unwrap().clone();
    assert!(long.len() >= 8);
    let split = long.len() / 2;
    let (prompt, rest) = long.split_at(split);
    let options: Vec<Vec<i32>> = vec![
        rest.to_vec(),
        rest[..2].to_vec(),
        vec![rest[0], 99, 1000, 5],
        vec![7],
    ];
    let fresh: Vec<f64> = options
        .iter()
        .map(|o| fresh_score(&model, prompt, o))
        .collect();
    // Batched: options as sequences 1..=4 sharing the prompt.
    let mut batched_ctx = context(&model, 8);
    let mut batched = Scorer::new(&mut batched_ctx);
    // A different prompt with the same prefix first, so the second call reuses the prefix.
    let mut other = prompt.to_vec();
    other.push(3);
    batched.score(&other, &options).unwrap();
    let before = batched.tokens_evaluated;
    let b = batched.score(prompt, &options).unwrap();
    // Only the last prompt token is re-decoded, plus the fed option tokens.
    let fed: usize = options.iter().map(|o| o.len() - 1).sum();
    assert_eq!(batched.tokens_evaluated - before, 1 + fed);
    // Sequential: one context sequence, options one after another.
    let mut seq_ctx = context(&model, 1);
    let s = Scorer::new(&mut seq_ctx).score(prompt, &options).unwrap();
    for i in 0..options.len() {
        println!(
            "option {i} ({} tokens): fresh {:.5}, batched {:.5}, sequential {:.5}",
            options[i].len(),
            fresh[i],
            b[i],
            s[i]
        );
        assert!((b[i] - fresh[i]).abs() < 1e-3, "batched option {i}");
        assert!((s[i] - fresh[i]).abs() < 1e-3, "sequential option {i}");
    }
    // The scorer's cache is gone once the context's memory is cleared elsewhere.
    batched_ctx.clear_memory();
    let mut again = Scorer::new(&mut batched_ctx);
    let c = again.score(prompt, &options).unwrap();
    assert!((c[0] - fresh[0]).abs() < 1e-3);
}
