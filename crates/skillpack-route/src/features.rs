//! Prompt features for routing, computed from the base model without any adapter.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use half::f16;
use serde::{Deserialize, Serialize};
use skillpack_llama::{ChatMessage, Context, ContextParams, Model, Token};

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
    /// Token embeddings of the user's message pooled three ways and concatenated: the mean of
    /// its first line, of its last line (each at most [`SEGMENT_TOKENS`] tokens), and of all
    /// of it. A request sits on the first or the last line of what users type, where the
    /// whole-prompt mean dilutes it in the text it is about. A table lookup, no forward pass.
    #[serde(rename = "segment-embedding")]
    SegmentEmbedding,
    /// [`FeatureKind::SegmentEmbedding`] followed by the words of the message's first and last
    /// lines: lowercased word unigrams and bigrams hashed into [`LEXICAL_BUCKETS`] buckets
    /// (binary, L2-normalized).
    /// The words of a request ("summarize", "extract", "synonyms") tell skills apart that
    /// embeddings of the same text cannot. No forward pass.
    #[serde(rename = "segment-lexical")]
    SegmentLexical,
}

/// Hash buckets of the word n-grams of [`FeatureKind::SegmentLexical`].
pub const LEXICAL_BUCKETS: usize = 2048;

/// Word unigrams and bigrams of `text` (lowercased, split at non-alphanumerics) hashed into
/// [`LEXICAL_BUCKETS`] buckets: 1 where an n-gram occurs (bigrams within a line), the vector
/// scaled to unit length.
pub fn lexical_features(text: &str) -> Vec<f32> {
    let mut out = vec![0f32; LEXICAL_BUCKETS];
    // FNV-1a: stable across runs and platforms, so a saved router reads the same buckets.
    let bucket = |s: &str| {
        let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        (h % LEXICAL_BUCKETS as u64) as usize
    };
    // Bigrams stay within a line.
    for line in text.lines() {
        let words: Vec<String> = line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        for (i, w) in words.iter().enumerate() {
            out[bucket(w)] = 1.0;
            if let Some(next) = words.get(i + 1) {
                out[bucket(&format!("{w} {next}"))] = 1.0;
            }
        }
    }
    let norm = out.iter().sum::<f32>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

/// Most tokens of each end segment (first line, last line) of the segment features.
pub const SEGMENT_TOKENS: usize = 48;

impl FeatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::MeanHidden => "mean-hidden",
            FeatureKind::MeanEmbedding => "mean-embedding",
            FeatureKind::SegmentEmbedding => "segment-embedding",
            FeatureKind::SegmentLexical => "segment-lexical",
        }
    }

    /// Number of features for a model of width `n_embd`.
    pub fn width(self, n_embd: usize) -> usize {
        match self {
            FeatureKind::SegmentEmbedding => 3 * n_embd,
            FeatureKind::SegmentLexical => 3 * n_embd + LEXICAL_BUCKETS,
            _ => n_embd,
        }
    }
}

impl std::str::FromStr for FeatureKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean-hidden" | "hidden" => Ok(FeatureKind::MeanHidden),
            "mean-embedding" | "embedding" => Ok(FeatureKind::MeanEmbedding),
            "segment-embedding" => Ok(FeatureKind::SegmentEmbedding),
            "segment-lexical" => Ok(FeatureKind::SegmentLexical),
            other => Err(format!(
                "unknown features `{other}` (mean-hidden, mean-embedding, segment-embedding, segment-lexical)"
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
    /// Tokens the chat template puts before and after a user message (segment features).
    frame: (usize, usize),
    /// Tokens whose text holds a line break (segment features).
    newlines: std::collections::HashSet<Token>,
    model: &'m Model,
}

/// How many tokens the chat template puts before and after a single user message: the common
/// prefix and suffix of two prompts that differ only in the message.
fn template_frame(model: &Model) -> Result<(usize, usize)> {
    let render = |content: &str| -> Result<Vec<Token>> {
        let text = model.apply_chat_template(
            &[ChatMessage {
                role: "user".into(),
                content: content.into(),
            }],
            true,
        )?;
        Ok(model.tokenize(&text, true, true)?)
    };
    let (a, b) = (render("Alpha")?, render("Zeta omega")?);
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    Ok((prefix, suffix.min(a.len() - prefix)))
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
                frame: (0, 0),
                newlines: Default::default(),
                model,
            },
            FeatureKind::MeanEmbedding
            | FeatureKind::SegmentEmbedding
            | FeatureKind::SegmentLexical => {
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
                    frame: if kind == FeatureKind::MeanEmbedding {
                        (0, 0)
                    } else {
                        template_frame(model)?
                    },
                    newlines: if kind == FeatureKind::MeanEmbedding {
                        Default::default()
                    } else {
                        (0..model.n_vocab() as Token)
                            .filter(|&t| model.detokenize(&[t], false).contains('\n'))
                            .collect()
                    },
                    model,
                }
            }
        })
    }

    /// The features of `prompt`.
    pub fn features(&mut self, prompt: &[Token]) -> Result<Vec<f32>> {
        if matches!(
            self.kind,
            FeatureKind::SegmentEmbedding | FeatureKind::SegmentLexical
        ) {
            let table = self.table.as_ref().expect("set by new()");
            let (before, after) = self.frame;
            // The user's message; a prompt that does not fit the frame is pooled whole.
            let user = if prompt.len() > before + after {
                &prompt[before..prompt.len() - after]
            } else {
                prompt
            };
            // First line and last line, each at most SEGMENT_TOKENS tokens (a message without
            // line breaks: its first and last SEGMENT_TOKENS tokens).
            let is_break = |t: &Token| self.newlines.contains(t);
            let first_end = user
                .iter()
                .position(is_break)
                .filter(|&i| i > 0)
                .unwrap_or(user.len())
                .min(SEGMENT_TOKENS);
            let last_start = user
                .iter()
                .rposition(is_break)
                .map(|i| i + 1)
                .filter(|&i| i < user.len())
                .unwrap_or(0)
                .max(user.len().saturating_sub(SEGMENT_TOKENS));
            let (first, last) = (&user[..first_end], &user[last_start..]);
            let mut out = table.mean(first)?;
            out.extend(table.mean(last)?);
            out.extend(table.mean(user)?);
            if self.kind == FeatureKind::SegmentLexical {
                let text = format!(
                    "{}\n{}",
                    self.model.detokenize(first, false),
                    self.model.detokenize(last, false)
                );
                out.extend(lexical_features(&text));
            }
            return Ok(out);
        }
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
