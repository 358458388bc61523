//! What the fuzz targets share: the tiny llama model and adapter they check against
//! (`fuzz/assets`, written by `cargo run --example fuzz_seeds`), a scratch directory for
//! inputs that must be files, and the framing of two-part inputs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use skillpack_convert::GgufInfo;
use skillpack_llama::{Backend, Model, ModelParams};

/// The loaded assets.
pub struct Assets {
    pub backend: &'static Backend,
    /// The tiny llama, fully loaded (adapters are loaded onto it).
    pub model: Model,
    /// Its header.
    pub base: GgufInfo,
    /// Vocabulary of the model prompts are tokenized with: `$SKILLPACK_FUZZ_MODEL` (the
    /// default SmolLM2, set by scripts/fuzz.sh), else the tiny model.
    pub vocab: Model,
    /// A valid adapter for the tiny model.
    pub adapter: PathBuf,
}

/// `fuzz/assets`.
pub fn assets_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// The assets, loaded once per process.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let dir = assets_dir();
        let model_path = dir.join("tiny-model.gguf");
        assert!(
            model_path.is_file(),
            "{} missing: run `cargo run --release --example fuzz_seeds -- fuzz` (scripts/fuzz.sh does)",
            model_path.display()
        );
        let backend = Backend::get();
        let model = Model::load(backend, &model_path, &ModelParams::default())
            .expect("the tiny model loads");
        let vocab_path = std::env::var_os("SKILLPACK_FUZZ_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| model_path.clone());
        let vocab = Model::load(
            backend,
            &vocab_path,
            &ModelParams {
                vocab_only: true,
                ..Default::default()
            },
        )
        .expect("the vocabulary model loads");
        Assets {
            backend,
            model,
            base: GgufInfo::open(&model_path).expect("the tiny model's header reads"),
            vocab,
            adapter: dir.join("tiny-adapter.gguf"),
        }
    })
}

/// A per-process scratch directory (in /dev/shm when there is one).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("skillpack-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// Writes `bytes` to `name` in the scratch directory and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("scratch write");
    path
}

/// Splits a two-part input: a little-endian u32 length, the first part, then the second.
pub fn unframe(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let rest = &data[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}
