//! The runtime against llama.cpp itself: fused == multi, weights are real, no leaks across
//! weightings, and flat memory over many routed prompts.

mod common;

use std::path::Path;

use common::*;
use skillpack_convert::GgufInfo;
use skillpack_llama::{Context, ContextParams, LoraAdapter, Model};
use skillpack_pack::{
    export_lora, merge_into_model, synth_pack, weighted_delta, MergeType, Pack, SynthSpec,
    ALL_LINEAR,
};
use skillpack_run::{Mode, SkillEngine};

fn tiny_model_path() -> std::path::PathBuf {
    fixtures().join("tiny-llama/tiny-llama-f32.gguf")
}

/// Three random rank-4 skills on all linears of the tiny llama, with decaying spectra.
fn tiny_pack(dir: &Path, skills: usize) -> Pack {
    synth_pack(
        dir,
        &GgufInfo::open(&tiny_model_path()).unwrap(),
        &SynthSpec {
            skills,
            rank: 4,
            targets: ALL_LINEAR.iter().map(|s| s.to_string()).collect(),
            b_std: 0.1,
            decay: 0.4,
            seed: 42,
        },
    )
    .unwrap()
}

fn exact_context(model: &Model) -> Context<'_> {
    Context::new(
        model,
        &ContextParams {
            n_ctx: 128,
            n_batch: 128,
            n_threads: Some(2),
            kv_f32: true,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn fused_equals_multi_and_compressed_stays_close() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = tiny_pack(tmp.path(), 3);
    let model = load_model(&tiny_model_path());
    let mut engine = SkillEngine::new(&model, pack).unwrap();
    engine.fused_outtype = skillpack_convert::OutType::F32;
    let mut ctx = exact_context(&model);
    let ids = &prompt_ids()[1];
    let base = last_logits(&mut ctx, ids);
    for weights in [[0.6, 0.3, 0.1], [0.2, 0.0, 0.9], [1.0, -0.5, 0.25]] {
        engine.apply(&mut ctx, &weights, Mode::Multi, 0).unwrap();
        let multi = last_logits(&mut ctx, ids);
        let fused_applied = engine.apply(&mut ctx, &weights, Mode::Fused, 0).unwrap();
        let fused = last_logits(&mut ctx, ids);
        let compressed_applied = engine
            .apply(&mut ctx, &weights, Mode::FusedCompressed, 0)
            .unwrap();
        let compressed = last_logits(&mut ctx, ids);
        // The default storage (q8_0, rank padded to 32) stays within q8_0 rounding.
        engine.fused_outtype = skillpack_convert::OutType::Q8_0;
        engine.apply(&mut ctx, &weights, Mode::Fused, 0).unwrap();
        let q8 = last_logits(&mut ctx, ids);
        engine.fused_outtype = skillpack_convert::OutType::F32;
        let q8_cos = cosine(&sub(&q8, &base), &sub(&multi, &base));
        let diff = max_abs_diff(&fused, &multi);
        let delta = max_abs_diff(&multi, &base);
        let cos = cosine(&sub(&compressed, &base), &sub(&multi, &base));
        println!(
            "weights {weights:?}: delta {delta:.3}, fused vs multi max |diff| {diff:.2e}; compressed rank {} -> {}, delta cosine {cos:.5}; q8_0 fused delta cosine {q8_cos:.5}",
            fused_applied.total_rank, compressed_applied.total_rank
        );
        assert!(delta > 0.05, "the skills must move the logits ({delta})");
        assert!(diff <= 1e-3, "fused differs from multi by {diff}");
        assert!(
            compressed_applied.total_rank < fused_applied.total_rank,
            "compression must drop rank"
        );
        assert!(cos >= 0.999, "compressed delta cosine {cos}");
        assert!(q8_cos >= 0.999, "q8_0 fused delta cosine {q8_cos}");
    }
}

/// `pack export` and `merge` on the f32 tiny llama: the exported adapter at scale 1 and the
/// merged model both give the multi-adapter logits; the merged file keeps every other tensor
/// and all metadata byte for byte.
#[test]
fn exported_adapter_and_merged_model_equal_multi_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = tiny_pack(tmp.path(), 3);
    let model = load_model(&tiny_model_path());
    let adapters: Vec<LoraAdapter<'_>> = pack
        .manifest
        .skills
        .iter()
        .map(|s| LoraAdapter::load(&model, &pack.adapter_path(s)).unwrap())
        .collect();
    let weights = [(0usize, 0.6f32), (2, 0.25), (1, 0.1)];
    let mut ctx = exact_context(&model);
    let ids = &prompt_ids()[1];
    let base = last_logits(&mut ctx, ids);
    let set: Vec<(&LoraAdapter<'_>, f32)> =
        weights.iter().map(|(i, w)| (&adapters[*i], *w)).collect();
    ctx.set_adapters(&set).unwrap();
    let multi = last_logits(&mut ctx, ids);
    let delta_size = max_abs_diff(&multi, &base);
    assert!(
        delta_size > 0.05,
        "the skills change the logits ({delta_size})"
    );

    let exported = tmp.path().join("skills.gguf");
    let image = export_lora(&pack, &weights, skillpack_convert::OutType::F32).unwrap();
    skillpack_convert::write_atomic(&exported, &image.bytes).unwrap();
    let one = LoraAdapter::load(&model, &exported).unwrap();
    ctx.set_adapters(&[(&one, 1.0)]).unwrap();
    let via_export = last_logits(&mut ctx, ids);

    let merged_path = tmp.path().join("merged.gguf");
    let delta = weighted_delta(&pack, &weights).unwrap();
    let report =
        merge_into_model(&tiny_model_path(), &delta, MergeType::Same, &merged_path).unwrap();
    let merged_model = load_model(&merged_path);
    let merged = last_logits(&mut exact_context(&merged_model), ids);
    let (e, m) = (
        max_abs_diff(&via_export, &multi),
        max_abs_diff(&merged, &multi),
    );
    println!("delta {delta_size:.3}; exported adapter vs multi max |diff| {e:.2e}; merged model vs multi {m:.2e}; {report:?}");
    assert!(e <= 1e-3, "exported adapter: {e}");
    assert!(m <= 1e-3, "merged model: {m}");

    let (before, after) = (
        GgufInfo::open(&tiny_model_path()).unwrap(),
        GgufInfo::open(&merged_path).unwrap(),
    );
    assert_eq!(report.merged_tensors, delta.pairs.len());
    assert_eq!(report.merged_types, ["f32"]);
    assert_eq!(
        format!("{:?}", before.metadata),
        format!("{:?}", after.metadata)
    );
    let mut changed = 0;
    for (name, t) in &before.tensors {
        let u = &after.tensors[name];
        assert_eq!((&t.dims, &t.dtype), (&u.dims, &u.dtype), "{name}");
        if before.read_tensor_bytes(name).unwrap() != after.read_tensor_bytes(name).unwrap() {
            changed += 1;
            assert!(
                delta.pairs.iter().any(|p| &p.name == name),
                "{name} changed without a delta"
            );
        }
    }
    assert_eq!(changed, delta.pairs.len());
    assert_eq!(before.tensors.len(), after.tensors.len());
}

#[test]
fn weights_are_real_and_never_leak_into_the_next_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = tiny_pack(tmp.path(), 2);
    let single_path = pack.adapter_path(&pack.manifest.skills[0]);
    let model = load_model(&tiny_model_path());
    let mut engine = SkillEngine::new(&model, pack).unwrap();
    engine.min_weight = 0.0;
    engine.fused_outtype = skillpack_convert::OutType::F32;
    let mut ctx = exact_context(&model);
    let ids = prompt_ids();
    let base: Vec<Vec<f32>> = ids.iter().map(|p| last_logits(&mut ctx, p)).collect();

    // (1, 0) is the single adapter loaded on its own; (0, 0) is the base model.
    let single = LoraAdapter::load(&model, &single_path).unwrap();
    let mut reference = exact_context(&model);
    reference.set_adapters(&[(&single, 1.0)]).unwrap();
    let expected = last_logits(&mut reference, &ids[0]);
    for mode in [Mode::Multi, Mode::Fused] {
        engine.apply(&mut ctx, &[1.0, 0.0], mode, 0).unwrap();
        let got = last_logits(&mut ctx, &ids[0]);
        assert!(
            max_abs_diff(&got, &expected) <= 1e-3,
            "{mode:?}: (1,0) differs from the single adapter"
        );
        engine.apply(&mut ctx, &[0.0, 0.0], mode, 0).unwrap();
        assert_eq!(
            last_logits(&mut ctx, &ids[0]),
            base[0],
            "{mode:?}: (0,0) must be the base"
        );
    }

    // Prompt A under weights wA, then prompt B under wB, continuing in the same context as a
    // server would (no manual cache clearing): B must equal B in a fresh context.
    let plans: [([f32; 2], [f32; 2]); 3] = [
        ([1.0, 0.0], [0.0, 1.0]),
        ([0.3, 0.7], [0.7, 0.3]),
        ([0.5, 0.5], [0.0, 0.0]),
    ];
    for mode in [Mode::Multi, Mode::Fused, Mode::Auto] {
        for (wa, wb) in plans {
            engine.apply(&mut ctx, &wa, mode, 8).unwrap();
            ctx.eval(&ids[0], 0, false).unwrap();
            // B shares A's first tokens: a stale cache would be reused if the layer allowed it.
            engine.apply(&mut ctx, &wb, mode, 8).unwrap();
            let n_a = ids[0].len();
            ctx.eval(&ids[1][..4], 0, false)
                .unwrap_or_else(|e| panic!("{e} (a cache must not survive a weight change)"));
            ctx.eval(&ids[1][4..], 4, false).unwrap();
            let continued = ctx.logits(-1).unwrap().to_vec();
            let mut fresh_ctx = exact_context(&model);
            engine.apply(&mut fresh_ctx, &wb, mode, 8).unwrap();
            let fresh = last_logits(&mut fresh_ctx, &ids[1]);
            let diff = max_abs_diff(&continued, &fresh);
            assert!(
                diff <= 1e-4,
                "{mode:?} {wa:?} -> {wb:?}: {diff} (after {n_a} tokens of A)"
            );
        }
    }
}

