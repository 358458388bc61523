//! Skill packs: a directory with a `pack.toml` manifest and GGUF LoRA skills.
//!
//! The manifest names the base model the pack was built for (architecture, width, depth and a
//! fingerprint of its tensor table), the skills (id, title, description, adapter file, targets,
//! rank), optional routers, and routing defaults. [`Pack::check`] validates every adapter
//! against a base model before llama.cpp sees it, naming the first tensor that does not fit.
//! [`fuse`] combines weighted skills into one adapter; [`export_lora`] writes such a weighting as
//! one standard GGUF LoRA and [`merge_into_model`] folds it into a copy of the base model.
//!
//! ```
//! use skillpack_convert::{convert, ConvertOptions, GgufInfo, PeftAdapter};
//! use skillpack_pack::Pack;
//! # let fixtures = std::env::var_os("SKILLPACK_FIXTURES").map(std::path::PathBuf::from)
//! #     .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
//! let qwen2 = fixtures.join("arch/tiny-qwen2");
//! let base = GgufInfo::open(&qwen2.join("tiny-qwen2-f32.gguf"))?;
//! let dir = tempfile::tempdir()?;
//! let mut pack = Pack::create(dir.path(), "demo", "two skills for tiny Qwen2", &base)?;
//! for (id, peft) in [("lora", "peft-lora"), ("adalora", "peft-adalora")] {
//!     let adapter = convert(&PeftAdapter::load(&qwen2.join(peft))?, &base, &ConvertOptions::default())?;
//!     pack.add_skill(id, id, "a fixture adapter", &adapter.gguf, &base)?;
//! }
//! assert_eq!(Pack::open(dir.path())?.check(&base)?.skills, 2);
//!
//! // Another model (here of the same shapes) is refused before llama.cpp sees the adapters.
//! let qwen3 = GgufInfo::open(&fixtures.join("arch/tiny-qwen3/tiny-qwen3-f32.gguf"))?;
//! let refused = pack.check(&qwen3).unwrap_err().to_string();
//! assert!(refused.contains("built for qwen2"), "{refused}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod export;
mod fuse;
mod manifest;
mod synth;

use std::path::{Path, PathBuf};

pub use export::{
    export_lora, merge_into_model, weighted_delta, weighting_label, MergeReport, MergeType,
};
pub use fuse::{fuse, FuseOptions, Fused, SkillFactors};
pub use manifest::{BaseSpec, Defaults, Manifest, PackMeta, RouterSpec, SkillSpec};
use skillpack_convert::{ConvertError, GgufInfo};
pub use synth::{synth_pack, SynthSpec, ALL_LINEAR};

