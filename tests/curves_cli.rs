//! `skillpack curves`: one chart of several runs' dev-loss curves, and the table of where each
//! stopped, from finished runs (`train.json`) and a run in progress (`metrics.jsonl`).

mod common;

use common::*;

#[test]
fn curves_of_finished_and_running_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let done = tmp.path().join("ner");
    std::fs::create_dir_all(&done).unwrap();
    std::fs::write(
        done.join("train.json"),
        r#"{"dev_losses": [[50, 1.5], [100, 1.2], [150, 1.25], [200, 1.3]], "steps": 200,
            "step_budget": 400, "exported_step": 100, "best_dev_loss": 1.2, "stopped_early": true}"#,
    )
    .unwrap();
    let running = tmp.path().join("qa");
    std::fs::create_dir_all(&running).unwrap();
    std::fs::write(
        running.join("metrics.jsonl"),
        concat!(
            r#"{"step":49,"loss":2.0,"orth_reg":0.1,"lr":0.002,"grad_norm":0.3,"tokens":500,"target_tokens":90,"seconds":4.0,"rank_budget":576}"#,
            "\n",
            r#"{"step":50,"loss":1.9,"orth_reg":0.1,"lr":0.002,"grad_norm":0.3,"tokens":500,"target_tokens":90,"seconds":4.0,"rank_budget":576,"dev_loss":2.1}"#,
            "\n",
            r#"{"step":51,"lo"#
        ),
    )
    .unwrap();
    let chart = tmp.path().join("curves.svg");
    let (ok, out, err) = skillpack(&[&"curves", &done, &running, &"-o", &chart, &"--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs[0]["name"], "ner");
    assert_eq!(runs[0]["exported_step"], 100);
    assert_eq!(runs[0]["stopped_early"], true);
    assert_eq!(runs[1]["name"], "qa (running)");
    assert_eq!(runs[1]["steps"], 50);
    assert_eq!(runs[1]["dev_losses"], serde_json::json!([[50, 2.1]]));
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("<svg") && svg.contains("ner") && svg.contains("qa (running)"));
    // The table names the exported step; a directory that is not a run is an error naming it.
    let (ok, table, _) = skillpack(&[&"curves", &done, &"-o", &chart]);
    assert!(
        ok && table.contains("| ner | 200 (400) | 100 | 1.2000 | yes |"),
        "{table}"
    );
    let (ok, _, err) = skillpack(&[&"curves", &tmp.path(), &"-o", &chart]);
    assert!(!ok && err.contains("not a training run"), "{err}");
}
