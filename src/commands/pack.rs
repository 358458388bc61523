//! `skillpack pack …`: create, fill, validate and describe skill packs.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use skillpack_convert::{ConvertOptions, GgufInfo, PeftAdapter};
use skillpack_pack::{synth_pack, Pack, SynthSpec, ALL_LINEAR};

/// Create, fill, validate and describe skill packs.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PackCommand,
}

#[derive(Subcommand)]
pub enum PackCommand {
    /// Create an empty pack for a base model.
    #[command(
        after_help = "Example:\n  skillpack pack new packs/med --name medical --base models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    New {
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Base model (default: the setup's model).
        #[arg(long)]
        base: Option<PathBuf>,
    },
    /// Add (or replace) a skill from a GGUF LoRA adapter or a PEFT directory (converted).
    #[command(
        after_help = "Example:\n  skillpack pack add packs/med ./ner-peft --id ner --title \"Named entity recognition\""
    )]
    Add {
        dir: PathBuf,
        /// A .gguf LoRA adapter or a PEFT adapter directory.
        adapter: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        base: Option<PathBuf>,
        /// Store the adapter as f32, f16, bf16 or q8_0 (default: a GGUF as it is, a PEFT
        /// directory as f32).
        #[arg(long)]
        outtype: Option<skillpack_convert::OutType>,
        #[arg(long)]
        json: bool,
    },
    /// Validate a pack against a base model before llama.cpp sees it.
    Check {
        dir: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print a pack's manifest.
    Info {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the llama-server flags that load every skill of a pack at scale 0 (for
    /// `skillpack proxy`, which sets each request's scales).
    #[command(
        after_help = "Example:\n  llama-server -m models/SmolLM2-135M-Instruct.Q4_1.gguf $(skillpack pack llama-server-args examples/packs/medical-smollm2)"
    )]
    LlamaServerArgs {
        dir: PathBuf,
        /// One JSON object: the flags as a list, and the notes.
        #[arg(long)]
        json: bool,
    },
    /// Write one weighting of the pack's skills as a single standard GGUF LoRA adapter, for
    /// front-ends that load one adapter (llama-server/llama-cli `--lora`, ollama `ADAPTER`,
    /// LM Studio).
    #[command(
        after_help = "Examples:\n  skillpack pack export examples/packs/medical-smollm2 --skills qa=0.7,ner=0.3 -o skills.gguf\n  skillpack pack export examples/packs/medical-smollm2 --router default --prompt-file q.txt -o skills.gguf"
    )]
    Export {
        dir: PathBuf,
        #[command(flatten)]
        weighting: super::export::WeightingArgs,
        /// The adapter to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Storage type: f32, f16, bf16, q8_0 (lora_b with a rank under 32 stays f16).
        #[arg(long, default_value = "f16")]
        outtype: skillpack_convert::OutType,
        /// The base model (default: the setup's model); checked against the pack.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Generate a pack of random adapters (for benchmarks).
    #[command(
        after_help = "Example:\n  skillpack pack synth /tmp/synth12 --skills 12 --rank 8 --targets all"
    )]
    Synth {
        dir: PathBuf,
        #[arg(long)]
        base: Option<PathBuf>,
        #[arg(long, default_value_t = 12)]
        skills: usize,
        #[arg(long, default_value_t = 8)]
        rank: usize,
        /// `all` (7 linears), `qv`, or a comma list of llama.cpp stems (attn_q,ffn_up,...).
        #[arg(long, default_value = "all")]
        targets: String,
        /// Standard deviation of lora_b entries.
        #[arg(long, default_value_t = 0.02)]
        b_std: f32,
        /// Scale rank component j by DECAY^j (1 = flat spectrum).
        #[arg(long, default_value_t = 1.0)]
        decay: f32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn base_path(base: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    base.map(Ok).unwrap_or_else(super::default_model)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        PackCommand::Export {
            dir,
            weighting,
            output,
            outtype,
            model,
            json,
        } => super::export::export(&dir, &weighting, &output, outtype, model, json)?,
        PackCommand::New {
            dir,
            name,
            description,
            base,
        } => {
            let base = GgufInfo::open(&base_path(base)?)?;
            let mut pack = Pack::create(&dir, &name, &description, &base)?;
            let format = super::prompt_format_for(&base);
            if pack.manifest.base.prompt_format != format {
                pack.manifest.base.prompt_format = format.into();
                pack.save()?;
            }
            println!(
                "created pack `{}` in {} for {}",
                name,
                pack.dir.display(),
                base.path.display()
            );
        }
        PackCommand::Add {
            dir,
            adapter,
            id,
            title,
            description,
            base,
            outtype,
            json,
        } => {
            let base = GgufInfo::open(&base_path(base)?)?;
            let mut pack = Pack::open(&dir)?;
            let bytes = if adapter.is_dir() {
                let peft = PeftAdapter::load(&adapter)?;
                let mut options = ConvertOptions {
                    name: Some(id.clone()),
                    ..Default::default()
                };
                if let Some(t) = outtype {
                    options.outtype = t;
                }
                skillpack_convert::convert(&peft, &base, &options)?.gguf
            } else if let Some(t) = outtype {
                // Re-encoded from its factors (dequantized to f32 first).
                let file = skillpack_convert::LoraFile::read(&adapter)?;
                let pairs: Vec<_> = file.pairs.into_values().collect();
                skillpack_convert::write_lora_gguf(
                    &file.architecture,
                    file.alpha,
                    &pairs,
                    t,
                    &[(
                        "general.name".into(),
                        skillpack_convert::GgufValue::String(id.clone()),
                    )],
                )?
                .bytes
            } else {
                // Checked under the user's file name before it is copied into the pack.
                GgufInfo::open(&adapter)?;
                std::fs::read(&adapter).with_context(|| format!("reading {}", adapter.display()))?
            };
            let spec = pack
                .add_skill(&id, &title, &description, &bytes, &base)?
                .clone();
            if json {
                super::print_json(&spec)?;
            } else {
                println!(
                    "added skill `{}` ({}; rank {}; targets {}) to {}",
                    spec.id,
                    spec.adapter,
                    spec.rank,
                    spec.targets.join(","),
                    dir.display()
                );
            }
        }
        PackCommand::Check { dir, base, json } => {
            let base = GgufInfo::open(&base_path(base)?)?;
            let report = Pack::open(&dir)?.check(&base)?;
            if json {
                super::print_json(&report)?;
            } else {
                println!(
                    "{}: {} skills fit {}{}",
                    report.pack,
                    report.skills,
                    report.base,
                    if report.same_fingerprint {
                        ""
                    } else {
                        " (a different quantization of the base it was built for)"
                    }
                );
            }
        }
        PackCommand::Info { dir, json } => {
            let pack = Pack::open(&dir)?;
            let m = &pack.manifest;
            if json {
                return super::print_json(m);
            }
            println!(
                "{} {} — {}",
                m.pack.name, m.pack.version, m.pack.description
            );
            println!(
                "base: {} (n_embd {}, n_layer {}, fingerprint {}, built with {})",
                m.base.architecture,
                m.base.n_embd,
                m.base.n_layer,
                m.base.fingerprint,
                m.base.model
            );
            println!(
                "defaults: top_k {}, min_weight {}, temperature {}",
                m.defaults.top_k, m.defaults.min_weight, m.defaults.temperature
            );
            for s in &m.skills {
                println!(
                    "  {:<8} r{:<3} {:<40} {} [{}]",
                    s.id,
                    s.rank,
                    s.title,
                    s.adapter,
                    s.targets.join(",")
                );
            }
            for r in &m.routers {
                println!(
                    "  router {} ({}, features {}, task `{}`): {}",
                    r.name, r.kind, r.features, r.task, r.file
                );
            }
        }
        PackCommand::LlamaServerArgs { dir, json } => {
            let pack = Pack::open(&dir)?;
            if pack.manifest.skills.is_empty() {
                anyhow::bail!("{}: the pack has no skills", dir.display());
            }
            let mut scaled = Vec::new();
            for skill in &pack.manifest.skills {
                let path = std::path::absolute(pack.adapter_path(skill))?;
                let path = path.to_string_lossy();
                if path.contains(',') || path.contains(':') {
                    anyhow::bail!(
                        "{path}: llama-server's --lora-scaled cannot take a path with ',' or ':' (move the pack)"
                    );
                }
                scaled.push(format!("{path}:0"));
            }
            let flags = vec![
                "--lora-scaled".to_string(),
                scaled.join(","),
                "--cache-ram".to_string(),
                "0".to_string(),
                "--no-repack".to_string(),
            ];
            let notes = [
                "every skill is loaded at scale 0: `skillpack proxy` sends each request's scales in its `lora` list",
                "--cache-ram 0 (or cache_prompt:false per request, which the proxy sends) because llama-server can reuse a prompt cache computed under another LoRA setting (llama.cpp issue #26207)",
                "adapters are matched to skills by file name: keep the pack's file names",
                "--no-repack keeps the weights in plain CPU buffers: llama-server 11434 crashed (SIGSEGV) while loading LoRA adapters onto weights repacked for AMX on a CPU that has it",
            ];
            if json {
                return super::print_json(&serde_json::json!({"flags": flags, "notes": notes}));
            }
            for n in notes {
                eprintln!("# {n}");
            }
            println!("{}", flags.join(" "));
        }
        PackCommand::Synth {
            dir,
            base,
            skills,
            rank,
            targets,
            b_std,
            decay,
            seed,
        } => {
            let base = GgufInfo::open(&base_path(base)?)?;
            let targets: Vec<String> = match targets.as_str() {
                "all" => ALL_LINEAR.iter().map(|s| s.to_string()).collect(),
                "qv" => vec!["attn_q".into(), "attn_v".into()],
                list => list.split(',').map(|s| s.trim().to_string()).collect(),
            };
            let pack = synth_pack(
                &dir,
                &base,
                &SynthSpec {
                    skills,
                    rank,
                    targets,
                    b_std,
                    decay,
                    seed,
                },
            )?;
            println!("{}: {}", pack.dir.display(), pack.manifest.pack.description);
        }
    }
    Ok(())
}
