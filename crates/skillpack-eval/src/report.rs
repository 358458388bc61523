//! Comparison of configurations across tasks: a markdown table and a grouped bar chart (SVG).

use std::path::Path;

use skillpack_data::tasks::{task_info, TASKS};

use crate::{EvalError, Result, TaskSummary};

fn headline(s: &TaskSummary) -> Option<f64> {
    s.metrics.first().map(|(_, v)| *v)
}

/// Configurations in first-seen order.
fn configs(summaries: &[TaskSummary]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in summaries {
        if !out.contains(&s.config) {
            out.push(s.config.clone());
        }
    }
    out
}

fn find<'a>(summaries: &'a [TaskSummary], config: &str, task: &str) -> Option<&'a TaskSummary> {
    summaries
        .iter()
        .find(|s| s.config == config && s.task == task)
}

/// Mean headline score over `tasks` (None when a task is missing).
pub fn mean_over(summaries: &[TaskSummary], config: &str, tasks: &[&str]) -> Option<f64> {
    let scores: Option<Vec<f64>> = tasks
        .iter()
        .map(|t| find(summaries, config, t).and_then(headline))
        .collect();
    scores.map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
}

/// A markdown table: one row per task (headline metric, all configurations as columns), then
/// the means of the seen and unseen tasks.
pub fn markdown_table(summaries: &[TaskSummary]) -> String {
    let configs = configs(summaries);
    let mut md = format!(
        "| task | metric | {} | items | wall s ({}) |\n|---|---|{}---|---|\n",
        configs.join(" | "),
        configs.first().map(String::as_str).unwrap_or(""),
        "---|".repeat(configs.len())
    );
    let tasks: Vec<&str> = TASKS
        .iter()
        .copied()
        .filter(|t| summaries.iter().any(|s| s.task == *t))
        .collect();
    for task in &tasks {
        let info = task_info(task).expect("known task");
        let metric = info.metrics[0];
        let cells: Vec<String> = configs
            .iter()
            .map(|c| match find(summaries, c, task) {
                Some(s) => cell(s),
                None => "–".into(),
            })
            .collect();
        let first = configs.first().and_then(|c| find(summaries, c, task));
        md.push_str(&format!(
            "| {}{} | {metric} | {} | {} | {} |\n",
            info.title,
            if info.seen { "" } else { " (unseen)" },
            cells.join(" | "),
            first.map(|s| s.items.to_string()).unwrap_or_default(),
            first
                .map(|s| format!("{:.0}", s.wall_s))
                .unwrap_or_default(),
        ));
    }
    for (label, seen) in [
        ("mean of seen tasks", true),
        ("mean of unseen tasks", false),
    ] {
        let group: Vec<&str> = tasks
            .iter()
            .copied()
            .filter(|t| task_info(t).map(|i| i.seen == seen).unwrap_or(false))
            .collect();
        if group.is_empty() {
            continue;
        }
        let cells: Vec<String> = configs
            .iter()
            .map(|c| match mean_over(summaries, c, &group) {
                Some(v) => format!("**{:.1}**", v * 100.0),
                None => "–".into(),
            })
            .collect();
        md.push_str(&format!("| {label} | | {} | | |\n", cells.join(" | ")));
    }
    md
}

/// A table cell: the headline score, its 95 % interval, and a mark when the predictions
/// collapse onto one label.
fn cell(s: &TaskSummary) -> String {
    let Some(v) = headline(s) else {
        return "–".into();
    };
    let mut out = format!("{:.1}", v * 100.0);
    if let Some((lo, hi)) = s.interval {
        out.push_str(&format!(" [{:.0}–{:.0}]", lo * 100.0, hi * 100.0));
    }
    if s.balance.as_ref().is_some_and(|b| b.collapsed) {
        out.push_str(" ⚠");
    }
    out
}

