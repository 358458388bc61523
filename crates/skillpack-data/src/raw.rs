//! Readers for the raw formats of the shared datasets (see the data folder's MANIFEST.md). Each
//! returns typed items in the file's own order; errors name the file (and line or record).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::{pubtator, DataError, Result};

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })
}

fn format_error(path: &Path, line: usize, reason: impl Into<String>) -> DataError {
    DataError::Format {
        file: path.display().to_string(),
        line,
        reason: reason.into(),
    }
}

/// Reads a JSONL file into `T`, naming the line of a bad record.
fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    read(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format_error(path, i + 1, e.to_string())))
        .collect()
}

/// Reads a CSV file with a header into rows keyed by column name.
fn read_csv(path: &Path, columns: &[&str]) -> Result<Vec<Vec<String>>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| format_error(path, 0, e.to_string()))?;
    let header = reader
        .headers()
        .map_err(|e| format_error(path, 1, e.to_string()))?
        .clone();
    let index: Vec<usize> = columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h.trim_start_matches('\u{feff}') == *c)
                .ok_or_else(|| format_error(path, 1, format!("missing column `{c}`")))
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
            format_error(path, line, e.to_string())
        })?;
        rows.push(
            index
                .iter()
                .map(|&i| record.get(i).unwrap_or_default().to_string())
                .collect(),
        );
    }
    Ok(rows)
}

/// One PubMedQA item (`pqal_trainval.json`).
#[derive(Debug, Clone)]
pub struct PubMedQaItem {
    pub pmid: String,
    pub question: String,
    pub contexts: Vec<String>,
    /// `yes`, `no` or `maybe`.
    pub decision: String,
    pub long_answer: String,
}

/// Reads PubMedQA's `{PMID: {QUESTION, CONTEXTS, final_decision, LONG_ANSWER, ...}}`.
pub fn pubmedqa(path: &Path) -> Result<Vec<PubMedQaItem>> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(rename = "QUESTION")]
        question: String,
        #[serde(rename = "CONTEXTS")]
        contexts: Vec<String>,
        final_decision: String,
        #[serde(rename = "LONG_ANSWER", default)]
        long_answer: String,
    }
    // serde_json keeps key order only with its `preserve_order` feature; sort by PMID instead
    // so the order never depends on it.
    let map: BTreeMap<String, Raw> = serde_json::from_str(&read(path)?)
        .map_err(|e| format_error(path, e.line(), e.to_string()))?;
    map.into_iter()
        .map(|(pmid, r)| {
            if !matches!(r.final_decision.as_str(), "yes" | "no" | "maybe") {
                return Err(format_error(
                    path,
                    0,
                    format!("PMID {pmid}: final_decision `{}`", r.final_decision),
                ));
            }
            Ok(PubMedQaItem {
                pmid,
                question: r.question,
                contexts: r.contexts,
                decision: r.final_decision,
                long_answer: r.long_answer,
            })
        })
        .collect()
}

/// One four-option multiple-choice question (MedQA, MedMCQA from medagents-benchmark).
#[derive(Debug, Clone)]
pub struct McqItem {
    pub id: String,
    pub question: String,
    /// `(letter, text)` in letter order.
    pub options: Vec<(String, String)>,
    /// Index of the correct option.
    pub answer: usize,
}

/// Reads medagents-benchmark JSONL (`question`, `options{A..D}`, `answer_idx`, `realidx`).
pub fn mcq(path: &Path) -> Result<Vec<McqItem>> {
    #[derive(Deserialize)]
    struct Raw {
        question: String,
        realidx: serde_json::Value,
        options: BTreeMap<String, String>,
        answer_idx: String,
    }
    let raw: Vec<Raw> = read_jsonl(path)?;
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let options: Vec<(String, String)> = r.options.into_iter().collect();
            let answer = options
                .iter()
                .position(|(l, _)| *l == r.answer_idx)
                .ok_or_else(|| {
                    format_error(
                        path,
                        i + 1,
                        format!("answer_idx `{}` is not an option", r.answer_idx),
                    )
                })?;
            let id = match r.realidx {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            };
            Ok(McqItem {
                id,
                question: r.question,
                options,
                answer,
            })
        })
        .collect()
}

