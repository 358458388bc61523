//! `skillpack`: inject domain knowledge into a GGUF model as a routed pack of LoRA skills.

mod commands;

use clap::Parser;

/// Keeps freed memory in the process instead of returning every large block to the kernel:
/// training allocates and frees hundreds of MiB of activations per step, and glibc's default
/// (mmap above 128 KiB, trim on free) turns each of them into fresh page faults.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        // -1: never give the heap top back (glibc treats the threshold as unsigned).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The error and its causes on one line, leaving out a cause whose text the message already
/// carries (library errors often print their source themselves).
fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = commands::Cli::parse();
    commands::init_logging(cli.verbose);
    match commands::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
