//! Applying weighted skills to a context: multi-adapter, fused, or chosen per prompt.

use std::io::Write;
use std::time::Instant;

use skillpack_convert::{write_lora_gguf, GgufValue, OutType};
use skillpack_llama::{Context, LoraAdapter, Model};
use skillpack_pack::{fuse, FuseOptions, Pack, SkillFactors};

use crate::weights::{select_active, Selection};
use crate::{Result, RunError};

/// How weighted skills are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Each active skill's adapter at its weight, all set in one call.
    Multi,
    /// One adapter built from the active skills (exact).
    Fused,
    /// One adapter built from the active skills, compressed by truncated SVD.
    FusedCompressed,
    /// Chosen per prompt from measured costs.
    Auto,
}

impl Mode {
    /// The mode's name, as `--mode` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Multi => "multi",
            Mode::Fused => "fused",
            Mode::FusedCompressed => "fused-compressed",
            Mode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "multi" => Mode::Multi,
            "fused" => Mode::Fused,
            "fused-compressed" | "compressed" => Mode::FusedCompressed,
            "auto" => Mode::Auto,
            _ => {
                return Err(format!(
                    "unknown mode `{s}` (multi, fused, fused-compressed, auto)"
                ))
            }
        })
    }
}

/// How a fused adapter reaches llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusedLoad {
    /// `fmemopen` over the in-memory GGUF image: no file at all.
    Memory,
    /// An unlinked temporary file (on tmpfs when `/dev/shm` exists).
    TmpFile,
}

/// What [`SkillEngine::apply`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub mode: Mode,
    pub reason: String,
    pub selection: Selection,
    /// Milliseconds spent building and loading a fused adapter (0 on a cache hit).
    pub build_ms: f64,
    pub cache_hit: bool,
    /// Total rank of what was set (sum over active adapters' modules).
    pub total_rank: usize,
}

/// What a fused adapter was built from: the quantized weights and every build setting.
#[derive(Debug, Clone, PartialEq)]
struct FusedKey {
    weights: Vec<(usize, i32)>,
    energy: Option<u64>,
    outtype: OutType,
    pad_rank: usize,
}

struct CachedFused<'m> {
    key: FusedKey,
    adapter: LoraAdapter<'m>,
    total_rank: usize,
}

/// Running averages that drive [`Mode::Auto`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct CostModel {
    /// Extra decode milliseconds per token for each adapted module of each set adapter
    /// (measured ~0.015 ms on 2 cores: llama.cpp adds four graph nodes per module and adapter).
    pub ms_per_module_token: f64,
    /// Milliseconds to build and load a fused adapter, per unit of total rank.
    pub build_ms_per_rank: f64,
}

/// Weighted application of one pack's skills for one model.
pub struct SkillEngine<'m> {
    model: &'m Model,
    pack: Pack,
    adapters: Vec<LoraAdapter<'m>>,
    factors: Vec<Option<SkillFactors>>,
    cache: Vec<CachedFused<'m>>,
    /// Fused adapters kept (least recently used evicted first).
    pub cache_capacity: usize,
    /// Energy fraction kept by [`Mode::FusedCompressed`].
    pub energy: f64,
    pub fused_load: FusedLoad,
    /// Storage type of fused adapters. With the rank padded to 32, q8_0 turns llama.cpp's
    /// per-row lora_b dot products (one call per output row, scalar for r < 32 in f32) into
    /// single-block SIMD dots: measured 0.64× → 0.78× of base decode on a 7-linear pack.
    pub fused_outtype: OutType,
    pub top_k: usize,
    pub min_weight: f32,
    pub costs: CostModel,
    /// Pad each fused module's rank with zeros to a multiple of this (0/1 = off); the delta is
    /// unchanged, and a multiple of 32 lets lora_b use q8_0 and SIMD dot products.
    pub pad_rank: usize,
    /// Milliseconds the last fused build spent handing the GGUF image to llama.cpp (the part
    /// that differs between [`FusedLoad::Memory`] and [`FusedLoad::TmpFile`]).
    pub last_load_ms: f64,
    total_ranks: Vec<usize>,
    module_counts: Vec<usize>,
}

impl<'m> SkillEngine<'m> {
    /// Loads every skill of `pack` (checked against `model` by llama.cpp's loader, after the
    /// pack's own checks) for multi-adapter use.
    pub fn new(model: &'m Model, pack: Pack) -> Result<Self> {
        pack.manifest
            .base
            .check_prompt_format(model.prompt_format().as_str())
            .map_err(|m| RunError::Invalid(format!("{}: {m}", pack.dir.display())))?;
        let mut adapters = Vec::with_capacity(pack.manifest.skills.len());
        let mut total_ranks = Vec::new();
        let mut module_counts = Vec::new();
        for skill in &pack.manifest.skills {
            let path = pack.adapter_path(skill);
            let adapter = LoraAdapter::load(model, &path)?;
            let info = skillpack_convert::GgufInfo::open(&path)?;
            let lora_a = || info.tensors.iter().filter(|(n, _)| n.ends_with(".lora_a"));
            total_ranks.push(lora_a().map(|(_, t)| t.dims[0]).sum());
            module_counts.push(lora_a().count());
            adapters.push(adapter);
        }
        let n = adapters.len();
        let defaults = pack.manifest.defaults.clone();
        Ok(SkillEngine {
            model,
            pack,
            adapters,
            factors: (0..n).map(|_| None).collect(),
            cache: Vec::new(),
            cache_capacity: 8,
            energy: 0.999,
            fused_load: FusedLoad::Memory,
            fused_outtype: OutType::Q8_0,
            top_k: defaults.top_k,
            min_weight: defaults.min_weight,
            costs: CostModel {
                ms_per_module_token: 0.015,
                build_ms_per_rank: 0.015,
            },
            last_load_ms: 0.0,
            pad_rank: 32,
            total_ranks,
            module_counts,
        })
    }

