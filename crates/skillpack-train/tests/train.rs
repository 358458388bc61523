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
