//! PEFT adapter directories: `adapter_config.json` + `adapter_model.safetensors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use crate::{ConvertError, Result};

/// The fields of PEFT's `adapter_config.json` that change what the adapter computes.
#[derive(Debug, Clone, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    #[serde(default)]
    pub r: Option<u64>,
    #[serde(default)]
    pub lora_alpha: Option<f64>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub lora_bias: bool,
    #[serde(default)]
    pub rank_pattern: Option<BTreeMap<String, Json>>,
    #[serde(default)]
    pub alpha_pattern: Option<BTreeMap<String, Json>>,
    #[serde(default)]
    pub modules_to_save: Option<Json>,
    #[serde(default)]
    pub init_r: Option<u64>,
    #[serde(default)]
    pub target_r: Option<u64>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub peft_version: Option<String>,
}

/// Which PEFT method produced the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeftKind {
    Lora,
    RsLora,
    AdaLora,
}

impl PeftKind {
    /// Name recorded in converted adapters (`skillpack.source_format`).
    pub fn source_format(self) -> &'static str {
        match self {
            PeftKind::Lora => "peft-lora",
            PeftKind::RsLora => "peft-rslora",
            PeftKind::AdaLora => "peft-adalora",
        }
    }
}

/// A dense row-major f32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// One adapted linear layer.
#[derive(Debug, Clone)]
pub struct PeftModule {
    /// Module path inside the base model, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    /// Transformer block index.
    pub layer: usize,
    /// Projection name, e.g. `q_proj`.
    pub projection: String,
    /// `lora_A` `[r, in]`.
    pub a: Matrix,
    /// `lora_B` `[out, r]`.
    pub b: Matrix,
    /// AdaLoRA's singular values `lora_E` `[r, 1]`.
    pub e: Option<Vec<f32>>,
    /// The safetensors key of `lora_A` (for messages).
    pub a_key: String,
    /// The safetensors key of `lora_B` (for messages).
    pub b_key: String,
}

/// A PEFT adapter read from disk.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    pub dir: PathBuf,
    pub config: PeftConfig,
    pub kind: PeftKind,
    /// Adapted modules, ordered by (layer, projection).
    pub modules: Vec<PeftModule>,
    /// dtype of each stored tensor kind, e.g. `F32`.
    pub dtypes: Vec<String>,
    /// `rank_pattern` / `alpha_pattern` keys compiled once, in key order.
    rank_patterns: Vec<(regex::Regex, Json)>,
    alpha_patterns: Vec<(regex::Regex, Json)>,
}

fn config_err(path: &Path, field: &str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Config {
        path: path.into(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// Compiles PEFT's `rank_pattern`/`alpha_pattern` keys the way PEFT matches them: each key is
/// a regular expression that must match a dotted suffix of the module path.
fn compile_patterns(
    patterns: Option<&BTreeMap<String, Json>>,
    config_path: &Path,
    field: &str,
) -> Result<Vec<(regex::Regex, Json)>> {
    patterns
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
                .map(|re| (re, value.clone()))
                .map_err(|e| {
                    config_err(
                        config_path,
                        field,
                        format!("pattern `{key}` is not a valid regex: {e}"),
                    )
                })
        })
        .collect()
}

fn pattern_match<'a>(patterns: &'a [(regex::Regex, Json)], module_path: &str) -> Option<&'a Json> {
    patterns
        .iter()
        .find(|(re, _)| re.is_match(module_path))
        .map(|(_, v)| v)
}