/// Errors of pack handling.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("pack {pack}: {reason}")]
    Mismatch { pack: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = PackError> = std::result::Result<T, E>;

/// File name of the manifest inside a pack directory.
pub const MANIFEST_FILE: &str = "pack.toml";

/// A pack on disk.
#[derive(Debug, Clone)]
pub struct Pack {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What [`Pack::check`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub pack: String,
    pub base: String,
    pub skills: usize,
    /// Whether the base's fingerprint equals the pack's (false for another quantization of the
    /// same model, which still fits when every shape does).
    pub same_fingerprint: bool,
}

impl Pack {
    /// Creates an empty pack for `base` in `dir` (which must not hold a pack yet).
    pub fn create(dir: &Path, name: &str, description: &str, base: &GgufInfo) -> Result<Self> {
        if dir.join(MANIFEST_FILE).exists() {
            return Err(PackError::Manifest {
                path: dir.join(MANIFEST_FILE),
                reason: "a pack already exists here".into(),
            });
        }
        std::fs::create_dir_all(dir.join("skills")).map_err(|source| ConvertError::Io {
            path: dir.into(),
            source,
        })?;
        let pack = Pack {
            dir: dir.into(),
            manifest: Manifest {
                pack: PackMeta {
                    name: name.into(),
                    version: "0.1.0".into(),
                    description: description.into(),
                },
                base: BaseSpec::of(base)?,
                defaults: Defaults::default(),
                skills: Vec::new(),
                routers: Vec::new(),
            },
        };
        pack.save()?;
        Ok(pack)
    }

    /// Opens the pack in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| PackError::Manifest {
            path: path.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        let manifest =
            Manifest::parse(&text).map_err(|reason| PackError::Manifest { path, reason })?;
        Ok(Pack {
            dir: dir.into(),
            manifest,
        })
    }

    /// Writes the manifest atomically.
    pub fn save(&self) -> Result<()> {
        let text = toml::to_string_pretty(&self.manifest).map_err(|e| PackError::Manifest {
            path: self.dir.join(MANIFEST_FILE),
            reason: e.to_string(),
        })?;
        skillpack_convert::write_atomic(&self.dir.join(MANIFEST_FILE), text.as_bytes())?;
        Ok(())
    }

    /// Path of a skill's adapter.
    pub fn adapter_path(&self, skill: &SkillSpec) -> PathBuf {
        self.dir.join(&skill.adapter)
    }

    /// Registers (or replaces) router `spec`, whose files are already in the pack, and
    /// saves the manifest; `make_default` also makes it the pack's default router.
    pub fn set_router(&mut self, spec: RouterSpec, make_default: bool) -> Result<()> {
        if !self.dir.join(&spec.file).is_file() || spec.file.contains("..") {
            return Err(PackError::Invalid(format!(
                "router `{}`: no file {} in the pack",
                spec.name, spec.file
            )));
        }
        if make_default {
            self.manifest.defaults.router = spec.name.clone();
        }
        match self
            .manifest
            .routers
            .iter_mut()
            .find(|r| r.name == spec.name)
        {
            Some(r) => *r = spec,
            None => self.manifest.routers.push(spec),
        }
        self.save()
    }

    /// Unregisters router `name` and deletes its files (`routers/NAME.safetensors` and the
    /// `.json` beside it). The manifest is saved first, so an interruption leaves at worst unused files.
    /// The default router is refused: another must be made the default first.
    pub fn remove_router(&mut self, name: &str) -> Result<RouterSpec> {
        let Some(at) = self.manifest.routers.iter().position(|r| r.name == name) else {
            let names: Vec<&str> = self
                .manifest
                .routers
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            return Err(PackError::Invalid(format!(
                "the pack has no router `{name}` (it has: {})",
                names.join(", ")
            )));
        };
        if self.manifest.defaults.router == name {
            return Err(PackError::Invalid(format!(
                "router `{name}` is the pack's default: make another router the default first \
                 (skillpack router commit --router OTHER --default)"
            )));
        }
        let spec = self.manifest.routers.remove(at);
        self.save()?;
        let head = self.dir.join(&spec.file);
        for file in [
            head.with_extension("safetensors"),
            head.with_extension("json"),
        ] {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(PackError::Invalid(format!(
                        "{}: cannot delete: {e}",
                        file.display()
                    )))
                }
            }
        }
        Ok(spec)
    }

    /// The router named `name`.
    pub fn router(&self, name: &str) -> Option<&RouterSpec> {
        self.manifest.routers.iter().find(|r| r.name == name)
    }

    /// Index of skill `id`.
    pub fn skill_index(&self, id: &str) -> Option<usize> {
        self.manifest.skills.iter().position(|s| s.id == id)
    }

    /// Adds (or replaces) skill `id` from a GGUF adapter image, after checking the pack against
    /// `base` and the adapter against both.
    pub fn add_skill(
        &mut self,
        id: &str,
        title: &str,
        description: &str,
        gguf: &[u8],
        base: &GgufInfo,
    ) -> Result<&SkillSpec> {
        self.check_base(base)?;
        manifest::check_skill_id(id).map_err(PackError::Invalid)?;
        let rel = format!("skills/{id}.gguf");
        let path = self.dir.join(&rel);
        std::fs::create_dir_all(self.dir.join("skills")).map_err(|source| ConvertError::Io {
            path: self.dir.clone(),
            source,
        })?;
        // Validate from a temporary copy so a bad adapter never replaces a good one.
        let tmp = self.dir.join(format!("skills/.{id}.incoming.gguf"));
        skillpack_convert::write_atomic(&tmp, gguf)?;
        let checked = GgufInfo::open(&tmp)
            .map_err(PackError::from)
            .and_then(|info| {
                self.manifest
                    .base
                    .check_adapter_against(&info, base)
                    .map_err(|reason| PackError::Invalid(format!("skill `{id}`: {reason}")))?;
                Ok(info)
            });
        let info = match checked {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, &path).map_err(|source| ConvertError::Io {
            path: path.clone(),
            source,
        })?;
        let spec = SkillSpec::describe(id, title, description, &rel, &info);
        match self.skill_index(id) {
            Some(i) => self.manifest.skills[i] = spec,
            None => self.manifest.skills.push(spec),
        }
        self.save()?;
        Ok(&self.manifest.skills[self.skill_index(id).expect("just added")])
    }

    /// Validates the pack against `base`: architecture, width, depth, and every adapter's
    /// tensors (names and shapes), naming the first that does not fit.
    pub fn check(&self, base: &GgufInfo) -> Result<CheckReport> {
        let mismatch = |reason: String| PackError::Mismatch {
            pack: self.dir.clone(),
            reason,
        };
        BaseSpec::of(base)?;
        // Tensors first, so a pack for another base is refused naming the first misfit.
        for skill in &self.manifest.skills {
            let info = GgufInfo::open(&self.adapter_path(skill))?;
            self.manifest
                .base
                .check_adapter_against(&info, base)
                .map_err(|reason| mismatch(format!("skill `{}`: {reason}", skill.id)))?;
        }
        let actual = self.check_base(base)?;
        for router in &self.manifest.routers {
            let path = self.dir.join(&router.file);
            if !path.is_file() {
                return Err(mismatch(format!(
                    "router `{}`: missing file {}",
                    router.name,
                    path.display()
                )));
            }
        }
        Ok(CheckReport {
            pack: self.dir.display().to_string(),
            base: base.path.display().to_string(),
            skills: self.manifest.skills.len(),
            same_fingerprint: self.manifest.base.fingerprint == actual.fingerprint,
        })
    }

    /// Checks that `base` has the architecture, width and depth the pack was built for.
    pub fn check_base(&self, base: &GgufInfo) -> Result<BaseSpec> {
        let mismatch = |reason: String| PackError::Mismatch {
            pack: self.dir.clone(),
            reason,
        };
        let spec = &self.manifest.base;
        let actual = BaseSpec::of(base)?;
        if (spec.architecture.as_str(), spec.n_embd, spec.n_layer)
            != (actual.architecture.as_str(), actual.n_embd, actual.n_layer)
        {
            return Err(mismatch(format!(
                "built for {} (n_embd {}, n_layer {}) but {} is {} (n_embd {}, n_layer {})",
                spec.architecture,
                spec.n_embd,
                spec.n_layer,
                base.path.display(),
                actual.architecture,
                actual.n_embd,
                actual.n_layer
            )));
        }
        Ok(actual)
    }
}
