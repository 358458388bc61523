//! GGUF headers (through candle-core's `gguf_file` reader) and atomic writes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use sha2::{Digest, Sha256};

use crate::{ConvertError, Result};

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// Row-major dimensions, outermost first (GGUF's `ne` reversed): `[out, in]` for a weight.
    pub dims: Vec<usize>,
    /// ggml type name (`f32`, `q4_1`, ...).
    pub dtype: String,
    /// Bytes of data.
    pub bytes: u64,
    /// Absolute file offset of the data.
    pub offset: u64,
}

/// The validated header of a GGUF file: metadata and tensor table.
#[derive(Debug)]
pub struct GgufInfo {
    /// The file.
    pub path: PathBuf,
    /// File size in bytes.
    pub file_size: u64,
    /// Key/value metadata.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, GgufTensor>,
}

fn dtype_name(t: GgmlDType) -> String {
    format!("{t:?}").to_lowercase()
}

impl GgufInfo {
    /// Reads and validates the header of `path`: the metadata parses, and every tensor's data
    /// lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let gguf_err = |reason: String| ConvertError::Gguf {
            path: path.into(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(|source| ConvertError::Io {
            path: path.into(),
            source,
        })?;
        let file_size = file
            .metadata()
            .map_err(|source| ConvertError::Io {
                path: path.into(),
                source,
            })?
            .len();
        let mut magic = [0u8; 4];
        use std::io::Read;
        if file.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(gguf_err("missing GGUF magic".into()));
        }
        use std::io::Seek;
        file.rewind().map_err(|e| gguf_err(e.to_string()))?;
        let mut reader = std::io::BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| gguf_err(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elems % block != 0 {
                return Err(gguf_err(format!(
                    "tensor `{name}`: {elems} elements is not a multiple of the block size {block}"
                )));
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content.tensor_data_offset + info.offset + bytes;
            if end > file_size {
                return Err(gguf_err(format!(
                    "tensor `{name}` data ends at byte {end}, past the end of the file ({file_size} bytes): truncated?"
                )));
            }
            tensors.insert(
                name.clone(),
                GgufTensor {
                    dims: info.shape.dims().to_vec(),
                    dtype: dtype_name(info.ggml_dtype),
                    bytes,
                    offset: content.tensor_data_offset + info.offset,
                },
            );
        }
        Ok(GgufInfo {
            path: path.into(),
            file_size,
            metadata: content.metadata.into_iter().collect(),
            tensors,
        })
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// An unsigned integer metadata value (any unsigned/signed integer type).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        match self.metadata.get(key)? {
            Value::U8(v) => Some(*v as u64),
            Value::U16(v) => Some(*v as u64),
            Value::U32(v) => Some(*v as u64),
            Value::U64(v) => Some(*v),
            Value::I32(v) if *v >= 0 => Some(*v as u64),
            Value::I64(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Whether the file is an adapter (`general.type = adapter`).
    pub fn is_adapter(&self) -> bool {
        self.get_str("general.type") == Some("adapter")
    }

    /// `{arch}.<suffix>` as an integer, e.g. `attention.head_count`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }

    /// The raw stored bytes of tensor `name` (in its GGUF type).
    pub fn read_tensor_bytes(&self, name: &str) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let t = self.tensors.get(name).ok_or_else(|| ConvertError::Gguf {
            path: self.path.clone(),
            reason: format!("no tensor `{name}`"),
        })?;
        let io_err = |source| ConvertError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::File::open(&self.path).map_err(io_err)?;
        f.seek(SeekFrom::Start(t.offset)).map_err(io_err)?;
        let mut buf = vec![0u8; t.bytes as usize];
        f.read_exact(&mut buf).map_err(io_err)?;
        Ok(buf)
    }

    /// A fingerprint of the tensor table (names, shapes, types): equal for the same model in
    /// the same quantization, different for any other base.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (name, t) in &self.tensors {
            h.update(format!("{name}:{:?}:{}\n", t.dims, t.dtype).as_bytes());
        }
        let digest = h.finalize();
        digest[..12].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over the target. A failure leaves any existing file untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| ConvertError::Io {
        path: path.into(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no file name",
        ))
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(())
}
