//! The C API of skillpack (`include/skillpack.h`): a program that uses llama.cpp's C API opens a
//! skill pack against the `llama_model` it loaded, routes a prompt to skill weights with the
//! pack's router, and applies weighted skills to its own `llama_context`; then it decodes as
//! usual. Link `libskillpack_capi.a` (which contains the llama.cpp it was built with) or
//! `libskillpack_capi.so`.
//!
//! Errors are return codes ([`SKILLPACK_OK`] and the `SKILLPACK_ERR_*` constants) with a message
//! for the calling thread from [`skillpack_last_error`]. No call unwinds into C: a panic becomes
//! [`SKILLPACK_ERR_INTERNAL`].
//!
//! Threads: a `skillpack_pack` may move between threads but is used by one thread at a time
//! (calls on the same pack must not overlap); different packs are independent. The last error
//! is per thread.
//!
//! The calls, shown from Rust (a C program makes the same ones: `examples/c/route_and_generate.c`):
//!
//! ```
//! use std::ffi::{CStr, CString};
//! use skillpack_capi::*;
//! use skillpack_convert::{convert, ConvertOptions, GgufInfo, PeftAdapter};
//! use skillpack_llama::{Backend, Model, ModelParams};
//! # let fixtures = std::env::var_os("SKILLPACK_FIXTURES").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! // A one-skill pack for the tiny Qwen2 fixture.
//! let qwen2 = fixtures.join("arch/tiny-qwen2");
//! let model_path = qwen2.join("tiny-qwen2-f32.gguf");
//! let base = GgufInfo::open(&model_path)?;
//! let dir = tempfile::tempdir()?;
//! let mut pack = skillpack_pack::Pack::create(dir.path(), "demo", "", &base)?;
//! let adapter = convert(&PeftAdapter::load(&qwen2.join("peft-lora"))?, &base, &ConvertOptions::default())?;
//! pack.add_skill("lora", "lora", "", &adapter.gguf, &base)?;
//!
//! // The caller's model, as a llama.cpp program holds it.
//! let model = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
//! let path = CString::new(model_path.to_str().unwrap())?;
//! let pack_dir = CString::new(dir.path().to_str().unwrap())?;
//! let mut handle = std::ptr::null_mut();
//! unsafe {
//!     assert_eq!(skillpack_pack_open(model.raw(), path.as_ptr(), pack_dir.as_ptr(), &mut handle), SKILLPACK_OK);
//!     assert_eq!(skillpack_skill_count(handle), 1);
//!     assert_eq!(CStr::from_ptr(skillpack_skill_id(handle, 0)).to_str()?, "lora");
//!     // This pack has no router: the caller gives weights to skillpack_apply instead.
//!     let prompt = CString::new("What causes anaemia?")?;
//!     let mut weights = [0f32; 1];
//!     assert_eq!(skillpack_route(handle, prompt.as_ptr(), weights.as_mut_ptr(), 1), SKILLPACK_ERR_NO_ROUTER);
//!     println!("{}", CStr::from_ptr(skillpack_last_error()).to_string_lossy());
//!     skillpack_pack_free(handle);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;

use skillpack_llama::raw::{llama_context, llama_model};
use skillpack_llama::{Context, Model};
use skillpack_pack::Pack;
use skillpack_route::{FeatureExtractor, Router};
use skillpack_run::{Mode, SkillEngine};

/// Success.
pub const SKILLPACK_OK: c_int = 0;
/// A null pointer, bad UTF-8, a wrong length, or a context of another model.
pub const SKILLPACK_ERR_INVALID_ARGUMENT: c_int = 1;
/// The pack could not be opened or does not fit the model.
pub const SKILLPACK_ERR_PACK: c_int = 2;
/// The pack has no router (give weights instead).
pub const SKILLPACK_ERR_NO_ROUTER: c_int = 3;
/// llama.cpp refused an operation (loading an adapter, tokenizing, decoding for features).
pub const SKILLPACK_ERR_LLAMA: c_int = 4;
/// A bug in skillpack (a panic, caught at the boundary).
pub const SKILLPACK_ERR_INTERNAL: c_int = 5;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn fail(code: c_int, message: impl std::fmt::Display) -> c_int {
    let text = message.to_string().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).expect("no NUL left"));
    code
}

