//! `pack.toml`.

use serde::{Deserialize, Serialize};
use skillpack_convert::GgufInfo;

use crate::{PackError, Result};

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub pack: PackMeta,
    pub base: BaseSpec,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default, rename = "skill")]
    pub skills: Vec<SkillSpec>,
    #[serde(default, rename = "router", skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<RouterSpec>,
}

/// Name, version, description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackMeta {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
}

/// The base model a pack was built for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaseSpec {
    pub architecture: String,
    pub n_embd: u64,
    pub n_layer: u64,
    /// Fingerprint of the tensor table (names, shapes, types), see `GgufInfo::fingerprint`.
    pub fingerprint: String,
    /// File name of the model it was built with (a hint for users).
    #[serde(default)]
    pub model: String,
    /// How prompts were rendered when the skills were trained: `chat-template` (the model's
    /// own) or `plain` (skillpack's format for base models). A pack is only used in the same.
    #[serde(default = "chat_template_format")]
    pub prompt_format: String,
}

fn chat_template_format() -> String {
    "chat-template".into()
}

/// Routing defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Defaults {
    /// Keep at most this many skills per prompt (0 = all).
    pub top_k: usize,
    /// Drop skills whose weight is below this.
    pub min_weight: f32,
    /// Softmax temperature of the router.
    pub temperature: f32,
    /// The router `run`, `chat` and `eval` use when none is named (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub router: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            top_k: 3,
            min_weight: 0.05,
            temperature: 1.0,
            router: String::new(),
        }
    }
}

/// One skill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SkillSpec {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Adapter path relative to the pack directory.
    pub adapter: String,
    /// Adapted projections, e.g. `attn_q`.
    pub targets: Vec<String>,
    /// Largest rank over modules.
    pub rank: usize,
}

/// A router stored in the pack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterSpec {
    pub name: String,
    /// Weights file relative to the pack directory.
    pub file: String,
    /// `linear`, `mlp`, `prototype`.
    pub kind: String,
    /// The task it was trained for (empty = general).
    #[serde(default)]
    pub task: String,
    /// Feature spec, e.g. `mean-hidden` or `mean-embedding`.
    pub features: String,
}

/// A skill id is non-empty ASCII letters, digits, `_` or `-` (it appears in `--skills a=1,b=2`,
/// file names and metric labels).
pub fn check_skill_id(id: &str) -> std::result::Result<(), String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "skill id `{id}` must be non-empty ASCII letters, digits, `_` or `-`"
        ));
    }
    Ok(())
}

/// Whether `path` (from a manifest) stays inside the pack directory: relative, no `..`.
fn inside_pack(path: &str) -> bool {
    let p = std::path::Path::new(path);
    !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl Manifest {
    /// Parses and validates the text of a `pack.toml`.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Internal consistency: unique skill and router ids, files inside the pack, a default
    /// router that exists, sane defaults.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.skills {
            check_skill_id(&s.id)?;
            if !seen.insert(&s.id) {
                return Err(format!("skill id `{}` appears twice", s.id));
            }
            if !inside_pack(&s.adapter) {
                return Err(format!(
                    "skill `{}`: adapter path `{}` must be inside the pack",
                    s.id, s.adapter
                ));
            }
        }
        let mut routers = std::collections::BTreeSet::new();
        for r in &self.routers {
            if !routers.insert(&r.name) {
                return Err(format!("router `{}` appears twice", r.name));
            }
            if !inside_pack(&r.file) {
                return Err(format!(
                    "router `{}`: file `{}` must be inside the pack",
                    r.name, r.file
                ));
            }
        }
        if !self.defaults.router.is_empty() && !routers.contains(&self.defaults.router) {
            return Err(format!(
                "defaults.router `{}` is not one of the pack's routers",
                self.defaults.router
            ));
        }
        if !self.defaults.temperature.is_finite() || self.defaults.temperature <= 0.0 {
            return Err(format!(
                "defaults.temperature must be > 0, got {}",
                self.defaults.temperature
            ));
        }
        if !(0.0..1.0).contains(&self.defaults.min_weight) {
            return Err(format!(
                "defaults.min_weight must be in [0, 1), got {}",
                self.defaults.min_weight
            ));
        }
        Ok(())
    }
}

