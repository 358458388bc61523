//! `scripts/setup.sh --check` finds libclang as bindgen's loader does: `libclang-cpp` (a
//! different library, present on machines with no libclang) does not count. The directories it
//! searches are replaced with fake ones through `SKILLPACK_LIBCLANG_DIRS`.

use std::path::Path;
use std::process::Command;

/// Runs `scripts/setup.sh --check` searching only `dir` for libclang; returns (exit code, the
/// `libclang` line).
fn check_with_libclang_dir(dir: &Path) -> (i32, String) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh"))
        .arg("--check")
        .env("SKILLPACK_LIBCLANG_DIRS", dir)
        .env_remove("LIBCLANG_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("libclang"))
        .unwrap_or_else(|| panic!("no libclang line in:\n{stdout}"))
        .to_string();
    (out.status.code().unwrap(), line)
}

/// The first bytes of a 64-bit little-endian ELF file, which is what the loader checks.
const ELF64_HEADER: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0";

#[test]
fn libclang_cpp_alone_is_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("libclang-cpp.so.14"), ELF64_HEADER).unwrap();
    let (code, line) = check_with_libclang_dir(dir.path());
    assert!(line.starts_with("missing  libclang"), "{line}");
    assert!(
        line.contains("libclang-cpp.so.14"),
        "names what it skipped: {line}"
    );
    assert!(line.contains("[apt: libclang-dev clang]"), "{line}");
    assert_eq!(code, 1, "a missing requirement fails --check");
}

#[test]
fn versioned_libclang_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libclang-14.so.1");
    std::fs::write(&lib, ELF64_HEADER).unwrap();
    let (_, line) = check_with_libclang_dir(dir.path());
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["present", "libclang", lib.to_str().unwrap()],
        "{line}"
    );
}

#[test]
fn libclang_beside_libclang_cpp_is_found_and_non_elf_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("libclang-cpp.so.14"), ELF64_HEADER).unwrap();
    std::fs::write(dir.path().join("libclang.so"), b"INPUT(-lclang)\n").unwrap();
    let (_, line) = check_with_libclang_dir(dir.path());
    assert!(
        line.starts_with("missing  libclang"),
        "a linker script is no library: {line}"
    );
    let lib = dir.path().join("libclang.so.1");
    std::fs::write(&lib, ELF64_HEADER).unwrap();
    let (_, line) = check_with_libclang_dir(dir.path());
    assert!(line.ends_with(lib.to_str().unwrap()), "{line}");
    assert!(line.starts_with("present  libclang"), "{line}");
}
