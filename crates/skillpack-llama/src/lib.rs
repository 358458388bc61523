//! A thin, documented safe layer over llama.cpp (through `llama-cpp-sys-2`).
//!
//! This crate is the only place in skillpack that calls into C. It owns:
//!
//! * [`Backend`]: process-wide llama.cpp initialisation, with llama.cpp's and ggml's
//!   logs routed into `tracing` (target `llama.cpp`);
//! * [`Model`]: a loaded GGUF model with its metadata, vocabulary, tokenizer and chat template;
//! * [`Context`]: an inference context (KV cache) with batch decoding and logits;
//! * [`LoraAdapter`]: a GGUF LoRA adapter loaded from a path, from an open file at an
//!   offset, or from memory, and freed with `llama_adapter_lora_free`;
//! * [`Context::set_adapters`]: N adapters with N scales set in one `llama_set_adapters_lora` call;
//! * [`Sampler`]: llama.cpp's sampler chain.
//!
//! ```
//! use skillpack_llama::{Backend, Context, ContextParams, Model, ModelParams};
//! # let fixtures = std::env::var_os("SKILLPACK_FIXTURES").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let fx = fixtures.join("tiny-llama");
//! let model = Model::load(Backend::get(), &fx.join("tiny-llama-f32.gguf"), &ModelParams::default())?;
//! let prompts: serde_json::Value =
//!     serde_json::from_str(&std::fs::read_to_string(fixtures.join("prompts.json"))?)?;
//! let ids: Vec<i32> = prompts["token_ids"][0].as_array().unwrap().iter()
//!     .map(|t| t.as_i64().unwrap() as i32).collect();
//!
//! let mut ctx = Context::new(&model, &ContextParams { kv_f32: true, ..Default::default() })?;
//! ctx.eval(&ids, 0, false)?;
//! let ours = ctx.logits(-1)?;
//!
//! // The same prompt through PyTorch (the fixture's oracle).
//! let bytes = std::fs::read(fx.join("logits_base.safetensors"))?;
//! let reference = safetensors::SafeTensors::deserialize(&bytes)?;
//! let torch: Vec<f32> = reference.tensor("prompt0.last")?.data().chunks_exact(4)
//!     .map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
//! let max_diff = ours.iter().zip(&torch).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
//! assert!(max_diff < 1e-2, "max |diff| {max_diff}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Safety model
//!
//! * Every raw pointer is owned by exactly one RAII value and freed in its `Drop`.
//! * Lifetimes tie contexts and adapters to the model they were created from, so a model
//!   can never be freed while anything that points into it is alive.
//! * Adapters are reference counted. A context keeps a handle to every adapter it has set,
//!   so an adapter is freed only after it has been cleared from every context (or every such
//!   context is gone): llama.cpp never sees a dangling adapter pointer.
//! * llama.cpp aborts the process on some malformed inputs (a GGUF key of the wrong type,
//!   for example). Inputs are validated in Rust, with ggml's own tolerant GGUF reader,
//!   before llama.cpp's loaders see them.

mod adapter;
mod context;
mod gguf_check;
mod log;
mod model;
mod sampler;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use adapter::LoraAdapter;

/// llama.cpp's own handle types, for code that shares a model or context with programs using
/// llama.cpp's C API (the `skillpack-capi` crate): see [`Model::from_raw`], [`Context::from_raw`].
pub mod raw {
    pub use llama_cpp_sys_2::{llama_context, llama_model, llama_token};
}
pub use context::{Batch, Context, ContextParams};
pub use gguf_check::{check_adapter_header, AdapterHeader};
pub use model::{
    requested_prompt_format, set_prompt_format, ChatMessage, Model, ModelParams, PromptFormat,
};
pub use sampler::{Sampler, SamplerParams};

/// A token id of the model's vocabulary.
pub type Token = i32;

/// Errors from the llama.cpp layer. Messages name the file, tensor or key involved.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("llama.cpp could not load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("llama.cpp could not create a context: {0}")]
    ContextCreate(String),
    #[error("adapter {source_name}: {reason}")]
    Adapter { source_name: String, reason: String },
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for this crate.
pub type Result<T, E = LlamaError> = std::result::Result<T, E>;

/// Process-wide llama.cpp backend. Obtain it with [`Backend::get`]; every other type needs a
/// reference to it, which proves `llama_backend_init` ran first.
pub struct Backend {
    _inner: llama_cpp_2::llama_backend::LlamaBackend,
}

static BACKEND: OnceLock<Backend> = OnceLock::new();

impl Backend {
    /// Initialises llama.cpp once per process (later calls return the same backend) and
    /// routes its logs into `tracing`.
    pub fn get() -> &'static Backend {
        BACKEND.get_or_init(|| {
            log::install();
            let inner = llama_cpp_2::llama_backend::LlamaBackend::init()
                .expect("llama.cpp backend is initialised only through Backend::get");
            Backend { _inner: inner }
        })
    }

    /// Whether this build of llama.cpp can offload to a GPU.
    pub fn supports_gpu_offload(&self) -> bool {
        // SAFETY: a pure query of compile-time capabilities.
        unsafe { llama_cpp_sys_2::llama_supports_gpu_offload() }
    }
}

/// The last error line llama.cpp or ggml logged on this thread, if any: used to explain why
/// a C call returned null.
pub fn last_llama_error() -> Option<String> {
    log::take_last_error()
}

/// Reads a C string buffer filled by a llama.cpp "returns length, or needed length" call,
/// growing the buffer once when it was too small.
pub(crate) fn read_c_string(
    mut fill: impl FnMut(*mut std::os::raw::c_char, usize) -> i32,
) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let mut n = fill(buf.as_mut_ptr().cast(), buf.len());
    if n < 0 {
        return None;
    }
    if n as usize >= buf.len() {
        buf = vec![0u8; n as usize + 1];
        n = fill(buf.as_mut_ptr().cast(), buf.len());
        if n < 0 {
            return None;
        }
    }
    buf.truncate(n as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}