/// 2,000 prompts with changing weights in fused mode with an LRU of 8: RSS stays flat.
#[test]
fn two_thousand_routed_prompts_keep_rss_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = tiny_pack(tmp.path(), 4);
    let model = load_model(&tiny_model_path());
    let mut engine = SkillEngine::new(&model, pack).unwrap();
    engine.cache_capacity = 8;
    engine.min_weight = 0.0;
    let mut ctx = new_context(&model);
    let ids = &prompt_ids()[2];
    // RSS sampled every 100 prompts after a 200-prompt warm-up. A leak grows in most intervals;
    // the allocator may take one more heap region once (a single step of a few MiB).
    let prompts = 2000;
    let mut samples = Vec::new();
    let mut builds = 0;
    for i in 0..prompts {
        // 24 distinct weightings cycling through an LRU of 8: constant eviction.
        let k = (i * 7) % 24;
        let weights = [
            1.0 - k as f32 / 24.0,
            k as f32 / 24.0,
            0.1 * (k % 3) as f32,
            0.05 * (k % 5) as f32,
        ];
        let applied = engine.apply(&mut ctx, &weights, Mode::Fused, 16).unwrap();
        builds += (!applied.cache_hit) as usize;
        ctx.eval(ids, 0, false).unwrap();
        assert!(ctx.logits(-1).unwrap()[0].is_finite());
        assert!(engine.cached() <= 8);
        if i >= 199 && (i + 1) % 100 == 0 {
            samples.push(rss_bytes() as i64);
        }
    }
    let (first, last) = (samples[0], *samples.last().unwrap());
    let median = assert_rss_flat(&samples, 16 << 10);
    println!(
        "RSS after 200 prompts {:.1} MiB, after {prompts} {:.1} MiB (growth {:+.2} MiB, median per 100 prompts {:+} KiB; {builds} fused builds, LRU 8)",
        first as f64 / 1048576.0,
        last as f64 / 1048576.0,
        (last - first) as f64 / 1048576.0,
        median / 1024
    );
    assert!(builds > 1000, "the LRU must be evicting ({builds} builds)");
}
