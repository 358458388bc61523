//! Command-line interface.

mod bench;
mod chat;
mod convert;
mod curves;
mod data;
mod eval;
mod export;
mod inspect;
mod load;
mod pack;
mod router;
mod run;
mod serve;
mod session;
mod train;
mod verify;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// File name of the default base model that `scripts/setup.sh` installs into `models/`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Parser)]
#[command(
    name = "skillpack",
    version,
    about = "Inject domain knowledge into a GGUF model as a pack of LoRA skills, applied by llama.cpp",
    after_help = "Examples:\n  skillpack convert ./my-peft-adapter --base models/SmolLM2-135M-Instruct.Q4_1.gguf -o ner.gguf\n  skillpack inspect ner.gguf --base models/SmolLM2-135M-Instruct.Q4_1.gguf\n  skillpack run --lora ner.gguf \"List the diseases: ...\""
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug incl. llama.cpp, -vvv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// How conversations become prompts: `auto` (the model's chat template, or the plain format
    /// for base models without one), `chat-template`, or `plain` (`### User` / `### Assistant`
    /// turns, each answer closed by the end-of-sequence token). Training data, evaluation,
    /// routing and run/chat/serve all use it; a pack records the format it was built with.
    #[arg(long, global = true, default_value = "auto")]
    pub template: skillpack_llama::PromptFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Convert(convert::Args),
    Inspect(inspect::Args),
    Pack(pack::Args),
    Run(run::Args),
    Chat(chat::Args),
    Bench(bench::Args),
    Train(Box<train::Args>),
    Data(data::Args),
    Eval(eval::Args),
    Verify(verify::Args),
    Router(router::Args),
    Merge(export::MergeArgs),
    Curves(curves::Args),
    Serve(serve::ServeArgs),
    Proxy(serve::ProxyArgs),
}

/// Routes `tracing` (including llama.cpp's logs) to stderr.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,llama.cpp=off",
        1 => "info,llama.cpp=warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKILLPACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .init();
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    skillpack_llama::set_prompt_format(cli.template);
    match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => run::run(args),
        Command::Pack(args) => pack::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(*args),
        Command::Data(args) => data::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Router(args) => router::run(args),
        Command::Merge(args) => export::merge(args),
        Command::Curves(args) => curves::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Proxy(args) => serve::proxy(args),
    }
}

/// The model to use when `--model` is omitted: `$SKILLPACK_MODEL`, else `models/` in the
/// current directory, else `models/` of the checkout the binary was built in.
pub fn default_model() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKILLPACK_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = vec![Path::new("models").join(DEFAULT_MODEL_FILE)];
    if let Ok(exe) = std::env::current_exe() {
        // target/{release,debug}/skillpack → checkout root
        if let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(root.join("models").join(DEFAULT_MODEL_FILE));
        }
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "no --model given and the default model {DEFAULT_MODEL_FILE} is not in models/: run scripts/setup.sh, or pass --model"
        )
    })
}

/// The prompt format models get in this process for `base` (as
/// [`skillpack_llama::Model::prompt_format`] decides it, without loading the model).
pub fn prompt_format_for(base: &skillpack_convert::GgufInfo) -> &'static str {
    skillpack_llama::requested_prompt_format()
        .resolve(base.metadata.contains_key("tokenizer.chat_template"))
        .as_str()
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
