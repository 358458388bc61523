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
