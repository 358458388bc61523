//! Routers from the command line on a small pack of the fixture adapters: supervised (skill
//! labels), prototype and end-to-end training, listing, a routed `run` and `eval`, and clear
//! errors for a missing or mismatched router.

mod common;

use common::*;

#[test]
fn routers_train_route_and_evaluate() {
    let tmp = tempfile::tempdir().unwrap();
    let (pack, data) = fixture_pack(tmp.path());
    // The ner records say which user request (wording) rendered them: requests 0 and 4 are held
    // out, so the held-out accuracy is on wordings the head never saw.
    let ner = data.join("ner/train.jsonl");
    let tagged: Vec<String> = std::fs::read_to_string(&ner)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["phrasing"] = format!("NER#{}", i % 8).into();
            v.to_string()
        })
        .collect();
    std::fs::write(&ner, tagged.join("\n") + "\n").unwrap();
    let (ok, out, err) = train_supervised(
        &pack,
        &data,
        "mean-embedding",
        "general",
        &[
            &"--default",
            &"--soft-labels",
            &"1",
            &"--threads",
            &"2",
            &"--json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["training"]["examples"], 36);
    assert_eq!(v["training"]["held_out_by_wording"], true);
    assert_eq!(v["training"]["held_out"], 3, "ner records 0, 4 and 8");
    assert_eq!(v["training"]["l2_grid"].as_array().unwrap().len(), 4);
    assert!(
        v["training"]["held_out_accuracy"].as_f64().unwrap() >= 0.99,
        "{v}"
    );
    // Temperature scaling on the skills' own records: never worse than the current temperature,
    // written into the router's file.
    let (ok, out, err) = skillpack(&[
        &"router",
        &"calibrate",
        &"--pack",
        &pack,
        &"--router",
        &"general",
        &"--data",
        &data,
        &"--split",
        &"train",
        &"--per-skill",
        &"4",
        &"--json",
    ]);
    assert!(ok, "{err}");
    let c: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(c["records"], 12);
    assert!(
        c["nll"].as_f64().unwrap() <= c["nll_before"].as_f64().unwrap(),
        "{c}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pack.join("routers/general.json")).unwrap())
            .unwrap();
    assert!(
        (saved["temperature"].as_f64().unwrap() - c["temperature"].as_f64().unwrap()).abs() < 1e-6,
        "{saved} {c}"
    );
    let (ok, _, err) = skillpack(&[
        &"router",
        &"train",
        &"--pack",
        &pack,
        &"--method",
        &"prototype",
        &"--data",
        &data,
        &"--per-skill",
        &"4",
        &"--threads",
        &"2",
    ]);
    assert!(ok, "{err}");
    // Users' own messages as extra rows: each prompt counted --prompt-repeats times, its
    // skill checked against the pack's.
    let prompts = tmp.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        concat!(
            r#"{"id": "ner-1", "skill": "ner", "prompt": "list the drugs in: aspirin eased the pain"}"#,
            "\n",
            r#"{"id": "qa-1", "skill": "qa", "prompt": "how long does a flu shot protect you?"}"#,
            "\n",
            r#"{"id": "re-1", "skill": "re", "prompt": "which drug caused the rash here? ..."}"#,
            "\n"
        ),
    )
    .unwrap();
    let with_prompts = |prompts: &std::path::Path| {
        train_supervised(
            &pack,
            &data,
            "segment-lexical",
            "with-prompts",
            &[&"--prompts", &prompts, &"--prompt-repeats", &"2", &"--json"],
        )
    };
    let (ok, out, err) = with_prompts(&prompts);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["training"]["examples"], 36 + 2 * 3, "{v}");
    assert_eq!(v["training"]["prompts"], 3, "{v}");
    // Prompts labelled `none` (requests no skill should answer) add a "no skill" output.
    let with_none = tmp.path().join("with-none.jsonl");
    let mut text = std::fs::read_to_string(&prompts).unwrap();
    text.push_str(r#"{"id": "none-1", "skill": "none", "prompt": "write a haiku about the sea"}"#);
    std::fs::write(&with_none, text).unwrap();
    let (ok, out, err) = with_prompts(&with_none);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["training"]["prompts"], 4, "{v}");
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pack.join("routers/with-prompts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["none_entry"], true, "{saved}");
    let unknown = tmp.path().join("unknown.jsonl");
    std::fs::write(
        &unknown,
        r#"{"id": "x-1", "skill": "triage", "prompt": "is this urgent?"}"#,
    )
    .unwrap();
    let (ok, _, err) = with_prompts(&unknown);
    assert!(!ok);
    assert!(
        err.contains("unknown.jsonl")
            && err.contains("`triage`")
            && err.contains("ner, qa, re; or `none`"),
        "{err}"
    );
    // End-to-end on a few train items of `task`, two steps, three held-out items.
    let end_to_end = |task: &str, extra: &[&str]| {
        let raw = raw_data();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"router",
            &"train",
            &"--pack",
            &pack,
            &"--method",
            &"end-to-end",
            &"--raw",
            &raw,
            &"--features",
            &"mean-embedding",
            &"--steps",
            &"2",
            &"--batch",
            &"2",
            &"--limit",
            &"4",
            &"--max-len",
            &"128",
            &"--validation-limit",
            &"3",
            &"--json",
            &"--task",
        ];
        args.push(&task);
        for a in extra {
            args.push(a);
        }
        skillpack(&args)
    };
    let (ok, out, err) = end_to_end("pubmedqa", &[]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let losses = v["training"]["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
    // Warm-started from the default router and selected on held-out items by macro-F1: the
    // warm start, the base model (no skill) and a head per step are the candidates.
    assert_eq!(v["training"]["warm_start"], "general");
    let validation = &v["training"]["validation"];
    assert_eq!(validation["metric"], "macro_f1");
    assert_eq!(validation["scoring"], "none");
    assert_eq!(validation["items"], 3);
    let labels: Vec<&str> = validation["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["candidate"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "warm start `general`",
            "no skill (base model)",
            "step 1",
            "step 2"
        ],
        "{v}"
    );
    // The weights of the held-out prompts (3 here, at most 5) under the warm start and under
    // the chosen router.
    let before_after = v["training"]["weights_before_after"].as_array().unwrap();
    assert_eq!(before_after.len(), 3, "{v}");
    for row in before_after {
        assert!(!row["prompt"].as_str().unwrap().is_empty());
        assert!(
            row["before"].as_object().is_some_and(|w| !w.is_empty()),
            "{row}"
        );
        assert!(row["after"].is_object(), "{row}");
    }

    // A run that cannot improve on its warm start (learning rate 0: every candidate is the
    // general head) keeps the better of the warm start and the base model. On these medmcqa
    // items, scored plainly, the base model wins: the task router gives no skill (gain 0),
    // with a note. (Scored by permutation, the default there, every candidate gets 0 of 3.)
    let (ok, out, err) = end_to_end(
        "medmcqa",
        &[
            "--name",
            "task-medmcqa",
            "--lr",
            "0",
            "--validation-scoring",
            "none",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["training"]["validation"]["scoring"], "none", "{v}");
    assert_eq!(
        v["training"]["validation"]["chosen"], "no skill (base model)",
        "{v}"
    );
    assert!(
        v["training"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("this router gives no skill")),
        "{v}"
    );
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(pack.join(format!("routers/{name}.json"))).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(read("task-medmcqa")["gain"], 0.0);
    // Gain 0: after training no prompt gets a skill; before, each got the warm start's.
    for row in v["training"]["weights_before_after"].as_array().unwrap() {
        assert!(
            row["before"].as_object().is_some_and(|w| !w.is_empty()),
            "{row}"
        );
        assert_eq!(row["after"], serde_json::json!({}), "{row}");
    }
    // On bc5cdr the base model scores no better than the warm start (ties go to the warm
    // start): the task router is the general router's head under the task's name.
    let (ok, out, err) = end_to_end("bc5cdr", &["--name", "task-bc5cdr", "--lr", "0"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["training"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("no trained head beat the warm start")),
        "{v}"
    );
    assert_eq!(
        v["training"]["validation"]["chosen"],
        "warm start `general`"
    );
    for row in v["training"]["weights_before_after"].as_array().unwrap() {
        assert_eq!(
            row["before"], row["after"],
            "the fallback routes as before: {row}"
        );
    }
    let (task, general) = (read("task-bc5cdr"), read("general"));
    assert_eq!(task["temperature"], general["temperature"]);
    assert_eq!(task["gain"], general["gain"]);
    assert_eq!(
        std::fs::read(pack.join("routers/task-bc5cdr.safetensors")).unwrap(),
        std::fs::read(pack.join("routers/general.safetensors")).unwrap(),
        "the fallback is the general head, bit for bit"
    );

    let (ok, out, _) = skillpack(&[&"router", &"list", &"--pack", &pack, &"--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["default"], "general");
    let names: Vec<&str> = v["routers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "general",
            "prototype",
            "with-prompts",
            "end-to-end-pubmedqa-embedding",
            "task-medmcqa",
            "task-bc5cdr"
        ]
    );

    // A router is removed with its files; the default one and an unknown one are refused.
    let (ok, out, err) = skillpack(&[
        &"router",
        &"remove",
        &"--pack",
        &pack,
        &"--router",
        &"with-prompts",
        &"--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["removed"], "with-prompts");
    assert!(!pack.join("routers/with-prompts.json").exists());
    assert!(!pack.join("routers/with-prompts.safetensors").exists());
    let (ok, out, _) = skillpack(&[&"router", &"list", &"--pack", &pack, &"--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["routers"].as_array().unwrap().len(), 5);
    let (ok, _, err) = skillpack(&[
        &"router",
        &"remove",
        &"--pack",
        &pack,
        &"--router",
        &"general",
    ]);
    assert!(!ok && err.contains("is the pack's default"), "{err}");
    let (ok, _, err) = skillpack(&[&"router", &"remove", &"--pack", &pack, &"--router", &"nope"]);
    assert!(
        !ok && err.contains("no router `nope`") && err.contains("task-bc5cdr"),
        "{err}"
    );

    // The default router routes an NER-style prompt to ner.
    let prompt = "Aspirin number 99 caused gastric ulcers and bleeding in rats given ibuprofen.\n\nList the chemicals and diseases mentioned in the text.";
    let (ok, out, err) = skillpack(&[&"router", &"show", &"--pack", &pack, &"--json", &prompt]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let weights = v["weights"].as_array().unwrap();
    let top = weights
        .iter()
        .max_by(|a, b| a[1].as_f64().unwrap().total_cmp(&b[1].as_f64().unwrap()))
        .unwrap();
    assert_eq!(top[0], "ner", "{v}");
    let (ok, _, err) = skillpack(&[
        &"run",
        &"--pack",
        &pack,
        &"--show-weights",
        &"--temp",
        &"0",
        &"-n",
        &"4",
        &prompt,
    ]);
    assert!(ok && err.contains("[skills] ner="), "{err}");

    // Evaluation through a named router (medmcqa, two items, into OUT).
    let eval = |configs: &str, out: &str| {
        skillpack(&[
            &"eval",
            &"--task",
            &"medmcqa",
            &"--pack",
            &pack,
            &"--configs",
            &configs,
            &"--limit",
            &"2",
            &"--threads",
            &"2",
            &"--out",
            &tmp.path().join(out),
            &"--json",
        ])
    };
    let (ok, out, err) = eval("router:prototype", "eval");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summaries"][0]["config"], "router:prototype");
    assert_eq!(v["summaries"][0]["no_skill_share"], 0.0);
    // The no-skill task router runs every item on the base model, and the summary says so.
    let (ok, out, err) = eval("router:task-medmcqa", "eval-none");
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summaries"][0]["no_skill_share"], 1.0, "{v}");
    let prototype_weights = |out: &str| -> Vec<serde_json::Value> {
        let predictions = std::fs::read_to_string(
            tmp.path()
                .join(out)
                .join("router:prototype/medmcqa.predictions.jsonl"),
        )
        .unwrap();
        predictions
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["weights"].clone())
            .collect()
    };
    let alone = prototype_weights("eval");
    assert!(
        alone.iter().all(|w| !w.as_array().unwrap().is_empty()),
        "{alone:?}"
    );
    // Routers in one run share features per prompt and kind: after `general` (mean token
    // embeddings) has featurized the items, `prototype` (mean hidden state) must still route
    // exactly as it does alone.
    let (ok, _, err) = eval("router:general,router:prototype", "eval-joint");
    assert!(ok, "{err}");
    assert_eq!(prototype_weights("eval-joint"), alone);

    // Errors: an unknown router, and a router whose width does not fit the model.
    let (ok, _, err) = skillpack(&[&"run", &"--pack", &pack, &"--router", &"nope", &"hi"]);
    assert!(
        !ok && err.contains("no router `nope`") && err.contains("general"),
        "{err}"
    );
    let json = pack.join("routers/general.json");
    let text = std::fs::read_to_string(&json)
        .unwrap()
        .replace("\"dim\": 576", "\"dim\": 64");
    std::fs::write(&json, text).unwrap();
    let (ok, _, err) = skillpack(&[&"run", &"--pack", &pack, &"hi"]);
    assert!(
        !ok && err.contains("general.safetensors") && err.contains("expected 64"),
        "{err}"
    );
}
