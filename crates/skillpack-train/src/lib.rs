//! Stage 1 of SA-MDKIF: training skills as LoRA / AdaLoRA adapters in candle, on CPU or CUDA,
//! from a GGUF or Hugging Face base of any family in the architecture table (llama, Qwen2, Qwen3,
//! Gemma 3).

mod adalora;
mod adapter;
mod config;
mod data;
mod mixture;
mod model;
mod ops;
mod peft_io;
mod trainer;
mod weights;

use std::path::Path;

pub use adalora::{orthogonal_regularization, AdaLoraSchedule, RankAllocator, TripletView};
pub use adapter::{LoraModule, Method};
pub use config::LlamaConfig;
pub use data::{bucketed_batches, parse_jsonl, prompt_ids, read_jsonl, tokenize, Example, Record};
pub use mixture::{
    mean_hidden, train_router, HeadSnapshot, MixModule, Mixture, RouterTrainConfig, TrainedHead,
};
pub use model::{Llama, ModuleKey};
pub use ops::frozen_linear;
pub use peft_io::{export_trained, load_peft, save_peft, ExportReport, PeftExport};
pub use skillpack_convert::SeededNormal;
pub use trainer::{Decay, EarlyStopping, Selection, StepMetrics, TrainConfig, Trainer};
pub use weights::{LayerWeights, ModelWeights, PROJECTIONS};

/// Keeps freed memory in the process instead of returning every large block to the kernel:
/// training allocates and frees hundreds of MiB of activations per step, and glibc's default
/// (mmap above 128 KiB, trim on free) turns each of them into fresh page faults. Programs that train
/// call it once at start, before any other thread runs; it does nothing outside glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        // -1: never give the heap top back (glibc treats the threshold as unsigned).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Cosine similarity of two vectors, accumulated in f64: how parity checks compare logit deltas
/// and features (1 = same direction). Lengths must match.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Convert(#[from] skillpack_convert::ConvertError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
