//! The C API (`crates/skillpack-capi`, `include/skillpack.h`):
//! * the header declares exactly the functions and error codes the library exports;
//! * the C example (`examples/c/route_and_generate.c`), compiled with the `cc` crate's compiler
//!   against the llama.cpp the library contains, loads the default model with llama.cpp, opens
//!   the medical pack, routes and generates greedily — and prints exactly what
//!   `skillpack run --temp 0` prints for the same prompt.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;

/// `name -> parameter count` of the `extern "C"` functions in `src`, and `SKILLPACK_*` values.
fn rust_exports(src: &str) -> (BTreeMap<String, usize>, BTreeMap<String, i64>) {
    let mut functions = BTreeMap::new();
    let mut constants = BTreeMap::new();
    let text = src.replace('\n', " ");
    for (i, _) in text.match_indices("extern \"C\" fn ") {
        let rest = &text[i + "extern \"C\" fn ".len()..];
        let name = rest.split('(').next().unwrap().trim().to_string();
        let params = rest[rest.find('(').unwrap() + 1..rest.find(')').unwrap()].trim();
        let count = if params.is_empty() {
            0
        } else {
            params.trim_end_matches(',').split(',').count()
        };
        functions.insert(name, count);
    }
    for line in src.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub const SKILLPACK_") {
            let (name, value) = rest.split_once(": c_int = ").unwrap();
            constants.insert(
                format!("SKILLPACK_{name}"),
                value.trim_end_matches(';').parse().unwrap(),
            );
        }
    }
    (functions, constants)
}

/// The same from the header (comments removed).
fn header_declarations(header: &str) -> (BTreeMap<String, usize>, BTreeMap<String, i64>) {
    let mut code = String::new();
    let mut rest = header;
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        rest = &rest[start + rest[start..].find("*/").unwrap() + 2..];
    }
    code.push_str(rest);
    let mut functions = BTreeMap::new();
    let mut constants = BTreeMap::new();
    for line in code.lines() {
        if let Some(rest) = line.trim().strip_prefix("#define SKILLPACK_") {
            if let Some((name, value)) = rest.split_once(' ') {
                if let Ok(v) = value.trim().parse() {
                    constants.insert(format!("SKILLPACK_{name}"), v);
                }
            }
        }
    }
    for statement in code.replace('\n', " ").split(';') {
        let Some(open) = statement.find("skillpack_") else {
            continue;
        };
        let decl = &statement[open..];
        let Some(paren) = decl.find('(') else {
            continue;
        };
        let name = decl[..paren].trim().to_string();
        let params = decl[paren + 1..decl.rfind(')').unwrap()].trim();
        let count = if params.is_empty() || params == "void" {
            0
        } else {
            params.split(',').count()
        };
        functions.insert(name, count);
    }
    (functions, constants)
}

#[test]
fn header_declares_exactly_the_exports() {
    let src = std::fs::read_to_string(repo().join("crates/skillpack-capi/src/lib.rs")).unwrap();
    let header = std::fs::read_to_string(repo().join("include/skillpack.h")).unwrap();
    let (rust_fns, rust_consts) = rust_exports(&src);
    let (c_fns, c_consts) = header_declarations(&header);
    assert_eq!(rust_fns.len(), 8, "{rust_fns:?}");
    assert_eq!(c_fns, rust_fns, "functions (name -> parameters)");
    assert_eq!(c_consts, rust_consts, "error codes");
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, or `target/` in the repository).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// llama.cpp's installed headers from the llama-cpp-sys-2 build the library links.
fn llama_include() -> PathBuf {
    let build = target_dir().join("release/build");
    std::fs::read_dir(&build)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("out/include"))
        .find(|p| p.join("llama.h").is_file())
        .unwrap_or_else(|| panic!("no llama.h under {}/llama-cpp-sys-2-*", build.display()))
}

#[test]
fn c_example_generates_what_skillpack_run_generates() {
    let staticlib = target_dir().join("release/libskillpack_capi.a");
    assert!(
        staticlib.is_file(),
        "{} is missing: build it with `cargo build --release -p skillpack-capi` (scripts/test.sh does)",
        staticlib.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("route_and_generate");
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target(&target)
        .host(&target)
        .opt_level(2)
        .get_compiler();
    let out = compiler
        .to_command()
        .arg(repo().join("examples/c/route_and_generate.c"))
        .arg(format!("-I{}", repo().join("include").display()))
        .arg(format!("-I{}", llama_include().display()))
        .arg("-o")
        .arg(&exe)
        .arg(&staticlib)
        .args(["-lstdc++", "-lgomp", "-lpthread", "-ldl", "-lm"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compiling the C example: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pack = repo().join("examples/packs/medical-smollm2");
    let model = default_model();
    for prompt in [
        "Extract the chemicals and diseases: Cocaine use was associated with myocardial infarction in young adults.",
        "What are the symptoms of iron deficiency anemia?",
    ] {
        let out = std::process::Command::new(&exe)
            .args([model.to_str().unwrap(), pack.to_str().unwrap(), "24", prompt])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "C example: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c_text = String::from_utf8(out.stdout).unwrap();
        let (ok, json, err) = skillpack(&[
            &"run",
            &"--pack",
            &pack,
            &"--temp",
            &"0",
            &"--repeat-penalty",
            &"1",
            &"-n",
            &"24",
            &"--json",
            &prompt,
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let run_text = v["text"].as_str().unwrap();
        println!(
            "{prompt}\n  C API ({}): {c_text:?}\n  skillpack run: {run_text:?}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert_eq!(c_text.trim_end_matches('\n'), run_text);
    }
}
