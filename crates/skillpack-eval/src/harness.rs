//! Running task items through llama.cpp: options scored by log-likelihood (the prompt's KV cache
//! is reused for every option and for prompts that share a prefix), generation greedy.

use std::time::Instant;

use serde::Serialize;
use skillpack_data::tasks::{AnswerKind, Target, TaskItem};
use skillpack_data::user_message;
use skillpack_llama::{ChatMessage, Context, Model, SamplerParams, Token};
use skillpack_run::GenerateParams;

use crate::metrics;
use crate::{EvalError, Result};

/// Decides the skills for each item (a fixed weighting, a router, or none) and sets them on
/// the context. Returns the applied weights `(skill, weight)` for the predictions file.
pub trait SkillPolicy<'m> {
    fn apply(
        &mut self,
        ctx: &mut Context<'m>,
        item: &TaskItem,
        prompt: &[Token],
        expected_tokens: usize,
    ) -> Result<Vec<(String, f32)>>;
}

/// The base model: no adapters.
pub struct NoSkills;

impl<'m> SkillPolicy<'m> for NoSkills {
    fn apply(
        &mut self,
        ctx: &mut Context<'m>,
        _item: &TaskItem,
        _prompt: &[Token],
        _expected_tokens: usize,
    ) -> Result<Vec<(String, f32)>> {
        ctx.clear_adapters()?;
        Ok(Vec::new())
    }
}

/// Log-likelihood scoring over one context, keeping track of what its KV cache holds.
pub struct Scorer<'c, 'm> {
    pub ctx: &'c mut Context<'m>,
    /// Tokens of sequence 0 in the KV cache (valid while the memory epoch is unchanged).
    cached: Vec<Token>,
    epoch: u64,
    /// Log-probabilities after the last cached token.
    last_logprobs: Vec<f32>,
    /// Tokens decoded (for throughput).
    pub tokens_evaluated: usize,
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    logits.iter().map(|&l| (l as f64 - log_z) as f32).collect()
}

impl<'c, 'm> Scorer<'c, 'm> {
    pub fn new(ctx: &'c mut Context<'m>) -> Self {
        let epoch = ctx.memory_epoch();
        Scorer {
            ctx,
            cached: Vec::new(),
            epoch,
            last_logprobs: Vec::new(),
            tokens_evaluated: 0,
        }
    }

    /// Brings the KV cache to exactly `prompt`, reusing the longest cached prefix, and keeps
    /// the log-probabilities of the next token.
    pub fn prefill(&mut self, prompt: &[Token]) -> Result<()> {
        if prompt.is_empty() {
            return Err(EvalError::Invalid("empty prompt".into()));
        }
        if self.ctx.memory_epoch() != self.epoch {
            self.cached.clear();
            self.epoch = self.ctx.memory_epoch();
        }
        if self.cached == prompt && !self.last_logprobs.is_empty() {
            return Ok(());
        }
        let mut common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // At least one token is decoded so that its logits are fresh.
        common = common.min(prompt.len() - 1);
        if common == 0 {
            self.ctx.clear_memory();
            self.epoch = self.ctx.memory_epoch();
        } else {
            self.ctx.truncate_memory(common)?;
        }
        self.ctx.eval(&prompt[common..], common, false)?;
        self.tokens_evaluated += prompt.len() - common;
        self.last_logprobs = log_softmax(self.ctx.logits(-1)?);
        self.cached = prompt.to_vec();
        Ok(())
    }

