//! Prompt features for routing, computed from the base model without any adapter.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use half::f16;
use serde::{Deserialize, Serialize};
use skillpack_llama::{Context, ContextParams, Model, Token};

use crate::{Result, RouteError};

/// Which prompt features a router reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeatureKind {
    /// The base model's last hidden state (after the final norm), mean-pooled over the prompt:
    /// one extra forward pass without adapters.
    #[serde(rename = "mean-hidden")]
    MeanHidden,
    /// The mean of the prompt's input token embeddings: a table lookup, no forward pass.
    #[serde(rename = "mean-embedding")]
    MeanEmbedding,
}

impl FeatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::MeanHidden => "mean-hidden",
            FeatureKind::MeanEmbedding => "mean-embedding",
        }
    }
}

impl std::str::FromStr for FeatureKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean-hidden" | "hidden" => Ok(FeatureKind::MeanHidden),
            "mean-embedding" | "embedding" => Ok(FeatureKind::MeanEmbedding),
            other => Err(format!(
                "unknown features `{other}` (mean-hidden, mean-embedding)"
            )),
        }
    }
}

/// The base model's input embedding table, dequantized once and kept in f16.
pub struct TokenEmbeddings {
    pub dim: usize,
    pub vocab: usize,
    table: Vec<f16>,
}

impl TokenEmbeddings {
    /// Reads `token_embd.weight` from a GGUF model.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |m: String| RouteError::File {
            path: path.display().to_string(),
            message: m,
        };
        let mut file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| err(e.to_string()))?;
        let qt = content
            .tensor(&mut file, "token_embd.weight", &Device::Cpu)
            .map_err(|e| err(format!("token_embd.weight: {e}")))?;
        let t = qt.dequantize(&Device::Cpu)?;
        let (vocab, dim) = t.dims2()?;
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        Ok(TokenEmbeddings {
            dim,
            vocab,
            table: values.into_iter().map(f16::from_f32).collect(),
        })
    }

    /// Mean embedding of `tokens`.
    pub fn mean(&self, tokens: &[Token]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(RouteError::Invalid("no tokens to pool".into()));
        }
        let mut sum = vec![0f32; self.dim];
        for &t in tokens {
            if t < 0 || t as usize >= self.vocab {
                return Err(RouteError::Invalid(format!(
                    "token {t} outside the vocabulary of {}",
                    self.vocab
                )));
            }
            let row = &self.table[t as usize * self.dim..(t as usize + 1) * self.dim];
            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v.to_f32());
        }
        let n = tokens.len() as f32;
        sum.iter_mut().for_each(|s| *s /= n);
        Ok(sum)
    }
}

/// Longest prompt (in tokens) whose features are computed: longer prompts use their last
/// tokens, which hold the question.
pub const MAX_FEATURE_TOKENS: usize = 512;

/// Computes features of prompts (chat-templated token ids) for one feature kind.
pub struct FeatureExtractor<'m> {
    pub kind: FeatureKind,
    ctx: Option<Context<'m>>,
    table: Option<TokenEmbeddings>,
}

impl<'m> FeatureExtractor<'m> {
    /// `model_path` must be the file `model` was loaded from (the embedding table is read from
    /// it for [`FeatureKind::MeanEmbedding`]).
    pub fn new(
        model: &'m Model,
        model_path: &Path,
        kind: FeatureKind,
        n_threads: Option<i32>,
    ) -> Result<Self> {
        Ok(match kind {
            FeatureKind::MeanHidden => FeatureExtractor {
                kind,
                // Mean pooling needs the whole prompt in one micro-batch.
                ctx: Some(Context::new(
                    model,
                    &ContextParams {
                        n_ctx: MAX_FEATURE_TOKENS as u32,
                        n_batch: MAX_FEATURE_TOKENS as u32,
                        n_threads,
                        embeddings: true,
                        ..Default::default()
                    },
                )?),
                table: None,
            },
            FeatureKind::MeanEmbedding => {
                let table = TokenEmbeddings::load(model_path)?;
                if table.dim != model.n_embd() {
                    return Err(RouteError::Invalid(format!(
                        "token_embd.weight is {} wide but the model's width is {}",
                        table.dim,
                        model.n_embd()
                    )));
                }
                FeatureExtractor {
                    kind,
                    ctx: None,
                    table: Some(table),
                }
            }
        })
    }

    /// The features of `prompt`.
    pub fn features(&mut self, prompt: &[Token]) -> Result<Vec<f32>> {
        let prompt = &prompt[prompt.len().saturating_sub(MAX_FEATURE_TOKENS)..];
        match (&mut self.ctx, &self.table) {
            (Some(ctx), _) => {
                if prompt.is_empty() {
                    return Err(RouteError::Invalid("no tokens to pool".into()));
                }
                ctx.clear_memory();
                ctx.eval(prompt, 0, true)?;
                Ok(ctx.embeddings(0)?.to_vec())
            }
            (None, Some(table)) => table.mean(prompt),
            (None, None) => unreachable!("one of the two is set by new()"),
        }
    }
}
