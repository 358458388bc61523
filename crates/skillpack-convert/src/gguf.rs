//! GGUF headers (through candle-core's `gguf_file` reader) and atomic writes.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
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

/// Walks the metadata of a GGUF header without keeping it, to check `general.alignment`:
/// candle's reader divides by it, so 0 would panic (found by fuzzing), and llama.cpp requires a
/// power of two. Every length is checked against the bytes left before anything is skipped.
struct HeaderWalk<'r, R> {
    reader: &'r mut R,
    file_size: u64,
    /// GGUF v1 stores lengths and counts as u32, later versions as u64.
    wide: bool,
}

/// Bytes of a scalar GGUF value type.
fn scalar_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

impl<R: Read + Seek> HeaderWalk<'_, R> {
    fn io_error(&self, e: std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!(
                "the header runs past the end of the file ({} bytes): truncated?",
                self.file_size
            )
        } else {
            format!("reading the header: {e}")
        }
    }

    fn bytes<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.reader
            .read_exact(&mut b)
            .map_err(|e| self.io_error(e))?;
        Ok(b)
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn length(&mut self) -> std::result::Result<u64, String> {
        if self.wide {
            Ok(u64::from_le_bytes(self.bytes()?))
        } else {
            Ok(self.u32()? as u64)
        }
    }

    fn skip(&mut self, n: u64) -> std::result::Result<(), String> {
        let here = self
            .reader
            .stream_position()
            .map_err(|e| self.io_error(e))?;
        if n > self.file_size.saturating_sub(here) {
            return Err(format!(
                "the header declares {n} bytes at byte {here}, past the end of the file ({} bytes): truncated?",
                self.file_size
            ));
        }
        self.reader
            .seek(std::io::SeekFrom::Current(n as i64))
            .map_err(|e| self.io_error(e))?;
        Ok(())
    }

    fn skip_value(&mut self, value_type: u32, depth: usize) -> std::result::Result<(), String> {
        if let Some(size) = scalar_size(value_type) {
            return self.skip(size);
        }
        match value_type {
            8 => {
                let n = self.length()?;
                self.skip(n)
            }
            // candle's reader allows 64 levels; the walk must reach as far as it does.
            9 if depth < 64 => {
                let elem = self.u32()?;
                let count = self.length()?;
                match scalar_size(elem) {
                    Some(size) => self.skip(count.saturating_mul(size)),
                    // Each element takes at least one byte, so this ends at the file's end.
                    None => (0..count).try_for_each(|_| self.skip_value(elem, depth + 1)),
                }
            }
            9 => Err("header: arrays nested too deeply".into()),
            t => Err(format!("header: unknown GGUF value type {t}")),
        }
    }

    fn check(&mut self) -> std::result::Result<(), String> {
        let _magic = self.u32()?;
        let version = self.u32()?;
        if !(1..=3).contains(&version) {
            return Err(format!("unsupported GGUF version {version}"));
        }
        self.wide = version > 1;
        let _n_tensors = self.length()?;
        let n_kv = self.length()?;
        const KEY: &[u8] = b"general.alignment";
        for _ in 0..n_kv {
            let key_len = self.length()?;
            // candle drops trailing NUL bytes from strings, so "general.alignment\0" is the
            // same key to it.
            let is_alignment = if (KEY.len() as u64..=64).contains(&key_len) {
                let mut key = [0u8; 64];
                let key = &mut key[..key_len as usize];
                self.reader.read_exact(key).map_err(|e| self.io_error(e))?;
                let end = key.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                &key[..end] == KEY
            } else {
                self.skip(key_len)?;
                false
            };
            let value_type = self.u32()?;
            if !is_alignment {
                self.skip_value(value_type, 0)?;
                continue;
            }
            // llama.cpp reads it as u32 and refuses any other type.
            if value_type != 4 {
                return Err(format!(
                    "general.alignment must be of type u32, found GGUF type {value_type}"
                ));
            }
            let mut b = [0u8; 8];
            self.reader
                .read_exact(&mut b[..4])
                .map_err(|e| self.io_error(e))?;
            let value = u64::from_le_bytes(b);
            if !value.is_power_of_two() {
                return Err(format!(
                    "general.alignment must be a power of two, found {value}"
                ));
            }
        }
        Ok(())
    }
}

