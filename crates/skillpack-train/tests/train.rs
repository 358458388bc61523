//! The training loop on the tiny llama: gradients reach the first layer, the loss falls, a
//! resumed run is bit-identical to an uninterrupted one; and the tokenization matches inference.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::*;
use skillpack_llama::{Backend, Model, ModelParams};
use skillpack_train::{tokenize, Llama, Method, ModelWeights, Record, TrainConfig, Trainer};

fn tiny() -> std::path::PathBuf {
    fixtures().join("tiny-llama/tiny-llama-f32.gguf")
}

fn records() -> Vec<Record> {
    let words = [
        "aspirin", "fever", "insulin", "asthma", "tumor", "cortisol", "anemia", "lupus",
    ];
    (0..16)
        .map(|i| Record {
            id: format!("r{i}"),
            skill: "ner".into(),
            context: format!(
                "Patient {i} was given {} for {}.",
                words[i % 8],
                words[(i + 3) % 8]
            ),
            query: "List the entities.".into(),
            output: format!("{}; {}", words[i % 8], words[(i + 3) % 8]),
        })
        .collect()
}

fn examples(vocab: &Model) -> Vec<skillpack_train::Example> {
    records()
        .iter()
        .map(|r| tokenize(vocab, r, 64).unwrap())
        .collect()
}

fn vocab_model(path: &Path) -> Model {
    Model::load(
        Backend::get(),
        path,
        &ModelParams {
            vocab_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn config(method: Method, steps: usize) -> TrainConfig {
    TrainConfig {
        method,
        r: 4,
        target_r: 2,
        alpha: 8.0,
        batch: 4,
        lr: 3e-2,
        warmup: 1,
        tinit: 5,
        tfinal: 8,
        delta_t: 2,
        checkpoint_every: 0,
        ..TrainConfig::skill_defaults(steps)
    }
}

fn trainer(method: Method, steps: usize, out: &Path) -> Trainer {
    let vocab = vocab_model(&tiny());
    let model = Llama::new(ModelWeights::load(&tiny(), &Device::Cpu, DType::F32).unwrap());
    Trainer::new(model, config(method, steps), examples(&vocab), out).unwrap()
}

#[test]
fn gradients_reach_the_first_layers_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    for method in [Method::Lora, Method::AdaLora] {
        let t = trainer(method, 30, tmp.path());
        let (loss, _, _) = t.batch_loss(&[0, 1]).unwrap();
        let grads = loss.backward().unwrap();
        let first = &t.model.adapters[&(0, "q_proj")];
        let norm = |v: &candle_core::Var| {
            grads
                .get(v.as_tensor())
                .map(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                })
                .unwrap_or(0.0)
        };
        // LoRA starts with B = 0 (so only B gets a gradient); AdaLoRA with E = 0 (only E does).
        let reached = match method {
            Method::AdaLora => norm(first.e.as_ref().unwrap()),
            _ => norm(&first.b),
        };
        println!("{method:?}: layer-0 q_proj gradient L1 {reached:.3e}");
        assert!(reached > 0.0, "{method:?}: no gradient reached layer 0");
    }
}

#[test]
fn loss_falls_and_resume_is_bit_identical() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let steps = 30;
    let mut straight = trainer(Method::AdaLora, steps, a_dir.path());
    let losses: Vec<f64> = (0..steps)
        .map(|_| straight.train_step().unwrap().loss)
        .collect();
    println!("losses {losses:.3?}");
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[steps - 3..].iter().sum::<f64>() / 3.0;
    assert!(
        last < first - 1.0,
        "loss did not fall by a nat: {first} -> {last}"
    );

    let mut interrupted = trainer(Method::AdaLora, steps, b_dir.path());
    for _ in 0..17 {
        interrupted.train_step().unwrap();
    }
    interrupted.save_checkpoint().unwrap();
    drop(interrupted);
    let mut resumed = trainer(Method::AdaLora, steps, b_dir.path());
    assert!(resumed.resume().unwrap());
    assert_eq!(resumed.step(), 17);
    for _ in 17..steps {
        resumed.train_step().unwrap();
    }
    for (k, m) in &straight.model.adapters {
        let r = &resumed.model.adapters[k];
        for (x, y) in [
            (&m.a, &r.a),
            (&m.b, &r.b),
            (m.e.as_ref().unwrap(), r.e.as_ref().unwrap()),
        ] {
            let (x, y) = (
                x.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                y.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{k:?} differs after resume"
            );
        }
    }
    assert_eq!(straight.rank_pattern(), resumed.rank_pattern());
    let pattern = straight.rank_pattern().unwrap();
    let kept: usize = pattern
        .values()
        .map(|m| m.iter().filter(|x| **x).count())
        .sum();
    assert_eq!(kept, 2 * pattern.len(), "target_r 2 per module on average");
    let lines = std::fs::read_to_string(b_dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), steps);
}