    /// Sum of log-probabilities of each continuation after `prompt`.
    pub fn score(&mut self, prompt: &[Token], continuations: &[Vec<Token>]) -> Result<Vec<f64>> {
        self.prefill(prompt)?;
        let n = prompt.len();
        if continuations.iter().any(|c| c.is_empty()) {
            return Err(EvalError::Invalid("empty option".into()));
        }
        let fed: usize = continuations.iter().map(|c| c.len() - 1).sum();
        if continuations.len() > 1
            && continuations.len() < self.ctx.n_seq_max()
            && fed > 0
            && fed <= self.ctx.n_batch()
            && n + continuations.iter().map(Vec::len).max().unwrap_or(0) <= self.ctx.n_ctx()
        {
            return self.score_batched(n, continuations);
        }
        let mut scores = Vec::with_capacity(continuations.len());
        for c in continuations {
            if c.is_empty() {
                return Err(EvalError::Invalid("empty option".into()));
            }
            let mut total = self.last_logprobs[c[0] as usize] as f64;
            if c.len() > 1 {
                // Every token but the last is fed; row k predicts token k + 1.
                self.ctx.eval(&c[..c.len() - 1], n, true)?;
                self.tokens_evaluated += c.len() - 1;
                for k in 0..c.len() - 1 {
                    let lp = log_softmax(self.ctx.logits(k as i32)?);
                    total += lp[c[k + 1] as usize] as f64;
                }
                self.ctx.truncate_memory(n)?;
            }
            scores.push(total);
        }
        Ok(scores)
    }
}

impl Scorer<'_, '_> {
    /// All continuations in one decode: continuation `i` runs as sequence `i + 1`, which
    /// shares the prompt's cached cells with sequence 0.
    fn score_batched(&mut self, n: usize, continuations: &[Vec<Token>]) -> Result<Vec<f64>> {
        let fed: usize = continuations.iter().map(|c| c.len() - 1).sum();
        let mut batch = skillpack_llama::Batch::new(fed);
        let mut rows = Vec::with_capacity(continuations.len());
        for (i, c) in continuations.iter().enumerate() {
            let seq = i as i32 + 1;
            self.ctx.copy_sequence(0, seq)?;
            rows.push(batch.len());
            for (k, &t) in c[..c.len() - 1].iter().enumerate() {
                batch.push(t, (n + k) as i32, seq, true)?;
            }
        }
        let decoded = if batch.is_empty() {
            Ok(())
        } else {
            self.ctx.decode(&batch)
        };
        let mut scores = Vec::with_capacity(continuations.len());
        if decoded.is_ok() {
            self.tokens_evaluated += fed;
            for (c, &row) in continuations.iter().zip(&rows) {
                let mut total = self.last_logprobs[c[0] as usize] as f64;
                for k in 0..c.len() - 1 {
                    let lp = log_softmax(self.ctx.logits((row + k) as i32)?);
                    total += lp[c[k + 1] as usize] as f64;
                }
                scores.push(total);
            }
        }
        for i in 0..continuations.len() {
            self.ctx.remove_sequence(i as i32 + 1)?;
        }
        decoded?;
        Ok(scores)
    }
}

/// Renders the item's prompt with the model's chat template and tokenizes it.
pub fn prompt_tokens(model: &Model, context: &str, query: &str) -> Result<Vec<Token>> {
    let text = model.apply_chat_template(
        &[ChatMessage {
            role: "user".into(),
            content: user_message(context, query),
        }],
        true,
    )?;
    Ok(model.tokenize(&text, true, true)?)
}

/// Tokens of an answer continuation (tokenized on its own, as training and generation see it).
pub fn answer_tokens(model: &Model, answer: &str) -> Result<Vec<Token>> {
    Ok(model.tokenize(answer, false, true)?)
}

/// One item's result. Every field is written, so that a run can resume from its predictions
/// file and recompute the task's metrics.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Prediction {
    pub id: String,
    pub prediction: String,
    pub gold: String,
    /// The item's score on the task's headline metric (1/0 for accuracy).
    pub score: f64,
    /// Option log-likelihoods (choice tasks), per label P(yes) − P(no) margins (multi-label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub option_scores: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<(String, f32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gold_index: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicted_labels: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gold_labels: Vec<usize>,
    /// Option scores are calibrated (the content-free prompt's log-likelihood subtracted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calibrated: bool,
    #[serde(default, skip_serializing_if = "metrics::EntityCounts::is_empty")]
    pub entity_counts: metrics::EntityCounts,
    /// A second per-item metric (COVID-QA's exact match).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extra: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn greedy(max_tokens: usize, stops: &[&str]) -> GenerateParams {
    GenerateParams {
        max_tokens,
        stops: stops.iter().map(|s| s.to_string()).collect(),
        sampler: SamplerParams {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..Default::default()
        },
    }
}

