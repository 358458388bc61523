//! Training throughput: on synthetic batches where every position is a target, as in a plain
//! causal LM fine-tune (the comparison PEFT's figure uses), or on a skill's own records with the
//! loss on the answers only, as skills are trained.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use crate::{
    training_dtype, tune_allocator, Example, Hyperparameters, Llama, ModelWeights, Result,
    SeededNormal, TrainConfig, Trainer,
};

/// Untimed steps first (one-time allocations, kernel selection, packing weights).
pub const WARMUP_STEPS: usize = 1;
/// Steps timed after the warmup.
const TIMED_STEPS: usize = 4;

/// What [`bench_training`] measured.
#[derive(Debug, Clone)]
pub struct TrainingBench {
    /// The configuration the steps ran with (`max_len` is the sequence length).
    pub config: TrainConfig,
    /// candle's CPU threads.
    pub threads: usize,
    /// The first step, which includes one-time allocations and kernel selection.
    pub warmup_step_seconds: f64,
    /// Mean of the timed steps.
    pub seconds_per_step: f64,
    pub tokens_per_s: f64,
    /// Peak resident memory of the process (Linux; 0 elsewhere).
    pub peak_rss_mib: f64,
    /// The micro-batches the warmup and timed steps trained on, in order (each padded to its
    /// longest example with token 0; loss where `targets` is set): what another trainer must
    /// replay to be compared on the same work.
    pub batches: Vec<Vec<Example>>,
    /// Target (loss-carrying) tokens per timed step, on average.
    pub target_tokens_per_step: f64,
}

/// Times optimizer steps of `hyperparameters` on `base` with random full-length sequences
/// (`batch` × `max_len` tokens, loss on every token): one warmup step, then four timed ones.
/// Nothing is kept: checkpoints go to a temporary directory that is removed.
///
/// It tunes the process's allocator for training first ([`tune_allocator`]).
pub fn bench_training(
    base: &Path,
    device: &Device,
    hyperparameters: &Hyperparameters,
) -> Result<TrainingBench> {
    bench_training_on(base, device, hyperparameters, None)
}

/// [`bench_training`] on `examples` (e.g. a skill's tokenized records, loss on the answers) when
/// given, else on synthetic full-length sequences with the loss on every token. The steps take
/// the trainer's own batches: the first micro-batches of its seeded, length-bucketed epoch.
pub fn bench_training_on(
    base: &Path,
    device: &Device,
    hyperparameters: &Hyperparameters,
    examples: Option<Vec<Example>>,
) -> Result<TrainingBench> {
    tune_allocator();
    let config = TrainConfig {
        checkpoint_every: 0,
        ..hyperparameters.train_config(1000, None)
    };
    let model = Llama::new(ModelWeights::load(base, device, training_dtype(device))?);
    let vocab = model.weights.config.vocab_size;
    let examples = match examples {
        Some(examples) => examples,
        None => {
            let mut rng = SeededNormal::new(7);
            (0..config.batch * 8)
                .map(|_| Example {
                    ids: (0..config.max_len)
                        .map(|_| rng.below(vocab) as u32)
                        .collect(),
                    targets: vec![true; config.max_len],
                })
                .collect()
        }
    };
    let scratch =
        std::env::temp_dir().join(format!("skillpack-bench-train-{}", std::process::id()));
    let mut trainer = Trainer::new(model, config.clone(), examples.clone(), &scratch)?;
    // The micro-batches the steps below will take, from the trainer's own schedule.
    let batches: Vec<Vec<Example>> = (0..(WARMUP_STEPS + TIMED_STEPS) * config.accumulate.max(1))
        .map(|micro| {
            trainer
                .micro_batch(micro)
                .iter()
                .map(|&i| examples[i].clone())
                .collect()
        })
        .collect();
    let measured = (|| {
        let mut warmup = 0.0;
        for _ in 0..WARMUP_STEPS {
            warmup += trainer.train_step()?.seconds;
        }
        let started = Instant::now();
        let (mut tokens, mut targets) = (0, 0);
        for _ in 0..TIMED_STEPS {
            let m = trainer.train_step()?;
            tokens += m.tokens;
            targets += m.target_tokens;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok::<_, crate::TrainError>((warmup, tokens, targets, seconds))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    crate::release_packed_weights();
    let (warmup_step_seconds, tokens, targets, seconds) = measured?;
    Ok(TrainingBench {
        config,
        threads: candle_core::utils::get_num_threads(),
        warmup_step_seconds,
        seconds_per_step: seconds / TIMED_STEPS as f64,
        tokens_per_s: tokens as f64 / seconds,
        peak_rss_mib: crate::peak_rss_mib(),
        batches,
        target_tokens_per_step: targets as f64 / TIMED_STEPS as f64,
    })
}
