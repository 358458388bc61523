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

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is
/// set: users see what was wrong with their file, not candle's stack.
pub fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        other => other.to_string(),
    }
}
