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
