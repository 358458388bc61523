//! `skillpack data`: build the twelve skills' instruction data from the shared raw datasets.

use std::path::PathBuf;
use std::time::Instant;

use skillpack_data::{build_all, write_build, BuildOptions};
use skillpack_llama::{Backend, Model, ModelParams};

/// Build instruction records ({id, skill, source, context, query, output}) from raw datasets.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  skillpack data build --raw ../shared/data/raw --out data/skills"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Build OUT/SKILL/{train,dev}.jsonl and a data card per skill, plus OUT/cards.md and
    /// OUT/manifest.json. Records overlapping an evaluation item are dropped and counted.
    Build {
        /// The raw data folder (see its MANIFEST.md).
        #[arg(long, default_value = "../shared/data/raw")]
        raw: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Percent of each skill's documents/dialogues held out as the skill's dev split.
        #[arg(long, default_value_t = 5)]
        dev_percent: u64,
        /// Seed of the skills' train/dev split (the tasks' splits are fixed).
        #[arg(long, default_value_t = 13)]
        seed: u64,
        /// Only these skills (comma-separated ids; default all twelve).
        #[arg(long, value_delimiter = ',')]
        skills: Vec<String>,
        /// Model whose tokenizer measures the cards' lengths (default: the default model
        /// when installed; words otherwise).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Build {
            raw,
            out,
            dev_percent,
            seed,
            skills,
            model,
            json,
        } => {
            let started = Instant::now();
            let built = build_all(
                &raw,
                &BuildOptions {
                    dev_percent,
                    seed,
                    skills,
                },
            )?;
            let model_path = match model {
                Some(p) => Some(p),
                None => super::default_model().ok(),
            };
            let model = match &model_path {
                Some(p) => Some(Model::load(Backend::get(), p, &ModelParams::default())?),
                None => None,
            };
            let count = |text: &str| {
                model
                    .as_ref()
                    .and_then(|m| m.tokenize(text, false, false).ok())
                    .map(|t| t.len())
                    .unwrap_or(0)
            };
            let token_len: Option<&dyn Fn(&str) -> usize> =
                if model.is_some() { Some(&count) } else { None };
            let cards = write_build(&out, &built, token_len)?;
            let (splits_md, splits) = skillpack_data::tasks::split_table(&raw)?;
            skillpack_data::write_atomic(&out.join("tasks.md"), splits_md.as_bytes())?;
            let seconds = started.elapsed().as_secs_f64();
            if json {
                super::print_json(&serde_json::json!({
                    "out": out, "seconds": seconds, "cards": cards, "tasks": splits,
                }))?;
            } else {
                for c in &cards {
                    let removed: usize = c.removed_overlaps.values().sum();
                    println!(
                        "{:<5} {:>6} train {:>5} dev  ({} overlapping records removed)",
                        c.skill, c.train, c.dev, removed
                    );
                }
                print!("\n{splits_md}");
                println!(
                    "wrote {} skills to {} in {seconds:.1} s (cards: {})",
                    cards.len(),
                    out.display(),
                    out.join("cards.md").display()
                );
            }
        }
    }
    Ok(())
}
