//! The nine downstream tasks: items with zero-shot prompts (context + query, the same layout the
//! skills train on), their gold targets, and deterministic train/dev splits carved from the
//! shared raw files. Any file in a task's raw format can be loaded instead (`load_file`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::raw::{self, HALLMARKS};
use crate::{stable_hash, DataError, Result};

/// The nine tasks, in report order (six seen, then three unseen).
pub const TASKS: [&str; 9] = [
    "pubmedqa",
    "medqa",
    "medmcqa",
    "bc5cdr",
    "chemprot",
    "hoc",
    "healthver",
    "covidqa",
    "meqsum",
];

/// The ChemProt relation labels of the shared copy (13, no negatives).
pub const CHEMPROT_LABELS: [&str; 13] = [
    "INHIBITOR",
    "INDIRECT-DOWNREGULATOR",
    "SUBSTRATE",
    "INDIRECT-UPREGULATOR",
    "ACTIVATOR",
    "ANTAGONIST",
    "PRODUCT-OF",
    "AGONIST",
    "DOWNREGULATOR",
    "UPREGULATOR",
    "SUBSTRATE_PRODUCT-OF",
    "AGONIST-ACTIVATOR",
    "AGONIST-INHIBITOR",
];

/// Seed of every task split (fixed: the splits are part of the benchmark's definition).
pub const TASK_SPLIT_SEED: u64 = 13;

/// Static facts about a task.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TaskInfo {
    pub name: &'static str,
    pub title: &'static str,
    /// Whether a skill trains on (other items of) the task's source.
    pub seen: bool,
    /// The metrics reported, the first one being the headline.
    pub metrics: &'static [&'static str],
    /// Raw file(s) under the raw data folder.
    pub raw_files: &'static [&'static str],
    /// How an answer is given, which decides the option scorings that apply.
    pub answer: AnswerKind,
}

/// How a task's answer is given (the shape of its [`Target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    /// A letter among options listed in the prompt (the option texts can move between letters).
    LetteredChoice,
    /// One of a fixed set of labels, scored by log-likelihood.
    Label,
    /// Any subset of a fixed set of labels, each asked as a yes/no question.
    MultiLabel,
    /// Generated text (entity lists, answers, summaries).
    Generated,
}

impl AnswerKind {
    /// Whether the answer is chosen by scoring fixed options (not generated).
    pub fn is_scored(self) -> bool {
        self != AnswerKind::Generated
    }
}

/// Facts about `name`, or an error listing the tasks.
pub fn task_info(name: &str) -> Result<TaskInfo> {
    let info = |name, title, seen, metrics, raw_files, answer| TaskInfo {
        name,
        title,
        seen,
        metrics,
        raw_files,
        answer,
    };
    use AnswerKind::*;
    Ok(match name {
        "pubmedqa" => info(
            "pubmedqa",
            "PubMedQA",
            true,
            &["macro_f1", "accuracy"],
            &["pubmedqa/pqal_trainval.json"],
            Label,
        ),
        "medqa" => info(
            "medqa",
            "MedQA",
            true,
            &["accuracy"],
            &["medqa/dev.jsonl"],
            LetteredChoice,
        ),
        "medmcqa" => info(
            "medmcqa",
            "MedMCQA",
            true,
            &["accuracy"],
            &["medmcqa/dev.jsonl"],
            LetteredChoice,
        ),
        "bc5cdr" => info(
            "bc5cdr",
            "BC5CDR NER",
            true,
            &["entity_f1", "entity_precision", "entity_recall"],
            &[
                "bc5cdr/CDR_TrainingSet.PubTator.txt",
                "bc5cdr/CDR_DevelopmentSet.PubTator.txt",
            ],
            Generated,
        ),
        "chemprot" => info(
            "chemprot",
            "ChemProt",
            true,
            &["macro_f1", "accuracy"],
            &["chemprot/train.txt", "chemprot/dev.txt"],
            Label,
        ),
        "hoc" => info(
            "hoc",
            "HoC",
            true,
            &["macro_f1", "sample_f1"],
            &["hoc"],
            MultiLabel,
        ),
        "healthver" => info(
            "healthver",
            "HealthVer",
            false,
            &["macro_f1", "accuracy"],
            &["healthver/healthver_dev.csv"],
            Label,
        ),
        "covidqa" => info(
            "covidqa",
            "COVID-QA",
            false,
            &["f1", "exact_match"],
            &["covidqa/dev.json"],
            Generated,
        ),
        "meqsum" => info(
            "meqsum",
            "MeQSum",
            false,
            &["rouge_l"],
            &["meqsum/meqsum.csv"],
            Generated,
        ),
        other => {
            return Err(DataError::Invalid(format!(
                "unknown task `{other}` (tasks: {})",
                TASKS.join(", ")
            )))
        }
    })
}

