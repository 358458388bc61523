//! Inference contexts: KV cache, batch decoding, logits and the adapters set on them.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use crate::{LlamaError, LoraAdapter, Model, Result, Token};

/// How to create a [`Context`].
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// Context length in tokens (0 = the model's training length).
    pub n_ctx: u32,
    /// Largest batch submitted to one decode call.
    pub n_batch: u32,
    /// Threads for single-token decoding and for batches (`None` = llama.cpp's default).
    pub n_threads: Option<i32>,
    /// Also compute embeddings (mean-pooled per sequence).
    pub embeddings: bool,
    /// Keep the KV cache in f32 instead of f16 (exact comparisons; twice the cache memory).
    pub kv_f32: bool,
    /// Sequences the KV cache can hold at once (one unified buffer, so sequences can share a
    /// prompt's cells: see [`Context::copy_sequence`]).
    pub n_seq_max: u32,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 2048,
            n_batch: 512,
            n_threads: None,
            embeddings: false,
            kv_f32: false,
            n_seq_max: 1,
        }
    }
}

/// A batch of tokens for [`Context::decode`], owned by llama.cpp's allocator.
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}

impl Batch {
    /// A batch with room for `capacity` tokens, each in one sequence.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // SAFETY: token batch (embd = 0), one sequence id per token.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        Batch { raw, capacity }
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.n_tokens == 0
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Appends `token` at position `pos` of sequence `seq`; `logits` requests its output row.
    pub fn push(&mut self, token: Token, pos: i32, seq: i32, logits: bool) -> Result<()> {
        let i = self.len();
        if i >= self.capacity {
            return Err(LlamaError::InvalidArgument(format!(
                "batch is full ({} tokens)",
                self.capacity
            )));
        }
        // SAFETY: i < capacity; every array was allocated with `capacity` entries and n_seq_max 1.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = logits as i8;
        }
        self.raw.n_tokens += 1;
        Ok(())
    }
}

/// An inference context over a [`Model`]. Not `Sync`: use one per thread.
pub struct Context<'m> {
    ptr: NonNull<sys::llama_context>,
    model: &'m Model,
    /// Adapters currently set, with their scales. Holding the handles keeps them alive for as
    /// long as llama.cpp may dereference them.
    active: Vec<(LoraAdapter<'m>, f32)>,
    /// For each token of the last decoded batch, whether it produced an output row.
    last_outputs: Vec<bool>,
    memory_epoch: u64,
    /// Whether dropping this handle frees the context (false for a caller's context).
    owned: bool,
}

