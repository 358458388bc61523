//! Inputs the fuzzers (`scripts/fuzz.sh`) once crashed on, kept in `fuzz/regressions/<target>/`
//! and checked here at the library level, each with what must happen instead. `fuzz.sh` also
//! replays them through the fuzz targets themselves.

mod common;

use std::path::{Path, PathBuf};

use common::repo;

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = repo().join("fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    files
}

/// Splits a two-part fuzz input (little-endian u32 length, first part, second part).
fn unframe(data: &[u8]) -> (&[u8], &[u8]) {
    let len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    data[4..].split_at(len)
}

/// A router whose weights are finite but so large that its scores overflow (found by the
/// `router` target): softmax of ±inf logits gave NaN weights, which would have reached
/// llama.cpp as adapter scales. Routing must refuse instead.
#[test]
fn an_overflowing_router_refuses_to_route() {
    for file in regressions("router") {
        let data = std::fs::read(&file).unwrap();
        let (config, weights) = unframe(&data);
        let router =
            skillpack_route::Router::from_bytes(config, weights, Path::new("r.safetensors"))
                .expect("the router's tensors are finite, so it loads");
        let features: Vec<f32> = (0..router.config.dim)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.5)
            .collect();
        let skills = router.config.skills.clone();
        match router.weights_for(&features, None, &skills) {
            Ok(w) => assert!(
                w.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{}: weights {w:?}",
                file.display()
            ),
            Err(e) => assert!(
                e.to_string().contains("non-finite scores"),
                "{}: {e}",
                file.display()
            ),
        }
    }
}

/// GGUF files that crashed the `gguf` target: headers that made candle's reader panic
/// (`general.alignment` 0 divided by zero; a tensor without elements built a typed slice over an
/// empty, unaligned buffer), and models on which llama.cpp's loader aborts with `GGML_ASSERT`: a
/// repeated vocabulary token, a block count over 512. Each must be refused with an error naming the
/// file before llama.cpp sees it.
#[test]
fn malformed_ggufs_are_refused_without_panicking_or_aborting() {
    let backend = skillpack_llama::Backend::get();
    for file in regressions("gguf") {
        let data = std::fs::read(&file).unwrap();
        let header = skillpack_convert::GgufInfo::read(
            &mut std::io::Cursor::new(&data),
            &file,
            data.len() as u64,
        );
        if let Err(e) = &header {
            assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        }
        for vocab_only in [true, false] {
            let params = skillpack_llama::ModelParams {
                vocab_only,
                ..Default::default()
            };
            let err = skillpack_llama::Model::load(backend, &file, &params)
                .expect_err("a malformed model must be refused");
            println!("{}: {err}", file.display());
        }
    }
}
