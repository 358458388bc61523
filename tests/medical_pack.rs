//! The committed medical pack (`examples/packs/medical-smollm2`): it fits the default model, its
//! routers send prompts shaped like each skill's records to that skill, and the README's main
//! command (`run` with the pack's default router) answers with the weights shown.

mod common;

use common::*;

const NER: &str = "Lidocaine-induced cardiac asystole. Intravenous administration of a single 50-mg bolus of lidocaine in a 67-year-old man resulted in profound depression of the activity of the sinoatrial and atrioventricular nodal pacemakers.\n\nWhich chemicals and which diseases does this abstract mention? Answer as \"Chemicals: a; b\" then \"Diseases: c; d\".";
const MCQA: &str = "A 3-month-old boy is brought to the emergency department after an episode of cyanosis. Which of the following is the most likely diagnosis? A. BRUE B. SIDS C. Seizure D. Reflux";
const QA: &str = "What are the symptoms of iron deficiency anemia?";

fn pack() -> std::path::PathBuf {
    repo().join("examples/packs/medical-smollm2")
}

#[test]
fn medical_pack_fits_and_routes() {
    let (ok, out, err) = skillpack(&[&"pack", &"check", &pack(), &"--json"]);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["skills"], 12);
    // Every router of the report: general (b) — its softmax head, the committing copies (sparsemax,
    // the default, and top-1), the candidates on hidden and embedding features and the one with a
    // trained "no skill" output —, prototype (c),
    // and an end-to-end router (a) per task, each bound to its task.
    let (ok, out, err) = skillpack(&[&"router", &"list", &"--pack", &pack(), &"--json"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["default"], "general-sparsemax");
    let mut routers: Vec<(String, String)> = list["routers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["task"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    routers.sort();
    let mut expected: Vec<(String, String)> = skillpack_data::tasks::TASKS
        .iter()
        .map(|t| (format!("task-{t}"), t.to_string()))
        .chain(
            [
                "general",
                "general-sparsemax",
                "general-top1",
                "general-embedding",
                "general-hidden",
                "general-none",
                "general-none-sparsemax",
                "prototype",
            ]
            .iter()
            .map(|n| (n.to_string(), String::new())),
        )
        .collect();
    expected.sort();
    assert_eq!(routers, expected);
    // A router's weights for a prompt, as `router show` prints them.
    let weights_of = |router: &str, prompt: &str| {
        let (ok, out, err) = skillpack(&[
            &"router",
            &"show",
            &"--pack",
            &pack(),
            &"--router",
            &router,
            &prompt,
            &"--json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["weights"].as_array().unwrap().clone()
    };
    for router in ["general", "general-sparsemax", "general-embedding"] {
        for (prompt, skill) in [(NER, "ner"), (MCQA, "mcqa"), (QA, "qa")] {
            let weights = weights_of(router, prompt);
            let top = weights
                .iter()
                .max_by(|a, b| a[1].as_f64().unwrap().total_cmp(&b[1].as_f64().unwrap()))
                .unwrap();
            assert_eq!(top[0], skill, "{router} on {prompt:.40}: {weights:?}");
        }
    }
    // The router with a trained "no skill" output leaves a request outside medicine to the base
    // model (every skill at 0) and still sends a medical question to its skill.
    let off_topic = weights_of(
        "general-none-sparsemax",
        "How do I reverse a linked list in Python?",
    );
    assert!(off_topic.iter().all(|w| w[1] == 0.0), "{off_topic:?}");
    let medical = weights_of("general-none-sparsemax", QA);
    assert!(
        medical
            .iter()
            .any(|w| w[0] == "qa" && w[1].as_f64().unwrap() > 0.9),
        "{medical:?}"
    );
    let (ok, out, err) = skillpack(&[
        &"run",
        &"--pack",
        &pack(),
        &"--show-weights",
        &"--temp",
        &"0",
        &"-n",
        &"24",
        &NER,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("[skills] ner="), "{err}");
    assert!(!out.trim().is_empty());
}
