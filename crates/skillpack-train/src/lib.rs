//! Stage 1 of SA-MDKIF: training skills as LoRA / AdaLoRA adapters in candle, on CPU or CUDA,
//! from a GGUF or Hugging Face base of any family in the architecture table (llama, Qwen2, Qwen3,
//! Gemma 3).
//!
//! Train a skill in one call ([`train_skill`]), here two LoRA steps on a tiny random llama:
//!
//! ```rust
//! use std::path::{Path, PathBuf};
//! use skillpack_train::{train_skill, Method, SkillTrainOptions, StepBudget};
//!
//! let fixtures = std::env::var_os("SKILLPACK_FIXTURES")
//!     .map(PathBuf::from)
//!     .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let dir = tempfile::tempdir()?;
//! let data = dir.path().join("train.jsonl");
//! std::fs::write(
//!     &data,
//!     r#"{"query": "Which drug lowers fever?", "output": "aspirin"}
//! {"context": "The patient has type 1 diabetes.", "query": "Which hormone?", "output": "insulin"}
//! "#,
//! )?;
//! let base = fixtures.join("tiny-llama/tiny-llama-f32.gguf");
//! let mut options = SkillTrainOptions::new(&data, dir.path().join("run"), base);
//! options.hyperparameters.method = Method::Lora;
//! options.hyperparameters.r = 4;
//! options.hyperparameters.batch = 2;
//! options.hyperparameters.max_len = 64;
//! options.budget = StepBudget::Steps(2);
//!
//! let outcome = train_skill(&options, |_event| {})?;
//! assert_eq!(outcome.steps, 2);
//! assert!(outcome.metrics.iter().all(|m| m.loss.is_finite()));
//! assert!(outcome.export.peft_dir.join("adapter_model.safetensors").is_file());
//! assert!(dir.path().join("run/adapter.gguf").is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`bench_training`] measures training speed the same way; the pieces underneath ([`Trainer`],
//! [`tokenize`], [`export_trained`], …) are public for runs that need other loops.

mod adalora;
mod adapter;
pub mod amx;
mod attention;
mod bench;
mod chart;
mod config;
mod data;
mod mixture;
mod model;
mod ops;
mod peft_io;
mod skill;
mod trainer;
mod verify;
mod weights;

use std::path::Path;

pub use adalora::{orthogonal_regularization, AdaLoraSchedule, RankAllocator, TripletView};
pub use adapter::{LoraModule, Method};
pub use bench::{bench_training, bench_training_on, TrainingBench, WARMUP_STEPS};
pub use chart::{plot_dev_curves, plot_loss, read_metrics, read_run_curve, RunCurve};
pub use config::LlamaConfig;
pub use data::{bucketed_batches, parse_jsonl, prompt_ids, read_jsonl, tokenize, Example, Record};
pub use mixture::{
    mean_hidden, train_router, HeadSnapshot, MixModule, Mixture, RouterTrainConfig, TrainedHead,
};
pub use model::{Llama, ModuleKey};
pub use ops::{
    check_matmul_precision, frozen_linear, head_cross_entropy, release_packed_weights,
    MatmulPrecision, MatmulPrecisionScope,
};
pub use peft_io::{export_trained, load_peft, save_peft, ExportReport, PeftExport};
pub use skill::{
    evenly_spaced, parse_device, tokenize_records, train_skill, training_dtype, DevOptions,
    Hyperparameters, SkillTrainOptions, StepBudget, TrainEvent, TrainOutcome,
};
pub use skillpack_convert::SeededNormal;
pub use trainer::{Decay, EarlyStopping, Selection, StepMetrics, TrainConfig, Trainer};
pub use verify::{verify_adapter, AdapterAgreement};
pub use weights::{LayerWeights, ModelWeights, PROJECTIONS};

/// Keeps freed memory in the process instead of returning every large block to the kernel:
/// training allocates and frees hundreds of MiB of activations per step, and glibc's default
/// (mmap above 128 KiB, trim on free) turns each of them into fresh page faults.
///
/// The library applies it itself where training starts: [`train_skill`], [`bench_training`],
/// [`Trainer::new`] and [`train_router`]. Only the first call in a process does anything
/// (calling it earlier, before other threads start, also covers what the process allocates
/// before training); it does nothing outside glibc. The setting is process-wide and permanent:
/// a long-lived process that trains keeps its freed memory for reuse.
pub fn tune_allocator() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator thresholds; glibc takes its own lock.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            // -1: never give the heap top back (glibc treats the threshold as unsigned).
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    });
}

/// Peak resident memory of this process in MiB (0 where `/proc` does not exist).
fn peak_rss_mib() -> f64 {
    skillpack_convert::process_memory_mib("VmHWM:")
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
    #[error(transparent)]
    LlamaCpp(#[from] skillpack_llama::LlamaError),
    /// The requested CUDA device is not available (or this build has no CUDA).
    #[error("CUDA device (build with --features cuda)")]
    Device(#[source] candle_core::Error),
    /// Drawing a chart failed.
    #[error("{0}")]
    Chart(String),
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
