//! The plain prompt format for models without a chat template: its exact text, training
//! tokenization that ends each answer with the end-of-sequence token, and a pack that records
//! the format it was built with and refuses a session rendering another.

mod common;

use common::*;
use skillpack_llama::{ChatMessage, PromptFormat};

fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

#[test]
fn plain_format_renders_trains_and_is_recorded_in_packs() {
    // The tiny Qwen3 has a chat template, so `auto` picks it; `plain` is forced here.
    let gguf = fixtures().join("arch/tiny-qwen3/tiny-qwen3-f32.gguf");
    let model = load_model(&gguf);
    assert_eq!(model.prompt_format(), PromptFormat::ChatTemplate);
    skillpack_llama::set_prompt_format(PromptFormat::Plain);
    assert_eq!(model.prompt_format(), PromptFormat::Plain);
    let eos = String::from_utf8_lossy(&model.token_to_bytes(model.token_eos().unwrap(), true))
        .into_owned();
    let text = model
        .apply_chat_template(
            &[
                message("system", "Be brief."),
                message("user", "Name a vitamin."),
                message("assistant", "C"),
                message("user", "Another?"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        text,
        format!("Be brief.\n\n### User\nName a vitamin.\n\n### Assistant\nC{eos}\n\n### User\nAnother?\n\n### Assistant\n")
    );
    // Training: the answer's targets end with the end-of-sequence token.
    let record = skillpack_train::Record {
        id: "1".into(),
        skill: "qa".into(),
        context: String::new(),
        query: "Name a vitamin.".into(),
        output: "Vitamin C".into(),
    };
    let example = skillpack_train::tokenize(&model, &record, 256).unwrap();
    let answer: Vec<i32> = example
        .ids
        .iter()
        .zip(&example.targets)
        .filter(|(_, t)| **t)
        .map(|(&id, _)| id as i32)
        .collect();
    assert_eq!(answer.last().copied(), model.token_eos());
    assert_eq!(model.detokenize(&answer, false).trim(), "Vitamin C");
    skillpack_llama::set_prompt_format(PromptFormat::Auto);

    // A pack made with --template plain records it; a session in the model's own template is
    // refused, one in the plain format is not.
    let tmp = tempfile::tempdir().unwrap();
    let pack = tmp.path().join("pack");
    let (ok, _, err) = skillpack(&[
        &"pack",
        &"new",
        &pack,
        &"--name",
        &"p",
        &"--base",
        &gguf,
        &"--template",
        &"plain",
    ]);
    assert!(ok, "{err}");
    let manifest = std::fs::read_to_string(pack.join("pack.toml")).unwrap();
    assert!(manifest.contains("prompt_format = \"plain\""), "{manifest}");
    let adapter = fixtures().join("arch/tiny-qwen3/peft-lora");
    let (ok, _, err) = skillpack(&[
        &"pack", &"add", &pack, &adapter, &"--id", &"qa", &"--base", &gguf,
    ]);
    assert!(ok, "{err}");
    let run = |template: &str| {
        skillpack(&[
            &"run",
            &"--model",
            &gguf,
            &"--pack",
            &pack,
            &"--skills",
            &"qa=1",
            &"-n",
            &"2",
            &"--temp",
            &"0",
            &"--template",
            &template,
            &"Name a vitamin.",
        ])
    };
    let (ok, _, err) = run("auto");
    assert!(
        !ok && err.contains("trained on `plain` prompts, this session renders `chat-template`"),
        "{err}"
    );
    let (ok, _, err) = run("plain");
    assert!(ok, "{err}");
}