/// Which part of a task an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The task's small training split (for routers).
    Train,
    /// The evaluation split.
    Dev,
    /// Neither (free for skill data).
    Rest,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Rest => "rest",
        }
    }
}

/// What a task item is scored against.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// One of `options` (each scored as the assistant's answer by log-likelihood).
    Choice { options: Vec<String>, gold: usize },
    /// Any subset of `labels`; each label is asked as its own yes/no question (`queries`).
    MultiLabel {
        labels: Vec<String>,
        queries: Vec<String>,
        gold: Vec<usize>,
    },
    /// Entity mentions of `text` as `(start, end, type)` byte spans; answers are generated.
    Entities {
        text: String,
        types: Vec<String>,
        gold: Vec<(usize, usize, String)>,
    },
    /// Free text, generated greedily and compared with the references.
    Text {
        references: Vec<String>,
        max_tokens: usize,
    },
}

/// One evaluation item.
#[derive(Debug, Clone, Serialize)]
pub struct TaskItem {
    pub id: String,
    pub task: &'static str,
    pub split: Split,
    pub context: String,
    pub query: String,
    pub target: Target,
    /// PubMed ids (or other document ids) the item comes from.
    #[serde(skip)]
    pub doc_ids: Vec<String>,
    /// The item's identifying texts, for overlap checks against skill data.
    #[serde(skip)]
    pub texts: Vec<String>,
}

fn split_by(key: &str, task: &str, dev_percent: u64, train_percent: u64) -> Split {
    let h = stable_hash(&format!("{TASK_SPLIT_SEED}:{task}:{key}")) % 100;
    if h < dev_percent {
        Split::Dev
    } else if h < dev_percent + train_percent {
        Split::Train
    } else {
        Split::Rest
    }
}

/// The instruction line of [`pubmedqa_query`].
pub const PUBMEDQA_INSTRUCTION: &str = "Answer with yes, no or maybe.";
const MCQ_INSTRUCTION: &str = "Answer with the letter of the correct option, then its text.";
const HEALTHVER_INSTRUCTION: &str = "Does the evidence support the claim, refute it, or neither? Answer supports, refutes or neutral.";
const COVIDQA_INSTRUCTION: &str = "Answer with the exact phrase from the text.";

/// The PubMedQA query for a question (the MRC skill phrases it the same way among others).
pub fn pubmedqa_query(question: &str) -> String {
    format!("{question}\n{PUBMEDQA_INSTRUCTION}")
}

/// What a task's query was built around, undoing the builders here: PubMedQA's and COVID-QA's
/// question, HealthVer's claim, MedQA/MedMCQA's question with its lettered options; the whole
/// query for the other tasks (and for a query no builder made).
pub fn query_content(item: &TaskItem) -> &str {
    let q = item.query.as_str();
    let inner = match item.task {
        "pubmedqa" => q
            .strip_suffix(PUBMEDQA_INSTRUCTION)
            .map(|r| r.strip_suffix('\n')),
        "medqa" | "medmcqa" => q
            .strip_suffix(MCQ_INSTRUCTION)
            .map(|r| r.strip_suffix("\n\n")),
        "healthver" => q
            .strip_prefix("Claim: ")
            .and_then(|r| r.strip_suffix(HEALTHVER_INSTRUCTION))
            .map(|r| r.strip_suffix('\n')),
        "covidqa" => q
            .strip_prefix("Question: ")
            .and_then(|r| r.strip_suffix(COVIDQA_INSTRUCTION))
            .map(|r| r.strip_suffix('\n')),
        _ => None,
    };
    inner.flatten().unwrap_or(q)
}