/// Per classification task and configuration: the most frequent predicted label and its share,
/// beside the gold's; ⚠ marks a collapse (one label for > 80 % of items while the gold's largest
/// class is < 60 %). Empty when no summary has a balance.
pub fn balance_table(summaries: &[TaskSummary]) -> String {
    let configs = configs(summaries);
    let tasks: Vec<&str> = TASKS
        .iter()
        .copied()
        .filter(|t| {
            summaries
                .iter()
                .any(|s| s.task == *t && s.balance.is_some())
        })
        .collect();
    if tasks.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "| task | gold's largest class | {} |\n|---|---|{}\n",
        configs.join(" | "),
        "---|".repeat(configs.len())
    );
    for task in tasks {
        let info = task_info(task).expect("known task");
        let gold = summaries
            .iter()
            .find(|s| s.task == task && s.balance.is_some())
            .and_then(|s| s.balance.as_ref())
            .map(|b| format!("{} {:.0} %", b.gold_top, b.gold_share * 100.0))
            .unwrap_or_default();
        let cells: Vec<String> = configs
            .iter()
            .map(
                |c| match find(summaries, c, task).and_then(|s| s.balance.as_ref()) {
                    Some(b) => format!(
                        "{} {:.0} %{}",
                        b.predicted_top,
                        b.predicted_share * 100.0,
                        if b.collapsed { " ⚠" } else { "" }
                    ),
                    None => "–".into(),
                },
            )
            .collect();
        md.push_str(&format!(
            "| {} | {gold} | {} |\n",
            info.title,
            cells.join(" | ")
        ));
    }
    md
}

/// Per task and routed configuration: the share of items that got no skill (the base model).
/// Empty when no configuration is routed.
pub fn no_skill_table(summaries: &[TaskSummary]) -> String {
    let configs: Vec<String> = configs(summaries)
        .into_iter()
        .filter(|c| {
            summaries
                .iter()
                .any(|s| &s.config == c && s.no_skill_share.is_some())
        })
        .collect();
    if configs.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "| task | {} |\n|---|{}\n",
        configs.join(" | "),
        "---|".repeat(configs.len())
    );
    for task in TASKS {
        let cells: Vec<String> = configs
            .iter()
            .map(
                |c| match find(summaries, c, task).and_then(|s| s.no_skill_share) {
                    Some(share) => format!("{:.0} %", share * 100.0),
                    None => "–".into(),
                },
            )
            .collect();
        if cells.iter().all(|c| c == "–") {
            continue;
        }
        let title = task_info(task).expect("known task").title;
        md.push_str(&format!("| {title} | {} |\n", cells.join(" | ")));
    }
    md
}

/// A grouped bar chart of the headline metric: tasks along x, one bar per configuration.
pub fn bar_chart(summaries: &[TaskSummary], path: &Path, title: &str) -> Result<()> {
    use plotters::prelude::*;
    let configs = configs(summaries);
    let tasks: Vec<&str> = TASKS
        .iter()
        .copied()
        .filter(|t| summaries.iter().any(|s| s.task == *t))
        .collect();
    let err = |e: String| EvalError::Output {
        path: path.display().to_string(),
        message: e,
    };
    let tmp = path.with_extension("svg.tmp");
    {
        let root = SVGBackend::new(&tmp, (160 + 110 * tasks.len() as u32, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let max = summaries
            .iter()
            .filter_map(headline)
            .fold(0.0f64, f64::max)
            .max(0.05)
            * 100.0
            * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..tasks.len() as f64, 0f64..max.min(100.0))
            .map_err(|e| err(e.to_string()))?;
        let titles: Vec<String> = tasks
            .iter()
            .map(|t| {
                task_info(t)
                    .map(|i| i.title.to_string())
                    .unwrap_or_default()
            })
            .collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(tasks.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 && i < titles.len() {
                    titles[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("headline metric (%)")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        let width = 0.8 / configs.len().max(1) as f64;
        for (ci, config) in configs.iter().enumerate() {
            let color = Palette99::pick(ci).to_rgba();
            let bars: Vec<Rectangle<(f64, f64)>> = tasks
                .iter()
                .enumerate()
                .filter_map(|(ti, t)| {
                    let v = find(summaries, config, t).and_then(headline)? * 100.0;
                    let x0 = ti as f64 + 0.1 + ci as f64 * width;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + width * 0.9, v)],
                        color.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(|e| err(e.to_string()))?
                .label(config.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}
