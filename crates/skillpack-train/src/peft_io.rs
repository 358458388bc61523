//! Reading PEFT adapters into the model, and writing trained adapters in PEFT's format.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use skillpack_convert::{PeftAdapter, PeftKind};

use crate::{Llama, LoraModule, Method, Result, TrainError, PROJECTIONS};

fn projection(name: &str) -> Option<&'static str> {
    PROJECTIONS.iter().copied().find(|p| *p == name)
}

fn var(m: &skillpack_convert::Matrix, device: &Device) -> Result<Var> {
    Ok(Var::from_tensor(&Tensor::from_slice(
        &m.data,
        (m.rows, m.cols),
        device,
    )?)?)
}

/// Attaches the adapter in PEFT directory `dir` to `model` (replacing existing adapters).
pub fn load_peft(model: &mut Llama, dir: &Path) -> Result<Method> {
    let peft = PeftAdapter::load(dir)?;
    let device = model.device().clone();
    model.adapters.clear();
    for m in &peft.modules {
        let p = projection(&m.projection).ok_or_else(|| {
            TrainError::Input(format!(
                "{}: unknown projection `{}`",
                dir.display(),
                m.projection
            ))
        })?;
        if m.a.rows == 0 {
            continue;
        }
        let e = match &m.e {
            Some(e) => Some(Var::from_tensor(&Tensor::from_slice(
                e,
                (e.len(), 1),
                &device,
            )?)?),
            None => None,
        };
        model.adapters.insert(
            (m.layer, p),
            LoraModule {
                a: var(&m.a, &device)?,
                b: var(&m.b, &device)?,
                e,
                scale: peft.module_scale(m)?,
            },
        );
    }
    Ok(match peft.kind {
        PeftKind::Lora => Method::Lora,
        PeftKind::RsLora => Method::RsLora,
        PeftKind::AdaLora => Method::AdaLora,
    })
}

/// What `save_peft` writes into `adapter_config.json`.
#[derive(Debug, Clone)]
pub struct PeftExport {
    pub method: Method,
    pub r: usize,
    pub lora_alpha: f64,
    pub target_modules: Vec<String>,
    pub base_model: String,
    /// AdaLoRA: init_r, target_r, and the final rank masks by module.
    pub init_r: usize,
    pub target_r: usize,
    pub rank_masks: BTreeMap<(usize, &'static str), Vec<bool>>,
    /// More `adapter_config.json` fields (AdaLoRA's schedule, which PEFT requires to load it).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn module_path(layer: usize, p: &str) -> String {
    let group = if ["gate_proj", "up_proj", "down_proj"].contains(&p) {
        "mlp"
    } else {
        "self_attn"
    };
    format!("model.layers.{layer}.{group}.{p}")
}

/// Writes `model`'s adapters as a PEFT adapter directory (`adapter_config.json` +
/// `adapter_model.safetensors` with PEFT's key names). AdaLoRA adapters are saved pruned by their
/// rank masks, as PEFT saves them (`lora_A [r_m, in]`, `lora_E [r_m, 1]`, `lora_B [out, r_m]`).
pub fn save_peft(model: &Llama, dir: &Path, export: &PeftExport) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut rank_pattern = serde_json::Map::new();
    for ((layer, p), m) in &model.adapters {
        let path = module_path(*layer, p);
        let key = |part: &str| format!("base_model.model.{path}.{part}");
        match (&m.e, export.method) {
            (Some(e), Method::AdaLora) => {
                let mask = export
                    .rank_masks
                    .get(&(*layer, *p))
                    .cloned()
                    .unwrap_or_else(|| vec![true; m.rank()]);
                let keep: Vec<u32> = mask
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| **k)
                    .map(|(i, _)| i as u32)
                    .collect();
                let idx = Tensor::new(keep.as_slice(), model.device())?;
                tensors.push((key("lora_A"), m.a.as_tensor().index_select(&idx, 0)?));
                tensors.push((key("lora_E"), e.as_tensor().index_select(&idx, 0)?));
                tensors.push((key("lora_B"), m.b.as_tensor().index_select(&idx, 1)?));
                rank_pattern.insert(format!("{path}.lora_E"), serde_json::json!(mask));
            }
            _ => {
                tensors.push((key("lora_A.weight"), m.a.as_tensor().clone()));
                tensors.push((key("lora_B.weight"), m.b.as_tensor().clone()));
            }
        }
    }
    let mut config = serde_json::json!({
        "peft_type": if export.method == Method::AdaLora { "ADALORA" } else { "LORA" },
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": export.base_model,
        "r": export.r,
        "lora_alpha": export.lora_alpha,
        "lora_dropout": 0.0,
        "target_modules": export.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": export.method == Method::RsLora,
        "use_dora": false,
        "modules_to_save": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": true,
        "init_lora_weights": true,
        "revision": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "peft_version": "0.21.2",
    });
    if export.method == Method::AdaLora {
        config["init_r"] = export.init_r.into();
        config["target_r"] = export.target_r.into();
        config["rank_pattern"] = serde_json::Value::Object(rank_pattern);
    }
    for (k, v) in &export.extra {
        config[k] = v.clone();
    }
    let st_path = dir.join("adapter_model.safetensors");
    let tmp = dir.join(".adapter_model.safetensors.tmp");
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &tmp)?;
    std::fs::rename(&tmp, &st_path).map_err(|e| TrainError::io(&st_path, e))?;
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| TrainError::Input(e.to_string()))?;
    skillpack_convert::write_atomic(&dir.join("adapter_config.json"), text.as_bytes())?;
    Ok(())
}

