//! The twelve basic medical skills of SA-MDKIF, each built from its raw sources into unified
//! records with several query phrasings (chosen by a hash of the record id, so the output is
//! deterministic). Records that share a document id or a word 13-gram with an evaluation item
//! are dropped and counted.

use std::collections::BTreeMap;
use std::path::Path;

use crate::raw::{self, HALLMARKS};

/// `(NAME, requests::NAME)`: a request bank with the name records are tagged with.
macro_rules! bank {
    ($name:ident) => {
        (stringify!($name), crate::requests::$name)
    };
}
use crate::tasks::{self, Split, CHEMPROT_LABELS};
use crate::{stable_hash, Record, Result};

/// A skill: id, title, one-line description, and its sources (dataset, license).
pub struct SkillInfo {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub sources: &'static [(&'static str, &'static str)],
}

const MEDQUAD: (&str, &str) = ("MedQuAD (abachaa/MedQuAD)", "CC BY 4.0");
const MEDQA: (&str, &str) = ("MedQA (xk-huang/medagents-benchmark)", "MIT");
const MEDMCQA: (&str, &str) = ("MedMCQA (xk-huang/medagents-benchmark)", "MIT");
const MTS: (&str, &str) = ("MTS-Dialog (abachaa/MTS-Dialog)", "CC BY 4.0");
const HOC: (&str, &str) = ("HoC (sb895/Hallmarks-of-Cancer)", "GPL-3.0");
const PUBMEDQA: (&str, &str) = ("PubMedQA (pubmedqa/pubmedqa)", "MIT");
const RQE: (&str, &str) = ("MEDIQA 2019 RQE (abachaa/MEDIQA2019)", "not stated");
const BC5CDR: (&str, &str) = ("BC5CDR (CDR corpus, BioCreative V)", "public domain (NCBI)");
const NCBI: (&str, &str) = (
    "NCBI-disease (spyysalo/ncbi-disease)",
    "public domain (NCBI)",
);
const CHEMPROT: (&str, &str) = ("ChemProt (allenai/scibert copy)", "Apache-2.0 (repo-wide)");

/// The twelve skills, in pack order.
pub const SKILLS: [SkillInfo; 12] = [
    SkillInfo { id: "qa", title: "Question answering", description: "Answers consumer and professional medical questions in plain prose.", sources: &[MEDQUAD] },
    SkillInfo { id: "mcqa", title: "Multiple-choice QA", description: "Picks the correct option of a medical exam question and answers with its letter and text.", sources: &[MEDQA, MEDMCQA] },
    SkillInfo { id: "mc", title: "Medical conversation", description: "Continues a doctor-patient dialogue with the doctor's next turn.", sources: &[MTS] },
    SkillInfo { id: "mldc", title: "Multi-label document classification", description: "Assigns the hallmarks of cancer an abstract discusses.", sources: &[HOC] },
    SkillInfo { id: "mrc", title: "Reading comprehension", description: "Answers a research question from an abstract: yes, no or maybe, with the reasoning.", sources: &[PUBMEDQA] },
    SkillInfo { id: "nli", title: "Inference", description: "Decides whether one medical question or statement entails another.", sources: &[RQE] },
    SkillInfo { id: "ts", title: "Summarization", description: "Summarizes a doctor-patient conversation into a section of the clinical note.", sources: &[MTS] },
    SkillInfo { id: "ner", title: "Entity recognition", description: "Lists the chemicals and diseases a text mentions.", sources: &[BC5CDR, NCBI] },
    SkillInfo { id: "re", title: "Relation extraction", description: "Finds relations stated in a text: chemical-induced diseases, chemical-gene interactions.", sources: &[BC5CDR, CHEMPROT] },
    SkillInfo { id: "ea", title: "Entity attributes", description: "Gives the type, category and semantic group of a medical entity.", sources: &[MEDQUAD, BC5CDR, NCBI] },
    SkillInfo { id: "es", title: "Entity synonymy", description: "Gives other names of a medical entity and tells whether two names denote the same one.", sources: &[MEDQUAD, BC5CDR, NCBI] },
    SkillInfo { id: "er", title: "Entity relations", description: "States known relations between entities without a text: which chemicals induce which diseases, how a chemical acts on a gene.", sources: &[BC5CDR, CHEMPROT] },
];

/// A record before contamination checks and splitting.
pub(crate) struct Draft {
    pub record: Record,
    /// Records of one group (a document, a dialogue) always land in the same split.
    pub group: String,
    pub doc_ids: Vec<String>,
    /// The query template the record was phrased with (for the data card's phrasing count).
    pub phrasing: String,
}

fn pick<'a>(id: &str, choices: &[&'a str]) -> &'a str {
    choices[(stable_hash(id) % choices.len() as u64) as usize]
}

// The arguments are the record's fields in order, plus its phrasing and group.
#[allow(clippy::too_many_arguments)]
fn draft(
    phrasing: &str,
    skill: &str,
    source: &str,
    id: String,
    group: String,
    context: String,
    query: String,
    output: String,
) -> Draft {
    Draft {
        phrasing: phrasing.to_string(),
        record: Record {
            id,
            skill: skill.into(),
            source: source.into(),
            context,
            query,
            output,
            phrasing: String::new(),
        },
        group,
        doc_ids: Vec::new(),
    }
}