    /// The pack.
    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    /// The skills of `selection` by id, with their weights, strongest first.
    pub fn named_weights(&self, selection: &Selection) -> Vec<(String, f32)> {
        selection
            .active
            .iter()
            .map(|(i, w)| (self.pack.manifest.skills[*i].id.clone(), *w))
            .collect()
    }

    /// Fused adapters currently cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The selection `weights` lead to under this engine's top-k and min-weight.
    pub fn select(&self, weights: &[f32]) -> Result<Selection> {
        if weights.len() != self.adapters.len() {
            return Err(RunError::Invalid(format!(
                "{} weights for a pack of {} skills",
                weights.len(),
                self.adapters.len()
            )));
        }
        Ok(select_active(weights, self.top_k, self.min_weight))
    }

    /// Applies `weights` (one per skill) to `ctx` in `mode`. `expected_tokens` (tokens the
    /// context will process under this weighting) informs [`Mode::Auto`].
    pub fn apply(
        &mut self,
        ctx: &mut Context<'m>,
        weights: &[f32],
        mode: Mode,
        expected_tokens: usize,
    ) -> Result<Applied> {
        let selection = self.select(weights)?;
        let rank_of = |sel: &Selection| {
            sel.active
                .iter()
                .map(|(i, _)| self.total_ranks[*i])
                .sum::<usize>()
        };
        if selection.active.is_empty() {
            ctx.clear_adapters()?;
            return Ok(Applied {
                mode: Mode::Multi,
                reason: "no active skill: base model".into(),
                selection,
                build_ms: 0.0,
                cache_hit: false,
                total_rank: 0,
            });
        }
        let (mode, reason) = match mode {
            Mode::Auto => self.choose(&selection, expected_tokens),
            m => (m, "requested".to_string()),
        };
        match mode {
            Mode::Multi | Mode::Auto => {
                let set: Vec<(&LoraAdapter<'m>, f32)> = selection
                    .active
                    .iter()
                    .map(|(i, w)| (&self.adapters[*i], *w))
                    .collect();
                ctx.set_adapters(&set)?;
                let total_rank = rank_of(&selection);
                Ok(Applied {
                    mode: Mode::Multi,
                    reason,
                    selection,
                    build_ms: 0.0,
                    cache_hit: false,
                    total_rank,
                })
            }
            Mode::Fused | Mode::FusedCompressed => {
                let compress = mode == Mode::FusedCompressed;
                let (adapter, total_rank, build_ms, cache_hit) =
                    self.fused(&selection, compress)?;
                ctx.set_adapters(&[(&adapter, 1.0)])?;
                Ok(Applied {
                    mode,
                    reason,
                    selection,
                    build_ms,
                    cache_hit,
                    total_rank,
                })
            }
        }
    }

    fn choose(&self, selection: &Selection, expected_tokens: usize) -> (Mode, String) {
        let n = selection.active.len();
        if n == 1 {
            return (Mode::Multi, "one active skill: fusing saves nothing".into());
        }
        let key = self.fused_key(selection, false);
        if self.cache.iter().any(|c| c.key == key) {
            return (
                Mode::Fused,
                "fused adapter for these weights is cached".into(),
            );
        }
        let rank: usize = selection
            .active
            .iter()
            .map(|(i, _)| self.total_ranks[*i])
            .sum();
        let build = self.costs.build_ms_per_rank * rank as f64;
        // Multi pays per module of every adapter; fused once per module of the union (at most
        // the sum, at least the largest skill's).
        let modules: Vec<usize> = selection
            .active
            .iter()
            .map(|(i, _)| self.module_counts[*i])
            .collect();
        let redundant = modules.iter().sum::<usize>() - modules.iter().copied().max().unwrap_or(0);
        let saved = redundant as f64 * self.costs.ms_per_module_token * expected_tokens as f64;
        if saved > build {
            (
                Mode::Fused,
                format!("{n} skills × {expected_tokens} tokens: fusing saves ~{saved:.0} ms for ~{build:.0} ms of build"),
            )
        } else {
            (
                Mode::Multi,
                format!("{n} skills × {expected_tokens} tokens: a fused build (~{build:.0} ms) costs more than it saves (~{saved:.0} ms)"),
            )
        }
    }

    /// Records a measured decode cost (`ms_per_token` with `adapted_modules` module-adapter
    /// pairs set, against `base_ms_per_token` without) so that [`Mode::Auto`] follows the machine.
    pub fn observe_decode(
        &mut self,
        adapted_modules: usize,
        ms_per_token: f64,
        base_ms_per_token: f64,
    ) {
        if adapted_modules > 0 && ms_per_token > base_ms_per_token {
            let per = (ms_per_token - base_ms_per_token) / adapted_modules as f64;
            self.costs.ms_per_module_token = 0.7 * self.costs.ms_per_module_token + 0.3 * per;
        }
    }

    fn fused_key(&self, selection: &Selection, compress: bool) -> FusedKey {
        FusedKey {
            weights: selection.key(),
            energy: compress.then_some(self.energy.to_bits()),
            outtype: self.fused_outtype,
            pad_rank: self.pad_rank,
        }
    }

    fn fused(
        &mut self,
        selection: &Selection,
        compress: bool,
    ) -> Result<(LoraAdapter<'m>, usize, f64, bool)> {
        let key = self.fused_key(selection, compress);
        if let Some(pos) = self.cache.iter().position(|c| c.key == key) {
            let hit = self.cache.remove(pos);
            let out = (hit.adapter.clone(), hit.total_rank, 0.0, true);
            self.cache.insert(0, hit);
            return Ok(out);
        }
        let started = Instant::now();
        for (i, _) in &selection.active {
            if self.factors[*i].is_none() {
                let path = self.pack.adapter_path(&self.pack.manifest.skills[*i]);
                self.factors[*i] = Some(SkillFactors::load(&path)?);
            }
        }
        let parts: Vec<(&SkillFactors, f32)> = selection
            .active
            .iter()
            .map(|(i, w)| (self.factors[*i].as_ref().expect("loaded above"), *w))
            .collect();
        let mut fused = fuse(
            &parts,
            FuseOptions {
                energy: compress.then_some(self.energy),
            },
        )?;
        if self.pad_rank > 1 {
            for p in &mut fused.pairs {
                pad_rank(p, self.pad_rank);
            }
        }
        let label = selection
            .active
            .iter()
            .map(|(i, w)| format!("{}={w:.3}", self.pack.manifest.skills[*i].id))
            .collect::<Vec<_>>()
            .join(",");
        let image = write_lora_gguf(
            &fused.architecture,
            0.0,
            &fused.pairs,
            self.fused_outtype,
            &[
                (
                    "general.name".into(),
                    GgufValue::String(format!("fused[{label}]")),
                ),
                (
                    "skillpack.fused_energy".into(),
                    GgufValue::F32(fused.min_energy_kept as f32),
                ),
            ],
        )?;
        let name = format!("fused[{label}]");
        let load_started = Instant::now();
        let adapter = match self.fused_load {
            FusedLoad::Memory => LoraAdapter::load_from_bytes(self.model, image.bytes, &name)?,
            FusedLoad::TmpFile => {
                let dir = if std::path::Path::new("/dev/shm").is_dir() {
                    std::path::PathBuf::from("/dev/shm")
                } else {
                    std::env::temp_dir()
                };
                // Unlinked on creation: nothing is left behind, whatever happens.
                let mut file = tempfile::tempfile_in(&dir).map_err(|e| {
                    RunError::Invalid(format!("temporary file in {}: {e}", dir.display()))
                })?;
                file.write_all(&image.bytes)
                    .map_err(|e| RunError::Invalid(format!("writing temporary adapter: {e}")))?;
                LoraAdapter::load_from_file_at(self.model, &file, 0, &name)?
            }
        };
        self.last_load_ms = load_started.elapsed().as_secs_f64() * 1e3;
        let build_ms = started.elapsed().as_secs_f64() * 1e3;
        if fused.rank_after > 0 {
            self.costs.build_ms_per_rank =
                0.7 * self.costs.build_ms_per_rank + 0.3 * build_ms / fused.rank_after as f64;
        }
        tracing::info!(
            "fused {name}: total rank {} -> {} (energy kept ≥ {:.4}) in {build_ms:.1} ms",
            fused.rank_before,
            fused.rank_after,
            fused.min_energy_kept
        );
        self.cache.insert(
            0,
            CachedFused {
                key,
                adapter: adapter.clone(),
                total_rank: fused.rank_after,
            },
        );
        // Evicted adapters are freed once no context uses them any more.
        self.cache.truncate(self.cache_capacity.max(1));
        Ok((adapter, fused.rank_after, build_ms, false))
    }
}

/// Appends zero rank components so the rank is a multiple of `multiple` (same delta).
fn pad_rank(pair: &mut skillpack_convert::LoraPair, multiple: usize) {
    let r = pair.a.rows;
    let padded = r.div_ceil(multiple) * multiple;
    if padded == r {
        return;
    }
    pair.a.data.resize(padded * pair.a.cols, 0.0);
    pair.a.rows = padded;
    let out = pair.b.rows;
    let mut data = vec![0.0; out * padded];
    for row in 0..out {
        data[row * padded..row * padded + r].copy_from_slice(&pair.b.data[row * r..(row + 1) * r]);
    }
    pair.b.data = data;
    pair.b.cols = padded;
}
