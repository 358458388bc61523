//! GGUF LoRA adapters: loading (path, open file at an offset, memory) and freeing.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use crate::gguf_check::{check_file, AdapterHeader};
use crate::{LlamaError, Model, Result};

/// An owned C `FILE*`, closed on drop. A memory-backed file keeps its buffer alive.
pub(crate) struct CFile {
    ptr: NonNull<libc::FILE>,
    _buffer: Option<Vec<u8>>,
}

impl CFile {
    /// Opens `path` for binary reading.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let c_path =
            CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| LlamaError::File {
                path: path.into(),
                message: "path contains a NUL byte".into(),
            })?;
        // SAFETY: valid NUL-terminated strings.
        let ptr = unsafe { libc::fopen(c_path.as_ptr(), c"rb".as_ptr()) };
        NonNull::new(ptr)
            .map(|ptr| CFile { ptr, _buffer: None })
            .ok_or_else(|| LlamaError::File {
                path: path.into(),
                message: std::io::Error::last_os_error().to_string(),
            })
    }

    /// A new `FILE*` over a duplicate of `file`'s descriptor, positioned at `offset`.
    /// The caller's `File` stays open and usable.
    pub(crate) fn from_file_at(file: &std::fs::File, offset: u64) -> std::io::Result<Self> {
        // SAFETY: dup of a valid fd; the duplicate is owned by the FILE from here on.
        let fd = unsafe { libc::dup(file.as_raw_fd()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let ptr = unsafe { libc::fdopen(fd, c"rb".as_ptr()) };
        let Some(ptr) = NonNull::new(ptr) else {
            let err = std::io::Error::last_os_error();
            // SAFETY: fdopen failed, so the fd is still ours to close.
            unsafe { libc::close(fd) };
            return Err(err);
        };
        let mut this = CFile { ptr, _buffer: None };
        this.seek(offset)?;
        Ok(this)
    }

    /// A read-only `FILE*` over `bytes` held in memory (`fmemopen`), with no disk round trip.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> std::io::Result<Self> {
        if bytes.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty buffer",
            ));
        }
        // SAFETY: the buffer is moved into the returned value and outlives the FILE; "rb" never writes.
        let ptr = unsafe {
            libc::fmemopen(
                bytes.as_ptr() as *mut libc::c_void,
                bytes.len(),
                c"rb".as_ptr(),
            )
        };
        NonNull::new(ptr)
            .map(|ptr| CFile {
                ptr,
                _buffer: Some(bytes),
            })
            .ok_or_else(std::io::Error::last_os_error)
    }

    pub(crate) fn as_ptr(&mut self) -> *mut libc::FILE {
        self.ptr.as_ptr()
    }

    pub(crate) fn tell(&mut self) -> std::io::Result<u64> {
        // SAFETY: valid open FILE.
        let pos = unsafe { libc::ftello(self.ptr.as_ptr()) };
        if pos < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(pos as u64)
        }
    }

    pub(crate) fn seek(&mut self, offset: u64) -> std::io::Result<()> {
        // SAFETY: valid open FILE.
        let rc = unsafe { libc::fseeko(self.ptr.as_ptr(), offset as libc::off_t, libc::SEEK_SET) };
        if rc != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for CFile {
    fn drop(&mut self) {
        // SAFETY: the FILE is owned and closed exactly once.
        unsafe { libc::fclose(self.ptr.as_ptr()) };
    }
}

/// The owned llama.cpp adapter. Dropped (and freed) only when the last [`LoraAdapter`] clone is
/// gone, which includes the clones every [`crate::Context`] keeps for the adapters it has set.
struct AdapterHandle<'m> {
    ptr: NonNull<sys::llama_adapter_lora>,
    model: &'m Model,
}

// SAFETY: an adapter is immutable after loading; llama.cpp only reads its tensors during graph
// evaluation. Registration with the model (on load and free) is serialised by the model's lock.
unsafe impl Send for AdapterHandle<'_> {}
// SAFETY: see above.
unsafe impl Sync for AdapterHandle<'_> {}

