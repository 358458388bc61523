//! `skillpack eval` end to end on the default model: all nine tasks (a few items each) with
//! predictions, summaries, table and chart; a task run on a user file in the raw format; and
//! clear errors for bad input.

mod common;

use common::*;

#[test]
fn all_tasks_write_predictions_summaries_table_and_chart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("eval");
    let raw = raw_data();
    let (ok, stdout, err) = skillpack(&[
        &"eval",
        &"--all",
        &"--no-skills",
        &"--limit",
        &"2",
        &"--threads",
        &"2",
        &"--raw",
        &raw,
        &"--out",
        &out,
        &"--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let summaries = v["summaries"].as_array().unwrap();
    assert_eq!(summaries.len(), 9);
    for s in summaries {
        let task = s["task"].as_str().unwrap();
        assert_eq!(s["items"], 2, "{task}");
        assert_eq!(s["config"], "base");
        let metrics = s["metrics"].as_array().unwrap();
        assert!(!metrics.is_empty());
        for m in metrics {
            let value = m[1].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&value), "{task}: {m}");
        }
        assert!(s["tokens_evaluated"].as_u64().unwrap() > 20, "{task}");
        let predictions =
            std::fs::read_to_string(out.join(format!("base/{task}.predictions.jsonl"))).unwrap();
        assert_eq!(predictions.lines().count(), 2, "{task}");
        let first: serde_json::Value =
            serde_json::from_str(predictions.lines().next().unwrap()).unwrap();
        assert!(first["id"].as_str().unwrap().starts_with(task));
    }
    for s in summaries {
        let task = s["task"].as_str().unwrap();
        let (lo, hi) = (
            s["interval"][0].as_f64().unwrap(),
            s["interval"][1].as_f64().unwrap(),
        );
        let headline = s["metrics"][0][1].as_f64().unwrap();
        assert!(
            lo <= headline && headline <= hi,
            "{task}: {lo} {headline} {hi}"
        );
        let classifies = matches!(
            task,
            "pubmedqa" | "medqa" | "medmcqa" | "chemprot" | "hoc" | "healthver"
        );
        assert_eq!(s["balance"].is_object(), classifies, "{task}");
        assert_eq!(s["calibration"], "none");
    }
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    assert!(table.contains("| PubMedQA | macro_f1 |"), "{table}");
    assert!(table.contains("| HoC | macro_f1 |"), "{table}");
    assert!(table.contains("gold's largest class"), "{table}");
    assert!(table.contains("mean of unseen tasks"), "{table}");
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("COVID-QA"));
}

