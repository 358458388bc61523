//! `skillpack curves`: the dev-loss curves of several training runs (a pack's skills) in one
//! chart, with the step each run stopped at and the step it exported.

use std::path::PathBuf;

/// Draw the dev-loss curves of training runs (each `train --dev` output directory) in one chart
/// and list where each stopped and which step it exported.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  skillpack curves runs/medical/skills/* -o dev-loss.svg")]
pub struct Args {
    /// Training output directories (each with a `train.json`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// The chart to write (SVG).
    #[arg(short, long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runs = skillpack_train::plot_dev_curves(&args.runs, &args.output)?;
    if args.json {
        return super::print_json(&serde_json::json!({"chart": args.output, "runs": runs}));
    }
    println!("| skill | steps (budget) | exported step | best dev loss | stopped early | matmul |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} |",
            r.name,
            r.steps,
            r.step_budget.map_or("–".into(), |b| b.to_string()),
            r.exported_step.map_or("–".into(), |s| s.to_string()),
            r.best_dev_loss.map_or("–".into(), |l| format!("{l:.4}")),
            if r.stopped_early { "yes" } else { "no" },
            r.matmul.as_deref().unwrap_or("–")
        );
    }
    println!("chart: {}", args.output.display());
    Ok(())
}