/// Half of the records (by a hash of the id) are rendered as a user would type them: a request
/// from `bank` (slots filled from `slots`) in one message with the record's text before or after
/// it, with or without a label, instead of the template query. The output stays, so the skill
/// answers users' words in its format and routers learn what users write.
fn user_style(mut d: Draft, bank: (&str, &[&str]), slots: &[(&str, &str)]) -> Draft {
    let h = stable_hash(&format!("user:{}", d.record.id));
    if h % 2 == 1 {
        return d;
    }
    let (name, requests) = bank;
    let index = ((h / 2) % requests.len() as u64) as usize;
    let mut request = requests[index].to_string();
    for (slot, value) in slots {
        request = request.replace(&format!("{{{slot}}}"), value);
    }
    let context = std::mem::take(&mut d.record.context);
    let context = context.trim();
    d.record.query = if context.is_empty() {
        request
    } else {
        let before = request.contains("above");
        let after = request.contains("below");
        const LABELS: [&str; 4] = ["Text", "Abstract", "Passage", "Input"];
        match (h / 64) % 4 {
            _ if before && !after => format!("{context}\n\n{request}"),
            0 if !after => format!("{context}\n\n{request}"),
            1 => format!("{request}\n\n{context}"),
            2 => format!("{request}\n{}: {context}", LABELS[((h / 256) % 4) as usize]),
            _ if context.len() < 400 => format!("{request} {context}"),
            _ => format!("{request}\n\n{context}"),
        }
    };
    d.phrasing = format!("user request ({name})");
    d.record.phrasing = format!("{name}#{index}");
    d
}

/// Cuts `text` at a sentence end at or before `max` bytes (or at `max` on a char boundary).
fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    match head.rfind(". ") {
        Some(i) if i > max / 2 => head[..=i].to_string(),
        _ => head.trim_end().to_string(),
    }
}

/// The raw inputs the skill builders read, loaded once.
pub(crate) struct RawSet {
    pub medquad: Vec<raw::MedQuadDoc>,
    pub mts: Vec<raw::MtsItem>,
    pub rqe: Vec<raw::RqeItem>,
    pub cdr_train: Vec<crate::pubtator::Document>,
    pub ncbi: Vec<(String, crate::pubtator::Document)>,
    pub chemprot_train: Vec<raw::ChemProtItem>,
    /// PubMedQA's long answers by PMID (the MRC skill's reasoning).
    pub pubmedqa_long_answers: BTreeMap<String, String>,
    /// Task items by task (all splits).
    pub task_items: BTreeMap<&'static str, Vec<tasks::TaskItem>>,
}

impl RawSet {
    pub fn load(dir: &Path) -> Result<Self> {
        let mut task_items = BTreeMap::new();
        for task in tasks::TASKS {
            task_items.insert(task, tasks::load(task, dir)?);
        }
        let mut mts = raw::mts_dialog(&dir.join("mts-dialog/MTS-Dialog-TrainingSet.csv"))?;
        for mut m in raw::mts_dialog(&dir.join("mts-dialog/MTS-Dialog-ValidationSet.csv"))? {
            m.id = format!("valid-{}", m.id);
            mts.push(m);
        }
        let mut rqe =
            raw::mediqa_rqe(&dir.join("mediqa-rqe/MEDIQA2019-Task2-RQE-TrainingSet-AMIA2016.xml"))?;
        for mut r in raw::mediqa_rqe(
            &dir.join("mediqa-rqe/MEDIQA2019-Task2-RQE-ValidationSet-AMIA2016.xml"),
        )? {
            r.pid = format!("valid-{}", r.pid);
            rqe.push(r);
        }
        let mut ncbi = Vec::new();
        for (part, file) in [
            ("train", "NCBItrainset_corpus.txt"),
            ("dev", "NCBIdevelopset_corpus.txt"),
        ] {
            for d in raw::pubtator_file(&dir.join("ncbi-disease").join(file))? {
                // The training file repeats PMID 8528200 (a known upstream duplicate).
                if ncbi
                    .iter()
                    .any(|(_, seen): &(String, crate::pubtator::Document)| seen.pmid == d.pmid)
                {
                    continue;
                }
                ncbi.push((part.to_string(), d));
            }
        }
        Ok(RawSet {
            medquad: raw::medquad(&dir.join("medquad"))?,
            mts,
            rqe,
            cdr_train: raw::pubtator_file(&dir.join("bc5cdr/CDR_TrainingSet.PubTator.txt"))?,
            ncbi,
            chemprot_train: raw::chemprot(&dir.join("chemprot/train.txt"))?,
            pubmedqa_long_answers: raw::pubmedqa(&dir.join("pubmedqa/pqal_trainval.json"))?
                .into_iter()
                .map(|q| (q.pmid, q.long_answer))
                .collect(),
            task_items,
        })
    }

    fn task_non_dev(&self, task: &str) -> impl Iterator<Item = &tasks::TaskItem> {
        self.task_items[task]
            .iter()
            .filter(|i| i.split != Split::Dev)
    }
}

/// Builds the drafts of one skill.
pub(crate) fn build_skill(skill: &str, raw: &RawSet) -> Vec<Draft> {
    match skill {
        "qa" => qa(raw),
        "mcqa" => mcqa(raw),
        "mc" => mc(raw),
        "mldc" => mldc(raw),
        "mrc" => mrc(raw),
        "nli" => nli(raw),
        "ts" => ts(raw),
        "ner" => ner(raw),
        "re" => re(raw),
        "ea" => ea(raw),
        "es" => es(raw),
        "er" => er(raw),
        _ => unreachable!("skill ids come from SKILLS"),
    }
}