impl PeftAdapter {
    /// Reads a PEFT adapter directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let not_peft = |reason: String| ConvertError::NotPeft {
            path: dir.into(),
            reason,
        };
        if !dir.is_dir() {
            return Err(not_peft("not a directory".into()));
        }
        let config_path = dir.join("adapter_config.json");
        let weights_path = dir.join("adapter_model.safetensors");
        if !config_path.is_file() {
            return Err(not_peft("no adapter_config.json".into()));
        }
        if !weights_path.is_file() {
            let hint = if dir.join("adapter_model.bin").is_file() {
                " (adapter_model.bin, a pickle, is not read: re-save with safe_serialization=True)"
            } else {
                ""
            };
            return Err(not_peft(format!("no adapter_model.safetensors{hint}")));
        }
        let text = std::fs::read_to_string(&config_path).map_err(|source| ConvertError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: PeftConfig = serde_json::from_str(&text).map_err(|e| ConvertError::Config {
            path: config_path.clone(),
            field: "(document)".into(),
            reason: e.to_string(),
        })?;
        let unsupported = |what: String| ConvertError::Unsupported {
            path: config_path.clone(),
            what,
        };
        let kind = match config.peft_type.as_str() {
            "LORA" if config.use_rslora => PeftKind::RsLora,
            "LORA" => PeftKind::Lora,
            "ADALORA" => PeftKind::AdaLora,
            other => {
                return Err(unsupported(format!(
                    "peft_type `{other}` (LORA and ADALORA are supported)"
                )))
            }
        };
        if config.use_dora {
            return Err(unsupported(
                "DoRA (`use_dora: true`) has a magnitude vector llama.cpp cannot apply".into(),
            ));
        }
        let saves_modules = match &config.modules_to_save {
            None | Some(Json::Null) => false,
            Some(Json::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if saves_modules {
            return Err(unsupported(
                "`modules_to_save` replaces whole base modules, which a LoRA adapter cannot carry"
                    .into(),
            ));
        }
        if config.fan_in_fan_out {
            return Err(unsupported(
                "`fan_in_fan_out` (Conv1D-style weights) is not a llama-family layout".into(),
            ));
        }
        if config.lora_bias {
            return Err(unsupported(
                "`lora_bias` adds a bias llama.cpp LoRA cannot apply".into(),
            ));
        }
        if config.lora_alpha.is_none() {
            return Err(config_err(&config_path, "lora_alpha", "missing"));
        }
        if kind == PeftKind::AdaLora && config.init_r.is_none() {
            return Err(config_err(&config_path, "init_r", "missing for ADALORA"));
        }

        let bytes = std::fs::read(&weights_path).map_err(|source| ConvertError::Io {
            path: weights_path.clone(),
            source,
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            ConvertError::Safetensors {
                path: weights_path.clone(),
                reason: e.to_string(),
            }
        })?;

        #[derive(Default)]
        struct Parts {
            a: Option<(String, Matrix)>,
            b: Option<(String, Matrix)>,
            e: Option<(String, Matrix)>,
        }
        let mut parts: BTreeMap<(usize, String, String), Parts> = BTreeMap::new();
        let mut dtypes = std::collections::BTreeSet::new();
        let tensor_err = |tensor: &str, reason: String| ConvertError::Tensor {
            path: weights_path.clone(),
            tensor: tensor.into(),
            reason,
        };
        for (key, view) in st.tensors() {
            let unsupported_key = |what: &str| ConvertError::Unsupported {
                path: weights_path.clone(),
                what: format!("tensor `{key}`: {what}"),
            };
            if key.contains("lora_magnitude_vector") {
                return Err(unsupported_key("DoRA magnitude vector"));
            }
            if key.contains("lora_embedding_") {
                return Err(unsupported_key("LoRA on embeddings is not converted"));
            }
            let stripped = key.strip_prefix("base_model.model.").unwrap_or(&key);
            let stripped = stripped.strip_suffix(".weight").unwrap_or(stripped);
            let (module_path, part) = match stripped.rsplit_once(".lora_") {
                Some((m, p)) => (m, p.split('.').next().unwrap_or(p)),
                None => {
                    return Err(unsupported_key(
                        "not a LoRA tensor (modules_to_save or a bias?)",
                    ))
                }
            };
            if key.ends_with(".bias") {
                return Err(unsupported_key("LoRA bias"));
            }
            let projection = module_path
                .rsplit('.')
                .next()
                .unwrap_or(module_path)
                .to_string();
            let layer = module_path
                .split('.')
                .collect::<Vec<_>>()
                .windows(2)
                .find(|w| w[0] == "layers" || w[0] == "h" || w[0] == "blocks")
                .and_then(|w| w[1].parse::<usize>().ok())
                .ok_or_else(|| unsupported_key("no transformer layer index in the module path"))?;
            let shape = view.shape().to_vec();
            let data = to_f32(view.dtype(), view.data()).map_err(|r| tensor_err(&key, r))?;
            dtypes.insert(format!("{:?}", view.dtype()));
            let matrix = match shape.as_slice() {
                [r, c] => Matrix {
                    rows: *r,
                    cols: *c,
                    data,
                },
                _ => {
                    return Err(tensor_err(
                        &key,
                        format!("expected 2 dimensions, found {shape:?}"),
                    ))
                }
            };
            let entry = parts
                .entry((layer, projection.clone(), module_path.to_string()))
                .or_default();
            let slot = match part {
                "A" => &mut entry.a,
                "B" => &mut entry.b,
                "E" if kind == PeftKind::AdaLora => &mut entry.e,
                _ => return Err(unsupported_key(&format!("unknown LoRA part `lora_{part}`"))),
            };
            *slot = Some((key.clone(), matrix));
        }

        let mut modules = Vec::new();
        for ((layer, projection, path), p) in parts {
            let (a_key, a) = p.a.ok_or_else(|| {
                tensor_err(&format!("{path}.lora_A"), "missing (lora_B present)".into())
            })?;
            let (b_key, b) = p.b.ok_or_else(|| {
                tensor_err(&format!("{path}.lora_B"), "missing (lora_A present)".into())
            })?;
            if a.rows != b.cols {
                return Err(tensor_err(
                    &b_key,
                    format!(
                        "rank mismatch: lora_A is [{}, {}] but lora_B is [{}, {}]",
                        a.rows, a.cols, b.rows, b.cols
                    ),
                ));
            }
            let e = match (kind, p.e) {
                (PeftKind::AdaLora, Some((e_key, e))) => {
                    if e.rows != a.rows || e.cols != 1 {
                        return Err(tensor_err(
                            &e_key,
                            format!("expected [{}, 1], found [{}, {}]", a.rows, e.rows, e.cols),
                        ));
                    }
                    Some(e.data)
                }
                (PeftKind::AdaLora, None) => {
                    return Err(tensor_err(
                        &format!("{path}.lora_E"),
                        "missing for an AdaLoRA adapter".into(),
                    ))
                }
                _ => None,
            };
            modules.push(PeftModule {
                path,
                layer,
                projection,
                a,
                b,
                e,
                a_key,
                b_key,
            });
        }
        if modules.is_empty() {
            return Err(not_peft(
                "adapter_model.safetensors holds no LoRA tensors".into(),
            ));
        }
        modules.sort_by(|x, y| (x.layer, &x.projection).cmp(&(y.layer, &y.projection)));
        let (rank_patterns, alpha_patterns) = match kind {
            PeftKind::AdaLora => (Vec::new(), Vec::new()),
            _ => (
                compile_patterns(config.rank_pattern.as_ref(), &config_path, "rank_pattern")?,
                compile_patterns(config.alpha_pattern.as_ref(), &config_path, "alpha_pattern")?,
            ),
        };
        Ok(PeftAdapter {
            dir: dir.into(),
            config,
            kind,
            modules,
            dtypes: dtypes.into_iter().collect(),
            rank_patterns,
            alpha_patterns,
        })
    }

    /// Path of `adapter_config.json` (for messages).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("adapter_config.json")
    }

    /// PEFT's forward-pass scale for `module`, i.e. delta = scale · B · A (A with E folded in
    /// for AdaLoRA), exactly as PEFT 0.21 computes it.
    pub fn module_scale(&self, module: &PeftModule) -> Result<f64> {
        let config_path = self.config_path();
        let alpha = self.config.lora_alpha.unwrap_or(0.0);
        let r = module.a.rows;
        match self.kind {
            PeftKind::AdaLora => {
                let init_r = self.config.init_r.unwrap_or(0) as f32;
                if let Some(patterns) = &self.config.rank_pattern {
                    let key = format!("{}.lora_E", module.path);
                    if let Some(Json::Array(mask)) = patterns.get(&key) {
                        let kept = mask.iter().filter(|v| v.as_bool() == Some(true)).count();
                        if kept != r {
                            return Err(config_err(
                                &config_path,
                                "rank_pattern",
                                format!("`{key}` keeps {kept} ranks but the tensors have {r}"),
                            ));
                        }
                    }
                }
                // PEFT: scaling = lora_alpha (or r when alpha is 0); forward divides by
                // ranknum + 1e-5, with ranknum = init_r kept through rank_pattern pruning.
                let scaling = if alpha > 0.0 { alpha as f32 } else { init_r };
                Ok((scaling / (init_r + 1e-5)) as f64)
            }
            PeftKind::Lora | PeftKind::RsLora => {
                if let Some(v) = pattern_match(&self.rank_patterns, &module.path) {
                    let expected = v.as_u64().ok_or_else(|| {
                        config_err(
                            &config_path,
                            "rank_pattern",
                            format!("value for `{}` is not an integer", module.path),
                        )
                    })?;
                    if expected as usize != r {
                        return Err(config_err(
                            &config_path,
                            "rank_pattern",
                            format!(
                                "gives rank {expected} for `{}` but its tensors have rank {r}",
                                module.path
                            ),
                        ));
                    }
                }
                let mut alpha_m = alpha;
                if let Some(v) = pattern_match(&self.alpha_patterns, &module.path) {
                    alpha_m = v.as_f64().ok_or_else(|| {
                        config_err(
                            &config_path,
                            "alpha_pattern",
                            format!("value for `{}` is not a number", module.path),
                        )
                    })?;
                }
                if r == 0 {
                    return Ok(0.0);
                }
                Ok(if self.kind == PeftKind::RsLora {
                    alpha_m / (r as f64).sqrt()
                } else {
                    alpha_m / r as f64
                })
            }
        }
    }
}

fn to_f32(dtype: safetensors::Dtype, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    use safetensors::Dtype;
    let chunks = |n: usize| {
        if !bytes.len().is_multiple_of(n) {
            Err(format!("{} bytes is not a multiple of {n}", bytes.len()))
        } else {
            Ok(bytes.chunks_exact(n))
        }
    };
    Ok(match dtype {
        Dtype::F32 => chunks(4)?
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => chunks(2)?
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => chunks(2)?
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} is not supported (F32, F16, BF16)")),
    })
}