impl Drop for AdapterHandle<'_> {
    fn drop(&mut self) {
        let _guard = self.model.adapter_lock();
        // SAFETY: no context references this adapter any more (contexts hold clones of the Arc),
        // the model outlives `'m`, and free unregisters the adapter from the model.
        unsafe { sys::llama_adapter_lora_free(self.ptr.as_ptr()) };
    }
}

/// A GGUF LoRA adapter loaded for one [`Model`]. Cheap to clone (reference counted).
#[derive(Clone)]
pub struct LoraAdapter<'m> {
    handle: Arc<AdapterHandle<'m>>,
    header: Arc<AdapterHeader>,
    name: Arc<str>,
}

impl std::fmt::Debug for LoraAdapter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter")
            .field("name", &self.name)
            .field("pairs", &self.header.n_pairs)
            .field("alpha", &self.header.alpha)
            .finish()
    }
}

impl<'m> LoraAdapter<'m> {
    /// Loads the GGUF LoRA adapter at `path` for `model`.
    pub fn load(model: &'m Model, path: &Path) -> Result<Self> {
        let mut file = CFile::open(path)?;
        Self::load_from(model, &mut file, path.display().to_string())
    }

    /// Loads an adapter stored inside `file` starting at byte `offset` (a GGUF embedded in a
    /// larger file, e.g. a skill pack bundle). `file` is not moved or closed.
    pub fn load_from_file_at(
        model: &'m Model,
        file: &std::fs::File,
        offset: u64,
        name: &str,
    ) -> Result<Self> {
        let mut cfile = CFile::from_file_at(file, offset).map_err(|e| LlamaError::Adapter {
            source_name: name.into(),
            reason: format!("cannot open at offset {offset}: {e}"),
        })?;
        Self::load_from(model, &mut cfile, name.to_string())
    }

    /// Loads an adapter from a complete GGUF image in memory (`fmemopen`, no disk round trip).
    pub fn load_from_bytes(model: &'m Model, bytes: Vec<u8>, name: &str) -> Result<Self> {
        let mut cfile = CFile::from_bytes(bytes).map_err(|e| LlamaError::Adapter {
            source_name: name.into(),
            reason: format!("fmemopen failed: {e}"),
        })?;
        Self::load_from(model, &mut cfile, name.to_string())
    }

    fn load_from(model: &'m Model, file: &mut CFile, name: String) -> Result<Self> {
        let adapter_err = |reason: String| LlamaError::Adapter {
            source_name: name.clone(),
            reason,
        };
        let header = check_file(file, &model.architecture()).map_err(adapter_err)?;
        let ptr = {
            let _guard = model.adapter_lock();
            // SAFETY: the model pointer is valid for 'm; the FILE is open and positioned at the
            // start of a GGUF whose header was validated above. llama.cpp catches its own
            // exceptions and returns null on failure.
            unsafe {
                sys::llama_adapter_lora_init_from_file_ptr(model.as_ptr(), file.as_ptr().cast())
            }
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            adapter_err(
                crate::last_llama_error().unwrap_or_else(|| "llama.cpp refused the adapter".into()),
            )
        })?;
        Ok(LoraAdapter {
            handle: Arc::new(AdapterHandle { ptr, model }),
            header: Arc::new(header),
            name: name.into(),
        })
    }

    /// Where the adapter came from (path or caller-given name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The validated header (architecture, alpha, pairs, metadata).
    pub fn header(&self) -> &AdapterHeader {
        &self.header
    }

    /// A metadata value as llama.cpp stored it (scalars only).
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // SAFETY: valid adapter; buffer handling in read_c_string.
        crate::read_c_string(|buf, len| unsafe {
            sys::llama_adapter_meta_val_str(self.handle.ptr.as_ptr(), key.as_ptr(), buf, len)
        })
    }

    /// Number of live handles to this adapter (this one, its clones, and contexts using it).
    pub fn strong_count(&self) -> usize {
        Arc::strong_count(&self.handle)
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_adapter_lora {
        self.handle.ptr.as_ptr()
    }

    pub(crate) fn model(&self) -> &'m Model {
        self.handle.model
    }
}