fn qa(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for doc in &raw.medquad {
        for (i, (_, _, question, answer)) in doc.pairs.iter().enumerate() {
            if answer.is_empty() || question.is_empty() {
                continue;
            }
            let id = format!("qa:medquad:{}:{}:{}", doc.folder, doc.id, i + 1);
            let template = pick(
                &id,
                &[
                    "{q}",
                    "Answer this medical question: {q}",
                    "{q} Please answer in plain language.",
                    "Question: {q}\nGive a clear, factual answer.",
                ],
            );
            let d = draft(
                template,
                "qa",
                "medquad",
                id,
                format!("medquad:{}", doc.id),
                String::new(),
                template.replace("{q}", question),
                clip(answer, 1200),
            );
            out.push(user_style(d, bank!(QA_QUESTION), &[("question", question)]));
        }
    }
    out
}

fn mcqa(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for task in ["medqa", "medmcqa"] {
        for item in raw.task_non_dev(task) {
            let tasks::Target::Choice { options, gold } = &item.target else {
                continue;
            };
            let id = format!("mcqa:{}", item.id);
            // The task's own query is one phrasing; the others reorder its instruction.
            let (question_and_options, instruction) =
                item.query.rsplit_once("\n\n").unwrap_or((&item.query, ""));
            // The correct option moves to a letter drawn uniformly per record: the sources'
            // answers lean to A (33 % A, 19 % D), and a small model learns the lean instead of
            // the content (a skill trained on it picked A for 90-96 % of dev questions).
            let (question_and_options, options, gold) =
                balance_answer_letter(question_and_options, options, *gold, &id);
            let variant = format!("variant {}", stable_hash(&id) % 3);
            let query = match stable_hash(&id) % 3 {
                0 if instruction.is_empty() => question_and_options.clone(),
                0 => format!("{question_and_options}\n\n{instruction}"),
                1 => format!("Choose the correct answer.\n\n{question_and_options}\n\nReply with the option letter and its text."),
                _ => format!("{question_and_options}\n\nWhich option is correct? Give its letter and text."),
            };
            let mut d = draft(
                &variant,
                "mcqa",
                task,
                id,
                item.id.clone(),
                String::new(),
                query,
                options[gold].clone(),
            );
            d.doc_ids = item.doc_ids.clone();
            out.push(user_style(
                d,
                bank!(MCQA),
                &[("question_and_options", &question_and_options)],
            ));
        }
    }
    out
}

/// `question_and_options` (a question, a blank line, then one `L. text` line per option) with
/// the correct option swapped with the one at a letter drawn from `key`, so that over many
/// records every letter is the answer about equally often; returns the text, the relettered
/// options and the new gold index. Unchanged when the options block is not laid out so.
pub(crate) fn balance_answer_letter(
    question_and_options: &str,
    options: &[String],
    gold: usize,
    key: &str,
) -> (String, Vec<String>, usize) {
    let letter = |i: usize| char::from(b'A' + i as u8);
    let texts: Option<Vec<&str>> = options
        .iter()
        .enumerate()
        .map(|(i, o)| o.strip_prefix(&format!("{}. ", letter(i))))
        .collect();
    let block = options.join("\n");
    let (Some(mut texts), Some(question)) = (texts, question_and_options.strip_suffix(&block))
    else {
        return (question_and_options.to_string(), options.to_vec(), gold);
    };
    if options.len() > 26 || gold >= options.len() {
        return (question_and_options.to_string(), options.to_vec(), gold);
    }
    let target = (stable_hash(&format!("{key}:answer letter")) % options.len() as u64) as usize;
    texts.swap(gold, target);
    let options: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}. {t}", letter(i)))
        .collect();
    (format!("{question}{}", options.join("\n")), options, target)
}

/// Dialogue turns `(speaker, text)` of an MTS-Dialog dialogue.
fn turns(dialogue: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in dialogue.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(':') {
            Some((speaker, text))
                if speaker.len() <= 20 && !speaker.contains(' ')
                    || matches!(speaker, "Guest_family" | "Guest_clinician") =>
            {
                out.push((speaker.to_string(), text.trim().to_string()));
            }
            _ => match out.last_mut() {
                Some(last) => {
                    last.1.push(' ');
                    last.1.push_str(line);
                }
                None => out.push(("Speaker".into(), line.to_string())),
            },
        }
    }
    out
}

fn mc(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for item in &raw.mts {
        let turns = turns(&item.dialogue);
        let doctor_turns: Vec<usize> = (1..turns.len())
            .filter(|&i| turns[i].0 == "Doctor" && turns[i].1.len() >= 15)
            .collect();
        // Up to two cut points per dialogue, chosen by hash.
        let mut cuts: Vec<usize> = Vec::new();
        for k in 0..2 {
            if doctor_turns.is_empty() {
                break;
            }
            let c = doctor_turns[(stable_hash(&format!("mc:{}:{k}", item.id))
                % doctor_turns.len() as u64) as usize];
            if !cuts.contains(&c) {
                cuts.push(c);
            }
        }
        for cut in cuts {
            let mut lines: Vec<String> = turns[..cut]
                .iter()
                .map(|(s, t)| format!("{s}: {t}"))
                .collect();
            // Keep the latest turns within ~1500 characters.
            while lines.len() > 1 && lines.iter().map(|l| l.len() + 1).sum::<usize>() > 1500 {
                lines.remove(0);
            }
            let id = format!("mc:mts:{}:{cut}", item.id);
            let template = pick(
                &id,
                &[
                    "Continue the conversation as the doctor.",
                    "What should the doctor say next?",
                    "Write the doctor's next reply in this consultation.",
                ],
            );
            let query = template;
            let d = draft(
                template,
                "mc",
                "mts-dialog",
                id,
                format!("mts:{}", item.id),
                lines.join("\n"),
                query.into(),
                turns[cut].1.clone(),
            );
            out.push(user_style(d, bank!(MC_NEXT_TURN), &[]));
        }
    }
    out
}