#[test]
fn training_ids_are_the_ids_inference_feeds() {
    // The fixture's ids came from the Hugging Face tokenizer with the model's chat template.
    let vocab = vocab_model(&default_model());
    let record = Record {
        id: String::new(),
        skill: "qa".into(),
        context: String::new(),
        query: "What are the common symptoms of type 2 diabetes?".into(),
        output: "Thirst.".into(),
    };
    let prompt = skillpack_train::prompt_ids(&vocab, &record).unwrap();
    assert_eq!(prompt, prompt_ids()[0]);
    let ex = tokenize(&vocab, &record, 256).unwrap();
    assert_eq!(&ex.ids[..prompt.len()], prompt.as_slice());
    assert!(ex.targets[..prompt.len()].iter().all(|t| !t));
    let answer: Vec<i32> = ex.ids[prompt.len()..].iter().map(|&t| t as i32).collect();
    assert_eq!(vocab.detokenize(&answer, true), "Thirst.<|im_end|>");
}

/// All adapter parameters, flattened, in a fixed order.
fn params(t: &Trainer) -> Vec<f32> {
    let mut out = Vec::new();
    for m in t.model.adapters.values() {
        for v in [Some(&m.a), Some(&m.b), m.e.as_ref()].into_iter().flatten() {
            out.extend(
                v.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
        }
    }
    out
}

#[test]
fn dev_loss_keeps_the_best_step_and_stops_when_it_rises() {
    let vocab = vocab_model(&tiny());
    // Dev records ask the same questions with other answers: once training memorises its own
    // answers, the dev loss rises.
    let words = ["renal", "sepsis", "ulcer", "gout"];
    let dev: Vec<_> = records()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r.output = format!("{}; {}", words[i % 4], words[(i + 1) % 4]);
            tokenize(&vocab, &r, 64).unwrap()
        })
        .collect();
    let rule = skillpack_train::EarlyStopping {
        eval_every: 2,
        patience: 3,
        min_delta: 0.0,
    };
    let tmp = tempfile::tempdir().unwrap();
    let new_trainer = || {
        let cfg = TrainConfig {
            early_stopping: Some(rule),
            ..config(Method::AdaLora, 60)
        };
        let model = Llama::new(ModelWeights::load(&tiny(), &Device::Cpu, DType::F32).unwrap());
        Trainer::new(model, cfg, examples(&vocab), tmp.path()).unwrap()
    };
    let mut t = new_trainer();
    t.set_dev_examples(dev).unwrap();
    let mut evals = Vec::new();
    let mut snapshots = std::collections::BTreeMap::new();
    while !t.finished() {
        let m = t.train_step().unwrap();
        if let Some(l) = m.dev_loss {
            evals.push((m.step, l));
            snapshots.insert(m.step, params(&t));
        }
    }
    println!("dev losses {evals:.3?}");
    let &(best_step, best_loss) = evals.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    assert_eq!(t.selection().best, Some((best_step, best_loss)));
    let after = evals.iter().filter(|(s, _)| *s > best_step);
    assert!(
        after.clone().all(|(_, l)| *l > best_loss) && after.count() == rule.patience,
        "the run must see its dev loss rise for `patience` evaluations after the best: {evals:?}"
    );
    assert!(
        t.selection().stopped && t.step() == best_step + rule.patience * rule.eval_every,
        "stopped at {} (best {best_step})",
        t.step()
    );
    assert!(
        t.step() < 60,
        "early stopping ended the run before its budget"
    );
    // The exported adapters are the best step's, bit for bit, and score its dev loss.
    assert_eq!(t.restore_best().unwrap(), Some(best_step));
    assert!(params(&t)
        .iter()
        .zip(&snapshots[&best_step])
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!((t.dev_loss().unwrap() - best_loss).abs() < 1e-6);
    // A resumed run knows it has stopped, and where its best was.
    drop(t);
    let mut resumed = new_trainer();
    assert!(resumed.resume().unwrap());
    assert!(resumed.finished());
    assert_eq!(resumed.selection().best, Some((best_step, best_loss)));
}