/// How options are scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Calibration {
    /// Each option's log-likelihood after the prompt.
    #[default]
    None,
    /// Minus the option's log-likelihood after a content-free prompt (the same instruction
    /// and options with the input replaced by "N/A", under the same skills): what the model
    /// favours whatever the input is taken out (Zhao et al., 2021).
    ContentFree,
    /// Lettered multiple-choice questions only: each option text's log-likelihood averaged
    /// over the n cyclic rotations of the texts among the letters (the skills routed once, on
    /// the item as given), which cancels a preference for a letter (Zheng et al., 2024).
    Permutation,
}

impl Calibration {
    /// `none`, `content-free` or `permutation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Calibration::None => "none",
            Calibration::ContentFree => "content-free",
            Calibration::Permutation => "permutation",
        }
    }

    /// Whether this scoring means anything for `task`: content-free for the tasks that score
    /// options, permutation for the lettered multiple-choice ones (MedQA, MedMCQA); by the task
    /// table's [`AnswerKind`].
    pub fn applies_to(self, task: &str) -> bool {
        let answer = skillpack_data::tasks::task_info(task).map(|info| info.answer);
        match self {
            Calibration::None => true,
            Calibration::ContentFree => answer.is_ok_and(AnswerKind::is_scored),
            Calibration::Permutation => answer.is_ok_and(|a| a == AnswerKind::LetteredChoice),
        }
    }
}

impl std::str::FromStr for Calibration {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Calibration::None),
            "content-free" => Ok(Calibration::ContentFree),
            "permutation" => Ok(Calibration::Permutation),
            other => Err(format!(
                "unknown calibration `{other}` (none, content-free, permutation)"
            )),
        }
    }
}

/// `scores` minus each continuation's log-likelihood after the content-free prompt: input
/// "N/A" with query `query`.
fn calibrate(
    scorer: &mut Scorer<'_, '_>,
    query: &str,
    continuations: &[Vec<Token>],
    scores: &mut [f64],
) -> Result<()> {
    let model = scorer.ctx.model();
    let prompt = prompt_tokens(model, skillpack_data::tasks::CONTENT_FREE, query)?;
    let prior = scorer.score(&prompt, continuations)?;
    for (s, p) in scores.iter_mut().zip(prior) {
        *s -= p;
    }
    Ok(())
}

/// The tokens of `item`'s prompt, fitted to the context: an over-long prompt loses the middle
/// of its context, keeping the template's head (the first 8 tokens) and the end with the
/// question.
fn item_prompt(scorer: &Scorer<'_, '_>, item: &TaskItem) -> Result<Vec<Token>> {
    let mut prompt = prompt_tokens(scorer.ctx.model(), &item.context, &item.query)?;
    let budget = scorer.ctx.n_ctx().saturating_sub(200);
    if prompt.len() > budget {
        let keep_tail = budget - 8;
        let tail = prompt.split_off(prompt.len() - keep_tail);
        prompt.truncate(8);
        prompt.extend(tail);
    }
    Ok(prompt)
}