/// The multiple-choice query: the question, lettered options, and the format.
pub fn mcq_query(question: &str, options: &[(String, String)]) -> String {
    let lines: Vec<String> = options.iter().map(|(l, t)| format!("{l}. {t}")).collect();
    format!("{question}\n\n{}\n\n{MCQ_INSTRUCTION}", lines.join("\n"))
}

/// `item`, a lettered multiple-choice item whose query holds its options as one `L. text` line
/// each (as [`mcq_query`] and [`user_variant`] lay them out), with the options' texts moved up
/// `shift` letters: the option at letter i gets the text of option (i + shift) mod n. Returns
/// the reworded item (the options block rewritten in place, gold following its text) and, per
/// new letter, the index of the original option it holds. None for an item not laid out so.
/// Scoring every rotation and averaging each text's scores cancels a preference for a letter
/// (cyclic permutation debiasing).
pub fn rotate_options(item: &TaskItem, shift: usize) -> Option<(TaskItem, Vec<usize>)> {
    let Target::Choice { options, gold } = &item.target else {
        return None;
    };
    let n = options.len();
    if n == 0 || n > 26 || *gold >= n {
        return None;
    }
    let letter = |i: usize| char::from(b'A' + i as u8).to_string();
    let texts: Vec<&str> = options
        .iter()
        .enumerate()
        .map(|(i, o)| o.strip_prefix(&format!("{}. ", letter(i))))
        .collect::<Option<_>>()?;
    let lettered = |order: &[usize]| -> Vec<(String, String)> {
        order
            .iter()
            .enumerate()
            .map(|(i, &j)| (letter(i), texts[j].to_string()))
            .collect()
    };
    let block = |order: &[usize]| -> String {
        lettered(order)
            .iter()
            .map(|(l, t)| format!("{l}. {t}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let identity: Vec<usize> = (0..n).collect();
    let original = format!("\n{}\n", block(&identity));
    let at = item.query.rfind(&original)?;
    let order: Vec<usize> = (0..n).map(|i| (i + shift) % n).collect();
    let rotated = lettered(&order);
    let mut out = item.clone();
    out.query = format!(
        "{}\n{}\n{}",
        &item.query[..at],
        block(&order),
        &item.query[at + original.len()..]
    );
    out.target = Target::Choice {
        options: rotated.iter().map(|(l, t)| format!("{l}. {t}")).collect(),
        gold: order.iter().position(|&j| j == *gold)?,
    };
    Some((out, order))
}

/// The ChemProt query.
pub fn chemprot_query() -> String {
    format!(
        "What is the relation of the chemical marked << >> to the gene marked [[ ]]? Answer with one of: {}.",
        CHEMPROT_LABELS.join(", ")
    )
}

/// The NER query and the answer layout it asks for.
pub const NER_QUERY: &str = "List the chemicals and the diseases mentioned in the text, as two lines: \"Chemicals: a; b\" and \"Diseases: c; d\" (write none when there are none).";

/// Items joined by `sep`, or `none` when there are none (the answers' empty-list form).
pub fn join_or_none(items: &[&str], sep: &str) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(sep)
    }
}

/// The NER answer for lists of chemicals and diseases.
pub fn ner_answer(chemicals: &[&str], diseases: &[&str]) -> String {
    format!(
        "Chemicals: {}\nDiseases: {}",
        join_or_none(chemicals, "; "),
        join_or_none(diseases, "; ")
    )
}

/// The HoC per-hallmark question.
pub fn hoc_label_query(hallmark: &str) -> String {
    format!("Does this abstract discuss the cancer hallmark \"{hallmark}\"? Answer yes or no.")
}

/// The HoC list question.
pub fn hoc_list_query() -> String {
    format!(
        "Which hallmarks of cancer does this abstract discuss? Choose from: {}. Answer with a semicolon-separated list, or none.",
        HALLMARKS.join("; ")
    )
}

/// The HealthVer query.
pub fn healthver_query(claim: &str) -> String {
    format!("Claim: {claim}\n{HEALTHVER_INSTRUCTION}")
}

/// The COVID-QA query.
pub fn covidqa_query(question: &str) -> String {
    format!("Question: {question}\n{COVIDQA_INSTRUCTION}")
}

/// The MeQSum query.
pub const MEQSUM_QUERY: &str = "Summarize the question above as one short question.";

/// The query of a content-free prompt for `item` (its content replaced by "N/A", the task's
/// instruction and options kept), for calibrated option scoring: an option's log-likelihood
/// under this prompt measures how much the model favours it whatever the input.
pub fn content_free_query(item: &TaskItem) -> String {
    match item.task {
        "pubmedqa" => pubmedqa_query(CONTENT_FREE),
        "healthver" => healthver_query(CONTENT_FREE),
        // The question before the lettered options (`mcq_query`'s layout).
        "medqa" | "medmcqa" => match item.query.find("\n\nA. ") {
            Some(at) => format!("{CONTENT_FREE}{}", &item.query[at..]),
            None => CONTENT_FREE.to_string(),
        },
        // The instruction is the whole query (ChemProt, each HoC label question).
        _ => item.query.clone(),
    }
}

/// How an evaluation prompt is worded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptVariant {
    /// Laid out like the skills' records: the text, then the task's query.
    #[default]
    Standard,
    /// One user message in other words than any skill template or request bank uses: the
    /// request first, then the text, no output format spelled out beyond the answer options.
    User,
}