// SAFETY: a llama_context may move between threads; it is never shared (no Sync).
unsafe impl Send for Context<'_> {}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: freed once; `active` (dropped after this) keeps adapters alive until then.
            unsafe { sys::llama_free(self.ptr.as_ptr()) }
        } else {
            // A caller's context outlives this handle: it must not keep pointers to adapters
            // this handle may be the last owner of.
            // SAFETY: valid context (the caller's contract); an empty list clears its adapters.
            unsafe {
                sys::llama_set_adapters_lora(
                    self.ptr.as_ptr(),
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

impl<'m> Context<'m> {
    /// Creates a context for `model`.
    pub fn new(model: &'m Model, params: &ContextParams) -> Result<Self> {
        // SAFETY: plain struct of defaults.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = params.n_batch;
        cp.n_ubatch = params.n_batch;
        if let Some(n) = params.n_threads {
            if n < 1 {
                return Err(LlamaError::InvalidArgument(format!(
                    "n_threads must be >= 1, got {n}"
                )));
            }
            cp.n_threads = n;
            cp.n_threads_batch = n;
        }
        cp.embeddings = params.embeddings;
        if params.kv_f32 {
            cp.type_k = sys::GGML_TYPE_F32;
            cp.type_v = sys::GGML_TYPE_F32;
        }
        cp.n_seq_max = params.n_seq_max.max(1);
        if cp.n_seq_max > 1 {
            cp.kv_unified = true;
        }
        if params.embeddings {
            cp.pooling_type = sys::LLAMA_POOLING_TYPE_MEAN;
        }
        // SAFETY: valid model pointer and params; null on failure.
        let ptr = unsafe { sys::llama_init_from_model(model.as_ptr(), cp) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            LlamaError::ContextCreate(
                crate::last_llama_error().unwrap_or_else(|| "unknown error".into()),
            )
        })?;
        Ok(Context::wrap(ptr, model, true))
    }

    fn wrap(ptr: NonNull<sys::llama_context>, model: &'m Model, owned: bool) -> Self {
        Context {
            ptr,
            model,
            active: Vec::new(),
            last_outputs: Vec::new(),
            memory_epoch: 0,
            owned,
        }
    }

    /// Wraps a context a caller created through llama.cpp's API for `model`; the handle never
    /// frees it, and clears the adapters it set when dropped.
    ///
    /// # Safety
    /// `ptr` must be a valid `llama_context` that outlives the returned handle, not used by
    /// anyone else while the handle is in use.
    pub unsafe fn from_raw(model: &'m Model, ptr: *mut sys::llama_context) -> Result<Self> {
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| LlamaError::InvalidArgument("the context pointer is null".into()))?;
        // SAFETY: valid context (the caller's contract).
        if unsafe { sys::llama_get_model(ptr.as_ptr()) } != model.raw().cast_const() {
            return Err(LlamaError::InvalidArgument(
                "the context was created for another model".into(),
            ));
        }
        Ok(Context::wrap(ptr, model, false))
    }

    /// The model this context runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Context length in tokens.
    pub fn n_ctx(&self) -> usize {
        // SAFETY: valid context.
        unsafe { sys::llama_n_ctx(self.ptr.as_ptr()) as usize }
    }

    /// Largest batch one decode call accepts.
    pub fn n_batch(&self) -> usize {
        // SAFETY: valid context.
        unsafe { sys::llama_n_batch(self.ptr.as_ptr()) as usize }
    }

    /// Decodes `batch`, appending it to the KV cache.
    pub fn decode(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Err(LlamaError::Decode("empty batch".into()));
        }
        if batch.len() > self.n_batch() {
            return Err(LlamaError::Decode(format!(
                "batch of {} tokens exceeds n_batch {}",
                batch.len(),
                self.n_batch()
            )));
        }
        let n_vocab = self.model.n_vocab() as i32;
        for i in 0..batch.len() {
            // SAFETY: i < n_tokens.
            let t = unsafe { *batch.raw.token.add(i) };
            if t < 0 || t >= n_vocab {
                return Err(LlamaError::Decode(format!(
                    "token id {t} outside the vocabulary (0..{n_vocab})"
                )));
            }
        }
        // SAFETY: valid context; the batch is well formed (ids checked above).
        let rc = unsafe { sys::llama_decode(self.ptr.as_ptr(), batch.raw) };
        match rc {
            0 => {
                self.last_outputs = (0..batch.len())
                    // SAFETY: i < n_tokens.
                    .map(|i| unsafe { *batch.raw.logits.add(i) } != 0)
                    .collect();
                Ok(())
            }
            1 => Err(LlamaError::Decode(format!(
                "no KV slot: context of {} tokens is full",
                self.n_ctx()
            ))),
            2 => Err(LlamaError::Decode("aborted".into())),
            rc => Err(LlamaError::Decode(format!(
                "llama_decode returned {rc}: {}",
                crate::last_llama_error().unwrap_or_default()
            ))),
        }
    }

    /// Decodes `tokens` of sequence 0 starting at position `start`, in chunks of `n_batch`.
    /// Logits are kept for the last token, or for every token when `all_logits` is set
    /// (then only the final chunk's rows are readable).
    pub fn eval(&mut self, tokens: &[Token], start: usize, all_logits: bool) -> Result<()> {
        if start + tokens.len() > self.n_ctx() {
            return Err(LlamaError::Decode(format!(
                "{} tokens from position {start} exceed the context of {}",
                tokens.len(),
                self.n_ctx()
            )));
        }
        let n_batch = self.n_batch();
        let mut batch = Batch::new(n_batch.min(tokens.len()));
        for (chunk_index, chunk) in tokens.chunks(n_batch).enumerate() {
            batch.clear();
            let base = start + chunk_index * n_batch;
            let last_chunk = base + chunk.len() == start + tokens.len();
            for (j, &t) in chunk.iter().enumerate() {
                let want = all_logits || (last_chunk && j + 1 == chunk.len());
                batch.push(t, (base + j) as i32, 0, want)?;
            }
            self.decode(&batch)?;
        }
        Ok(())
    }

    /// Logits for token `i` of the last decoded batch (which must have requested logits);
    /// a negative `i` counts output rows from the end (-1 = the last output).
    pub fn logits(&self, i: i32) -> Result<&[f32]> {
        let n_outputs = self.last_outputs.iter().filter(|&&o| o).count() as i32;
        let valid = if i < 0 {
            n_outputs + i >= 0
        } else {
            self.last_outputs.get(i as usize).copied().unwrap_or(false)
        };
        if !valid {
            // Checked here: a debug build of llama.cpp aborts on an invalid row.
            return Err(LlamaError::InvalidArgument(format!(
                "no logits for batch index {i} (the last batch had {} tokens, {n_outputs} with logits)",
                self.last_outputs.len()
            )));
        }
        // SAFETY: the index was validated against the last decode; the slice is n_vocab floats
        // owned by the context and valid until the next decode, which needs `&mut self`.
        let ptr = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), i) };
        if ptr.is_null() {
            return Err(LlamaError::InvalidArgument(format!(
                "llama.cpp has no logits for index {i}"
            )));
        }
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.model.n_vocab()) })
    }

    /// Mean-pooled embedding of sequence `seq` (context created with `embeddings: true`).
    pub fn embeddings(&self, seq: i32) -> Result<&[f32]> {
        // SAFETY: valid context; null when embeddings are off.
        let ptr = unsafe { sys::llama_get_embeddings_seq(self.ptr.as_ptr(), seq) };
        if ptr.is_null() {
            return Err(LlamaError::InvalidArgument(
                "no pooled embeddings (create the context with embeddings)".into(),
            ));
        }
        // SAFETY: n_embd floats owned by the context until the next decode.
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.model.n_embd()) })
    }

    /// Forgets every cached token (all sequences).
    pub fn clear_memory(&mut self) {
        // SAFETY: valid context; the memory handle belongs to it.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) };
        self.last_outputs.clear();
        self.memory_epoch += 1;
    }

    /// Sequences this context holds at once.
    pub fn n_seq_max(&self) -> usize {
        // SAFETY: valid context.
        unsafe { sys::llama_n_seq_max(self.ptr.as_ptr()) as usize }
    }

    fn check_seq(&self, seq: i32) -> Result<()> {
        if seq < 0 || seq as usize >= self.n_seq_max() {
            return Err(LlamaError::InvalidArgument(format!(
                "sequence {seq} outside 0..{} (raise ContextParams::n_seq_max)",
                self.n_seq_max()
            )));
        }
        Ok(())
    }

    /// Makes sequence `dst` share every cached token of sequence `src` (no copy of the
    /// keys and values: the cells are tagged with both sequences).
    pub fn copy_sequence(&mut self, src: i32, dst: i32) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        // SAFETY: valid context; both sequence ids are within n_seq_max.
        unsafe {
            sys::llama_memory_seq_cp(sys::llama_get_memory(self.ptr.as_ptr()), src, dst, -1, -1)
        };
        Ok(())
    }

    /// Forgets every cached token of sequence `seq` (cells shared with other sequences stay).
    pub fn remove_sequence(&mut self, seq: i32) -> Result<()> {
        self.check_seq(seq)?;
        // SAFETY: valid context; the sequence id is within n_seq_max.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.ptr.as_ptr()), seq, -1, -1) };
        Ok(())
    }

    /// Counts how often the KV cache was cleared (by [`Context::clear_memory`] or a change of
    /// adapters): a caller that keeps track of cached tokens compares it to know they are gone.
    pub fn memory_epoch(&self) -> u64 {
        self.memory_epoch
    }

    /// Forgets the cached tokens of sequence 0 from position `from` on, so that decoding can
    /// continue from there (e.g. scoring several continuations of one prompt).
    pub fn truncate_memory(&mut self, from: usize) -> Result<()> {
        // SAFETY: valid context; removing a position range of one sequence is always allowed
        // for the unified KV cache these contexts use.
        let ok = unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.ptr.as_ptr()), 0, from as i32, -1)
        };
        if !ok {
            return Err(LlamaError::InvalidArgument(format!(
                "llama.cpp could not remove cached positions {from}.."
            )));
        }
        self.last_outputs.clear();
        Ok(())
    }

    /// Sets exactly these adapters with these scales, in one `llama_set_adapters_lora` call
    /// (replacing what was set before; an empty slice clears them). Zero scales are dropped and
    /// repeated adapters have their scales summed.
    ///
    /// When the effective weighting changes, the KV cache is cleared: keys and values computed
    /// under other weights must never be reused. Returns whether the weighting changed.
    pub fn set_adapters(&mut self, adapters: &[(&LoraAdapter<'m>, f32)]) -> Result<bool> {
        let mut next: Vec<(LoraAdapter<'m>, f32)> = Vec::with_capacity(adapters.len());
        for (adapter, scale) in adapters {
            if !std::ptr::eq(adapter.model(), self.model) {
                return Err(LlamaError::InvalidArgument(format!(
                    "adapter {} was loaded for another model",
                    adapter.name()
                )));
            }
            if !scale.is_finite() {
                return Err(LlamaError::InvalidArgument(format!(
                    "scale {scale} of adapter {} is not finite",
                    adapter.name()
                )));
            }
            match next
                .iter_mut()
                .find(|(a, _)| a.as_ptr() == adapter.as_ptr())
            {
                Some((_, s)) => *s += scale,
                None => next.push(((*adapter).clone(), *scale)),
            }
        }
        next.retain(|(_, s)| *s != 0.0);
        let same = next.len() == self.active.len()
            && next.iter().all(|(a, s)| {
                self.active
                    .iter()
                    .any(|(b, t)| a.as_ptr() == b.as_ptr() && s == t)
            });
        if same {
            return Ok(false);
        }
        let mut ptrs: Vec<*mut sys::llama_adapter_lora> =
            next.iter().map(|(a, _)| a.as_ptr()).collect();
        let mut scales: Vec<f32> = next.iter().map(|(_, s)| *s).collect();
        let (p, s) = if ptrs.is_empty() {
            (std::ptr::null_mut(), std::ptr::null_mut())
        } else {
            (ptrs.as_mut_ptr(), scales.as_mut_ptr())
        };
        // SAFETY: every adapter belongs to this context's model and is kept alive by `next`,
        // which replaces `active` below; llama.cpp copies the arrays.
        unsafe { sys::llama_set_adapters_lora(self.ptr.as_ptr(), p, ptrs.len(), s) };
        // Old handles drop here: an adapter no longer set anywhere may now be freed.
        self.active = next;
        self.clear_memory();
        Ok(true)
    }

    /// Removes every adapter from this context.
    pub fn clear_adapters(&mut self) -> Result<bool> {
        self.set_adapters(&[])
    }

    /// The adapters set on this context and their scales.
    pub fn active_adapters(&self) -> impl Iterator<Item = (&LoraAdapter<'m>, f32)> {
        self.active.iter().map(|(a, s)| (a, *s))
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_context {
        self.ptr.as_ptr()
    }
}
