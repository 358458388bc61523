//! Loaded GGUF models: metadata, vocabulary, tokenization and chat templates.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use llama_cpp_sys_2 as sys;

use crate::adapter::CFile;
use crate::gguf_check::check_model_file;
use crate::{Backend, LlamaError, Result, Token};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct ModelParams {
    /// Layers to offload to a GPU (0 = CPU only; a negative value offloads all).
    pub n_gpu_layers: i32,
    /// Load only the vocabulary (for tokenization without weights).
    pub vocab_only: bool,
}

/// One message of a chat, for [`Model::apply_chat_template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

/// A GGUF model loaded by llama.cpp. Frees the model on drop; contexts and adapters borrow it.
pub struct Model {
    ptr: NonNull<sys::llama_model>,
    path: PathBuf,
    architecture: String,
    /// Serialises adapter load/free, which mutate the model's adapter registry.
    adapter_lock: Mutex<()>,
    /// Whether dropping this handle frees the model (false for a caller's model, see
    /// [`Model::from_raw`]).
    owned: bool,
}

// SAFETY: a llama_model is read-only after loading, except its adapter registry, which is only
// touched under `adapter_lock`.
unsafe impl Send for Model {}
// SAFETY: see above.
unsafe impl Sync for Model {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("architecture", &self.architecture)
            .finish()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: borrowck guarantees no context or adapter of this model is alive.
            unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
        }
    }
}

