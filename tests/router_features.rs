//! The router's `mean-hidden` features from llama.cpp (embeddings context, mean pooling) agree
//! with candle's (the training side) on the fixture prompts; `mean-embedding` features equal
//! the mean of candle's dequantized embedding rows.

mod common;

use candle_core::{DType, Device};
use common::*;
use skillpack_route::{FeatureExtractor, FeatureKind};

#[test]
fn llama_cpp_and_candle_features_agree() {
    let path = default_model();
    let model = load_model(&path);
    let llama = skillpack_train::Llama::new(
        skillpack_train::ModelWeights::load(&path, &Device::Cpu, DType::F32).unwrap(),
    );
    let prompts = prompt_ids();
    let candle_hidden = skillpack_train::mean_hidden(
        &llama,
        &prompts
            .iter()
            .map(|p| p.iter().map(|&t| t as u32).collect())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut hidden =
        FeatureExtractor::new(&model, &path, FeatureKind::MeanHidden, Some(2)).unwrap();
    let mut embedding =
        FeatureExtractor::new(&model, &path, FeatureKind::MeanEmbedding, None).unwrap();
    let embed = &llama.weights.embed;
    for (i, ids) in prompts.iter().enumerate() {
        let ours = hidden.features(ids).unwrap();
        assert_eq!(ours.len(), model.n_embd());
        let c = cosine(&ours, &candle_hidden[i]);
        println!("prompt{i}: mean-hidden cosine llama.cpp vs candle {c:.5}");
        assert!(c >= 0.99, "prompt{i}: cosine {c}");
        let e = embedding.features(ids).unwrap();
        let rows = embed
            .index_select(
                &candle_core::Tensor::new(
                    ids.iter().map(|&t| t as u32).collect::<Vec<_>>().as_slice(),
                    &Device::Cpu,
                )
                .unwrap(),
                0,
            )
            .unwrap()
            .mean(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let ce = cosine(&e, &rows);
        println!("prompt{i}: mean-embedding cosine vs candle {ce:.6}");
        // The table is kept in f16.
        assert!(ce >= 0.9999, "prompt{i}: {ce}");
        // The two kinds are different features.
        assert!(cosine(&ours, &e) < 0.9);
    }
    // Features of a different prompt differ.
    let a = hidden.features(&prompts[0]).unwrap();
    let b = hidden.features(&prompts[1]).unwrap();
    assert!(cosine(&a, &b) < 0.999);
}

/// Segment features pool the user's first line, last line and whole message, found inside the
/// chat template; checked against candle's embedding rows of the same lines tokenized alone,
/// and the hashed words by hand.
#[test]
fn segment_features_pool_the_first_and_last_lines() {
    let path = default_model();
    let model = load_model(&path);
    let llama = skillpack_train::Llama::new(
        skillpack_train::ModelWeights::load(&path, &Device::Cpu, DType::F32).unwrap(),
    );
    let mean_rows = |text: &str| -> Vec<f32> {
        let ids: Vec<u32> = model
            .tokenize(text, false, false)
            .unwrap()
            .iter()
            .map(|&t| t as u32)
            .collect();
        llama
            .weights
            .embed
            .index_select(
                &candle_core::Tensor::new(ids.as_slice(), &Device::Cpu).unwrap(),
                0,
            )
            .unwrap()
            .mean(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (first, middle, last) = (
        "Summarize this visit for the chart",
        "Doctor: Any chest pain?",
        "Patient: Only when I climb stairs.",
    );
    let message = format!("{first}\n{middle}\n{last}");
    let prompt = skillpack_eval::harness::prompt_tokens(&model, "", &message).unwrap();
    let mut seg = FeatureExtractor::new(&model, &path, FeatureKind::SegmentLexical, None).unwrap();
    let f = seg.features(&prompt).unwrap();
    let d = model.n_embd();
    assert_eq!(f.len(), FeatureKind::SegmentLexical.width(d));
    let c_first = cosine(&f[..d], &mean_rows(first));
    let c_last = cosine(&f[d..2 * d], &mean_rows(last));
    let c_all = cosine(&f[2 * d..3 * d], &mean_rows(&message));
    println!("segment cosines vs candle: first {c_first:.6}, last {c_last:.6}, all {c_all:.6}");
    assert!(c_first >= 0.9999 && c_last >= 0.9999 && c_all >= 0.999);
    // The words of the first and last lines only, hashed: 12 distinct unigrams and bigrams
    // ("summarize this visit for the chart" 6 + 5, "patient only when i climb stairs" 6 + 5,
    // no collisions among these 22 here), each 1/sqrt(22).
    let lexical = &f[3 * d..];
    let expected = skillpack_route::features::lexical_features(&format!("{first}\n{last}"));
    assert_eq!(lexical, expected.as_slice());
    let ones = expected.iter().filter(|v| **v > 0.0).count();
    assert_eq!(ones, 22);
    assert!(expected
        .iter()
        .all(|v| *v == 0.0 || (v - 1.0 / 22f32.sqrt()).abs() < 1e-6));
    // The middle line is not in the lexical part: "chest" is absent.
    let chest = skillpack_route::features::lexical_features("chest");
    let bucket = chest.iter().position(|v| *v > 0.0).unwrap();
    assert_eq!(lexical[bucket], 0.0);
}
