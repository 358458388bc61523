//! The PubTator format (BC5CDR, NCBI-disease): title and abstract lines, mention lines, and
//! relation lines, one blank line between documents.

use crate::{DataError, Result};

/// One annotated mention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// `Chemical`, `Disease`, `SpecificDisease`, ...
    pub kind: String,
    /// MeSH / OMIM identifiers (`|`-joined in the source; `-1` when none).
    pub ids: Vec<String>,
}

/// One document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub pmid: String,
    pub title: String,
    pub abstract_text: String,
    pub mentions: Vec<Mention>,
    /// `(relation, id1, id2)`, e.g. `("CID", chemical MeSH, disease MeSH)`.
    pub relations: Vec<(String, String, String)>,
}

impl Document {
    /// Title and abstract as one text (PubTator offsets index into it).
    pub fn text(&self) -> String {
        format!("{} {}", self.title, self.abstract_text)
    }
}

/// Parses a PubTator file; `name` is used in error messages.
pub fn parse(text: &str, name: &str) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut current: Option<Document> = None;
    for (lineno, line) in text.lines().enumerate() {
        let err = |reason: &str| DataError::Format {
            file: name.into(),
            line: lineno + 1,
            reason: reason.into(),
        };
        if line.trim().is_empty() {
            if let Some(d) = current.take() {
                docs.push(d);
            }
            continue;
        }
        if let Some((pmid, rest)) = line.split_once('|') {
            if let Some(title) = rest.strip_prefix("t|") {
                if let Some(d) = current.take() {
                    docs.push(d);
                }
                current = Some(Document {
                    pmid: pmid.into(),
                    title: title.into(),
                    abstract_text: String::new(),
                    mentions: Vec::new(),
                    relations: Vec::new(),
                });
                continue;
            }
            if let Some(abs) = rest.strip_prefix("a|") {
                let d = current
                    .as_mut()
                    .ok_or_else(|| err("abstract before title"))?;
                d.abstract_text = abs.into();
                continue;
            }
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let d = current
            .as_mut()
            .ok_or_else(|| err("annotation before title"))?;
        match fields.as_slice() {
            [_, rel, a, b] if !rel.chars().all(|c| c.is_ascii_digit()) => {
                d.relations
                    .push((rel.to_string(), a.to_string(), b.to_string()));
            }
            [_, start, end, text, kind, ids, ..] => {
                d.mentions.push(Mention {
                    start: start.parse().map_err(|_| err("bad start offset"))?,
                    end: end.parse().map_err(|_| err("bad end offset"))?,
                    text: text.to_string(),
                    kind: kind.to_string(),
                    ids: ids.split('|').map(String::from).collect(),
                });
            }
            [_, start, end, text, kind] => {
                d.mentions.push(Mention {
                    start: start.parse().map_err(|_| err("bad start offset"))?,
                    end: end.parse().map_err(|_| err("bad end offset"))?,
                    text: text.to_string(),
                    kind: kind.to_string(),
                    ids: Vec::new(),
                });
            }
            _ => return Err(err("unrecognised line")),
        }
    }
    if let Some(d) = current.take() {
        docs.push(d);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_mentions_and_relations() {
        let text = "1|t|Aspirin causes ulcers.\n1|a|In rats.\n1\t0\t7\tAspirin\tChemical\tD001241\n1\t15\t21\tulcers\tDisease\tD014456\n1\tCID\tD001241\tD014456\n\n2|t|None.\n2|a|\n";
        let docs = parse(text, "x").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].mentions.len(), 2);
        assert_eq!(&docs[0].text()[0..7], "Aspirin");
        assert_eq!(
            docs[0].relations,
            vec![("CID".into(), "D001241".into(), "D014456".into())]
        );
        assert!(parse("1\t0\t7\tx\tChemical\tD1\n", "bad")
            .unwrap_err()
            .to_string()
            .contains("bad:1"));
    }
}