fn mldc(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for item in raw.task_non_dev("hoc") {
        let tasks::Target::MultiLabel {
            labels,
            queries,
            gold,
        } = &item.target
        else {
            continue;
        };
        let pmid = &item.doc_ids[0];
        let list_id = format!("mldc:hoc:{pmid}");
        let names: Vec<&str> = gold.iter().map(|&g| labels[g].as_str()).collect();
        let answer = tasks::join_or_none(&names, "; ");
        let list_variant = format!("list variant {}", stable_hash(&list_id) % 2);
        let list_query = match stable_hash(&list_id) % 2 {
            0 => item.query.clone(),
            _ => format!("Classify this abstract by the hallmarks of cancer it discusses ({}). Reply with the matching hallmarks separated by semicolons, or none.", HALLMARKS.join("; ")),
        };
        let all_hallmarks = HALLMARKS.join("; ");
        let mut records = vec![user_style(
            draft(
                &list_variant,
                "mldc",
                "hoc",
                list_id.clone(),
                format!("hoc:{pmid}"),
                item.context.clone(),
                list_query,
                answer,
            ),
            bank!(MLDC_LIST),
            &[("hallmarks", &all_hallmarks)],
        )];
        // One yes/no question for a hallmark it has and one for a hallmark it lacks.
        let yes_no = |label: usize, answer: &str| {
            user_style(
                draft(
                    "hallmark yes/no",
                    "mldc",
                    "hoc",
                    format!("{list_id}:{answer}:{label}"),
                    format!("hoc:{pmid}"),
                    item.context.clone(),
                    queries[label].clone(),
                    answer.into(),
                ),
                bank!(MLDC_ONE),
                &[("hallmark", &labels[label])],
            )
        };
        let h = stable_hash(&list_id) as usize;
        if !gold.is_empty() {
            records.push(yes_no(gold[h % gold.len()], "yes"));
        }
        let negatives: Vec<usize> = (0..labels.len()).filter(|l| !gold.contains(l)).collect();
        records.push(yes_no(negatives[(h / 7) % negatives.len()], "no"));
        for mut r in records {
            r.doc_ids = item.doc_ids.clone();
            out.push(r);
        }
    }
    out
}

fn mrc(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for item in raw.task_non_dev("pubmedqa") {
        let tasks::Target::Choice { options, gold } = &item.target else {
            continue;
        };
        let question = tasks::query_content(item);
        let id = format!("mrc:{}", item.id);
        let variant = format!("variant {}", stable_hash(&id) % 3);
        let query = match stable_hash(&id) % 3 {
            0 => item.query.clone(),
            1 => format!(
                "Based on the abstract: {question} Answer yes, no or maybe, then explain briefly."
            ),
            _ => format!(
                "Question: {question}\nReply yes, no or maybe, with the reason from the text."
            ),
        };
        let long_answer = raw
            .pubmedqa_long_answers
            .get(&item.doc_ids[0])
            .cloned()
            .unwrap_or_default();
        let output = if long_answer.is_empty() {
            options[*gold].clone()
        } else {
            format!("{}. {}", options[*gold], long_answer)
        };
        let mut d = draft(
            &variant,
            "mrc",
            "pubmedqa",
            id,
            item.id.clone(),
            item.context.clone(),
            query,
            output,
        );
        d.doc_ids = item.doc_ids.clone();
        out.push(user_style(d, bank!(MRC), &[("question", question)]));
    }
    out
}

fn nli(raw: &RawSet) -> Vec<Draft> {
    raw.rqe
        .iter()
        .map(|r| {
            let id = format!("nli:rqe:{}", r.pid);
            let template = pick(&id, &[
                "Does answering question B also answer question A? Answer yes or no.",
                "Would an answer to question B fully or partly answer question A? Reply yes or no.",
                "Is question A entailed by question B, so that B's answer serves A? Answer yes or no.",
            ]);
        let query = template;
            let d = draft(template, "nli", "mediqa-rqe", id.clone(), id, format!("Question A: {}\nQuestion B: {}", r.chq, r.faq), query.into(), if r.entails { "yes" } else { "no" }.into());
            user_style(d, bank!(NLI_RQE), &[])
        })
        .collect()
}

fn section_name(code: &str) -> &str {
    match code {
        "GENHX" => "history of present illness",
        "FAM/SOCHX" => "family and social history",
        "PASTMEDICALHX" => "past medical history",
        "CC" => "chief complaint",
        "PASTSURGICAL" => "past surgical history",
        "ALLERGY" => "allergies",
        "ROS" => "review of systems",
        "MEDICATIONS" => "medications",
        "ASSESSMENT" => "assessment",
        "EXAM" => "examination",
        "DIAGNOSIS" => "diagnosis",
        "DISPOSITION" => "disposition",
        "PLAN" => "plan",
        "EDCOURSE" => "emergency department course",
        "IMMUNIZATIONS" => "immunizations",
        "IMAGING" => "imaging",
        "GYNHX" => "gynecologic history",
        "PROCEDURES" => "procedures",
        "OTHER_HISTORY" => "other history",
        "LABS" => "laboratory results",
        other => other,
    }
}

