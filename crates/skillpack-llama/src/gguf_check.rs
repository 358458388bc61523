//! Rust-side validation of a GGUF LoRA adapter's header before llama.cpp loads it.
//!
//! llama.cpp reads `general.type`, `general.architecture`, `adapter.type` with
//! `gguf_get_val_str` and `adapter.lora.alpha` with `gguf_get_val_f32`; both *abort the
//! process* when the stored type differs. ggml's GGUF reader itself returns null on a malformed
//! file, so it is safe to use for the checks done here.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};

use llama_cpp_sys_2 as sys;

use crate::adapter::CFile;

/// What the header of a GGUF LoRA adapter says, after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterHeader {
    /// `general.architecture`.
    pub architecture: String,
    /// `adapter.lora.alpha`; `None` when absent (llama.cpp then applies scales as given).
    pub alpha: Option<f32>,
    /// Number of lora_a/lora_b pairs.
    pub n_pairs: usize,
    /// Every scalar string-like key/value (numbers rendered as text).
    pub metadata: BTreeMap<String, String>,
}

struct GgufCtx(*mut sys::gguf_context);

impl Drop for GgufCtx {
    fn drop(&mut self) {
        // SAFETY: the pointer came from gguf_init_* and is freed once.
        unsafe { sys::gguf_free(self.0) }
    }
}

impl GgufCtx {
    fn find(&self, key: &str) -> Option<i64> {
        let key = CString::new(key).ok()?;
        // SAFETY: valid context and NUL-terminated key.
        let id = unsafe { sys::gguf_find_key(self.0, key.as_ptr()) };
        (id >= 0).then_some(id)
    }

    fn kv_type(&self, id: i64) -> sys::gguf_type {
        // SAFETY: `id` was returned by gguf_find_key / is < n_kv.
        unsafe { sys::gguf_get_kv_type(self.0, id) }
    }