fn dtype_name(t: GgmlDType) -> String {
    format!("{t:?}").to_lowercase()
}

impl GgufInfo {
    /// Reads and validates the header of `path`: the metadata parses, and every tensor's data
    /// lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| ConvertError::Io {
            path: path.into(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if meta.is_dir() {
            return Err(ConvertError::Gguf {
                path: path.into(),
                reason: "is a directory, not a GGUF file".into(),
            });
        }
        Self::read(&mut std::io::BufReader::new(file), path, meta.len())
    }

    /// Reads and validates a GGUF header from `reader` (a file of `file_size` bytes; `path`
    /// names it in errors).
    pub fn read<R: Read + Seek>(reader: &mut R, path: &Path, file_size: u64) -> Result<Self> {
        let gguf_err = |reason: String| ConvertError::Gguf {
            path: path.into(),
            reason,
        };
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            let what = if file_size == 0 {
                "empty file, not a GGUF file"
            } else {
                "missing GGUF magic: not a GGUF file"
            };
            return Err(gguf_err(what.into()));
        }
        reader.rewind().map_err(|e| gguf_err(e.to_string()))?;
        HeaderWalk {
            reader: &mut *reader,
            file_size,
            wide: true,
        }
        .check()
        .map_err(gguf_err)?;
        reader.rewind().map_err(|e| gguf_err(e.to_string()))?;
        let content = Content::read(reader).map_err(|e| gguf_err(crate::candle_message(&e)))?;
        let mut tensors = BTreeMap::new();
        for (name, info) in &content.tensor_infos {
            let dims = info.shape.dims();
            // Checked: a crafted header can give dimensions whose product overflows.
            let elems = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .filter(|&e| e <= file_size.saturating_mul(64))
                .ok_or_else(|| {
                    gguf_err(format!(
                        "tensor `{name}`: dimensions {dims:?} are larger than the file could hold"
                    ))
                })?;
            // candle would build a typed slice over an empty, unaligned buffer for it (found by
            // fuzzing), and no real model or adapter has one.
            if elems == 0 {
                return Err(gguf_err(format!(
                    "tensor `{name}` has no elements (dimensions {dims:?})"
                )));
            }
            let block = info.ggml_dtype.block_size() as u64;
            if elems % block != 0 {
                return Err(gguf_err(format!(
                    "tensor `{name}`: {elems} elements is not a multiple of the block size {block}"
                )));
            }
            let bytes = elems / block * info.ggml_dtype.type_size() as u64;
            let start = content.tensor_data_offset.checked_add(info.offset);
            let end = start.and_then(|s| s.checked_add(bytes));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(gguf_err(format!(
                    "tensor `{name}`: data offset {} overflows",
                    info.offset
                )));
            };
            if end > file_size {
                return Err(gguf_err(format!(
                    "tensor `{name}` data ends at byte {end}, past the end of the file ({file_size} bytes): truncated?"
                )));
            }
            tensors.insert(
                name.clone(),
                GgufTensor {
                    dims: dims.to_vec(),
                    dtype: dtype_name(info.ggml_dtype),
                    bytes,
                    offset: start,
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
    write_atomic_with(path, |w| w.write_all(bytes)).map(|_| ())
}

/// [`write_atomic`] for a file produced by `write` (streamed through a buffer, never held in
/// memory whole); returns the bytes written.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<u64> {
    skillpack_data::write_atomic_with(path, write).map_err(|source| ConvertError::Io {
        path: path.into(),
        source,
    })
}