fn ts(raw: &RawSet) -> Vec<Draft> {
    raw.mts
        .iter()
        .filter(|m| !m.section_text.trim().is_empty())
        .map(|m| {
            let id = format!("ts:mts:{}", m.id);
            let section = section_name(&m.section_header);
            let template = pick(
                &id,
                &[
                    "Summarize the {s} section of the clinical note from this conversation.",
                    "Write the {s} section of the visit note based on the dialogue.",
                    "From this doctor-patient conversation, summarize the {s}.",
                ],
            );
            let query = template.replace("{s}", section);
            let d = draft(
                template,
                "ts",
                "mts-dialog",
                id,
                format!("mts:{}", m.id),
                clip(&m.dialogue, 3000),
                query,
                clip(&m.section_text, 1200),
            );
            user_style(d, bank!(TS_SECTION), &[("section", section)])
        })
        .collect()
}

/// Unique mention texts of `kinds`, in order of first appearance.
fn unique_mentions<'a>(doc: &'a crate::pubtator::Document, kinds: &[&str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for m in doc
        .mentions
        .iter()
        .filter(|m| kinds.contains(&m.kind.as_str()))
    {
        if !out.iter().any(|x| x.eq_ignore_ascii_case(&m.text)) {
            out.push(&m.text);
        }
    }
    out
}

fn ner(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for doc in &raw.cdr_train {
        let id = format!("ner:bc5cdr:{}", doc.pmid);
        let template = pick(&id, &[
            tasks::NER_QUERY,
            "Extract every chemical and every disease named in the passage. Reply with a line \"Chemicals: ...\" and a line \"Diseases: ...\", items separated by semicolons (none if there are none).",
            "Which chemicals and which diseases does this abstract mention? Answer as \"Chemicals: a; b\" then \"Diseases: c; d\" (none when empty).",
        ]);
        let query = template;
        let output = tasks::ner_answer(
            &unique_mentions(doc, &["Chemical"]),
            &unique_mentions(doc, &["Disease"]),
        );
        let mut d = draft(
            template,
            "ner",
            "bc5cdr",
            id,
            format!("pmid:{}", doc.pmid),
            doc.text(),
            query.into(),
            output,
        );
        d.doc_ids = vec![doc.pmid.clone()];
        out.push(user_style(d, bank!(NER_CHEMICALS_AND_DISEASES), &[]));
    }
    for (part, doc) in &raw.ncbi {
        let id = format!("ner:ncbi:{part}:{}", doc.pmid);
        let template = pick(&id, &[
            "List the diseases mentioned in the text, as one line \"Diseases: a; b\" (write none when there are none).",
            "Which diseases does this abstract name? Reply \"Diseases: \" followed by the names separated by semicolons.",
        ]);
        let query = template;
        let diseases = unique_mentions(
            doc,
            &[
                "SpecificDisease",
                "DiseaseClass",
                "Modifier",
                "CompositeMention",
            ],
        );
        let output = format!("Diseases: {}", tasks::join_or_none(&diseases, "; "));
        let mut d = draft(
            template,
            "ner",
            "ncbi-disease",
            id,
            format!("pmid:{}", doc.pmid),
            doc.text(),
            query.into(),
            output,
        );
        d.doc_ids = vec![doc.pmid.clone()];
        out.push(user_style(d, bank!(NER_DISEASES), &[]));
    }
    out
}

/// The most frequent surface form of each MeSH id in `docs`, lowercase ties broken by order.
fn names_by_id<'a>(
    docs: impl Iterator<Item = &'a crate::pubtator::Document>,
) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for doc in docs {
        for m in &doc.mentions {
            if m.ids.len() == 1 && m.ids[0] != "-1" {
                *counts
                    .entry(m.ids[0].clone())
                    .or_default()
                    .entry(m.text.clone())
                    .or_default() += 1;
            }
        }
    }
    counts
        .into_iter()
        .map(|(id, forms)| {
            let best = forms
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(f, _)| f.clone())
                .unwrap_or_default();
            (id, best)
        })
        .collect()
}

/// The first surface form of `id` in `doc`.
fn name_in(doc: &crate::pubtator::Document, id: &str) -> Option<String> {
    doc.mentions
        .iter()
        .find(|m| m.ids.iter().any(|i| i == id))
        .map(|m| m.text.clone())
}

