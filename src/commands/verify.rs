//! `skillpack verify`: does llama.cpp apply a GGUF adapter as the PEFT adapter it came from
//! computes? Compares delta logits (adapter − base) from candle (PEFT semantics, on the
//! dequantized base) and from llama.cpp, on prompts from a data file.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use skillpack_llama::{Backend, Context, ContextParams, LoraAdapter, Model, ModelParams};
use skillpack_train::{cosine, load_peft, prompt_ids, read_jsonl, Llama, ModelWeights};

/// Compare a GGUF adapter in llama.cpp against its PEFT source in candle on held-out prompts.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  skillpack verify --peft runs/ner/peft --gguf runs/ner/adapter.gguf --data data/skills/ner/dev.jsonl"
)]
pub struct Args {
    /// PEFT adapter directory.
    #[arg(long)]
    pub peft: PathBuf,
    /// GGUF LoRA adapter (e.g. converted from --peft).
    #[arg(long)]
    pub gguf: PathBuf,
    /// Instruction records whose prompts are evaluated.
    #[arg(long)]
    pub data: PathBuf,
    /// Base GGUF (default: the setup's model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Number of prompts.
    #[arg(short, long, default_value_t = 5)]
    pub n: usize,
    /// Fail (exit 1) when a cosine is below this.
    #[arg(long, default_value_t = 0.99)]
    pub min_cosine: f64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => super::default_model()?,
    };
    let cpp = Model::load(Backend::get(), &model_path, &ModelParams::default())?;
    let adapter = LoraAdapter::load(&cpp, &args.gguf)?;
    let mut ctx = Context::new(
        &cpp,
        &ContextParams {
            n_ctx: 2048,
            n_batch: 2048,
            ..Default::default()
        },
    )?;
    let base = Llama::new(ModelWeights::load(&model_path, &Device::Cpu, DType::F32)?);
    let mut tuned = Llama::new(ModelWeights::load(&model_path, &Device::Cpu, DType::F32)?);
    load_peft(&mut tuned, &args.peft)?;
    let last = |m: &Llama, ids: &[u32]| -> anyhow::Result<Vec<f32>> {
        let t = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let h = m.hidden(&t)?;
        let n = ids.len();
        Ok(m.logits(&h.narrow(1, n - 1, 1)?)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let mut rows = Vec::new();
    for record in read_jsonl(&args.data)?.iter().take(args.n) {
        let ids = prompt_ids(&cpp, record)?;
        let cpp_ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
        let mut cpp_last = |with: bool| -> anyhow::Result<Vec<f32>> {
            if with {
                ctx.set_adapters(&[(&adapter, 1.0)])?;
            } else {
                ctx.clear_adapters()?;
            }
            ctx.clear_memory();
            ctx.eval(&cpp_ids, 0, false)?;
            Ok(ctx.logits(-1)?.to_vec())
        };
        let (cb, cw) = (cpp_last(false)?, cpp_last(true)?);
        let (tb, tw) = (last(&base, &ids)?, last(&tuned, &ids)?);
        let d_cpp: Vec<f32> = cw.iter().zip(&cb).map(|(a, b)| a - b).collect();
        let d_candle: Vec<f32> = tw.iter().zip(&tb).map(|(a, b)| a - b).collect();
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i)
                .unwrap_or(0)
        };
        rows.push(serde_json::json!({
            "id": record.id,
            "prompt_tokens": ids.len(),
            "delta_cosine": cosine(&d_cpp, &d_candle),
            "delta_norm": d_candle.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt(),
            "same_argmax": argmax(&cw) == argmax(&tw),
        }));
    }
    let min = rows
        .iter()
        .filter_map(|r| r["delta_cosine"].as_f64())
        .fold(1.0, f64::min);
    if args.json {
        super::print_json(&serde_json::json!({"prompts": rows, "min_delta_cosine": min}))?;
    } else {
        for r in &rows {
            println!(
                "{}: delta cosine {:.5} (|delta| {:.2}, {} tokens, same argmax: {})",
                r["id"].as_str().unwrap_or("?"),
                r["delta_cosine"].as_f64().unwrap_or(0.0),
                r["delta_norm"].as_f64().unwrap_or(0.0),
                r["prompt_tokens"],
                r["same_argmax"]
            );
        }
        println!("min delta cosine {min:.5} over {} prompts", rows.len());
    }
    if min < args.min_cosine {
        anyhow::bail!("delta cosine {min:.5} is below {}", args.min_cosine);
    }
    Ok(())
}