/// Content-free calibration subtracts one prior per option: under the base model PubMedQA's
/// content-free prompt is the same for every item, so calibrated minus plain scores must be the
/// same vector for every item (and not zero).
#[test]
fn content_free_calibration_subtracts_one_prior_per_option() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = raw_data();
    let run = |calibration: &str| -> Vec<Vec<f64>> {
        let out = tmp.path().join(calibration);
        let (ok, stdout, err) = skillpack(&[
            &"eval",
            &"--task",
            &"pubmedqa",
            &"--no-skills",
            &"--limit",
            &"4",
            &"--threads",
            &"2",
            &"--raw",
            &raw,
            &"--calibration",
            &calibration,
            &"--out",
            &out,
            &"--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(v["summaries"][0]["calibration"], calibration);
        std::fs::read_to_string(out.join("base/pubmedqa.predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let p: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(
                    p["calibrated"].as_bool().unwrap_or(false),
                    calibration != "none"
                );
                p["option_scores"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let plain = run("none");
    let calibrated = run("content-free");
    let prior: Vec<Vec<f64>> = plain
        .iter()
        .zip(&calibrated)
        .map(|(p, c)| p.iter().zip(c).map(|(a, b)| a - b).collect())
        .collect();
    println!("content-free log-likelihoods per item: {prior:.4?}");
    assert_eq!(prior[0].len(), 3, "yes, no, maybe");
    assert!(
        prior[0].iter().all(|x| *x < -1e-3),
        "a prior is a log-likelihood < 0"
    );
    for p in &prior[1..] {
        for (a, b) in p.iter().zip(&prior[0]) {
            assert!((a - b).abs() < 1e-3, "{prior:?}");
        }
    }
    // A generation task has no options to calibrate: its run is recorded as uncalibrated (and
    // so reused under either setting).
    let (ok, stdout, err) = skillpack(&[
        &"eval",
        &"--task",
        &"meqsum",
        &"--no-skills",
        &"--limit",
        &"1",
        &"--threads",
        &"2",
        &"--raw",
        &raw,
        &"--calibration",
        &"content-free",
        &"--out",
        &tmp.path().join("generation"),
        &"--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["summaries"][0]["calibration"], "none");
    // Calibration chosen per task: PubMedQA overridden to none is scored plainly, with the
    // same scores as the uncalibrated run; a task name that does not exist, or a scoring that
    // does not apply to its task, is refused.
    let only = |tasks: &str, out: &str| {
        skillpack(&[
            &"eval",
            &"--task",
            &"pubmedqa",
            &"--no-skills",
            &"--limit",
            &"1",
            &"--threads",
            &"2",
            &"--raw",
            &raw,
            &"--calibration",
            &"content-free",
            &"--task-calibration",
            &tasks,
            &"--out",
            &tmp.path().join(out),
            &"--json",
        ])
    };
    let (ok, stdout, err) = only("pubmedqa=none,healthver=content-free", "per-task");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["summaries"][0]["calibration"], "none");
    let line = std::fs::read_to_string(tmp.path().join("per-task/base/pubmedqa.predictions.jsonl"))
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let scores: Vec<f64> = p["option_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    for (a, b) in scores.iter().zip(&plain[0]) {
        assert!((a - b).abs() < 1e-6, "{scores:?} vs {:?}", plain[0]);
    }
    let (ok, _, err) = only("healthvr=content-free", "unknown");
    assert!(!ok);
    assert!(err.contains("healthvr"), "{err}");
    let (ok, _, err) = only("pubmedqa=permutation", "inapplicable");
    assert!(!ok);
    assert!(err.contains("does not apply to pubmedqa"), "{err}");
}

#[test]
fn a_file_in_the_raw_format_and_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("meqsum-test.csv");
    std::fs::write(
        &file,
        "File,CHQ,Summary\na.txt,\"Hello,\nwhat are the side effects of metformin? thanks\",What are the side effects of metformin?\nb.txt,how do i treat a sprained ankle at home,How to treat a sprained ankle?\n",
    )
    .unwrap();
    let out = tmp.path().join("eval");
    let (ok, stdout, err) = skillpack(&[
        &"eval",
        &"--task",
        &"meqsum",
        &"--file",
        &file,
        &"--no-skills",
        &"--limit",
        &"0",
        &"--threads",
        &"2",
        &"--out",
        &out,
        &"--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["summaries"][0]["items"], 2);
    assert!(v["summaries"][0]["split"]
        .as_str()
        .unwrap()
        .starts_with("file:"));

    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "File,Question\na,b\n").unwrap();
    let (ok, _, err) = skillpack(&[
        &"eval",
        &"--task",
        &"meqsum",
        &"--file",
        &bad,
        &"--no-skills",
    ]);
    assert!(
        !ok && err.contains("bad.csv") && err.contains("missing column `CHQ`"),
        "{err}"
    );

    let (ok, _, err) = skillpack(&[&"eval", &"--task", &"mednli", &"--no-skills"]);
    assert!(
        !ok && err.contains("unknown task `mednli`") && err.contains("pubmedqa"),
        "{err}"
    );

    let (ok, _, err) = skillpack(&[&"eval", &"--task", &"hoc", &"--configs", &"uniform"]);
    assert!(!ok && err.contains("`uniform` needs --pack"), "{err}");

    let json = tmp.path().join("pubmedqa.json");
    std::fs::write(
        &json,
        "{\"1\": {\"QUESTION\": \"q\", \"CONTEXTS\": [], \"final_decision\": \"perhaps\"}}",
    )
    .unwrap();
    let (ok, _, err) = skillpack(&[
        &"eval",
        &"--task",
        &"pubmedqa",
        &"--file",
        &json,
        &"--no-skills",
    ]);
    assert!(
        !ok && err.contains("pubmedqa.json") && err.contains("final_decision `perhaps`"),
        "{err}"
    );
}

/// The user wording keeps each item's target and text, drops the standard query, and puts the
/// request first in one message; `eval --prompt-variant user` records it.
#[test]
fn user_prompt_variant_rewords_every_task() {
    use skillpack_data::tasks::{self, Split, Target};
    let raw = raw_data();
    for task in tasks::TASKS {
        let item = tasks::select(tasks::load(task, &raw).unwrap(), Split::Dev)
            .into_iter()
            .next()
            .unwrap();
        let user = tasks::user_variant(&item);
        assert!(user.context.is_empty(), "{task}");
        assert!(
            user.query.ends_with(item.context.trim()),
            "{task}: the text follows"
        );
        let standard_instruction = item.query.lines().last().unwrap();
        assert!(
            !user.query.contains(standard_instruction),
            "{task}: `{standard_instruction}` is still in {:?}",
            user.query
        );
        if let (Target::MultiLabel { queries, .. }, Target::MultiLabel { queries: q0, .. }) =
            (&user.target, &item.target)
        {
            assert_eq!(queries.len(), q0.len());
            assert!(queries.iter().all(|q| q.ends_with(item.context.trim())));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ok, stdout, err) = skillpack(&[
        &"eval",
        &"--task",
        &"pubmedqa",
        &"--no-skills",
        &"--limit",
        &"2",
        &"--threads",
        &"2",
        &"--raw",
        &raw,
        &"--prompt-variant",
        &"user",
        &"--out",
        &tmp.path(),
        &"--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["summaries"][0]["prompt_variant"], "user");
    let (ok, _, err) = skillpack(&[
        &"eval",
        &"--task",
        &"pubmedqa",
        &"--no-skills",
        &"--prompt-variant",
        &"user",
        &"--calibration",
        &"content-free",
    ]);
    assert!(!ok && err.contains("standard prompts only"), "{err}");
}

/// Headline metric and per-item scores of `dir/CONFIG/TASK`.
fn run_scores(dir: &std::path::Path, config: &str, task: &str) -> (f64, Vec<(String, f64)>) {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(config).join(format!("{task}.summary.json"))).unwrap(),
    )
    .unwrap();
    let items = std::fs::read_to_string(dir.join(config).join(format!("{task}.predictions.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect();
    (summary["metrics"][0][1].as_f64().unwrap(), items)
}

/// A longer run takes a shorter run's predictions for its first items (`--reuse`), an
/// interrupted run continues from its checkpoint (`--resume`, a torn last line ignored), and
/// both score what a fresh run scores; a router with the same weights as another is evaluated
/// once and its predictions copied.
#[test]
fn reuse_resume_and_same_weight_configurations() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = raw_data();
    let pack = routed_fixture_pack(tmp.path());
    // `general`'s head under another name, or under another committing mode.
    let commit = |extra: &str| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"router",
            &"commit",
            &"--pack",
            &pack,
            &"--router",
            &"general",
        ];
        let words: Vec<&str> = extra.split(' ').collect();
        args.extend(words.iter().map(|w| w as &dyn AsRef<std::ffi::OsStr>));
        let (ok, _, err) = skillpack(&args);
        assert!(ok, "{err}");
    };
    commit("--mode softmax --name twin");
    let eval = |out: &std::path::Path, limit: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let words = format!(
            "eval --task medmcqa --configs base,router:general,router:twin --limit {limit} --threads 2"
        );
        let words: Vec<&str> = words.split(' ').collect();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = words
            .iter()
            .map(|w| w as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        args.extend([
            &"--pack" as &dyn AsRef<std::ffi::OsStr>,
            &pack,
            &"--raw",
            &raw,
            &"--out",
            &out,
        ]);
        args.extend_from_slice(extra);
        skillpack(&args)
    };
    let (short, fresh, reused, resumed) = (
        tmp.path().join("short"),
        tmp.path().join("fresh"),
        tmp.path().join("reused"),
        tmp.path().join("resumed"),
    );
    let (ok, _, err) = eval(&short, "2", &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = eval(&fresh, "3", &[]);
    assert!(ok, "{err}");
    // The twin shares `general`'s evaluation.
    assert!(
        err.contains("router:twin / medmcqa: the same weights as router:general"),
        "{err}"
    );
    let twin: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fresh.join("router:twin/medmcqa.summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(twin["same_as"], "router:general");
    assert_eq!(
        run_scores(&fresh, "router:twin", "medmcqa"),
        run_scores(&fresh, "router:general", "medmcqa")
    );
    let (ok, _, err) = eval(&reused, "3", &[&"--reuse", &short]);
    assert!(ok, "{err}");
    assert!(
        err.contains("base / medmcqa: 2 of 3 items from earlier predictions"),
        "{err}"
    );
    assert!(
        err.contains("router:general / medmcqa: 2 of 3 items from earlier predictions"),
        "{err}"
    );
    for config in ["base", "router:general", "router:twin"] {
        let (fresh_headline, fresh_items) = run_scores(&fresh, config, "medmcqa");
        let (headline, items) = run_scores(&reused, config, "medmcqa");
        assert_eq!(items, fresh_items, "{config}");
        assert!((headline - fresh_headline).abs() < 1e-12, "{config}");
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reused.join("base/medmcqa.summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["reused_items"], 2);
    // An interrupted run: three items in the checkpoint, the third torn.
    std::fs::create_dir_all(resumed.join("base")).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(fresh.join("base/medmcqa.predictions.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let header = r#"{"checkpoint_split":"dev","calibration":"none","prompt_variant":"standard"}"#;
    let torn = format!(
        "{header}\n{}\n{}\n{}",
        lines[0],
        lines[1],
        &lines[2][..lines[2].len() / 2]
    );
    std::fs::write(resumed.join("base/medmcqa.predictions.partial.jsonl"), torn).unwrap();
    let (ok, _, err) = eval(&resumed, "3", &[&"--resume"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("base / medmcqa: 2 of 3 items from earlier predictions"),
        "{err}"
    );
    assert_eq!(
        run_scores(&resumed, "base", "medmcqa"),
        run_scores(&fresh, "base", "medmcqa")
    );
    assert!(!resumed
        .join("base/medmcqa.predictions.partial.jsonl")
        .exists());
    // A router whose weights changed under the same name is evaluated again.
    commit("--mode top1:0.5");
    let (ok, _, err) = eval(&tmp.path().join("changed"), "3", &[&"--reuse", &short]);
    assert!(ok, "{err}");
    assert!(
        err.contains("base / medmcqa: 2 of 3 items from earlier predictions"),
        "{err}"
    );
    assert!(!err.contains("router:general / medmcqa: 2 of 3"), "{err}");
    // Predictions of other wording are not reused.
    let (ok, _, err) = eval(
        &tmp.path().join("reworded"),
        "1",
        &[&"--reuse", &short, &"--prompt-variant", &"user"],
    );
    assert!(ok, "{err}");
    assert!(!err.contains("from earlier predictions"), "{err}");
}

/// Permutation scoring of a lettered question equals, per option text, the mean of the plain
/// scores of the same question written out by hand with the texts rotated among the letters
/// (each rotation a question of its own in a MedQA file), and its prediction follows the text.
#[test]
fn permutation_scoring_averages_the_rotations_written_out_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = ["Warfarin", "Heparin", "Aspirin", "Clopidogrel"];
    let question = "A patient with a deep vein thrombosis needs an anticoagulant given by injection. Which drug fits?";
    let line = |shift: usize| {
        let options: serde_json::Map<String, serde_json::Value> = (0..4)
            .map(|i| {
                (
                    char::from(b'A' + i as u8).to_string(),
                    texts[(i + shift) % 4].into(),
                )
            })
            .collect();
        // Heparin (index 1) sits at letter (1 - shift) mod 4.
        let gold = char::from(b'A' + ((5 - shift) % 4) as u8).to_string();
        serde_json::json!({"realidx": format!("q{shift}"), "question": question,
            "options": options, "answer_idx": gold})
        .to_string()
    };
    let rotations = tmp.path().join("rotations.jsonl");
    std::fs::write(&rotations, (0..4).map(line).collect::<Vec<_>>().join("\n")).unwrap();
    let single = tmp.path().join("single.jsonl");
    std::fs::write(&single, line(0)).unwrap();
    let run = |file: &std::path::Path, calibration: &str, out: &str| -> Vec<serde_json::Value> {
        let out = tmp.path().join(out);
        let (ok, _, err) = skillpack(&[
            &"eval",
            &"--task",
            &"medqa",
            &"--file",
            &file,
            &"--no-skills",
            &"--threads",
            &"2",
            &"--calibration",
            &calibration,
            &"--out",
            &out,
            &"--json",
        ]);
        assert!(ok, "{err}");
        std::fs::read_to_string(out.join("base/medqa.predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let scores = |p: &serde_json::Value| -> Vec<f64> {
        p["option_scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let plain = run(&rotations, "none", "plain");
    assert_eq!(plain.len(), 4);
    let permuted = run(&single, "permutation", "permuted");
    assert_eq!(permuted[0]["calibrated"], true);
    let averaged = scores(&permuted[0]);
    for (text, score) in averaged.iter().enumerate() {
        // In rotation `shift` the text sits at letter (text - shift) mod 4.
        let by_hand: f64 = (0..4)
            .map(|shift| scores(&plain[shift])[(text + 4 - shift) % 4])
            .sum::<f64>()
            / 4.0;
        assert!(
            (score - by_hand).abs() < 2e-3,
            "{}: {score} vs {by_hand}",
            texts[text]
        );
    }
    let best = (0..4)
        .max_by(|&a, &b| averaged[a].total_cmp(&averaged[b]))
        .unwrap();
    assert!(
        permuted[0]["prediction"]
            .as_str()
            .unwrap()
            .ends_with(texts[best]),
        "{}",
        permuted[0]["prediction"]
    );
}