fn re(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for doc in &raw.cdr_train {
        let id = format!("re:bc5cdr:{}", doc.pmid);
        let pairs: Vec<String> = doc
            .relations
            .iter()
            .filter(|(r, _, _)| r == "CID")
            .filter_map(|(_, c, d)| Some(format!("{} -> {}", name_in(doc, c)?, name_in(doc, d)?)))
            .collect();
        let template = pick(&id, &[
            "Which chemicals in the text induce which diseases? List each pair as \"chemical -> disease\", one per line, or none.",
            "Find the chemical-induced disease relations stated in this abstract. One \"chemical -> disease\" pair per line; none if there are none.",
        ]);
        let query = template;
        let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
        let output = tasks::join_or_none(&pairs, "\n");
        let mut d = draft(
            template,
            "re",
            "bc5cdr",
            id,
            format!("pmid:{}", doc.pmid),
            doc.text(),
            query.into(),
            output,
        );
        d.doc_ids = vec![doc.pmid.clone()];
        out.push(user_style(d, bank!(RE_CID), &[]));
    }
    let canonical = tasks::chemprot_query();
    let labels = CHEMPROT_LABELS.join(", ");
    for (i, item) in raw.chemprot_train.iter().enumerate() {
        let id = format!("re:chemprot:train:{}", i + 1);
        let variant = format!("chemprot variant {}", stable_hash(&id) % 2);
        let query = match stable_hash(&id) % 2 {
            0 => canonical.clone(),
            _ => format!("How does the chemical in << >> act on the gene in [[ ]] according to the sentence? Reply with one label: {}.", CHEMPROT_LABELS.join(", ")),
        };
        let d = draft(
            &variant,
            "re",
            "chemprot",
            id.clone(),
            id,
            item.text.clone(),
            query,
            item.label.clone(),
        );
        out.push(user_style(d, bank!(RE_CHEMPROT), &[("labels", &labels)]));
    }
    out
}

fn semantic_type_name(code: &str) -> &str {
    match code {
        "T047" => "Disease or Syndrome",
        "T019" => "Congenital Abnormality",
        "T033" => "Finding",
        "T191" => "Neoplastic Process",
        "T046" => "Pathologic Function",
        "T184" => "Sign or Symptom",
        "T037" => "Injury or Poisoning",
        "T048" => "Mental or Behavioral Dysfunction",
        "T190" => "Anatomical Abnormality",
        "T020" => "Acquired Abnormality",
        "T049" => "Cell or Molecular Dysfunction",
        "T005" => "Virus",
        "T007" => "Bacterium",
        "T034" => "Laboratory or Test Result",
        "T028" => "Gene or Genome",
        other => other,
    }
}

/// The sentence of `text` around byte offset `at`.
fn sentence_at(text: &str, at: usize) -> &str {
    let at = at.min(text.len());
    let start = text[..at].rfind(". ").map(|i| i + 2).unwrap_or(0);
    let end = text[at..]
        .find(". ")
        .map(|i| at + i + 1)
        .unwrap_or(text.len());
    text[start..end].trim()
}

fn ea(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for doc in &raw.medquad {
        if doc.focus.is_empty() || (doc.category.is_empty() && doc.semantic_types.is_empty()) {
            continue;
        }
        let id = format!("ea:medquad:{}:{}", doc.folder, doc.id);
        let mut lines = Vec::new();
        if !doc.category.is_empty() {
            lines.push(format!("Category: {}", doc.category));
        }
        if !doc.semantic_types.is_empty() {
            let names: Vec<&str> = doc
                .semantic_types
                .iter()
                .map(|t| semantic_type_name(t))
                .collect();
            lines.push(format!("Semantic types: {}", names.join("; ")));
        }
        if !doc.semantic_group.is_empty() {
            lines.push(format!("Semantic group: {}", doc.semantic_group));
        }
        let template = pick(&id, &[
            "What kind of entity is \"{e}\"? Give its category, UMLS semantic types and semantic group.",
            "Describe the entity type of \"{e}\": category, semantic types, semantic group.",
        ]);
        let query = template.replace("{e}", &doc.focus);
        let d = draft(
            template,
            "ea",
            "medquad",
            id,
            format!("medquad:{}", doc.id),
            String::new(),
            query,
            lines.join("\n"),
        );
        out.push(user_style(
            d,
            bank!(EA_ENTITY_TYPE),
            &[("entity", &doc.focus)],
        ));
    }
    let ncbi_kind = |k: &str| match k {
        "SpecificDisease" => "a specific disease",
        "DiseaseClass" => "a disease class",
        "Modifier" => "a modifier (a disease name used to describe something else)",
        _ => "a composite mention (several diseases named together)",
    };
    let mention_records = |source: &str,
                           doc: &crate::pubtator::Document,
                           part: &str,
                           out: &mut Vec<Draft>| {
        let text = doc.text();
        let n = doc.mentions.len();
        for k in 0..n.min(3) {
            let m = &doc.mentions
                [(stable_hash(&format!("ea:{source}:{}:{k}", doc.pmid)) as usize + k * 7) % n];
            let id = format!("ea:{source}:{part}{}:{}", doc.pmid, m.start);
            if out.iter().rev().take(3).any(|d| d.record.id == id) {
                continue;
            }
            let (query, output) = if source == "bc5cdr" {
                (
                    format!(
                        "In this sentence, is \"{}\" a chemical or a disease?",
                        m.text
                    ),
                    m.kind.to_lowercase(),
                )
            } else {
                (
                    format!("In this sentence, what kind of disease mention is \"{}\": a specific disease, a disease class, a modifier, or a composite mention?", m.text),
                    ncbi_kind(&m.kind).to_string(),
                )
            };
            let mut d = draft(
                &format!("{source} mention type"),
                "ea",
                source,
                id,
                format!("pmid:{}", doc.pmid),
                sentence_at(&text, m.start).to_string(),
                query,
                output,
            );
            d.doc_ids = vec![doc.pmid.clone()];
            let bank = if source == "bc5cdr" {
                bank!(EA_CHEMICAL_OR_DISEASE)
            } else {
                bank!(EA_DISEASE_MENTION_KIND)
            };
            out.push(user_style(d, bank, &[("entity", &m.text)]));
        }
    };
    for doc in &raw.cdr_train {
        mention_records("bc5cdr", doc, "", &mut out);
    }
    for (part, doc) in &raw.ncbi {
        mention_records("ncbi-disease", doc, &format!("{part}:"), &mut out);
    }
    out
}