/// Runs `f`, turning a panic into [`SKILLPACK_ERR_INTERNAL`].
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail(SKILLPACK_ERR_INTERNAL, format!("internal error: {what}"))
        }
    }
}

fn utf8<'a>(s: *const c_char, what: &str) -> Result<&'a str, c_int> {
    if s.is_null() {
        return Err(fail(
            SKILLPACK_ERR_INVALID_ARGUMENT,
            format!("{what} is null"),
        ));
    }
    // SAFETY: non-null, NUL-terminated (the caller's contract).
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| {
        fail(
            SKILLPACK_ERR_INVALID_ARGUMENT,
            format!("{what} is not UTF-8"),
        )
    })
}

/// A weight array must be non-null and hold one float per skill.
fn check_weights(pack: &SkillpackPack, null: bool, n_weights: usize) -> Result<(), c_int> {
    if null || n_weights != pack.skill_ids.len() {
        return Err(fail(
            SKILLPACK_ERR_INVALID_ARGUMENT,
            format!(
                "weights must hold {} floats ({} given{})",
                pack.skill_ids.len(),
                n_weights,
                if null { ", null" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// An open pack: the caller's model (borrowed), the skill engine, the router, and one borrowed
/// handle per caller context it has applied skills to (which keeps the adapters set on that
/// context alive).
pub struct SkillpackPack {
    // Field order is drop order: everything borrowing the model goes first.
    contexts: HashMap<usize, Context<'static>>,
    router: Option<(Router, FeatureExtractor<'static>)>,
    engine: SkillEngine<'static>,
    /// Skill ids for C (NUL-terminated) and for routing.
    skill_ids: Vec<CString>,
    skill_names: Vec<String>,
    model: *mut Model,
}

/// Frees the model handle after every borrower is gone.
struct PackBox(Option<Box<SkillpackPack>>);

impl Drop for PackBox {
    fn drop(&mut self) {
        if let Some(pack) = self.0.take() {
            let model = pack.model;
            drop(pack);
            // SAFETY: created by Box::into_raw in skillpack_pack_open; no borrower is left.
            drop(unsafe { Box::from_raw(model) });
        }
    }
}

/// Opens the skill pack in `pack_dir` for `model`, a model the caller loaded with llama.cpp
/// from the GGUF at `model_path` (the pack and its router are checked against that file). On
/// success `*out` holds the pack; free it with [`skillpack_pack_free`] before freeing the model
/// or any context the pack applied skills to.
///
/// # Safety
/// `model` must be a valid `llama_model` loaded by the llama.cpp this library contains, alive
/// until the pack is freed; the strings NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn skillpack_pack_open(
    model: *mut llama_model,
    model_path: *const c_char,
    pack_dir: *const c_char,
    out: *mut *mut SkillpackPack,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return fail(SKILLPACK_ERR_INVALID_ARGUMENT, "out is null");
        }
        let (path, dir) = match (utf8(model_path, "model_path"), utf8(pack_dir, "pack_dir")) {
            (Ok(p), Ok(d)) => (PathBuf::from(p), PathBuf::from(d)),
            (Err(code), _) | (_, Err(code)) => return code,
        };
        // SAFETY: the caller's contract.
        let handle = match unsafe { Model::from_raw(model, &path) } {
            Ok(m) => Box::into_raw(Box::new(m)),
            Err(e) => return fail(SKILLPACK_ERR_INVALID_ARGUMENT, e),
        };
        // SAFETY: freed only by PackBox after every borrower.
        let model_ref: &'static Model = unsafe { &*handle };
        let opened = (|| -> Result<SkillpackPack, (c_int, String)> {
            let pack_err = |e: &dyn std::fmt::Display| (SKILLPACK_ERR_PACK, e.to_string());
            let pack = Pack::open(&dir).map_err(|e| pack_err(&e))?;
            let base = skillpack_convert::GgufInfo::open(&path).map_err(|e| pack_err(&e))?;
            pack.check(&base).map_err(|e| pack_err(&e))?;
            let router = skillpack_run::load_router(&pack, None, model_ref, &path)
                .map_err(|e| pack_err(&e))?;
            let router = match router {
                Some(r) => {
                    let extractor =
                        FeatureExtractor::new(model_ref, &path, r.config.features, None)
                            .map_err(|e| (SKILLPACK_ERR_LLAMA, e.to_string()))?;
                    Some((r, extractor))
                }
                None => None,
            };
            let skill_names: Vec<String> =
                pack.manifest.skills.iter().map(|s| s.id.clone()).collect();
            let skill_ids = skill_names
                .iter()
                .map(|id| CString::new(id.as_str()).expect("skill ids are checked"))
                .collect();
            let engine = SkillEngine::new(model_ref, pack).map_err(|e| pack_err(&e))?;
            Ok(SkillpackPack {
                contexts: HashMap::new(),
                router,
                engine,
                skill_ids,
                skill_names,
                model: handle,
            })
        })();
        match opened {
            Ok(pack) => {
                // SAFETY: `out` is writable (the caller's contract).
                unsafe { *out = Box::into_raw(Box::new(pack)) };
                SKILLPACK_OK
            }
            Err((code, message)) => {
                // SAFETY: nothing borrows the handle any more.
                drop(unsafe { Box::from_raw(handle) });
                fail(code, message)
            }
        }
    })
}

/// Frees a pack (null is allowed). Contexts it applied skills to are left without adapters.
///
/// # Safety
/// `pack` must come from [`skillpack_pack_open`] and not be used afterwards; the model and
/// those contexts must still be alive.
#[no_mangle]
pub unsafe extern "C" fn skillpack_pack_free(pack: *mut SkillpackPack) {
    if pack.is_null() {
        return;
    }
    // SAFETY: created by Box::into_raw in skillpack_pack_open.
    let boxed = unsafe { Box::from_raw(pack) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(PackBox(Some(boxed)))));
}

/// Number of skills in the pack (the length of every weight array).
///
/// # Safety
/// `pack` must be a valid pack.
#[no_mangle]
pub unsafe extern "C" fn skillpack_skill_count(pack: *const SkillpackPack) -> usize {
    // SAFETY: the caller's contract.
    unsafe { pack.as_ref() }.map_or(0, |p| p.skill_ids.len())
}

/// The id of skill `index` (NUL-terminated, owned by the pack), or null when out of range.
///
/// # Safety
/// `pack` must be a valid pack.
#[no_mangle]
pub unsafe extern "C" fn skillpack_skill_id(
    pack: *const SkillpackPack,
    index: usize,
) -> *const c_char {
    // SAFETY: the caller's contract.
    unsafe { pack.as_ref() }
        .and_then(|p| p.skill_ids.get(index))
        .map_or(std::ptr::null(), |s| s.as_ptr())
}

/// Routes `prompt` (one user message, rendered with the model's chat template as `skillpack run`
/// renders it) with the pack's default router: writes one weight per skill into `weights`
/// (`n_weights` must equal [`skillpack_skill_count`]).
///
/// # Safety
/// `pack` valid, `prompt` NUL-terminated, `weights` writable for `n_weights` floats.
#[no_mangle]
pub unsafe extern "C" fn skillpack_route(
    pack: *mut SkillpackPack,
    prompt: *const c_char,
    weights: *mut f32,
    n_weights: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let Some(pack) = (unsafe { pack.as_mut() }) else {
            return fail(SKILLPACK_ERR_INVALID_ARGUMENT, "pack is null");
        };
        let text = match utf8(prompt, "prompt") {
            Ok(t) => t,
            Err(code) => return code,
        };
        if let Err(code) = check_weights(pack, weights.is_null(), n_weights) {
            return code;
        }
        // SAFETY: the pack owns the model handle.
        let model: &Model = unsafe { &*pack.model };
        let Some((router, extractor)) = pack.router.as_mut() else {
            return fail(
                SKILLPACK_ERR_NO_ROUTER,
                "the pack has no default router: pass weights to skillpack_apply",
            );
        };
        let routed =
            skillpack_run::route_user_message(model, router, extractor, text, &pack.skill_names);
        match routed {
            Ok(w) => {
                // SAFETY: writable for n_weights floats (checked above).
                unsafe { std::slice::from_raw_parts_mut(weights, n_weights) }.copy_from_slice(&w);
                SKILLPACK_OK
            }
            Err(e) => fail(SKILLPACK_ERR_LLAMA, e),
        }
    })
}