/// One MedQuAD document: a focus, its annotations and question-answer pairs.
#[derive(Debug, Clone, Default)]
pub struct MedQuadDoc {
    /// The XML file's stem (unique within its folder).
    pub id: String,
    pub folder: String,
    pub focus: String,
    pub category: String,
    pub semantic_types: Vec<String>,
    pub semantic_group: String,
    pub synonyms: Vec<String>,
    /// `(qid, qtype, question, answer)`; answer may be empty (folders 10-12).
    pub pairs: Vec<(String, String, String, String)>,
}

/// Reads every MedQuAD XML file under `dir` (folders and files in sorted order).
pub fn medquad(dir: &Path) -> Result<Vec<MedQuadDoc>> {
    let mut docs = Vec::new();
    for folder in sorted_entries(dir)? {
        if !folder.is_dir() {
            continue;
        }
        let folder_name = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for file in sorted_entries(&folder)? {
            if file.extension().and_then(|e| e.to_str()) != Some("xml") {
                continue;
            }
            let text = read(&file)?;
            let xml = roxmltree::Document::parse(&text)
                .map_err(|e| format_error(&file, e.pos().row as usize, e.to_string()))?;
            let root = xml.root_element();
            let text_of = |node: Option<roxmltree::Node>| {
                node.and_then(|n| n.text())
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let find = |name: &str| root.descendants().find(|n| n.has_tag_name(name));
            let all = |name: &str| {
                root.descendants()
                    .filter(|n| n.has_tag_name(name))
                    .filter_map(|n| n.text())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            };
            let pairs = root
                .descendants()
                .filter(|n| n.has_tag_name("QAPair"))
                .map(|p| {
                    let q = p.children().find(|n| n.has_tag_name("Question"));
                    let a = p.children().find(|n| n.has_tag_name("Answer"));
                    (
                        q.and_then(|q| q.attribute("qid"))
                            .unwrap_or_default()
                            .to_string(),
                        q.and_then(|q| q.attribute("qtype"))
                            .unwrap_or_default()
                            .to_string(),
                        text_of(q),
                        text_of(a),
                    )
                })
                .collect();
            docs.push(MedQuadDoc {
                // The file name: `id` attributes repeat across a document's parts.
                id: file
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                folder: folder_name.clone(),
                focus: text_of(find("Focus")),
                category: text_of(find("Category")),
                semantic_types: all("SemanticType"),
                semantic_group: text_of(find("SemanticGroup")),
                synonyms: all("Synonym"),
                pairs,
            });
        }
    }
    Ok(docs)
}

fn sorted_entries(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let io = |source| DataError::Io {
        path: dir.into(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

/// One MeQSum row: a consumer health question and its one-question summary.
#[derive(Debug, Clone)]
pub struct MeqSumItem {
    pub file: String,
    pub chq: String,
    pub summary: String,
}

/// Reads `meqsum.csv` (File, CHQ, Summary).
pub fn meqsum(path: &Path) -> Result<Vec<MeqSumItem>> {
    Ok(read_csv(path, &["File", "CHQ", "Summary"])?
        .into_iter()
        .map(|mut r| MeqSumItem {
            summary: r.pop().unwrap_or_default(),
            chq: r.pop().unwrap_or_default(),
            file: r.pop().unwrap_or_default(),
        })
        .collect())
}

/// One ChemProt example: a sentence with `<< chemical >>` and `[[ gene ]]` marked.
#[derive(Debug, Clone)]
pub struct ChemProtItem {
    pub text: String,
    pub label: String,
}

impl ChemProtItem {
    /// The marked chemical and gene.
    pub fn entities(&self) -> (String, String) {
        let between = |open: &str, close: &str| {
            self.text
                .split_once(open)
                .and_then(|(_, rest)| rest.split_once(close))
                .map(|(e, _)| e.trim().to_string())
                .unwrap_or_default()
        };
        (between("<<", ">>"), between("[[", "]]"))
    }
}

/// Reads ChemProt JSONL (`text`, `label`).
pub fn chemprot(path: &Path) -> Result<Vec<ChemProtItem>> {
    #[derive(Deserialize)]
    struct Raw {
        text: String,
        label: String,
    }
    Ok(read_jsonl::<Raw>(path)?
        .into_iter()
        .map(|r| ChemProtItem {
            text: r.text,
            label: r.label,
        })
        .collect())
}

/// One MEDIQA-RQE pair: does answering the FAQ answer the consumer question?
#[derive(Debug, Clone)]
pub struct RqeItem {
    pub pid: String,
    pub chq: String,
    pub faq: String,
    pub entails: bool,
}

/// Reads a MEDIQA 2019 RQE XML file.
pub fn mediqa_rqe(path: &Path) -> Result<Vec<RqeItem>> {
    let text = read(path)?;
    let xml = roxmltree::Document::parse(&text)
        .map_err(|e| format_error(path, e.pos().row as usize, e.to_string()))?;
    xml.root_element()
        .children()
        .filter(|n| n.has_tag_name("pair"))
        .map(|p| {
            let child = |name: &str| {
                p.children()
                    .find(|n| n.has_tag_name(name))
                    .and_then(|n| n.text())
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            let value = p.attribute("value").unwrap_or_default();
            let row = text[..p.range().start].matches('\n').count() + 1;
            Ok(RqeItem {
                pid: p.attribute("pid").unwrap_or_default().to_string(),
                chq: child("chq"),
                faq: child("faq"),
                entails: match value {
                    "true" => true,
                    "false" => false,
                    v => return Err(format_error(path, row, format!("pair value `{v}`"))),
                },
            })
        })
        .collect()
}

/// One HealthVer evidence–claim pair.
#[derive(Debug, Clone)]
pub struct HealthVerItem {
    pub id: String,
    pub evidence: String,
    pub claim: String,
    /// `Supports`, `Refutes` or `Neutral`.
    pub label: String,
}

/// Reads `healthver_dev.csv` (id, evidence, claim, label).
pub fn healthver(path: &Path) -> Result<Vec<HealthVerItem>> {
    read_csv(path, &["id", "evidence", "claim", "label"])?
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let [id, evidence, claim, label]: [String; 4] =
                r.try_into().expect("four columns requested");
            if !matches!(label.as_str(), "Supports" | "Refutes" | "Neutral") {
                return Err(format_error(path, i + 2, format!("label `{label}`")));
            }
            Ok(HealthVerItem {
                id,
                evidence,
                claim,
                label,
            })
        })
        .collect()
}

/// One COVID-QA question with its article.
#[derive(Debug, Clone)]
pub struct CovidQaItem {
    pub id: String,
    pub document_id: String,
    pub question: String,
    pub context: String,
    pub answers: Vec<String>,
}

/// Reads SQuAD-style COVID-QA JSON.
pub fn covidqa(path: &Path) -> Result<Vec<CovidQaItem>> {
    #[derive(Deserialize)]
    struct File {
        data: Vec<Article>,
    }
    #[derive(Deserialize)]
    struct Article {
        paragraphs: Vec<Paragraph>,
    }
    #[derive(Deserialize)]
    struct Paragraph {
        context: String,
        #[serde(default)]
        document_id: serde_json::Value,
        qas: Vec<Qa>,
    }
    #[derive(Deserialize)]
    struct Qa {
        question: String,
        id: serde_json::Value,
        answers: Vec<Answer>,
    }
    #[derive(Deserialize)]
    struct Answer {
        text: String,
    }
    let file: File = serde_json::from_str(&read(path)?)
        .map_err(|e| format_error(path, e.line(), e.to_string()))?;
    let value_string = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut items = Vec::new();
    for article in file.data {
        for p in article.paragraphs {
            for qa in p.qas {
                items.push(CovidQaItem {
                    id: value_string(&qa.id),
                    document_id: value_string(&p.document_id),
                    question: qa.question,
                    context: p.context.clone(),
                    answers: qa.answers.into_iter().map(|a| a.text).collect(),
                });
            }
        }
    }
    Ok(items)
}

/// One MTS-Dialog row: a doctor–patient dialogue and one section of its clinical note.
#[derive(Debug, Clone)]
pub struct MtsItem {
    pub id: String,
    pub section_header: String,
    pub section_text: String,
    pub dialogue: String,
}

/// Reads an MTS-Dialog CSV (ID, section_header, section_text, dialogue).
pub fn mts_dialog(path: &Path) -> Result<Vec<MtsItem>> {
    Ok(
        read_csv(path, &["ID", "section_header", "section_text", "dialogue"])?
            .into_iter()
            .map(|r| {
                let [id, section_header, section_text, dialogue]: [String; 4] =
                    r.try_into().expect("four columns requested");
                MtsItem {
                    id,
                    section_header,
                    section_text,
                    dialogue,
                }
            })
            .collect(),
    )
}

/// The ten hallmarks of cancer (HoC's top level), in the order the task reports them.
pub const HALLMARKS: [&str; 10] = [
    "Sustaining proliferative signaling",
    "Evading growth suppressors",
    "Resisting cell death",
    "Enabling replicative immortality",
    "Inducing angiogenesis",
    "Activating invasion and metastasis",
    "Genomic instability and mutation",
    "Tumor promoting inflammation",
    "Cellular energetics",
    "Avoiding immune destruction",
];

/// One HoC abstract with its document-level hallmarks (union over sentences, top level).
#[derive(Debug, Clone)]
pub struct HocItem {
    pub pmid: String,
    pub text: String,
    /// Indices into [`HALLMARKS`], sorted.
    pub labels: Vec<usize>,
}

/// Reads HoC's `text/<PMID>.txt` and `labels/<PMID>.txt` pairs.
pub fn hoc(dir: &Path) -> Result<Vec<HocItem>> {
    let mut items = Vec::new();
    for path in sorted_entries(&dir.join("text"))? {
        let Some(pmid) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        let label_path = dir.join("labels").join(format!("{pmid}.txt"));
        let text = read(&path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let mut labels = Vec::new();
        for field in read(&label_path)?.split('<') {
            for label in field.split("AND") {
                let top = label.split("--").next().unwrap_or_default().trim();
                if top.is_empty() || top == "NULL" {
                    continue;
                }
                let index = HALLMARKS
                    .iter()
                    .position(|h| h.eq_ignore_ascii_case(top))
                    .ok_or_else(|| {
                        format_error(&label_path, 1, format!("unknown hallmark `{top}`"))
                    })?;
                if !labels.contains(&index) {
                    labels.push(index);
                }
            }
        }
        labels.sort_unstable();
        items.push(HocItem { pmid, text, labels });
    }
    Ok(items)
}

/// Reads a PubTator file (BC5CDR, NCBI-disease).
pub fn pubtator_file(path: &Path) -> Result<Vec<pubtator::Document>> {
    pubtator::parse(&read(path)?, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_with_newlines_and_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        std::fs::write(&p, "File,CHQ,Summary\nx,\"line one\nline two\",Short?\n").unwrap();
        let rows = meqsum(&p).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].chq, "line one\nline two");
        std::fs::write(&p, "File,Summary\nx,y\n").unwrap();
        let e = meqsum(&p).unwrap_err().to_string();
        assert!(
            e.contains("m.csv") && e.contains("missing column `CHQ`"),
            "{e}"
        );
    }

    #[test]
    fn rqe_xml_and_hoc_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rqe.xml");
        std::fs::write(&p, "<?xml version=\"1.0\"?>\n<R>\n<pair pid=\"1\" value=\"true\">\n<chq>A?</chq>\n<faq>B?</faq>\n</pair>\n<pair pid=\"2\" value=\"maybe\"><chq>C</chq><faq>D</faq></pair>\n</R>").unwrap();
        let e = mediqa_rqe(&p).unwrap_err().to_string();
        assert!(
            e.contains("rqe.xml:7") && e.contains("pair value `maybe`"),
            "{e}"
        );

        std::fs::create_dir_all(dir.path().join("hoc/text")).unwrap();
        std::fs::create_dir_all(dir.path().join("hoc/labels")).unwrap();
        std::fs::write(dir.path().join("hoc/text/1.txt"), "First .\nSecond .\n").unwrap();
        std::fs::write(
            dir.path().join("hoc/labels/1.txt"),
            "<Resisting cell death--Apoptosis ANDSustaining proliferative signaling<NULL",
        )
        .unwrap();
        let items = hoc(&dir.path().join("hoc")).unwrap();
        assert_eq!(items[0].text, "First . Second .");
        assert_eq!(items[0].labels, vec![0, 2]);
    }
}