impl Model {
    /// Loads the GGUF model at `path`, after checking in Rust that it is a readable GGUF model.
    pub fn load(backend: &Backend, path: &Path, params: &ModelParams) -> Result<Self> {
        let load_err = |reason: String| LlamaError::ModelLoad {
            path: path.into(),
            reason,
        };
        // llama.cpp would silently keep every layer on the CPU.
        if params.n_gpu_layers != 0 && !backend.supports_gpu_offload() {
            return Err(LlamaError::InvalidArgument(format!(
                "{} GPU layers requested, but this llama.cpp has no GPU backend: build with \
                 `--features gpu` (scripts/build-gpu.sh)",
                params.n_gpu_layers
            )));
        }
        let mut file = CFile::open(path)?;
        let architecture = check_model_file(&mut file).map_err(load_err)?;
        drop(file);
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| load_err("path contains a NUL byte".into()))?;
        // SAFETY: plain struct of defaults.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = params.n_gpu_layers;
        mp.vocab_only = params.vocab_only;
        // SAFETY: valid path string and params; returns null on failure.
        let ptr = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mp) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            load_err(crate::last_llama_error().unwrap_or_else(|| "unknown error (see log)".into()))
        })?;
        Ok(Model {
            ptr,
            path: path.into(),
            architecture,
            adapter_lock: Mutex::new(()),
            owned: true,
        })
    }

    /// Wraps a model a caller loaded through llama.cpp's own API (the C API's entry point); the
    /// handle never frees it. `path` is the GGUF it was loaded from (packs and routers check
    /// their base against that file).
    ///
    /// # Safety
    /// `ptr` must be a valid `llama_model` that outlives the returned handle and everything
    /// borrowed from it (contexts, adapters), loaded by the same llama.cpp this crate links.
    pub unsafe fn from_raw(ptr: *mut sys::llama_model, path: &Path) -> Result<Self> {
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| LlamaError::InvalidArgument("the model pointer is null".into()))?;
        let mut model = Model {
            ptr,
            path: path.into(),
            architecture: String::new(),
            adapter_lock: Mutex::new(()),
            owned: false,
        };
        model.architecture = model.meta("general.architecture").unwrap_or_default();
        Ok(model)
    }

    /// The raw `llama_model` (for callers mixing this layer with llama.cpp's API).
    pub fn raw(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    pub(crate) fn adapter_lock(&self) -> MutexGuard<'_, ()> {
        self.adapter_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: valid model; the vocab lives as long as the model.
        unsafe { sys::llama_model_get_vocab(self.ptr.as_ptr()) }
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture` (e.g. `llama`).
    pub fn architecture(&self) -> String {
        self.architecture.clone()
    }

    /// Embedding width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: valid model (same for the getters below).
        unsafe { sys::llama_model_n_embd(self.ptr.as_ptr()) as usize }
    }

    /// Number of transformer blocks.
    pub fn n_layer(&self) -> usize {
        unsafe { sys::llama_model_n_layer(self.ptr.as_ptr()) as usize }
    }

    /// Attention heads.
    pub fn n_head(&self) -> usize {
        unsafe { sys::llama_model_n_head(self.ptr.as_ptr()) as usize }
    }

    /// Key/value heads.
    pub fn n_head_kv(&self) -> usize {
        unsafe { sys::llama_model_n_head_kv(self.ptr.as_ptr()) as usize }
    }

    /// Training context length.
    pub fn n_ctx_train(&self) -> usize {
        unsafe { sys::llama_model_n_ctx_train(self.ptr.as_ptr()) as usize }
    }

    /// Vocabulary size (= logits width).
    pub fn n_vocab(&self) -> usize {
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) as usize }
    }

    /// Parameter count.
    pub fn n_params(&self) -> u64 {
        unsafe { sys::llama_model_n_params(self.ptr.as_ptr()) }
    }

    /// Total size of the weights in bytes.
    pub fn size_bytes(&self) -> u64 {
        unsafe { sys::llama_model_size(self.ptr.as_ptr()) }
    }

    /// llama.cpp's one-line description (type, size, quantization).
    pub fn description(&self) -> String {
        crate::read_c_string(|buf, len| unsafe {
            sys::llama_model_desc(self.ptr.as_ptr(), buf, len)
        })
        .unwrap_or_default()
    }

    /// A scalar metadata value rendered as a string.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        crate::read_c_string(|buf, len| unsafe {
            sys::llama_model_meta_val_str(self.ptr.as_ptr(), key.as_ptr(), buf, len)
        })
    }

    /// Beginning-of-sequence token, if the vocabulary has one.
    pub fn token_bos(&self) -> Option<Token> {
        let t = unsafe { sys::llama_vocab_bos(self.vocab()) };
        (t >= 0).then_some(t)
    }

    /// End-of-sequence token, if the vocabulary has one.
    pub fn token_eos(&self) -> Option<Token> {
        let t = unsafe { sys::llama_vocab_eos(self.vocab()) };
        (t >= 0).then_some(t)
    }

    /// Whether `token` ends generation (EOS, EOT, ...).
    pub fn is_end_of_generation(&self, token: Token) -> bool {
        unsafe { sys::llama_vocab_is_eog(self.vocab(), token) }
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the model is configured to;
    /// `parse_special` turns special-token text (e.g. `<|im_start|>`) into its token.
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<Token>> {
        let len = i32::try_from(text.len())
            .map_err(|_| LlamaError::Tokenize("text longer than 2 GiB".into()))?;
        let mut tokens = vec![0 as Token; text.len() + 8];
        let call = |tokens: &mut Vec<Token>| unsafe {
            // SAFETY: `tokens` has room for `tokens.len()` ids; text pointer/len are valid.
            sys::llama_tokenize(
                self.vocab(),
                text.as_ptr().cast(),
                len,
                tokens.as_mut_ptr(),
                tokens.len() as i32,
                add_special,
                parse_special,
            )
        };
        let mut n = call(&mut tokens);
        if n == i32::MIN {
            return Err(LlamaError::Tokenize("token count overflows i32".into()));
        }
        if n < 0 {
            tokens.resize((-n) as usize, 0);
            n = call(&mut tokens);
            if n < 0 {
                return Err(LlamaError::Tokenize("buffer sizing failed".into()));
            }
        }
        tokens.truncate(n as usize);
        Ok(tokens)
    }

    /// The bytes of one token (may be a partial UTF-8 sequence). `special` renders control tokens.
    pub fn token_to_bytes(&self, token: Token, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        loop {
            // SAFETY: buffer pointer/len valid; llama.cpp writes at most `len` bytes.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab(),
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// Detokenizes `tokens` into text (lossy on invalid UTF-8).
    pub fn detokenize(&self, tokens: &[Token], render_special: bool) -> String {
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        loop {
            // SAFETY: valid token slice and output buffer.
            let n = unsafe {
                sys::llama_detokenize(
                    self.vocab(),
                    tokens.as_ptr(),
                    tokens.len() as i32,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    false,
                    render_special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return String::from_utf8_lossy(&buf).into_owned();
            }
            buf.resize((-n) as usize, 0);
        }
    }

    /// The model's chat template (`tokenizer.chat_template`), if it has one.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: valid model; null name = default template; the string lives with the model.
        let ptr = unsafe { sys::llama_model_chat_template(self.ptr.as_ptr(), std::ptr::null()) };
        (!ptr.is_null()).then(|| {
            unsafe { CStr::from_ptr(ptr) }
                .to_string_lossy()
                .into_owned()
        })
    }

    /// The prompt format this model's conversations are rendered in: the process-wide choice
    /// ([`set_prompt_format`]), where `Auto` means the GGUF's chat template when it has one and
    /// [`PromptFormat::Plain`] otherwise (base models).
    pub fn prompt_format(&self) -> PromptFormat {
        requested_prompt_format().resolve(self.chat_template().is_some())
    }

    /// Renders `messages` in this model's [`Model::prompt_format`]: its own chat template
    /// (llama.cpp's built-in template matcher) or the plain format. `add_assistant` appends the
    /// assistant prefix for generation.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_assistant: bool,
    ) -> Result<String> {
        if self.prompt_format() == PromptFormat::Plain {
            return Ok(self.render_plain(messages, add_assistant));
        }
        let template = self.chat_template().ok_or_else(|| {
            LlamaError::ChatTemplate(format!(
                "{} has no chat template (use the plain prompt format: --template plain)",
                self.path.display()
            ))
        })?;
        let tmpl = CString::new(template)
            .map_err(|_| LlamaError::ChatTemplate("template has a NUL byte".into()))?;
        let owned: Vec<(CString, CString)> = messages
            .iter()
            .map(|m| {
                Ok((
                    CString::new(m.role.as_str())?,
                    CString::new(m.content.as_str())?,
                ))
            })
            .collect::<std::result::Result<_, std::ffi::NulError>>()
            .map_err(|_| LlamaError::ChatTemplate("message contains a NUL byte".into()))?;
        let chat: Vec<sys::llama_chat_message> = owned
            .iter()
            .map(|(role, content)| sys::llama_chat_message {
                role: role.as_ptr(),
                content: content.as_ptr(),
            })
            .collect();
        let total: usize = messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum();
        let mut buf = vec![0u8; total * 2 + 256];
        loop {
            // SAFETY: all pointers are valid for the call.
            let n = unsafe {
                sys::llama_chat_apply_template(
                    tmpl.as_ptr(),
                    chat.as_ptr(),
                    chat.len(),
                    add_assistant,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                )
            };
            if n < 0 {
                return Err(LlamaError::ChatTemplate(
                    "llama.cpp does not recognise this model's chat template".into(),
                ));
            }
            if (n as usize) <= buf.len() {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n as usize, 0);
        }
    }

    /// The plain prompt format for models without a chat template (see [`PromptFormat::Plain`]).
    fn render_plain(&self, messages: &[ChatMessage], add_assistant: bool) -> String {
        let eos = self
            .token_eos()
            .map(|t| String::from_utf8_lossy(&self.token_to_bytes(t, true)).into_owned())
            .unwrap_or_default();
        let mut out = String::new();
        for m in messages {
            match m.role.as_str() {
                "system" => out.push_str(&format!("{}\n\n", m.content)),
                "assistant" => out.push_str(&format!("### Assistant\n{}{eos}\n\n", m.content)),
                _ => out.push_str(&format!("### User\n{}\n\n", m.content)),
            }
        }
        if add_assistant {
            out.push_str("### Assistant\n");
        }
        out
    }
}

/// How conversations become prompt text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptFormat {
    /// The model's chat template when its GGUF has one, else [`PromptFormat::Plain`].
    #[default]
    Auto,
    /// The GGUF's own chat template (`tokenizer.chat_template`).
    ChatTemplate,
    /// For base models: an optional system text and a blank line, then per turn
    /// `### User\n{text}\n\n` or `### Assistant\n{text}{eos}\n\n`, and `### Assistant\n` to
    /// prompt an answer. The end-of-sequence token closes each answer, so a skill trained on
    /// this format learns to stop.
    Plain,
}