/// Applies the pack's skills at `weights` (one per skill; the pack's top-k and minimum weight
/// apply, as in `skillpack run`) to `ctx`, a context the caller created for the pack's model.
/// The engine picks multi-adapter or fused application from `expected_tokens` (the tokens the
/// context will process under these weights). The caller clears its KV cache when the weights
/// change between prompts, as llama.cpp requires.
///
/// # Safety
/// `pack` valid; `ctx` a valid context of the pack's model, alive until the pack is freed or
/// [`skillpack_context_release`] is called for it; `weights` readable for `n_weights` floats.
#[no_mangle]
pub unsafe extern "C" fn skillpack_apply(
    pack: *mut SkillpackPack,
    ctx: *mut llama_context,
    weights: *const f32,
    n_weights: usize,
    expected_tokens: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let Some(pack) = (unsafe { pack.as_mut() }) else {
            return fail(SKILLPACK_ERR_INVALID_ARGUMENT, "pack is null");
        };
        if let Err(code) = check_weights(pack, weights.is_null(), n_weights) {
            return code;
        }
        // SAFETY: readable for n_weights floats (the caller's contract).
        let weights = unsafe { std::slice::from_raw_parts(weights, n_weights) }.to_vec();
        if weights.iter().any(|w| !w.is_finite()) {
            return fail(SKILLPACK_ERR_INVALID_ARGUMENT, "weights must be finite");
        }
        // SAFETY: the pack owns the model handle for as long as it lives.
        let model: &'static Model = unsafe { &*pack.model };
        let key = ctx as usize;
        if let std::collections::hash_map::Entry::Vacant(slot) = pack.contexts.entry(key) {
            // SAFETY: the caller's contract.
            match unsafe { Context::from_raw(model, ctx) } {
                Ok(c) => {
                    slot.insert(c);
                }
                Err(e) => return fail(SKILLPACK_ERR_INVALID_ARGUMENT, e),
            }
        }
        let context = pack.contexts.get_mut(&key).expect("inserted above");
        match pack
            .engine
            .apply(context, &weights, Mode::Auto, expected_tokens)
        {
            Ok(_) => SKILLPACK_OK,
            Err(e) => fail(SKILLPACK_ERR_LLAMA, e),
        }
    })
}

/// Removes the pack's adapters from `ctx` and forgets it (call before freeing a context the
/// pack applied skills to, if the pack lives on).
///
/// # Safety
/// `pack` valid; `ctx` alive.
#[no_mangle]
pub unsafe extern "C" fn skillpack_context_release(
    pack: *mut SkillpackPack,
    ctx: *mut llama_context,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let Some(pack) = (unsafe { pack.as_mut() }) else {
            return fail(SKILLPACK_ERR_INVALID_ARGUMENT, "pack is null");
        };
        pack.contexts.remove(&(ctx as usize));
        SKILLPACK_OK
    })
}

/// The message of the last error on this thread (empty when none; valid until the next call
/// on this thread).
#[no_mangle]
pub extern "C" fn skillpack_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