fn es(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    for doc in &raw.medquad {
        let synonyms: Vec<&String> = doc
            .synonyms
            .iter()
            .filter(|s| !s.eq_ignore_ascii_case(&doc.focus))
            .collect();
        if doc.focus.is_empty() || synonyms.is_empty() {
            continue;
        }
        let id = format!("es:medquad:{}:{}", doc.folder, doc.id);
        let group = format!("medquad:{}", doc.id);
        let template = pick(
            &id,
            &[
                "What are other names for {e}?",
                "List synonyms of \"{e}\".",
                "{e} is also known as what?",
            ],
        );
        let query = template.replace("{e}", &doc.focus);
        let d = draft(
            template,
            "es",
            "medquad",
            id.clone(),
            group.clone(),
            String::new(),
            query,
            synonyms
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        );
        out.push(user_style(
            d,
            bank!(ES_OTHER_NAMES),
            &[("entity", &doc.focus)],
        ));
        let s = synonyms[(stable_hash(&id) % synonyms.len() as u64) as usize];
        let d = draft(
            "reverse synonym",
            "es",
            "medquad",
            format!("{id}:reverse"),
            group,
            String::new(),
            format!("\"{s}\" is another name for which condition or substance?"),
            doc.focus.clone(),
        );
        out.push(user_style(d, bank!(ES_MAIN_NAME), &[("entity", s)]));
    }
    // Surface forms sharing a MeSH / OMIM id across the NER corpora (training documents only).
    let mut forms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut doc_of_form: BTreeMap<String, String> = BTreeMap::new();
    let docs = raw.cdr_train.iter().chain(raw.ncbi.iter().map(|(_, d)| d));
    for doc in docs {
        for m in &doc.mentions {
            if m.ids.len() != 1 || m.ids[0] == "-1" {
                continue;
            }
            let list = forms.entry(m.ids[0].clone()).or_default();
            if !list.iter().any(|f| f.eq_ignore_ascii_case(&m.text)) {
                list.push(m.text.clone());
                doc_of_form.insert(format!("{}\t{}", m.ids[0], m.text), doc.pmid.clone());
            }
        }
    }
    let ids: Vec<&String> = forms.keys().collect();
    for (n, (mesh, list)) in forms.iter().enumerate() {
        if list.len() < 2 {
            continue;
        }
        let id = format!("es:mesh:{mesh}");
        let first = &list[(stable_hash(&id) % list.len() as u64) as usize];
        let others: Vec<&str> = list
            .iter()
            .filter(|f| *f != first)
            .map(String::as_str)
            .collect();
        let pmids: Vec<String> = list
            .iter()
            .filter_map(|f| doc_of_form.get(&format!("{mesh}\t{f}")).cloned())
            .collect();
        let mut d = draft(
            "other names",
            "es",
            "bc5cdr+ncbi",
            id.clone(),
            id.clone(),
            String::new(),
            format!("Give other names used for \"{first}\"."),
            others.join("; "),
        );
        d.doc_ids = pmids.clone();
        out.push(user_style(d, bank!(ES_OTHER_NAMES), &[("entity", first)]));
        // A same-entity question with a positive and a negative pair.
        let other = others[(stable_hash(&format!("{id}:pos")) % others.len() as u64) as usize];
        let mut pos = draft(
            "same entity",
            "es",
            "bc5cdr+ncbi",
            format!("{id}:same"),
            id.clone(),
            String::new(),
            format!("Do \"{first}\" and \"{other}\" refer to the same entity? Answer yes or no."),
            "yes".into(),
        );
        pos.doc_ids = pmids.clone();
        out.push(user_style(
            pos,
            bank!(ES_SAME_ENTITY),
            &[("entity", first), ("other", other)],
        ));
        let neighbour =
            ids[(n + 1 + (stable_hash(&format!("{id}:neg")) % 50) as usize) % ids.len()];
        if neighbour != mesh {
            let other = &forms[neighbour][0];
            let mut neg = draft(
                "same entity",
                "es",
                "bc5cdr+ncbi",
                format!("{id}:different"),
                id.clone(),
                String::new(),
                format!(
                    "Do \"{first}\" and \"{other}\" refer to the same entity? Answer yes or no."
                ),
                "no".into(),
            );
            neg.doc_ids = pmids;
            out.push(user_style(
                neg,
                bank!(ES_SAME_ENTITY),
                &[("entity", first), ("other", other)],
            ));
        }
    }
    out
}

