//! `skillpack data`: build skill instruction data from the shared raw datasets.

use std::path::PathBuf;

use skillpack_data::{build_ner, split_of, write_jsonl};

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
    /// Build the skills' train/dev JSONL under OUT/<skill>/ (so far: ner from BC5CDR).
    Build {
        /// The raw data folder (see its MANIFEST.md).
        #[arg(long, default_value = "../shared/data/raw")]
        raw: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Percent of documents held out as dev, by a hash of their id.
        #[arg(long, default_value_t = 10)]
        dev_percent: u64,
        #[arg(long, default_value_t = 13)]
        seed: u64,
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
            json,
        } => {
            let records = build_ner(&raw.join("bc5cdr/CDR_TrainingSet.PubTator.txt"), "bc5cdr")?;
            let (dev, train): (Vec<_>, Vec<_>) = records
                .into_iter()
                .partition(|r| split_of(&r.id, seed, dev_percent) == "dev");
            write_jsonl(&out.join("ner/train.jsonl"), &train)?;
            write_jsonl(&out.join("ner/dev.jsonl"), &dev)?;
            let summary = serde_json::json!({"ner": {"train": train.len(), "dev": dev.len(), "source": "bc5cdr CDR_TrainingSet"}});
            if json {
                super::print_json(&summary)?;
            } else {
                println!(
                    "ner: {} train, {} dev records in {}",
                    train.len(),
                    dev.len(),
                    out.join("ner").display()
                );
            }
        }
    }
    Ok(())
}
