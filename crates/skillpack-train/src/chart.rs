//! Charts of training runs: one run's loss from its `metrics.jsonl`, and the dev-loss curves of
//! several runs (a pack's skills) with the step each exported.

use std::path::{Path, PathBuf};

use crate::{Result, StepMetrics, TrainError};

/// The steps of a `metrics.jsonl` (a line cut by a kill is skipped; a missing file has none).
pub fn read_metrics(path: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Draws the training loss (per step and its 20-step mean) and the dev loss of `metrics` as an
/// SVG, written atomically (a kill mid-write leaves the previous chart). No metrics, no chart.
pub fn plot_loss(metrics: &[StepMetrics], path: &Path) -> Result<()> {
    if metrics.is_empty() {
        return Ok(());
    }
    let svg = loss_svg(metrics).map_err(|e| TrainError::Chart(e.to_string()))?;
    skillpack_convert::write_atomic(path, svg.as_bytes())?;
    Ok(())
}

fn loss_svg(metrics: &[StepMetrics]) -> Result<String, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let max_loss = metrics.iter().map(|m| m.loss).fold(0.0f64, f64::max) * 1.05;
    let min_loss = metrics.iter().map(|m| m.loss).fold(f64::INFINITY, f64::min) * 0.95;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 450)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "training loss (blue, red: 20-step mean), dev loss (green)",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(
                0usize..metrics.last().map(|m| m.step).unwrap_or(1),
                min_loss..max_loss,
            )?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats/token)")
            .draw()?;
        chart.draw_series(LineSeries::new(
            metrics.iter().map(|m| (m.step, m.loss)),
            &BLUE,
        ))?;
        // A 20-step moving average, easier to read than the noisy per-step loss.
        let window = 20.min(metrics.len());
        let smooth: Vec<(usize, f64)> = metrics
            .windows(window)
            .map(|w| {
                (
                    w[w.len() - 1].step,
                    w.iter().map(|m| m.loss).sum::<f64>() / w.len() as f64,
                )
            })
            .collect();
        chart.draw_series(LineSeries::new(smooth, RED.stroke_width(2)))?;
        // The dev loss at evaluation steps, what selects the exported step.
        let dev: Vec<(usize, f64)> = metrics
            .iter()
            .filter_map(|m| m.dev_loss.map(|l| (m.step, l.clamp(min_loss, max_loss))))
            .collect();
        if !dev.is_empty() {
            chart.draw_series(LineSeries::new(dev.clone(), GREEN.stroke_width(2)))?;
            chart.draw_series(
                dev.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, GREEN.filled())),
            )?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// One training run's dev-loss curve and decisions, as [`read_run_curve`] finds them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunCurve {
    /// The run directory's name; `NAME (running)` for a run without `train.json` yet.
    pub name: String,
    /// The dev loss at each evaluation step.
    pub dev_losses: Vec<(usize, f64)>,
    /// The step the run stopped at (or has reached).
    pub steps: usize,
    /// Steps the run could take (finished runs only).
    pub step_budget: Option<usize>,
    /// The step whose adapters were exported (finished runs only).
    pub exported_step: Option<usize>,
    pub best_dev_loss: Option<f64>,
    /// Patience ran out before the step budget.
    pub stopped_early: bool,
    /// Steps per matmul precision, e.g. `f32 300 + bf16 100` (finished runs; `f32` for runs
    /// from before the setting existed).
    pub matmul: Option<String>,
}

/// Reads a training output directory: its `train.json` when the run finished, else the dev
/// losses so far from `metrics.jsonl`.
pub fn read_run_curve(dir: &Path) -> Result<RunCurve> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let path = dir.join("train.json");
    if !path.is_file() {
        return read_partial_run(dir, format!("{name} (running)"));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TrainError::Input(format!("reading {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Input(format!("{}: not JSON: {e}", path.display())))?;
    let dev_losses = v["dev_losses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(RunCurve {
        name,
        dev_losses,
        steps: v["steps"].as_u64().unwrap_or(0) as usize,
        step_budget: v["step_budget"].as_u64().map(|s| s as usize),
        exported_step: v["exported_step"].as_u64().map(|s| s as usize),
        best_dev_loss: v["best_dev_loss"].as_f64(),
        stopped_early: v["stopped_early"].as_bool().unwrap_or(false),
        matmul: Some(match v["matmul"].as_object() {
            Some(steps) if steps.len() == 1 => steps.keys().next().cloned().unwrap_or_default(),
            Some(steps) => steps
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(" + "),
            None => "f32".into(),
        }),
    })
}

/// A run still in progress: its dev losses so far, from `metrics.jsonl`.
fn read_partial_run(dir: &Path, name: String) -> Result<RunCurve> {
    let path = dir.join("metrics.jsonl");
    if !path.is_file() {
        return Err(TrainError::Input(format!(
            "{}: neither train.json nor metrics.jsonl (not a training run)",
            dir.display()
        )));
    }
    let metrics = read_metrics(&path);
    let dev_losses: Vec<(usize, f64)> = metrics
        .iter()
        .filter_map(|m| m.dev_loss.map(|l| (m.step, l)))
        .collect();
    Ok(RunCurve {
        name,
        steps: metrics.last().map_or(0, |m| m.step),
        step_budget: None,
        exported_step: None,
        best_dev_loss: dev_losses.iter().map(|p| p.1).reduce(f64::min),
        stopped_early: false,
        dev_losses,
        matmul: None,
    })
}

/// Reads the training runs in `dirs` ([`read_run_curve`]) and draws their dev-loss curves in one
/// SVG at `path` (written atomically), each exported step marked. At least one run needs dev
/// losses.
pub fn plot_dev_curves(dirs: &[PathBuf], path: &Path) -> Result<Vec<RunCurve>> {
    let runs = dirs
        .iter()
        .map(|d| read_run_curve(d))
        .collect::<Result<Vec<_>>>()?;
    let points = runs.iter().flat_map(|r| r.dev_losses.iter());
    let (max_step, lo, hi) = points.fold((1usize, f64::INFINITY, 0f64), |(s, lo, hi), p| {
        (s.max(p.0), lo.min(p.1), hi.max(p.1))
    });
    if !lo.is_finite() {
        return Err(TrainError::Input(
            "no run has dev losses (train with --dev)".into(),
        ));
    }
    let svg =
        dev_curves_svg(&runs, max_step, lo, hi).map_err(|e| TrainError::Chart(e.to_string()))?;
    skillpack_convert::write_atomic(path, svg.as_bytes())?;
    Ok(runs)
}

fn dev_curves_svg(
    runs: &[RunCurve],
    max_step: usize,
    lo: f64,
    hi: f64,
) -> Result<String, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
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
    Ok(svg)
}