    fn string(&self, id: i64) -> String {
        // SAFETY: caller checked the type is STRING; the returned pointer lives as long as the context.
        unsafe { CStr::from_ptr(sys::gguf_get_val_str(self.0, id)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The value of `key` when it holds a string; other types are left to llama.cpp, which
    /// refuses them with an error.
    fn string_value(&self, key: &str) -> Option<String> {
        let id = self.find(key)?;
        (self.kv_type(id) == sys::GGUF_TYPE_STRING).then(|| self.string(id))
    }

    /// An unsigned integer value (or, for an array of them, the largest), when the key holds one;
    /// other types are left to llama.cpp, which refuses them with an error.
    fn uint(&self, key: &str) -> Option<u64> {
        let id = self.find(key)?;
        // SAFETY: types are checked before each typed accessor.
        unsafe {
            match self.kv_type(id) {
                sys::GGUF_TYPE_UINT32 => Some(sys::gguf_get_val_u32(self.0, id) as u64),
                sys::GGUF_TYPE_ARRAY
                    if sys::gguf_get_arr_type(self.0, id) == sys::GGUF_TYPE_UINT32 =>
                {
                    let n = sys::gguf_get_arr_n(self.0, id);
                    let data = sys::gguf_get_arr_data(self.0, id).cast::<u32>();
                    (0..n).map(|i| *data.add(i) as u64).max()
                }
                _ => None,
            }
        }
    }
}

fn type_name(t: sys::gguf_type) -> &'static str {
    match t {
        sys::GGUF_TYPE_UINT8 => "u8",
        sys::GGUF_TYPE_INT8 => "i8",
        sys::GGUF_TYPE_UINT16 => "u16",
        sys::GGUF_TYPE_INT16 => "i16",
        sys::GGUF_TYPE_UINT32 => "u32",
        sys::GGUF_TYPE_INT32 => "i32",
        sys::GGUF_TYPE_FLOAT32 => "f32",
        sys::GGUF_TYPE_BOOL => "bool",
        sys::GGUF_TYPE_STRING => "string",
        sys::GGUF_TYPE_ARRAY => "array",
        sys::GGUF_TYPE_UINT64 => "u64",
        sys::GGUF_TYPE_INT64 => "i64",
        sys::GGUF_TYPE_FLOAT64 => "f64",
        _ => "unknown",
    }
}

/// Validates the adapter header read from `file` (at its current position, which is restored).
/// `expected_arch` is the base model's `general.architecture`.
pub(crate) fn check_file(file: &mut CFile, expected_arch: &str) -> Result<AdapterHeader, String> {
    let start = file
        .tell()
        .map_err(|e| format!("cannot tell position: {e}"))?;
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: `file` is an open FILE* owned by `CFile`; with no_alloc and a null ctx, ggml only
    // parses the header and returns null on malformed input.
    let ctx = unsafe { sys::gguf_init_from_file_ptr(file.as_ptr().cast(), params) };
    file.seek(start)
        .map_err(|e| format!("cannot seek back: {e}"))?;
    if ctx.is_null() {
        let why = crate::last_llama_error().unwrap_or_else(|| "unreadable header".into());
        return Err(format!("not a valid GGUF file: {why}"));
    }
    let ctx = GgufCtx(ctx);

    let require_string = |key: &str| -> Result<String, String> {
        let id = ctx
            .find(key)
            .ok_or_else(|| format!("missing key `{key}`"))?;
        let t = ctx.kv_type(id);
        if t != sys::GGUF_TYPE_STRING {
            return Err(format!(
                "key `{key}` must be a string, found {}",
                type_name(t)
            ));
        }
        Ok(ctx.string(id))
    };
    let general_type = require_string("general.type")?;
    if general_type != "adapter" {
        return Err(format!("general.type is `{general_type}`, expected `adapter` (is this a model, not an adapter?)"));
    }
    let adapter_type = require_string("adapter.type")?;
    if adapter_type != "lora" {
        return Err(format!(
            "adapter.type is `{adapter_type}`, only `lora` is supported"
        ));
    }
    let architecture = require_string("general.architecture")?;
    if architecture != expected_arch {
        return Err(format!(
            "adapter is for architecture `{architecture}` but the model is `{expected_arch}`"
        ));
    }
    let alpha = match ctx.find("adapter.lora.alpha") {
        None => None,
        Some(id) => {
            let t = ctx.kv_type(id);
            if t != sys::GGUF_TYPE_FLOAT32 {
                return Err(format!(
                    "key `adapter.lora.alpha` must be f32, found {}",
                    type_name(t)
                ));
            }
            // SAFETY: type checked above.
            Some(unsafe { sys::gguf_get_val_f32(ctx.0, id) })
        }
    };
    if let Some(id) = ctx.find("adapter.alora.invocation_tokens") {
        // SAFETY: valid id; arr type only queried for arrays.
        let ok = ctx.kv_type(id) == sys::GGUF_TYPE_ARRAY
            && unsafe { sys::gguf_get_arr_type(ctx.0, id) } == sys::GGUF_TYPE_UINT32;
        if !ok {
            return Err("key `adapter.alora.invocation_tokens` must be an array of u32".into());
        }
    }

    let mut metadata = BTreeMap::new();
    // SAFETY: valid context.
    let n_kv = unsafe { sys::gguf_get_n_kv(ctx.0) };
    for id in 0..n_kv {
        // SAFETY: id < n_kv; the key pointer lives as long as the context.
        let key = unsafe { CStr::from_ptr(sys::gguf_get_key(ctx.0, id)) }
            .to_string_lossy()
            .into_owned();
        let value = match ctx.kv_type(id) {
            sys::GGUF_TYPE_STRING => ctx.string(id),
            // SAFETY (all arms): the getter matches the stored type.
            sys::GGUF_TYPE_FLOAT32 => unsafe { sys::gguf_get_val_f32(ctx.0, id) }.to_string(),
            sys::GGUF_TYPE_UINT32 => unsafe { sys::gguf_get_val_u32(ctx.0, id) }.to_string(),
            sys::GGUF_TYPE_INT32 => unsafe { sys::gguf_get_val_i32(ctx.0, id) }.to_string(),
            sys::GGUF_TYPE_UINT64 => unsafe { sys::gguf_get_val_u64(ctx.0, id) }.to_string(),
            sys::GGUF_TYPE_BOOL => unsafe { sys::gguf_get_val_bool(ctx.0, id) }.to_string(),
            _ => continue,
        };
        metadata.insert(key, value);
    }

    // Every tensor must be one half of a lora_a/lora_b pair (llama.cpp tolerates norm vectors).
    let mut halves: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    // SAFETY: valid context.
    let n_tensors = unsafe { sys::gguf_get_n_tensors(ctx.0) };
    for id in 0..n_tensors {
        // SAFETY: id < n_tensors.
        let name = unsafe { CStr::from_ptr(sys::gguf_get_tensor_name(ctx.0, id)) }
            .to_string_lossy()
            .into_owned();
        if let Some(base) = name.strip_suffix(".lora_a") {
            halves.entry(base.to_string()).or_default().0 = true;
        } else if let Some(base) = name.strip_suffix(".lora_b") {
            halves.entry(base.to_string()).or_default().1 = true;
        } else if !name.ends_with("_norm.weight") {
            return Err(format!(
                "tensor `{name}` is neither `.lora_a` nor `.lora_b`"
            ));
        }
    }
    for (base, (a, b)) in &halves {
        if !(a & b) {
            let missing = if *a { "lora_b" } else { "lora_a" };
            return Err(format!("tensor `{base}` has no `{missing}` half"));
        }
    }
    Ok(AdapterHeader {
        architecture,
        alpha,
        n_pairs: halves.len(),
        metadata,
    })
}

/// Validates the GGUF LoRA adapter at `path` without loading it into any model.
/// `expected_arch` is the base model's `general.architecture`.
pub fn check_adapter_header(
    path: &std::path::Path,
    expected_arch: &str,
) -> crate::Result<AdapterHeader> {
    let mut file = CFile::open(path)?;
    check_file(&mut file, expected_arch).map_err(|reason| crate::LlamaError::Adapter {
        source_name: path.display().to_string(),
        reason,
    })
}

/// llama.cpp's limits (llama-hparams.h).
const LLAMA_MAX_LAYERS: u64 = 512;
const LLAMA_MAX_EXPERTS: u64 = 1024;

/// The hyperparameter checks llama.cpp's loader makes with `GGML_ASSERT` (aborting) instead of
/// an error, on the keys every architecture shares.
fn check_hyperparameters(ctx: &GgufCtx, arch: &str) -> Result<(), String> {
    let key = |k: &str| format!("{arch}.{k}");
    let layers = ctx.uint(&key("block_count"));
    if let Some(n) = layers {
        if !(1..=LLAMA_MAX_LAYERS).contains(&n) {
            return Err(format!(
                "{} is {n}; llama.cpp takes 1 to {LLAMA_MAX_LAYERS} layers",
                key("block_count")
            ));
        }
    }
    let layers = layers.unwrap_or(LLAMA_MAX_LAYERS);
    for k in [
        "nextn_predict_layers",
        "posnet.block_count",
        "convnext.block_count",
    ] {
        if let Some(v) = ctx.uint(&key(k)).filter(|&v| v > layers) {
            return Err(format!("{} is {v}, more than the {layers} layers", key(k)));
        }
    }
    let experts = ctx.uint(&key("expert_count")).unwrap_or(0);
    let used = ctx.uint(&key("expert_used_count")).unwrap_or(0);
    let groups = ctx.uint(&key("expert_group_count")).unwrap_or(0);
    let group_used = ctx.uint(&key("expert_group_used_count")).unwrap_or(0);
    let experts_ok = experts <= LLAMA_MAX_EXPERTS
        && used <= experts
        && if experts > 0 {
            used > 0
                && groups < experts
                && (groups <= 1
                    || (experts.is_multiple_of(groups) && group_used > 0 && group_used < groups))
        } else {
            groups == 0
        };
    if !experts_ok {
        return Err(format!(
            "inconsistent experts: {}={experts}, {}={used}, {}={groups}, {}={group_used}",
            key("expert_count"),
            key("expert_used_count"),
            key("expert_group_count"),
            key("expert_group_used_count")
        ));
    }
    if let Some(t) = ctx.string_value(&key("rope.scaling.type")) {
        if !["none", "linear", "yarn", "longrope"].contains(&t.as_str()) {
            return Err(format!(
                "{} `{t}` is not one of none, linear, yarn, longrope",
                key("rope.scaling.type")
            ));
        }
    }
    Ok(())
}

/// The vocabulary checks llama.cpp makes with `GGML_ASSERT` (aborting the process) rather than
/// an error: token strings must be unique (an empty token counts as `[EMPTY_<id>]`, as llama.cpp
/// renames it), and RWKV vocabularies, whose newline lookup asserts, are not taken.
fn check_vocabulary(ctx: &GgufCtx) -> Result<(), String> {
    if ctx.string_value("tokenizer.ggml.model").as_deref() == Some("rwkv") {
        return Err("tokenizer.ggml.model `rwkv`: RWKV vocabularies are not supported".into());
    }
    let Some(id) = ctx.find("tokenizer.ggml.tokens") else {
        return Ok(()); // llama.cpp reports a missing vocabulary itself
    };
    // SAFETY: valid context, `id` from gguf_find_key; array accessors are used only after the
    // types were checked, and each returned string lives as long as the context.
    unsafe {
        if ctx.kv_type(id) != sys::GGUF_TYPE_ARRAY
            || sys::gguf_get_arr_type(ctx.0, id) != sys::GGUF_TYPE_STRING
        {
            return Ok(()); // llama.cpp refuses it with an error, not an abort
        }
        let n = sys::gguf_get_arr_n(ctx.0, id);
        let mut seen = std::collections::HashMap::with_capacity(n);
        for i in 0..n {
            let text = CStr::from_ptr(sys::gguf_get_arr_str(ctx.0, id, i)).to_bytes();
            let key = if text.is_empty() {
                format!("[EMPTY_{i}]").into_bytes()
            } else {
                text.to_vec()
            };
            if let Some(first) = seen.insert(key, i) {
                return Err(format!(
                    "tokenizer.ggml.tokens: token `{}` appears at ids {first} and {i}; llama.cpp needs every token once",
                    String::from_utf8_lossy(text)
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `file` holds a GGUF model (not an adapter) that llama.cpp's loader can parse;
/// returns its `general.architecture`.
pub(crate) fn check_model_file(file: &mut CFile) -> Result<String, String> {
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: as in `check_file`.
    let ctx = unsafe { sys::gguf_init_from_file_ptr(file.as_ptr().cast(), params) };
    if ctx.is_null() {
        let why = crate::last_llama_error().unwrap_or_else(|| "unreadable header".into());
        return Err(format!("not a valid GGUF file: {why}"));
    }
    let ctx = GgufCtx(ctx);
    if ctx.string_value("general.type").as_deref() == Some("adapter") {
        return Err("this GGUF is an adapter, not a model".into());
    }
    check_vocabulary(&ctx)?;
    let id = ctx
        .find("general.architecture")
        .ok_or("missing key `general.architecture`")?;
    if ctx.kv_type(id) != sys::GGUF_TYPE_STRING {
        return Err(format!(
            "key `general.architecture` must be a string, found {}",
            type_name(ctx.kv_type(id))
        ));
    }
    let architecture = ctx.string(id);
    check_hyperparameters(&ctx, &architecture)?;
    Ok(architecture)
}
