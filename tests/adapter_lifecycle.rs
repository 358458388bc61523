//! Adapter lifecycle through the llama.cpp layer: loading from a path, from an open file at an
//! offset and from memory; N adapters with N scales in one call; freeing without leaks.

mod common;

use std::io::Write;

use common::*;
use skillpack_convert::{ConvertOptions, GgufInfo, PeftAdapter};
use skillpack_llama::LoraAdapter;

/// The AdaLoRA adapter trained on tiny-llama (fixture), converted to GGUF bytes.
fn tiny_adapter_bytes() -> Vec<u8> {
    let fx = fixtures();
    let peft = PeftAdapter::load(&fx.join("adalora-trace/final-adapter")).unwrap();
    let base = GgufInfo::open(&fx.join("tiny-llama/tiny-llama-f32.gguf")).unwrap();
    skillpack_convert::convert(&peft, &base, &ConvertOptions::default())
        .unwrap()
        .gguf
}

#[test]
fn path_offset_and_memory_loads_are_equivalent() {
    let fx = fixtures();
    let model = load_model(&fx.join("tiny-llama/tiny-llama-f32.gguf"));
    let mut ctx = new_context(&model);
    let ids = &prompt_ids()[0];
    let base = last_logits(&mut ctx, ids);
    let bytes = tiny_adapter_bytes();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.gguf");
    std::fs::write(&path, &bytes).unwrap();
    // The same GGUF embedded after 1000 bytes of something else.
    let bundle_path = tmp.path().join("bundle.bin");
    let mut bundle = std::fs::File::create(&bundle_path).unwrap();
    bundle.write_all(&[7u8; 1000]).unwrap();
    bundle.write_all(&bytes).unwrap();
    drop(bundle);
    let bundle = std::fs::File::open(&bundle_path).unwrap();

    let from_path = LoraAdapter::load(&model, &path).unwrap();
    let from_offset = LoraAdapter::load_from_file_at(&model, &bundle, 1000, "bundle@1000").unwrap();
    let from_memory = LoraAdapter::load_from_bytes(&model, bytes.clone(), "memory").unwrap();
    assert_eq!(from_path.header().n_pairs, 12);
    assert_eq!(from_path.meta("adapter.type").as_deref(), Some("lora"));

    let mut results = Vec::new();
    for a in [&from_path, &from_offset, &from_memory] {
        ctx.set_adapters(&[(a, 3.0)]).unwrap();
        results.push(last_logits(&mut ctx, ids));
    }
    let delta = max_abs_diff(&results[0], &base);
    println!("adapter changes logits by up to {delta:.3e}");
    assert!(delta > 1e-4, "the adapter must change the logits");
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);

    // Scale 0 is the base model exactly; a repeated adapter has its scales summed.
    ctx.set_adapters(&[(&from_path, 0.0)]).unwrap();
    assert_eq!(last_logits(&mut ctx, ids), base);
    ctx.set_adapters(&[(&from_path, 1.5), (&from_path, 1.5)])
        .unwrap();
    assert_eq!(last_logits(&mut ctx, ids), results[0]);
    // Two different adapters at 1.5 each equal one at 3.0 (same weights).
    ctx.set_adapters(&[(&from_path, 1.5), (&from_memory, 1.5)])
        .unwrap();
    // Equal up to rounding (the f16 KV cache rounds differently ordered sums): compare deltas.
    let split = last_logits(&mut ctx, ids);
    let cos = cosine(&sub(&split, &base), &sub(&results[0], &base));
    println!(
        "two adapters at 1.5 vs one at 3.0: delta cosine {cos:.6}, max |diff| {:.2e}",
        max_abs_diff(&split, &results[0])
    );
    assert!(cos > 0.9999, "{cos}");
}

#[test]
fn an_adapter_set_on_a_context_outlives_its_handle() {
    let fx = fixtures();
    let model = load_model(&fx.join("tiny-llama/tiny-llama-f32.gguf"));
    let mut ctx = new_context(&model);
    let ids = &prompt_ids()[2];
    let adapter = LoraAdapter::load_from_bytes(&model, tiny_adapter_bytes(), "a").unwrap();
    ctx.set_adapters(&[(&adapter, 2.0)]).unwrap();
    let expected = last_logits(&mut ctx, ids);
    assert_eq!(adapter.strong_count(), 2, "the context holds a handle");
    drop(adapter); // not freed: still set on the context
    assert_eq!(last_logits(&mut ctx, ids), expected);
    let (held, scale) = ctx
        .active_adapters()
        .next()
        .map(|(a, s)| (a.clone(), s))
        .unwrap();
    assert_eq!(scale, 2.0);
    ctx.clear_adapters().unwrap();
    assert_eq!(
        held.strong_count(),
        1,
        "cleared from the context; freed when `held` drops"
    );
}

/// Loads 12 adapters (path, offset, memory), sets them with 12 scales in one call, decodes,
/// and frees them, 1,000 times. RSS must stay flat.
#[test]
fn thousand_load_set_free_cycles_keep_rss_flat() {
    let fx = fixtures();
    let model = load_model(&fx.join("tiny-llama/tiny-llama-f32.gguf"));
    let mut ctx = new_context(&model);
    let bytes = tiny_adapter_bytes();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let ids = &prompt_ids()[0][..8];
    // RSS every 50 cycles after a 100-cycle warm-up: a leak moves the median interval, a
    // one-off heap extension by the allocator does not.
    let mut samples: Vec<i64> = Vec::new();
    let cycles = 1000;
    for cycle in 0..cycles {
        let adapters: Vec<LoraAdapter> = (0..12)
            .map(|k| match k % 3 {
                0 => LoraAdapter::load(&model, &path).unwrap(),
                1 => LoraAdapter::load_from_file_at(&model, &file, 0, "fd").unwrap(),
                _ => LoraAdapter::load_from_bytes(&model, bytes.clone(), "mem").unwrap(),
            })
            .collect();
        let scaled: Vec<(&LoraAdapter, f32)> = adapters
            .iter()
            .enumerate()
            .map(|(k, a)| (a, 0.1 + k as f32 * 0.05))
            .collect();
        assert!(ctx.set_adapters(&scaled).unwrap());
        ctx.eval(ids, 0, false).unwrap();
        assert!(ctx.logits(-1).unwrap().iter().all(|x| x.is_finite()));
        ctx.clear_adapters().unwrap();
        drop(scaled);
        for a in &adapters {
            assert_eq!(a.strong_count(), 1);
        }
        drop(adapters); // freed with llama_adapter_lora_free
        if cycle >= 99 && (cycle + 1) % 50 == 0 {
            samples.push(rss_bytes() as i64);
        }
    }
    let (first, last) = (samples[0], *samples.last().unwrap());
    let median = assert_rss_flat(&samples, 16 << 10);
    println!(
        "RSS after 100 cycles {:.1} MiB, after {cycles} cycles {:.1} MiB (growth {:+.2} MiB over 900 cycles, 10,800 adapters; median per 50 cycles {:+} KiB)",
        first as f64 / 1048576.0,
        last as f64 / 1048576.0,
        (last - first) as f64 / 1048576.0,
        median / 1024
    );
}
