//! Adapter formats for skillpack: reading PEFT LoRA / rsLoRA / AdaLoRA adapters and GGUF files,
//! and converting PEFT adapters into GGUF LoRA adapters that llama.cpp applies exactly as PEFT
//! does.
//!
//! * [`PeftAdapter::load`] reads `adapter_config.json` + `adapter_model.safetensors`, refusing
//!   what cannot be represented (DoRA, `modules_to_save`, LoRA biases, embedding LoRA).
//! * [`GgufInfo::open`] reads a GGUF header (model or adapter) and validates its tensor table.
//! * [`convert`] maps PEFT tensors to llama.cpp names, applies PEFT's per-module scale
//!   (`lora_alpha`, `alpha_pattern`, `rank_pattern`, `use_rslora`, AdaLoRA's `E` and
//!   `lora_alpha / (init_r + 1e-5)`), permutes q/k rows as llama.cpp's HF converter does, checks
//!   every shape against the base model and returns a GGUF image.
//! * [`inspect`] describes a model, a GGUF adapter or a PEFT directory.
//!
//! ```
//! use skillpack_convert::{convert, ConvertOptions, GgufInfo, PeftAdapter};
//! # let fixtures = std::env::var_os("SKILLPACK_FIXTURES").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let family = fixtures.join("arch/tiny-qwen2");
//! let peft = PeftAdapter::load(&family.join("peft-adalora"))?;
//! let base = GgufInfo::open(&family.join("tiny-qwen2-f32.gguf"))?;
//! let adapter = convert(&peft, &base, &ConvertOptions::default())?;
//!
//! // AdaLoRA's allocator pruned some modules to rank 0: they carry no delta and are dropped.
//! let dropped = adapter.report.dropped_zero_rank;
//! assert!(dropped > 0);
//! let out = std::env::temp_dir().join(format!("skillpack-doc-{}.gguf", std::process::id()));
//! adapter.write(&out)?;
//! assert_eq!(GgufInfo::open(&out)?.tensors.len(), 2 * (peft.modules.len() - dropped));
//! # std::fs::remove_file(&out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! * [`ARCHITECTURES`] is the one table of supported model families every stage reads.

mod arch;
mod convert;
mod error;
mod gguf;
mod inspect;
mod lora_gguf;
mod peft;
mod rng;

pub use arch::{
    architecture, architecture_of_hf, gguf_module_name, supported_architectures, Activation,
    Architecture, AttentionPattern, ARCHITECTURES,
};
pub use candle_core::quantized::gguf_file::Value as GgufValue;
pub use convert::{convert, ConvertOptions, ConvertReport, ConvertedAdapter, OutType};
pub use error::ConvertError;
pub use gguf::{write_atomic, write_atomic_with, GgufInfo, GgufTensor};
pub use inspect::{inspect, Fit, InspectReport, Kind};
pub use lora_gguf::{write_lora_gguf, LoraFile, LoraImage, LoraPair};
pub use peft::{Matrix, PeftAdapter, PeftConfig, PeftKind, PeftModule};
pub use rng::SeededNormal;

/// Result alias for this crate.
pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

/// A memory figure of this process from `/proc/self/status` in MiB (`"VmRSS:"` now,
/// `"VmHWM:"` peak); 0 where the file does not exist. The benches and the trainer report it.
pub fn process_memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is
/// set: users see what was wrong with their file, not candle's stack.
pub fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        other => other.to_string(),
    }
}
