//! `skillpack curves`: the dev-loss curves of several training runs (a pack's skills) in one
//! chart, with the step each run stopped at and the step it exported.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

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

/// One run's curve and decisions, from its `train.json`.
#[derive(serde::Serialize)]
struct Run {
    name: String,
    dev_losses: Vec<(usize, f64)>,
    steps: usize,
    step_budget: Option<usize>,
    exported_step: Option<usize>,
    best_dev_loss: Option<f64>,
    stopped_early: bool,
}

/// A run still in progress: its dev losses so far, from `metrics.jsonl`.
fn read_partial_run(dir: &Path, name: String) -> anyhow::Result<Run> {
    let path = dir.join("metrics.jsonl");
    if !path.is_file() {
        anyhow::bail!(
            "{}: neither train.json nor metrics.jsonl (not a training run)",
            dir.display()
        );
    }
    let metrics = super::train::read_metrics(&path);
    let dev_losses: Vec<(usize, f64)> = metrics
        .iter()
        .filter_map(|m| m.dev_loss.map(|l| (m.step, l)))
        .collect();
    Ok(Run {
        name,
        steps: metrics.last().map_or(0, |m| m.step),
        step_budget: None,
        exported_step: None,
        best_dev_loss: dev_losses.iter().map(|p| p.1).reduce(f64::min),
        stopped_early: false,
        dev_losses,
    })
}

fn read_run(dir: &Path) -> anyhow::Result<Run> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let path = dir.join("train.json");
    if !path.is_file() {
        return read_partial_run(dir, format!("{name} (running)"));
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let dev_losses = v["dev_losses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        name,
        dev_losses,
        steps: v["steps"].as_u64().unwrap_or(0) as usize,
        step_budget: v["step_budget"].as_u64().map(|s| s as usize),
        exported_step: v["exported_step"].as_u64().map(|s| s as usize),
        best_dev_loss: v["best_dev_loss"].as_f64(),
        stopped_early: v["stopped_early"].as_bool().unwrap_or(false),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let runs: Vec<Run> = args
        .runs
        .iter()
        .map(|d| read_run(d))
        .collect::<anyhow::Result<_>>()?;
    let points = runs.iter().flat_map(|r| r.dev_losses.iter());
    let (max_step, lo, hi) = points.fold((1usize, f64::INFINITY, 0f64), |(s, lo, hi), p| {
        (s.max(p.0), lo.min(p.1), hi.max(p.1))
    });
    if !lo.is_finite() {
        anyhow::bail!("no run has dev losses (train with --dev)");
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "dev loss per skill (● the exported step)",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0..max_step + max_step / 20, lo * 0.97..hi * 1.03)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("dev loss (nats/token)")
            .draw()?;
        for (i, r) in runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    r.dev_losses.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(r.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            if let Some(step) = r.exported_step {
                if let Some(&(_, loss)) = r.dev_losses.iter().find(|(s, _)| *s == step) {
                    chart.draw_series(std::iter::once(Circle::new(
                        (step, loss),
                        4,
                        color.filled(),
                    )))?;
                }
            }
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
    }
    skillpack_convert::write_atomic(&args.output, svg.as_bytes())?;
    if args.json {
        return super::print_json(&serde_json::json!({"chart": args.output, "runs": runs}));
    }
    println!("| skill | steps (budget) | exported step | best dev loss | stopped early |");
    println!("|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} ({}) | {} | {} | {} |",
            r.name,
            r.steps,
            r.step_budget.map_or("–".into(), |b| b.to_string()),
            r.exported_step.map_or("–".into(), |s| s.to_string()),
            r.best_dev_loss.map_or("–".into(), |l| format!("{l:.4}")),
            if r.stopped_early { "yes" } else { "no" }
        );
    }
    println!("chart: {}", args.output.display());
    Ok(())
}