impl PromptFormat {
    /// The format used for a model that has (or lacks) a chat template: `Auto` decided.
    pub fn resolve(self, has_chat_template: bool) -> PromptFormat {
        match self {
            PromptFormat::Auto if has_chat_template => PromptFormat::ChatTemplate,
            PromptFormat::Auto => PromptFormat::Plain,
            chosen => chosen,
        }
    }

    /// `auto`, `chat-template` or `plain`.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptFormat::Auto => "auto",
            PromptFormat::ChatTemplate => "chat-template",
            PromptFormat::Plain => "plain",
        }
    }
}

impl std::str::FromStr for PromptFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "auto" => PromptFormat::Auto,
            "chat-template" | "chat" | "model" => PromptFormat::ChatTemplate,
            "plain" => PromptFormat::Plain,
            _ => {
                return Err(format!(
                    "unknown prompt format `{s}` (auto, chat-template, plain)"
                ))
            }
        })
    }
}

static PROMPT_FORMAT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Chooses the prompt format of every model in this process (the CLI's `--template`).
pub fn set_prompt_format(format: PromptFormat) {
    PROMPT_FORMAT.store(format as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The process-wide choice of [`set_prompt_format`] (`Auto` unless set).
pub fn requested_prompt_format() -> PromptFormat {
    match PROMPT_FORMAT.load(std::sync::atomic::Ordering::Relaxed) {
        1 => PromptFormat::ChatTemplate,
        2 => PromptFormat::Plain,
        _ => PromptFormat::Auto,
    }
}
