//! Router files (JSON config + safetensors weights, framed as one input): loading, checking
//! against a base and a pack, and routing. A router that loads must give finite weights.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillpack_fuzz::unframe;
use skillpack_route::Router;

fuzz_target!(|data: &[u8]| {
    let Some((config, weights)) = unframe(data) else {
        return;
    };
    let Ok(router) = Router::from_bytes(config, weights, std::path::Path::new("input.safetensors"))
    else {
        return;
    };
    let skills: Vec<String> = ["qa", "ner", "re"].map(String::from).to_vec();
    let _ = router.check(router.config.dim, "", &skills);
    let features: Vec<f32> = (0..router.config.dim)
        .map(|i| ((i % 7) as f32 - 3.0) * 0.5)
        .collect();
    for temperature in [None, Some(0.5), Some(2.0)] {
        // Overflow may be refused, never returned as weights.
        let Ok(weights) = router.weights_for(&features, temperature, &skills) else {
            continue;
        };
        assert!(
            weights.iter().all(|w| w.is_finite() && *w >= 0.0),
            "non-finite or negative weights {weights:?}"
        );
    }
});
