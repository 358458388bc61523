//! llama.cpp / ggml log routing into `tracing`, keeping the last error line so that a null
//! return from a C call can be explained to the user.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};

use llama_cpp_sys_2 as sys;

thread_local! {
    /// The line being assembled (llama.cpp logs a line in pieces with the CONT level) and its level.
    static PARTIAL: RefCell<(String, u32)> = const { RefCell::new((String::new(), 0)) };
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn install() {
    // SAFETY: `callback` is a plain function with 'static lifetime that never unwinds; the
    // user data pointer is unused.
    unsafe {
        sys::llama_log_set(Some(callback), std::ptr::null_mut());
        sys::ggml_log_set(Some(callback), std::ptr::null_mut());
    }
}

pub(crate) fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

unsafe extern "C" fn callback(level: sys::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // Never let a panic cross the FFI boundary.
    let _ = std::panic::catch_unwind(|| {
        PARTIAL.with(|p| {
            let mut p = p.borrow_mut();
            if level != sys::GGML_LOG_LEVEL_CONT {
                p.1 = level;
            }
            p.0.push_str(&text);
            while let Some(pos) = p.0.find('\n') {
                let line: String = p.0.drain(..=pos).collect();
                emit(p.1, line.trim_end());
            }
        });
    });
}

fn emit(level: u32, line: &str) {
    if line.is_empty() {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => {
            LAST_ERROR.with(|e| *e.borrow_mut() = Some(line.to_string()));
            tracing::error!(target: "llama.cpp", "{line}")
        }
        sys::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama.cpp", "{line}"),
        sys::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "llama.cpp", "{line}"),
        _ => tracing::trace!(target: "llama.cpp", "{line}"),
    }
}