impl BaseSpec {
    /// Describes `base`.
    pub fn of(base: &GgufInfo) -> Result<Self> {
        let arch = base.architecture().ok_or_else(|| {
            PackError::Invalid(format!("{}: no general.architecture", base.path.display()))
        })?;
        if base.is_adapter() {
            return Err(PackError::Invalid(format!(
                "{} is an adapter, not a base model",
                base.path.display()
            )));
        }
        skillpack_convert::architecture(arch)
            .map_err(|m| PackError::Invalid(format!("{}: {m}", base.path.display())))?;
        Ok(BaseSpec {
            architecture: arch.into(),
            n_embd: base.arch_u64("embedding_length").unwrap_or(0),
            n_layer: base.arch_u64("block_count").unwrap_or(0),
            fingerprint: base.fingerprint(),
            model: base
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            // What the `auto` prompt format picks for this model.
            prompt_format: if base.metadata.contains_key("tokenizer.chat_template") {
                chat_template_format()
            } else {
                "plain".into()
            },
        })
    }

    /// Refuses to use the pack with prompts rendered in another format than it was built for.
    pub fn check_prompt_format(&self, format: &str) -> std::result::Result<(), String> {
        if self.prompt_format == format {
            return Ok(());
        }
        Err(format!(
            "the pack's skills were trained on `{}` prompts, this session renders `{format}` prompts (choose the same with --template {})",
            self.prompt_format, self.prompt_format
        ))
    }

    /// Checks every pair of `adapter` against the tensors of `base`, returning the first misfit.
    pub fn check_adapter_against(
        &self,
        adapter: &GgufInfo,
        base: &GgufInfo,
    ) -> std::result::Result<(), String> {
        if !adapter.is_adapter() {
            return Err(format!(
                "{} is not a GGUF LoRA adapter (general.type is not `adapter`)",
                adapter.path.display()
            ));
        }
        if adapter.architecture() != Some(self.architecture.as_str()) {
            return Err(format!(
                "{} is for architecture `{}`, the pack's is `{}`",
                adapter.path.display(),
                adapter.architecture().unwrap_or("?"),
                self.architecture
            ));
        }
        for (name, a) in &adapter.tensors {
            let Some(stem) = name.strip_suffix(".lora_a") else {
                continue;
            };
            let b = adapter
                .tensors
                .get(&format!("{stem}.lora_b"))
                .ok_or_else(|| format!("`{name}` has no lora_b"))?;
            let w = base
                .tensors
                .get(stem)
                .ok_or_else(|| format!("tensor `{stem}` is not in {}", base.path.display()))?;
            let fits = matches!((a.dims.as_slice(), b.dims.as_slice(), w.dims.as_slice()),
                ([ra, ia], [ob, rb], [o, i]) if ra == rb && ia == i && ob == o);
            if !fits {
                return Err(format!(
                    "tensor `{stem}` is {:?} in {} but the adapter's lora_a {:?} / lora_b {:?} need [{}, {}]",
                    w.dims,
                    base.path.display(),
                    a.dims,
                    b.dims,
                    b.dims.first().copied().unwrap_or(0),
                    a.dims.get(1).copied().unwrap_or(0)
                ));
            }
        }
        Ok(())
    }
}

impl SkillSpec {
    /// A skill entry describing `adapter` (targets and rank read from its tensors).
    pub fn describe(
        id: &str,
        title: &str,
        description: &str,
        rel_path: &str,
        adapter: &GgufInfo,
    ) -> Self {
        let mut targets: Vec<String> = adapter
            .tensors
            .keys()
            .filter(|n| n.ends_with(".lora_a"))
            .filter_map(|n| n.split('.').nth(2).map(String::from))
            .collect();
        targets.sort();
        targets.dedup();
        let rank = adapter
            .tensors
            .iter()
            .filter(|(n, _)| n.ends_with(".lora_a"))
            .filter_map(|(_, t)| t.dims.first().copied())
            .max()
            .unwrap_or(0);
        SkillSpec {
            id: id.into(),
            title: if title.is_empty() {
                id.into()
            } else {
                title.into()
            },
            description: description.into(),
            adapter: rel_path.into(),
            targets,
            rank,
        }
    }
}