/// `scores` (of `item`'s options as given) replaced by each option text's mean score over the
/// cyclic rotations of the texts among the letters, under the skills already applied. The
/// rotations share the prompt up to the options block, so the KV cache keeps that part.
fn average_over_rotations(
    scorer: &mut Scorer<'_, '_>,
    item: &TaskItem,
    scores: &mut [f64],
) -> Result<()> {
    let model = scorer.ctx.model();
    let n = scores.len();
    let mut total = scores.to_vec();
    for shift in 1..n {
        let (rotated, order) =
            skillpack_data::tasks::rotate_options(item, shift).ok_or_else(|| {
                EvalError::Invalid(format!(
                "--calibration permutation needs lettered options laid out as the {} prompts are",
                item.task
            ))
            })?;
        let Target::Choice { options, .. } = &rotated.target else {
            unreachable!("a rotated choice item stays a choice item")
        };
        let prompt = item_prompt(scorer, &rotated)?;
        let conts = options
            .iter()
            .map(|o| answer_tokens(model, o))
            .collect::<Result<Vec<_>>>()?;
        let rotated_scores = scorer.score(&prompt, &conts)?;
        for (letter, &text) in order.iter().enumerate() {
            total[text] += rotated_scores[letter];
        }
    }
    for (s, t) in scores.iter_mut().zip(total) {
        *s = t / n as f64;
    }
    Ok(())
}