impl PromptVariant {
    /// `standard` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptVariant::Standard => "standard",
            PromptVariant::User => "user",
        }
    }
}

impl std::str::FromStr for PromptVariant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "standard" => Ok(PromptVariant::Standard),
            "user" => Ok(PromptVariant::User),
            other => Err(format!("unknown prompt variant `{other}` (standard, user)")),
        }
    }
}

/// `item` worded as [`PromptVariant::User`]: the same target, another request, the text after
/// it in one message.
pub fn user_variant(item: &TaskItem) -> TaskItem {
    let content = query_content(item).trim();
    let request = match item.task {
        "pubmedqa" => format!(
            "Going by the study summary that follows, what's the verdict on this: {} Pick one: yes / no / maybe.",
            content
        ),
        "medqa" | "medmcqa" => format!(
            "I'm revising for boards and got stuck here:\n{}\nWhat's the right pick?",
            content
        ),
        "bc5cdr" => "Go through the passage that follows and pick out every substance or medication and every illness it names.".to_string(),
        "chemprot" => format!(
            "Quick one for a pharmacology database: in the sentence that follows, what is the compound between << >> doing to the protein between [[ ]]? Use exactly one of {}.",
            CHEMPROT_LABELS.join(", ")
        ),
        "hoc" => "Tag the following paper summary with every cancer hallmark it touches on.".to_string(),
        "healthver" => format!(
            "Someone claims: \"{}\". Judging only by the excerpt that follows, does it back the claim up, contradict it, or neither? Reply supports, refutes or neutral.",
            content
        ),
        "covidqa" => format!(
            "{} Quote the answer straight from the article that follows.",
            content
        ),
        _ => "Turn the patient message that follows into a single short question a doctor could answer.".to_string(),
    };
    let mut out = item.clone();
    out.query = if item.context.trim().is_empty() {
        request
    } else {
        format!("{request}\n\n{}", item.context.trim())
    };
    out.context = String::new();
    if let Target::MultiLabel {
        labels, queries, ..
    } = &mut out.target
    {
        *queries = labels
            .iter()
            .map(|h| {
                format!(
                    "Is \"{h}\" a theme of the paper summary that follows? Reply with a plain yes or no.\n\n{}",
                    item.context.trim()
                )
            })
            .collect();
    }
    out
}

/// The content-free input of calibrated scoring (Zhao et al., 2021).
pub const CONTENT_FREE: &str = "N/A";