fn er(raw: &RawSet) -> Vec<Draft> {
    let mut out = Vec::new();
    let names = names_by_id(raw.cdr_train.iter());
    // Known chemical-induced-disease pairs, and co-mentioned pairs never related.
    let mut positive: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut co_mentioned: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for doc in &raw.cdr_train {
        for (r, c, d) in &doc.relations {
            if r == "CID" {
                positive
                    .entry((c.clone(), d.clone()))
                    .or_default()
                    .push(doc.pmid.clone());
            }
        }
        let ids_of = |kind: &str| {
            let mut v: Vec<&String> = doc
                .mentions
                .iter()
                .filter(|m| m.kind == kind && m.ids.len() == 1 && m.ids[0] != "-1")
                .map(|m| &m.ids[0])
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for c in ids_of("Chemical") {
            for d in ids_of("Disease") {
                co_mentioned
                    .entry((c.clone(), d.clone()))
                    .or_default()
                    .push(doc.pmid.clone());
            }
        }
    }
    let name = |id: &str| names.get(id).cloned();
    let negatives: Vec<_> = co_mentioned
        .iter()
        .filter(|(k, _)| !positive.contains_key(*k))
        .collect();
    // As many negatives as positives, spread over the list by hash.
    let want = positive.len().min(negatives.len());
    let mut chosen: Vec<usize> = (0..negatives.len()).collect();
    chosen.sort_by_key(|&i| stable_hash(&format!("er:neg:{i}")));
    chosen.truncate(want);
    chosen.sort_unstable();
    let pairs = positive
        .iter()
        .map(|p| (p, true))
        .chain(chosen.into_iter().map(|i| (negatives[i], false)));
    for (((c, d), pmids), induces) in pairs {
        let (Some(cn), Some(dn)) = (name(c), name(d)) else {
            continue;
        };
        let id = format!("er:{}:{c}:{d}", if induces { "cid" } else { "nocid" });
        let template = pick(
            &id,
            &[
                "Can {c} induce {d}? Answer yes or no.",
                "Is {d} a known adverse effect of {c}? Answer yes or no.",
            ],
        );
        let query = template.replace("{c}", &cn).replace("{d}", &dn);
        let mut rec = draft(
            template,
            "er",
            "bc5cdr",
            id.clone(),
            format!("er:chem:{c}"),
            String::new(),
            query,
            if induces { "yes" } else { "no" }.into(),
        );
        rec.doc_ids = pmids.clone();
        out.push(user_style(
            rec,
            bank!(ER_CID_YES_NO),
            &[("chemical", &cn), ("disease", &dn)],
        ));
    }
    // Which diseases a chemical induces, as a list.
    let mut by_chemical: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    for (c, d) in positive.keys() {
        if let Some(dn) = name(d) {
            by_chemical.entry(c).or_default().push(dn);
        }
    }
    for (c, diseases) in by_chemical {
        let Some(cn) = name(c) else { continue };
        let id = format!("er:list:{c}");
        let pmids: Vec<String> = positive
            .iter()
            .filter(|((pc, _), _)| pc == c)
            .flat_map(|(_, p)| p.clone())
            .collect();
        let mut rec = draft(
            "induced diseases",
            "er",
            "bc5cdr",
            id,
            format!("er:chem:{c}"),
            String::new(),
            format!("Which diseases or adverse effects can {cn} induce?"),
            diseases.join("; "),
        );
        rec.doc_ids = pmids;
        out.push(user_style(rec, bank!(ER_CID_LIST), &[("chemical", &cn)]));
    }
    let labels = CHEMPROT_LABELS.join(", ");
    let mut seen: BTreeMap<(String, String), ()> = BTreeMap::new();
    for (i, item) in raw.chemprot_train.iter().enumerate() {
        let (chemical, gene) = item.entities();
        if chemical.is_empty()
            || gene.is_empty()
            || seen
                .insert((chemical.to_lowercase(), gene.to_lowercase()), ())
                .is_some()
        {
            continue;
        }
        let id = format!("er:chemprot:train:{}", i + 1);
        let d = draft("chemprot pair", "er", "chemprot", id.clone(), id, String::new(), format!("How does the chemical {chemical} act on the gene or protein {gene}? Answer with one of: {labels}."), item.label.clone());
        out.push(user_style(
            d,
            bank!(ER_CHEMPROT),
            &[
                ("chemical", &chemical),
                ("gene", &gene),
                ("labels", &labels),
            ],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::balance_answer_letter;

    fn options() -> Vec<String> {
        ["A. Aspirin", "B. Heparin", "C. Warfarin", "D. Insulin"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn the_answer_moves_with_its_text_and_the_letters_follow() {
        let text = "Which drug is an insulin?\n\nA. Aspirin\nB. Heparin\nC. Warfarin\nD. Insulin";
        let (mut seen, n) = ([0usize; 4], 400);
        for k in 0..n {
            let (query, relettered, gold) =
                balance_answer_letter(text, &options(), 3, &format!("mcqa:{k}"));
            assert_eq!(
                relettered[gold],
                format!("{}. Insulin", char::from(b'A' + gold as u8))
            );
            assert!(query.starts_with("Which drug is an insulin?\n\n"));
            assert!(query.ends_with(&relettered.join("\n")));
            // A swap: the other texts keep their places.
            let mut texts: Vec<&str> = relettered.iter().map(|o| &o[3..]).collect();
            texts.sort();
            assert_eq!(texts, ["Aspirin", "Heparin", "Insulin", "Warfarin"]);
            if gold != 3 {
                assert_eq!(
                    relettered[3],
                    format!("D. {}", ["Aspirin", "Heparin", "Warfarin"][gold])
                );
            }
            seen[gold] += 1;
        }
        // Each letter is the answer for 100 ± 30 of 400 records.
        assert!(seen.iter().all(|&c| (70..=130).contains(&c)), "{seen:?}");
    }

    #[test]
    fn an_options_block_laid_out_otherwise_is_left_alone() {
        let text = "Question?\n\nA) Aspirin\nB) Heparin";
        let options = vec!["A) Aspirin".to_string(), "B) Heparin".to_string()];
        let (query, same, gold) = balance_answer_letter(text, &options, 1, "k");
        assert_eq!((query.as_str(), same, gold), (text, options, 1));
    }
}