/// Evaluates one item.
pub fn evaluate_item<'m>(
    scorer: &mut Scorer<'_, 'm>,
    policy: &mut dyn SkillPolicy<'m>,
    item: &TaskItem,
    calibration: Calibration,
) -> Result<Prediction> {
    let model = scorer.ctx.model();
    let prompt = item_prompt(scorer, item)?;
    let blank = |prediction: String, gold: String, score: f64| Prediction {
        id: item.id.clone(),
        prediction,
        gold,
        score,
        option_scores: Vec::new(),
        weights: Vec::new(),
        predicted_index: None,
        gold_index: None,
        predicted_labels: Vec::new(),
        gold_labels: Vec::new(),
        calibrated: false,
        entity_counts: Default::default(),
        extra: 0.0,
    };
    match &item.target {
        Target::Choice { options, gold } => {
            let weights = policy.apply(scorer.ctx, item, &prompt, prompt.len() + 8)?;
            let conts = options
                .iter()
                .map(|o| answer_tokens(model, o))
                .collect::<Result<Vec<_>>>()?;
            let mut scores = scorer.score(&prompt, &conts)?;
            match calibration {
                Calibration::None => {}
                Calibration::ContentFree => {
                    let query = skillpack_data::tasks::content_free_query(item);
                    calibrate(scorer, &query, &conts, &mut scores)?;
                }
                Calibration::Permutation => average_over_rotations(scorer, item, &mut scores)?,
            }
            let best = argmax(&scores);
            let mut p = blank(
                options[best].clone(),
                options[*gold].clone(),
                (best == *gold) as u8 as f64,
            );
            p.option_scores = scores;
            p.weights = weights;
            p.predicted_index = Some(best);
            p.gold_index = Some(*gold);
            p.calibrated = calibration != Calibration::None;
            Ok(p)
        }
        Target::MultiLabel {
            labels,
            queries,
            gold,
        } => {
            let yes = answer_tokens(model, "yes")?;
            let no = answer_tokens(model, "no")?;
            let mut margins = Vec::new();
            let mut predicted = Vec::new();
            let mut weights = Vec::new();
            for (i, q) in queries.iter().enumerate() {
                let label_prompt = prompt_tokens(model, &item.context, q)?;
                weights = policy.apply(scorer.ctx, item, &label_prompt, label_prompt.len() + 2)?;
                let answers = [yes.clone(), no.clone()];
                let mut s = scorer.score(&label_prompt, &answers)?;
                if calibration == Calibration::ContentFree {
                    // The label question is the whole instruction: only the abstract goes.
                    calibrate(scorer, q, &answers, &mut s)?;
                }
                margins.push(s[0] - s[1]);
                if s[0] > s[1] {
                    predicted.push(i);
                }
            }
            let names = |v: &[usize]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter()
                        .map(|&i| labels[i].as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            };
            let mut p = blank(
                names(&predicted),
                names(gold),
                metrics::sample_f1(&predicted, gold),
            );
            p.option_scores = margins;
            p.weights = weights;
            p.predicted_labels = predicted;
            p.gold_labels = gold.clone();
            p.calibrated = calibration == Calibration::ContentFree;
            Ok(p)
        }
        Target::Entities { text, types, gold } => {
            let params = greedy(192, &[]);
            let weights = policy.apply(scorer.ctx, item, &prompt, prompt.len() + 96)?;
            let generation = skillpack_run::generate(scorer.ctx, &prompt, &params, |_| {})?;
            scorer.tokens_evaluated += prompt.len() + generation.generated_tokens;
            let mentions = metrics::parse_entity_answer(&generation.text, types);
            let predicted = metrics::predicted_spans(text, &mentions);
            let counts = metrics::EntityCounts::of(&predicted, gold);
            let gold_text = types
                .iter()
                .map(|t| {
                    let mut names: Vec<&str> = Vec::new();
                    for (s, e, k) in gold {
                        if k == t && !names.iter().any(|n| n.eq_ignore_ascii_case(&text[*s..*e])) {
                            names.push(&text[*s..*e]);
                        }
                    }
                    format!("{t}: {}", names.join("; "))
                })
                .collect::<Vec<_>>()
                .join("\n");
            let mut p = blank(generation.text, gold_text, counts.f1());
            p.entity_counts = counts;
            p.weights = weights;
            Ok(p)
        }
        Target::Text {
            references,
            max_tokens,
        } => {
            let params = greedy(*max_tokens, &["\n"]);
            let weights = policy.apply(scorer.ctx, item, &prompt, prompt.len() + max_tokens / 2)?;
            let generation = skillpack_run::generate(scorer.ctx, &prompt, &params, |_| {})?;
            scorer.tokens_evaluated += prompt.len() + generation.generated_tokens;
            let text = generation.text.trim().to_string();
            let (score, extra) = if item.task == "meqsum" {
                (metrics::rouge_l(&text, references), 0.0)
            } else {
                (
                    metrics::squad_f1(&text, references),
                    metrics::exact_match(&text, references),
                )
            };
            let mut p = blank(text, references.join(" | "), score);
            p.extra = extra;
            p.weights = weights;
            Ok(p)
        }
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Aggregates predictions into the task's metrics (headline first).
pub fn task_metrics(task: &str, predictions: &[Prediction]) -> Vec<(String, f64)> {
    let refs: Vec<&Prediction> = predictions.iter().collect();
    metrics_of(task, &refs)
}

fn metrics_of(task: &str, predictions: &[&Prediction]) -> Vec<(String, f64)> {
    let n = predictions.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Prediction) -> f64| predictions.iter().map(|p| f(p)).sum::<f64>() / n;
    match task {
        "bc5cdr" => {
            let mut c = metrics::EntityCounts::default();
            for p in predictions {
                c.add(p.entity_counts);
            }
            vec![
                ("entity_f1".into(), c.f1()),
                ("entity_precision".into(), c.precision()),
                ("entity_recall".into(), c.recall()),
            ]
        }
        "hoc" => {
            let pred: Vec<Vec<usize>> = predictions
                .iter()
                .map(|p| p.predicted_labels.clone())
                .collect();
            let gold: Vec<Vec<usize>> = predictions.iter().map(|p| p.gold_labels.clone()).collect();
            vec![
                (
                    "macro_f1".into(),
                    metrics::multilabel_macro_f1(&pred, &gold),
                ),
                ("sample_f1".into(), mean(&|p| p.score)),
            ]
        }
        "covidqa" => vec![
            ("f1".into(), mean(&|p| p.score)),
            ("exact_match".into(), mean(&|p| p.extra)),
        ],
        "meqsum" => vec![("rouge_l".into(), mean(&|p| p.score))],
        _ => {
            let pred: Vec<usize> = predictions
                .iter()
                .filter_map(|p| p.predicted_index)
                .collect();
            let gold: Vec<usize> = predictions.iter().filter_map(|p| p.gold_index).collect();
            let accuracy = ("accuracy".to_string(), metrics::accuracy(&pred, &gold));
            if matches!(task, "pubmedqa" | "chemprot" | "healthver") {
                vec![
                    ("macro_f1".into(), metrics::macro_f1(&pred, &gold)),
                    accuracy,
                ]
            } else {
                vec![accuracy]
            }
        }
    }
}

/// A 95 % bootstrap interval of the task's headline metric over its items.
pub fn headline_interval(task: &str, predictions: &[Prediction]) -> Option<(f64, f64)> {
    metrics::bootstrap_interval(predictions.len(), 1000, |idx| {
        let sample: Vec<&Prediction> = idx.iter().map(|&i| &predictions[i]).collect();
        metrics_of(task, &sample)
            .first()
            .map(|m| m.1)
            .unwrap_or(0.0)
    })
}

/// The predicted and gold label balance of a classification task (choice tasks by option;
/// MedQA/MedMCQA by the option's letter; HoC by the predicted label set). None otherwise.
pub fn label_balance(task: &str, predictions: &[Prediction]) -> Option<metrics::LabelBalance> {
    match task {
        "pubmedqa" | "chemprot" | "healthver" | "hoc" => metrics::label_balance(
            predictions
                .iter()
                .map(|p| (p.prediction.as_str(), p.gold.as_str())),
        ),
        "medqa" | "medmcqa" => {
            const LETTERS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];
            let letter =
                |i: Option<usize>| LETTERS.get(i.unwrap_or(usize::MAX)).copied().unwrap_or("?");
            metrics::label_balance(
                predictions
                    .iter()
                    .map(|p| (letter(p.predicted_index), letter(p.gold_index))),
            )
        }
        _ => None,
    }
}