/// Loads a task from the shared raw folder with its train/dev splits (`Rest` items included).
pub fn load(task: &str, raw_dir: &Path) -> Result<Vec<TaskItem>> {
    let info = task_info(task)?;
    let task = info.name;
    let path = |i: usize| raw_dir.join(info.raw_files[i]);
    Ok(match task {
        "bc5cdr" => {
            let mut items = bc5cdr(&path(0), |id| match split_by(id, task, 0, 20) {
                Split::Train => Split::Train,
                _ => Split::Rest,
            })?;
            items.extend(bc5cdr(&path(1), |id| match split_by(id, task, 40, 0) {
                Split::Dev => Split::Dev,
                _ => Split::Rest,
            })?);
            items
        }
        "chemprot" => {
            let mut items = chemprot(&path(0), "train", |id| match split_by(id, task, 0, 5) {
                Split::Train => Split::Train,
                _ => Split::Rest,
            })?;
            items.extend(chemprot(&path(1), "dev", |id| {
                match split_by(id, task, 20, 0) {
                    Split::Dev => Split::Dev,
                    _ => Split::Rest,
                }
            })?);
            items
        }
        _ => load_file_with(task, &path(0), &mut |key| {
            let (dev, train) = match task {
                "pubmedqa" => (40, 20),
                "medqa" => (35, 15),
                "medmcqa" => (20, 10),
                "hoc" => (25, 10),
                "healthver" => (50, 25),
                "covidqa" => (50, 25),
                _ => (45, 20), // meqsum
            };
            split_by(key, task, dev, train)
        })?,
    })
}

/// Loads every item of `file` (a file in the task's raw format) as the dev split.
pub fn load_file(task: &str, file: &Path) -> Result<Vec<TaskItem>> {
    let task = task_info(task)?.name;
    match task {
        "bc5cdr" => bc5cdr(file, |_| Split::Dev),
        "chemprot" => chemprot(file, "file", |_| Split::Dev),
        _ => load_file_with(task, file, &mut |_| Split::Dev),
    }
}

/// `(task, seen, train items, dev items)` for every task, from the raw folder, as markdown
/// rows and JSON (for `data build`'s `tasks.md`).
pub fn split_table(raw_dir: &Path) -> Result<(String, serde_json::Value)> {
    let mut md = String::from(
        "# Task splits\n\nFixed hash splits of the shared files (seed 13); the real test sets are held elsewhere.\n\n| task | seen | train (router) | dev (evaluation) |\n|---|---|---|---|\n",
    );
    let mut json = Vec::new();
    for task in TASKS {
        let info = task_info(task)?;
        let items = load(task, raw_dir)?;
        let count = |s: Split| items.iter().filter(|i| i.split == s).count();
        let (train, dev) = (count(Split::Train), count(Split::Dev));
        md.push_str(&format!(
            "| {} | {} | {train} | {dev} |\n",
            info.title,
            if info.seen { "yes" } else { "no" }
        ));
        json.push(serde_json::json!({"task": task, "seen": info.seen, "train": train, "dev": dev}));
    }
    Ok((md, serde_json::Value::Array(json)))
}

/// Items of the given split, in file order.
pub fn select(items: Vec<TaskItem>, split: Split) -> Vec<TaskItem> {
    items.into_iter().filter(|i| i.split == split).collect()
}

