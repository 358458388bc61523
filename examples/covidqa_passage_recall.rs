//! How often the passage `skillpack eval` gives the model for a COVID-QA question (sentences of
//! the article chosen by their overlap with the question, ≤ 1600 characters) still contains a
//! gold answer: the ceiling on exact match for any model.
//!
//!     cargo run --release --example covidqa_passage_recall -- ../shared/data/raw

use skillpack_data::tasks::{self, Split, Target};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/raw".into());
    for split in [Split::Dev, Split::Train] {
        let items = tasks::select(tasks::load("covidqa", raw.as_ref())?, split);
        let contained = items
            .iter()
            .filter(|i| match &i.target {
                Target::Text { references, .. } => references
                    .iter()
                    .any(|r| i.context.to_lowercase().contains(&r.to_lowercase())),
                _ => false,
            })
            .count();
        let chars: usize = items.iter().map(|i| i.context.len()).sum();
        println!(
            "{}: {contained}/{} passages contain a gold answer ({:.1} %), mean passage {} characters",
            split.as_str(),
            items.len(),
            100.0 * contained as f64 / items.len().max(1) as f64,
            chars / items.len().max(1)
        );
    }
    Ok(())
}