/// Summary of one task run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TaskSummary {
    pub task: String,
    pub config: String,
    pub split: String,
    pub items: usize,
    pub metrics: Vec<(String, f64)>,
    pub wall_s: f64,
    pub items_per_s: f64,
    pub tokens_evaluated: usize,
    pub tokens_per_s: f64,
    /// 95 % bootstrap interval of the headline metric.
    #[serde(default)]
    pub interval: Option<(f64, f64)>,
    /// Predicted vs gold label concentration (classification tasks).
    #[serde(default)]
    pub balance: Option<metrics::LabelBalance>,
    /// How options were scored.
    #[serde(default)]
    pub calibration: Calibration,
    /// How the prompts were worded.
    #[serde(default)]
    pub prompt_variant: skillpack_data::tasks::PromptVariant,
    /// Routed configurations: the share of items that got no skill at all (the router's "no
    /// skill" output or a zero gain), i.e. ran on the base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_skill_share: Option<f64>,
    /// Items whose predictions came from an earlier, interrupted or shorter run of the same
    /// configuration (`wall_s` and the rates count only the rest).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub reused_items: usize,
    /// The configuration whose predictions these are: one with exactly the same weights on
    /// every prompt (a task router that fell back to `general`, a zero-gain router and the
    /// base model), evaluated once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
    /// The predictions file holds every field needed to score it again (a later run may take
    /// its items instead of evaluating them: `eval --reuse`).
    #[serde(default)]
    pub resumable: bool,
    /// What decides the configuration's weights on every prompt (its router's or fixed
    /// weights, the mode, the pack's skills): a later run takes these predictions only under
    /// the same fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_fingerprint: Option<String>,
}

fn is_zero_usize(x: &usize) -> bool {
    *x == 0
}

/// What a run evaluates: the task, the configuration's label, the split and the scoring.
pub struct RunSpec<'a> {
    pub task: &'a str,
    pub config: &'a str,
    pub split: &'a str,
    pub calibration: Calibration,
    pub prompt_variant: skillpack_data::tasks::PromptVariant,
}