/// `split_key` maps the item's split key (the unit that must not straddle splits: a PMID, a
/// claim, an article) to its split.
fn load_file_with(
    task: &'static str,
    path: &Path,
    split_key: &mut dyn FnMut(&str) -> Split,
) -> Result<Vec<TaskItem>> {
    let choice = |options: &[&str], gold: usize| Target::Choice {
        options: options.iter().map(|s| s.to_string()).collect(),
        gold,
    };
    Ok(match task {
        "pubmedqa" => raw::pubmedqa(path)?
            .into_iter()
            .map(|q| TaskItem {
                id: format!("pubmedqa:{}", q.pmid),
                task,
                split: split_key(&q.pmid),
                context: q.contexts.join("\n"),
                query: pubmedqa_query(&q.question),
                target: choice(
                    &["yes", "no", "maybe"],
                    ["yes", "no", "maybe"]
                        .iter()
                        .position(|d| *d == q.decision)
                        .expect("checked by the reader"),
                ),
                doc_ids: vec![q.pmid.clone()],
                texts: vec![q.question.clone(), q.contexts.join(" ")],
            })
            .collect(),
        "medqa" | "medmcqa" => raw::mcq(path)?
            .into_iter()
            .map(|q| TaskItem {
                id: format!("{task}:{}", q.id),
                task,
                split: split_key(&q.id),
                context: String::new(),
                query: mcq_query(&q.question, &q.options),
                target: Target::Choice {
                    options: q.options.iter().map(|(l, t)| format!("{l}. {t}")).collect(),
                    gold: q.answer,
                },
                doc_ids: vec![format!("{task}:{}", q.id)],
                texts: vec![q.question.clone()],
            })
            .collect(),
        "hoc" => raw::hoc(path)?
            .into_iter()
            .map(|h| TaskItem {
                id: format!("hoc:{}", h.pmid),
                task,
                split: split_key(&h.pmid),
                context: h.text.clone(),
                query: hoc_list_query(),
                target: Target::MultiLabel {
                    labels: HALLMARKS.iter().map(|s| s.to_string()).collect(),
                    queries: HALLMARKS.iter().map(|h| hoc_label_query(h)).collect(),
                    gold: h.labels.clone(),
                },
                doc_ids: vec![h.pmid.clone()],
                texts: vec![h.text.clone()],
            })
            .collect(),
        "healthver" => raw::healthver(path)?
            .into_iter()
            .map(|h| {
                let gold = ["Supports", "Refutes", "Neutral"]
                    .iter()
                    .position(|l| *l == h.label)
                    .expect("checked by the reader");
                TaskItem {
                    id: format!("healthver:{}", h.id),
                    task,
                    split: split_key(&h.claim.trim().to_lowercase()),
                    context: format!("Evidence: {}", h.evidence.trim()),
                    query: healthver_query(h.claim.trim()),
                    target: choice(&["supports", "refutes", "neutral"], gold),
                    doc_ids: vec![],
                    texts: vec![h.evidence.clone(), h.claim.clone()],
                }
            })
            .collect(),
        "covidqa" => raw::covidqa(path)?
            .into_iter()
            .map(|q| {
                let passage = select_passage(&q.context, &q.question, 1600);
                TaskItem {
                    id: format!("covidqa:{}", q.id),
                    task,
                    split: split_key(&q.document_id),
                    context: passage,
                    query: covidqa_query(&q.question),
                    target: Target::Text {
                        references: q.answers.iter().map(|a| a.trim().to_string()).collect(),
                        max_tokens: 48,
                    },
                    doc_ids: vec![],
                    texts: vec![q.question.clone(), q.context.clone()],
                }
            })
            .collect(),
        "meqsum" => raw::meqsum(path)?
            .into_iter()
            .map(|m| TaskItem {
                id: format!("meqsum:{}", m.file),
                task,
                split: split_key(&m.file),
                context: m.chq.trim().to_string(),
                query: MEQSUM_QUERY.into(),
                target: Target::Text {
                    references: vec![m.summary.trim().to_string()],
                    max_tokens: 64,
                },
                doc_ids: vec![],
                texts: vec![m.chq.clone(), m.summary.clone()],
            })
            .collect(),
        _ => unreachable!("bc5cdr and chemprot have their own loaders"),
    })
}

fn bc5cdr(path: &Path, split: impl Fn(&str) -> Split) -> Result<Vec<TaskItem>> {
    Ok(raw::pubtator_file(path)?
        .into_iter()
        .map(|d| {
            let text = d.text();
            let gold = d
                .mentions
                .iter()
                .filter(|m| m.kind == "Chemical" || m.kind == "Disease")
                .map(|m| (m.start, m.end, m.kind.clone()))
                .collect();
            TaskItem {
                id: format!("bc5cdr:{}", d.pmid),
                task: "bc5cdr",
                split: split(&d.pmid),
                context: text.clone(),
                query: NER_QUERY.into(),
                target: Target::Entities {
                    text: text.clone(),
                    types: vec!["Chemical".into(), "Disease".into()],
                    gold,
                },
                doc_ids: vec![d.pmid.clone()],
                texts: vec![text],
            }
        })
        .collect())
}

