//! Request bodies of `skillpack serve` / `proxy` (chat and completions, with the `skills` and
//! `route` extensions): parsing and planning against a pack, then rendering the prompt with the
//! default model's chat template and tokenizing it, as a slot does before decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillpack_fuzz::assets;
use skillpack_serve::api::{parse_body, ChatRequest, CompletionRequest};
use skillpack_serve::plan::{plan_chat, plan_completion, PackView, Prompt};
use skillpack_serve::Limits;

fuzz_target!(|data: &[u8]| {
    let pack = PackView {
        skills: ["a", "b", "c"].map(String::from).to_vec(),
        routers: vec!["general".into()],
        default_router: "general".into(),
    };
    let limits = Limits::default();
    let mut plans = Vec::new();
    if let Ok(req) = parse_body::<ChatRequest>(data) {
        plans.extend(plan_chat(req, &pack, &limits).ok());
    }
    if let Ok(req) = parse_body::<CompletionRequest>(data) {
        plans.extend(plan_completion(req, &pack, &limits).ok());
    }
    let vocab = &assets().vocab;
    for plan in plans {
        assert!(plan.params.max_tokens <= limits.max_tokens);
        let text = match plan.prompt {
            Prompt::Chat(messages) => match vocab.apply_chat_template(&messages, true) {
                Ok(text) => text,
                Err(_) => continue,
            },
            Prompt::Text(text) => text,
        };
        let _ = vocab.tokenize(&text, true, true);
    }
});
