use std::path::PathBuf;

/// Errors of reading, validating and converting adapters. Each names the file, tensor or
/// field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEFT adapter directory: {reason}")]
    NotPeft { path: PathBuf, reason: String },
    #[error("{path}: invalid field `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{path}: unsupported adapter: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: corrupt or truncated safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: not a valid GGUF file: {reason}")]
    Gguf { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("base model {base}: {reason}")]
    Base { base: PathBuf, reason: String },
}