#[test]
fn loss_at_target_positions_equals_the_full_output_layer() {
    // The trainer runs the output layer only where a target is predicted; the same loss and
    // gradients must come from the full computation (every position's logits, candle's ops).
    let tmp = tempfile::tempdir().unwrap();
    let vocab = vocab_model(&tiny());
    let exs = examples(&vocab);
    let t = trainer(Method::Lora, 10, tmp.path());
    // Non-zero B so every parameter has a gradient.
    for m in t.model.adapters.values() {
        let b = m.b.as_tensor();
        m.b.set(&(b.ones_like().unwrap() * 0.01).unwrap()).unwrap();
    }
    let batch = [0usize, 5, 9];
    let (loss, _, n_targets) = t.batch_loss(&batch).unwrap();
    let fast = loss.backward().unwrap();

    let len = batch.iter().map(|&i| exs[i].ids.len()).max().unwrap();
    let (mut ids, mut labels, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &batch {
        let e = &exs[i];
        for pos in 0..len {
            ids.push(*e.ids.get(pos).unwrap_or(&0));
            let target = pos + 1 < e.ids.len() && e.targets[pos + 1];
            labels.push(if target { e.ids[pos + 1] } else { 0 });
            mask.push(if target { 1f32 } else { 0.0 });
        }
    }
    assert_eq!(mask.iter().filter(|m| **m > 0.0).count(), n_targets);
    let dev = Device::Cpu;
    let ids = candle_core::Tensor::from_vec(ids, (batch.len(), len), &dev).unwrap();
    let hidden = t.model.hidden(&ids).unwrap();
    let h = hidden.dim(2).unwrap();
    let logits = t
        .model
        .logits(&hidden.reshape((batch.len() * len, h)).unwrap())
        .unwrap();
    let max = logits.max_keepdim(1).unwrap();
    let lse = (logits
        .broadcast_sub(&max)
        .unwrap()
        .exp()
        .unwrap()
        .sum_keepdim(1)
        .unwrap()
        .log()
        .unwrap()
        + &max)
        .unwrap();
    let labels = candle_core::Tensor::from_vec(labels, (batch.len() * len, 1), &dev).unwrap();
    let picked = logits.gather(&labels, 1).unwrap();
    let mask_t = candle_core::Tensor::from_vec(mask, (batch.len() * len, 1), &dev).unwrap();
    let full_loss = ((lse - picked).unwrap() * &mask_t)
        .unwrap()
        .sum_all()
        .unwrap()
        .affine(1.0 / n_targets as f64, 0.0)
        .unwrap();
    let full = full_loss.backward().unwrap();
    let (a, b) = (
        loss.to_scalar::<f32>().unwrap(),
        full_loss.to_scalar::<f32>().unwrap(),
    );
    println!("loss at target rows {a}, full {b}");
    assert!((a - b).abs() < 1e-5 * b.abs());
    let mut worst = 0f32;
    for m in t.model.adapters.values() {
        for v in [&m.a, &m.b] {
            let g1 = fast.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let g2 = full.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let max_abs = |t: candle_core::Tensor| {
                t.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
            };
            let scale = max_abs(g2.clone());
            let diff = max_abs((g1 - g2).unwrap());
            assert!(scale > 0.0);
            worst = worst.max(diff / scale);
        }
    }
    println!("largest gradient difference relative to the gradient's scale: {worst:e}");
    assert!(worst < 1e-4);
}
