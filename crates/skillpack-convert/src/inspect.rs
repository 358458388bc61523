//! `skillpack inspect`: what a file or directory is, and whether it fits a base model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::{convert, ConvertOptions, GgufInfo, PeftAdapter, Result};

/// What was inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Model,
    GgufAdapter,
    PeftAdapter,
}

/// Whether an adapter fits a base model.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub base: String,
    pub fits: bool,
    /// Why not, naming the first mismatching tensor.
    pub reason: Option<String>,
}

/// A description of a model or adapter.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub path: String,
    pub kind: Kind,
    pub architecture: Option<String>,
    /// PEFT method or GGUF source format, when known.
    pub format: Option<String>,
    /// Adapted modules by projection (adapters) / tensor count (models).
    pub modules: BTreeMap<String, usize>,
    pub n_modules: usize,
    /// Rank histogram: rank → modules (adapters).
    pub ranks: BTreeMap<usize, usize>,
    /// Tensor dtype histogram.
    pub dtypes: BTreeMap<String, usize>,
    pub size_bytes: u64,
    /// `adapter.lora.alpha` (GGUF adapters).
    pub alpha: Option<f32>,
    /// Model facts: layers, embedding width, heads (models).
    pub n_layer: Option<u64>,
    pub n_embd: Option<u64>,
    pub n_head: Option<u64>,
    pub n_head_kv: Option<u64>,
    pub fingerprint: Option<String>,
    pub fit: Option<Fit>,
}

fn projection_of_gguf(name: &str) -> String {
    // blk.N.attn_q.weight.lora_a → attn_q
    name.split('.').nth(2).unwrap_or(name).to_string()
}

/// Checks a GGUF adapter's pairs against a base model, naming the first mismatch.
fn gguf_adapter_fit(adapter: &GgufInfo, base: &GgufInfo) -> Option<String> {
    if adapter.architecture() != base.architecture() {
        return Some(format!(
            "architecture `{}` differs from the base's `{}`",
            adapter.architecture().unwrap_or("?"),
            base.architecture().unwrap_or("?")
        ));
    }
    for (name, t) in &adapter.tensors {
        let Some(stem) = name.strip_suffix(".lora_a") else {
            continue;
        };
        let Some(b) = adapter.tensors.get(&format!("{stem}.lora_b")) else {
            return Some(format!("`{stem}.lora_a` has no lora_b"));
        };
        let Some(w) = base.tensors.get(stem) else {
            return Some(format!("`{stem}` is not in the base model"));
        };
        let ok = matches!((t.dims.as_slice(), b.dims.as_slice(), w.dims.as_slice()),
            ([ra, ia], [ob, rb], [o, i]) if ra == rb && ia == i && ob == o);
        if !ok {
            return Some(format!(
                "`{stem}`: lora_a {:?} / lora_b {:?} do not fit the base weight {:?}",
                t.dims, b.dims, w.dims
            ));
        }
    }
    None
}

/// Describes `path` (GGUF model, GGUF adapter or PEFT directory) and, with `base`, whether the
/// adapter fits it.
pub fn inspect(path: &Path, base: Option<&GgufInfo>) -> Result<InspectReport> {
    let mut report = InspectReport {
        path: path.display().to_string(),
        kind: Kind::Model,
        architecture: None,
        format: None,
        modules: BTreeMap::new(),
        n_modules: 0,
        ranks: BTreeMap::new(),
        dtypes: BTreeMap::new(),
        size_bytes: 0,
        alpha: None,
        n_layer: None,
        n_embd: None,
        n_head: None,
        n_head_kv: None,
        fingerprint: None,
        fit: None,
    };
    if path.is_dir() {
        let peft = PeftAdapter::load(path)?;
        report.kind = Kind::PeftAdapter;
        report.format = Some(peft.kind.source_format().into());
        report.n_modules = peft.modules.iter().filter(|m| m.a.rows > 0).count();
        for m in &peft.modules {
            *report.modules.entry(m.projection.clone()).or_default() += 1;
            *report.ranks.entry(m.a.rows).or_default() += 1;
        }
        for d in &peft.dtypes {
            report
                .dtypes
                .insert(d.to_lowercase(), peft.modules.len() * 2);
        }
        report.size_bytes = std::fs::metadata(path.join("adapter_model.safetensors"))
            .map(|m| m.len())
            .unwrap_or(0);
        if let Some(base) = base {
            report.architecture = base.architecture().map(String::from);
            let reason = convert(&peft, base, &ConvertOptions::default())
                .err()
                .map(|e| e.to_string());
            report.fit = Some(Fit {
                base: base.path.display().to_string(),
                fits: reason.is_none(),
                reason,
            });
        }
        return Ok(report);
    }
    let info = GgufInfo::open(path)?;
    report.size_bytes = info.file_size;
    report.architecture = info.architecture().map(String::from);
    for t in info.tensors.values() {
        *report.dtypes.entry(t.dtype.clone()).or_default() += 1;
    }
    if info.is_adapter() {
        report.kind = Kind::GgufAdapter;
        report.format = info.get_str("skillpack.source_format").map(String::from);
        if let Some(candle_core::quantized::gguf_file::Value::F32(a)) =
            info.metadata.get("adapter.lora.alpha")
        {
            report.alpha = Some(*a);
        }
        for (name, t) in &info.tensors {
            if name.ends_with(".lora_a") {
                *report.modules.entry(projection_of_gguf(name)).or_default() += 1;
                *report
                    .ranks
                    .entry(t.dims.first().copied().unwrap_or(0))
                    .or_default() += 1;
                report.n_modules += 1;
            }
        }
        if let Some(base) = base {
            let reason = gguf_adapter_fit(&info, base);
            report.fit = Some(Fit {
                base: base.path.display().to_string(),
                fits: reason.is_none(),
                reason,
            });
        }
    } else {
        report.n_modules = info.tensors.len();
        report.n_layer = info.arch_u64("block_count");
        report.n_embd = info.arch_u64("embedding_length");
        report.n_head = info.arch_u64("attention.head_count");
        report.n_head_kv = info.arch_u64("attention.head_count_kv");
        report.fingerprint = Some(info.fingerprint());
        for name in info.tensors.keys() {
            let kind = name.split('.').rev().nth(1).unwrap_or(name).to_string();
            *report.modules.entry(kind).or_default() += 1;
        }
    }
    Ok(report)
}