fn chemprot(path: &Path, part: &str, split: impl Fn(&str) -> Split) -> Result<Vec<TaskItem>> {
    raw::chemprot(path)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let gold = CHEMPROT_LABELS
                .iter()
                .position(|l| *l == c.label)
                .ok_or_else(|| DataError::Format {
                    file: path.display().to_string(),
                    line: i + 1,
                    reason: format!("unknown ChemProt label `{}`", c.label),
                })?;
            let key = format!("{part}:{}", i + 1);
            Ok(TaskItem {
                id: format!("chemprot:{key}"),
                task: "chemprot",
                split: split(&key),
                context: c.text.clone(),
                query: chemprot_query(),
                target: Target::Choice {
                    options: CHEMPROT_LABELS.iter().map(|s| s.to_string()).collect(),
                    gold,
                },
                doc_ids: vec![],
                texts: vec![c.text.clone()],
            })
        })
        .collect()
}

/// Picks the sentences of `article` most related to `question` (content words weighted by their
/// rarity in the article), up to `max_chars`, kept in article order. Articles run to thousands of
/// tokens; the passage must fit a small model's context. The answer is never consulted.
pub fn select_passage(article: &str, question: &str, max_chars: usize) -> String {
    let sentences = split_sentences(article);
    if article.len() <= max_chars {
        return article.trim().to_string();
    }
    let words = |s: &str| -> Vec<String> {
        crate::overlap::normalized_words(s)
            .into_iter()
            .filter(|w| w.len() > 2 && !STOPWORDS.contains(&w.as_str()))
            .collect()
    };
    let sentence_words: Vec<Vec<String>> = sentences.iter().map(|s| words(s)).collect();
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    for ws in &sentence_words {
        let mut seen: Vec<&str> = ws.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for w in seen {
            *df.entry(w).or_default() += 1;
        }
    }
    let n = sentences.len() as f64;
    let mut question_words = words(question);
    question_words.sort();
    question_words.dedup();
    let scores: Vec<f64> = sentence_words
        .iter()
        .map(|ws| {
            question_words
                .iter()
                .filter(|q| ws.contains(q))
                .map(|q| {
                    (n / (1.0 + *df.get(q.as_str()).unwrap_or(&0) as f64))
                        .ln()
                        .max(0.0)
                        + 0.1
                })
                .sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut chosen = vec![false; sentences.len()];
    let mut used = 0;
    for &i in &order {
        // Each chosen sentence brings its neighbours: answers often sit next to the match.
        for j in [i, i + 1, i.wrapping_sub(1)] {
            if j < sentences.len() && !chosen[j] && used + sentences[j].len() < max_chars {
                chosen[j] = true;
                used += sentences[j].len() + 1;
            }
        }
        if used + 40 > max_chars {
            break;
        }
    }
    let mut out = String::new();
    let mut last: Option<usize> = None;
    for (i, s) in sentences.iter().enumerate().filter(|(i, _)| chosen[*i]) {
        if let Some(l) = last {
            out.push_str(if l + 1 == i { " " } else { " ... " });
        }
        out.push_str(s);
        last = Some(i);
    }
    out
}

fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' {
            if !current.trim().is_empty() {
                out.push(current.trim().to_string());
            }
            current.clear();
            continue;
        }
        current.push(c);
        let next = chars.get(i + 1).copied();
        if matches!(c, '.' | '?' | '!')
            && next.is_none_or(char::is_whitespace)
            && current.len() > 20
        {
            out.push(current.trim().to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

const STOPWORDS: [&str; 40] = [
    "the", "and", "for", "are", "was", "were", "what", "which", "who", "whom", "how", "why",
    "when", "where", "does", "did", "has", "have", "had", "that", "this", "with", "from", "into",
    "than", "then", "they", "their", "there", "been", "being", "can", "could", "would", "should",
    "not", "its", "his", "her", "about",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passage_selection_keeps_the_matching_sentences_in_order() {
        let filler = "Unrelated background sentence about something else entirely. ".repeat(40);
        let article = format!(
            "{filler}The incubation period of the virus was estimated at 5.2 days. It varied by age.\n{filler}"
        );
        let passage = select_passage(&article, "What was the estimated incubation period?", 300);
        assert!(passage.len() <= 300 + 10, "{}", passage.len());
        assert!(passage.contains("incubation period of the virus was estimated at 5.2 days"));
        // A short article is kept whole.
        assert_eq!(select_passage("Short. Text.", "q", 300), "Short. Text.");
    }

    #[test]
    fn splits_are_deterministic_and_disjoint() {
        let a = split_by("123", "hoc", 25, 10);
        assert_eq!(a, split_by("123", "hoc", 25, 10));
        let counts = (0..2000).fold([0usize; 3], |mut c, i| {
            c[split_by(&i.to_string(), "hoc", 25, 10) as usize] += 1;
            c
        });
        // Roughly 65 % rest, 10 % train, 25 % dev.
        assert!(
            (400..600).contains(&counts[Split::Dev as usize]),
            "{counts:?}"
        );
        assert!(
            (130..270).contains(&counts[Split::Train as usize]),
            "{counts:?}"
        );
    }

    #[test]
    fn rotated_options_put_every_text_at_every_letter() {
        let texts = ["Aspirin", "Heparin", "Warfarin", "Insulin"];
        let lettered: Vec<(String, String)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (char::from(b'A' + i as u8).to_string(), t.to_string()))
            .collect();
        let item = TaskItem {
            id: "medqa:1".into(),
            task: "medqa",
            split: Split::Dev,
            context: String::new(),
            query: mcq_query(
                "Which one is an anticoagulant given by injection?",
                &lettered,
            ),
            target: Target::Choice {
                options: lettered.iter().map(|(l, t)| format!("{l}. {t}")).collect(),
                gold: 1,
            },
            doc_ids: Vec::new(),
            texts: Vec::new(),
        };
        let (same, order) = rotate_options(&item, 0).unwrap();
        assert_eq!(same.query, item.query);
        assert_eq!(order, [0, 1, 2, 3]);
        let (rotated, order) = rotate_options(&item, 1).unwrap();
        assert_eq!(order, [1, 2, 3, 0]);
        assert_eq!(
            rotated.query,
            "Which one is an anticoagulant given by injection?\n\nA. Heparin\nB. Warfarin\nC. Insulin\nD. Aspirin\n\nAnswer with the letter of the correct option, then its text."
        );
        let Target::Choice { options, gold } = &rotated.target else {
            unreachable!()
        };
        assert_eq!((options[0].as_str(), *gold), ("A. Heparin", 0));
        // Over the four rotations each text sits at each letter once.
        let mut seen = [[false; 4]; 4];
        for shift in 0..4 {
            let (_, order) = rotate_options(&item, shift).unwrap();
            for (letter, text) in order.into_iter().enumerate() {
                seen[text][letter] = true;
            }
        }
        assert!(seen.iter().flatten().all(|&x| x));
        // The user-worded variant holds the same block inside other words: rotated in place.
        let user = user_variant(&item);
        let (rotated_user, _) = rotate_options(&user, 1).unwrap();
        assert_eq!(
            rotated_user.query,
            user.query.replace(
                "A. Aspirin\nB. Heparin\nC. Warfarin\nD. Insulin",
                "A. Heparin\nB. Warfarin\nC. Insulin\nD. Aspirin"
            )
        );
        assert_ne!(rotated_user.query, user.query);
        // A query not laid out by mcq_query is left alone.
        let mut other = item.clone();
        other.query = "Free text".into();
        assert!(rotate_options(&other, 1).is_none());
    }

    #[test]
    fn unknown_task_lists_the_tasks() {
        let e = task_info("nope").unwrap_err().to_string();
        assert!(e.contains("unknown task `nope`") && e.contains("meqsum"));
    }
}
