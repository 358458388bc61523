//! `skillpack run`: one-shot generation, streaming to the terminal.

use std::io::Write;

use skillpack_llama::ChatMessage;

use super::session::SessionArgs;

/// Answer one prompt, with a skill pack's weighted skills (or raw LoRA adapters) applied.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  skillpack run \"What are the symptoms of anemia?\"\n  skillpack run --pack packs/med --skills ner=0.7,re=0.3 --show-weights --temp 0 \"Find the chemicals: ...\"\n  skillpack run --lora ner.gguf:0.5 \"...\""
)]
pub struct Args {
    /// The prompt (a user message, rendered with the model's chat template unless --raw).
    pub prompt: String,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print one JSON object (text, weights, token counts, speeds) instead of streaming.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub session: SessionArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.prompt.trim().is_empty(),
        "the prompt is empty: give the question as the last argument"
    );
    skillpack_run::with_session(&args.session.options()?, |s| {
        let tokens = if args.raw {
            s.model().tokenize(&args.prompt, true, true)?
        } else {
            let mut messages: Vec<ChatMessage> =
                args.session.system_message().into_iter().collect();
            messages.push(ChatMessage {
                role: "user".into(),
                content: args.prompt.clone(),
            });
            s.prompt_tokens(&messages)?
        };
        let params = args.session.generate_params();
        let applied = s.apply(&tokens, tokens.len() + params.max_tokens)?;
        if args.session.show_weights {
            eprintln!("{}", s.describe_applied(applied.as_ref()));
        }
        let mut stdout = std::io::stdout().lock();
        let json = args.json;
        let generation = s.generate(&tokens, &params, |piece| {
            if !json {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
        })?;
        if json {
            let skills = applied
                .as_ref()
                .map(|a| s.skill_weights(a))
                .unwrap_or_default();
            super::print_json(&serde_json::json!({
                "text": generation.text,
                "skills": skills,
                "applied": applied,
                "finish": generation.finish,
                "prompt_tokens": generation.prompt_tokens,
                "generated_tokens": generation.generated_tokens,
                "prompt_tokens_per_s": generation.prompt_tps(),
                "decode_tokens_per_s": generation.decode_tps(),
            }))?;
        } else {
            writeln!(stdout)?;
            tracing::info!(
                "prompt {} tokens at {:.1} tok/s, generated {} tokens at {:.1} tok/s ({})",
                generation.prompt_tokens,
                generation.prompt_tps(),
                generation.generated_tokens,
                generation.decode_tps(),
                generation.finish
            );
        }
        Ok(())
    })
}