/// Where [`export_trained`] wrote the adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    pub peft_dir: std::path::PathBuf,
    pub gguf: Option<std::path::PathBuf>,
    pub modules: usize,
    pub total_rank: usize,
}

/// Writes a trained adapter as a PEFT directory (`DIR/peft`) and, given the GGUF base, as a GGUF
/// LoRA adapter through the converter (`DIR/adapter.gguf`).
pub fn export_trained(
    trainer: &crate::Trainer,
    dir: &Path,
    base_model: &str,
    gguf_base: Option<&skillpack_convert::GgufInfo>,
) -> Result<ExportReport> {
    let cfg = &trainer.config;
    let mut rank_masks = BTreeMap::new();
    if let Some(pattern) = trainer.rank_pattern() {
        for (name, mask) in pattern {
            let (layer, p) = name
                .split_once('.')
                .ok_or_else(|| TrainError::Input(format!("bad module name {name}")))?;
            let layer: usize = layer
                .parse()
                .map_err(|_| TrainError::Input(format!("bad module name {name}")))?;
            rank_masks.insert(
                (
                    layer,
                    projection(p).ok_or_else(|| TrainError::Input(format!("bad module {p}")))?,
                ),
                mask.clone(),
            );
        }
    }
    let total_rank = if rank_masks.is_empty() {
        trainer.model.adapters.values().map(|m| m.rank()).sum()
    } else {
        rank_masks
            .values()
            .map(|m| m.iter().filter(|k| **k).count())
            .sum()
    };
    let peft_dir = dir.join("peft");
    save_peft(
        &trainer.model,
        &peft_dir,
        &PeftExport {
            method: cfg.method,
            r: if cfg.method == Method::AdaLora {
                cfg.target_r
            } else {
                cfg.r
            },
            lora_alpha: cfg.alpha,
            target_modules: cfg.targets.clone(),
            base_model: base_model.into(),
            init_r: cfg.r,
            target_r: cfg.target_r,
            rank_masks,
            extra: if cfg.method == Method::AdaLora {
                serde_json::json!({
                    "tinit": cfg.tinit,
                    "tfinal": cfg.tfinal,
                    "deltaT": cfg.delta_t,
                    "beta1": cfg.beta1,
                    "beta2": cfg.beta2,
                    "orth_reg_weight": cfg.orth_reg_weight,
                    "total_step": cfg.steps,
                })
                .as_object()
                .cloned()
                .unwrap_or_default()
            } else {
                Default::default()
            },
        },
    )?;
    let gguf = match gguf_base {
        Some(base) => {
            let peft = skillpack_convert::PeftAdapter::load(&peft_dir)?;
            let out = dir.join("adapter.gguf");
            skillpack_convert::convert(&peft, base, &skillpack_convert::ConvertOptions::default())?
                .write(&out)?;
            Some(out)
        }
        None => None,
    };
    Ok(ExportReport {
        peft_dir,
        gguf,
        modules: trainer.model.adapters.len(),
        total_rank,
    })
}