/// Evaluates `items`, calling `progress` after each; returns predictions and the summary.
pub fn evaluate<'m>(
    ctx: &mut Context<'m>,
    policy: &mut dyn SkillPolicy<'m>,
    run: &RunSpec<'_>,
    items: &[TaskItem],
    mut progress: impl FnMut(usize),
) -> Result<(Vec<Prediction>, TaskSummary)> {
    evaluate_resuming(ctx, policy, run, items, Vec::new(), |done, _| {
        progress(done);
        Ok(())
    })
}

/// [`evaluate`] continuing after `done`, the predictions of the first `done.len()` items from
/// an earlier run of the same configuration (checked by id). `each` gets every new prediction
/// as it is made (to checkpoint it) with the number of items done.
pub fn evaluate_resuming<'m>(
    ctx: &mut Context<'m>,
    policy: &mut dyn SkillPolicy<'m>,
    run: &RunSpec<'_>,
    items: &[TaskItem],
    done: Vec<Prediction>,
    mut each: impl FnMut(usize, &Prediction) -> Result<()>,
) -> Result<(Vec<Prediction>, TaskSummary)> {
    let RunSpec {
        task,
        config,
        split,
        calibration,
        prompt_variant,
    } = *run;
    if let Some((item, p)) = items.iter().zip(&done).find(|(i, p)| i.id != p.id) {
        return Err(EvalError::Invalid(format!(
            "resumed predictions of {config} on {task} do not follow the items: item {} where \
             the split has {}",
            p.id, item.id
        )));
    }
    if done.len() > items.len() {
        return Err(EvalError::Invalid(format!(
            "resumed predictions of {config} on {task}: {} for {} items",
            done.len(),
            items.len()
        )));
    }
    let reused_items = done.len();
    let started = Instant::now();
    let mut scorer = Scorer::new(ctx);
    let mut predictions = done;
    predictions.reserve(items.len() - reused_items);
    for (i, item) in items.iter().enumerate().skip(reused_items) {
        let prediction = evaluate_item(&mut scorer, policy, item, calibration)
            .map_err(|e| EvalError::Invalid(format!("item {}: {e}", item.id)))?;
        each(i + 1, &prediction)?;
        predictions.push(prediction);
    }
    let wall_s = started.elapsed().as_secs_f64();
    let summary = TaskSummary {
        task: task.into(),
        config: config.into(),
        split: split.into(),
        items: items.len(),
        metrics: task_metrics(task, &predictions),
        wall_s,
        items_per_s: (items.len() - reused_items) as f64 / wall_s.max(1e-9),
        tokens_evaluated: scorer.tokens_evaluated,
        tokens_per_s: scorer.tokens_evaluated as f64 / wall_s.max(1e-9),
        interval: headline_interval(task, &predictions),
        balance: label_balance(task, &predictions),
        calibration,
        prompt_variant,
        no_skill_share: config.starts_with("router:").then(|| {
            predictions.iter().filter(|p| p.weights.is_empty()).count() as f64
                / predictions.len().max(1) as f64
        }),
        reused_items,
        same_as: None,
        resumable: true,
        weights_fingerprint: None,
    };
    Ok((predictions, summary))
}

#[cfg(test)]
mod tests {
    use super::Calibration;

    #[test]
    fn scorings_apply_by_the_task_tables_answer_kind() {
        for task in ["medqa", "medmcqa"] {
            assert!(Calibration::Permutation.applies_to(task), "{task}");
            assert!(Calibration::ContentFree.applies_to(task), "{task}");
        }
        for task in ["pubmedqa", "chemprot", "hoc", "healthver"] {
            assert!(!Calibration::Permutation.applies_to(task), "{task}");
            assert!(Calibration::ContentFree.applies_to(task), "{task}");
        }
        for task in ["bc5cdr", "covidqa", "meqsum"] {
            assert!(!Calibration::Permutation.applies_to(task), "{task}");
            assert!(!Calibration::ContentFree.applies_to(task), "{task}");
            assert!(Calibration::None.applies_to(task), "{task}");
        }
        assert!(
            !Calibration::ContentFree.applies_to("mednli"),
            "unknown task"
        );
    }
}
