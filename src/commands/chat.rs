//! `skillpack chat`: an interactive conversation using the model's own chat template.

use std::io::{BufRead, Write};

use skillpack_llama::ChatMessage;

use super::session::SessionArgs;

/// Chat interactively. Commands: /reset (forget history), /skills SKILL=W,... (new weights), /quit.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  skillpack chat --pack packs/med --skills qa=1 --show-weights")]
pub struct Args {
    #[command(flatten)]
    pub session: SessionArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    skillpack_run::with_session(&args.session.options()?, |s| {
        let params = args.session.generate_params();
        let mut history: Vec<ChatMessage> = args.session.system_message().into_iter().collect();
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        eprintln!(
            "chat with {} — /reset, /skills SKILL=W,..., /quit",
            s.model().path().display()
        );
        loop {
            write!(out, "> ")?;
            out.flush()?;
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim();
            match line {
                "" => continue,
                "/quit" | "/exit" => break,
                "/reset" => {
                    history.retain(|m| m.role == "system");
                    eprintln!("(history cleared)");
                    continue;
                }
                _ => {}
            }
            if let Some(spec) = line.strip_prefix("/skills") {
                if s.pack().is_none() {
                    eprintln!("error: no --pack loaded");
                } else {
                    match s.set_skill_weights(spec.trim()) {
                        Ok(()) => eprintln!("(weights set)"),
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
                continue;
            }
            history.push(ChatMessage {
                role: "user".into(),
                content: line.to_string(),
            });
            let tokens = s.prompt_tokens(&history)?;
            tracing::info!(
                "prompt {} tokens ({} messages)",
                tokens.len(),
                history.len()
            );
            if tokens.len() + params.max_tokens > s.n_ctx() {
                eprintln!("(context full: /reset to start over)");
                history.pop();
                continue;
            }
            let applied = s.apply(&tokens, tokens.len() + params.max_tokens)?;
            if args.session.show_weights {
                eprintln!("{}", s.describe_applied(applied.as_ref()));
            }
            let generation = s.generate(&tokens, &params, |piece| {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            })?;
            writeln!(out)?;
            history.push(ChatMessage {
                role: "assistant".into(),
                content: generation.text,
            });
        }
        Ok(())
    })
}
