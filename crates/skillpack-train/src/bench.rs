//! Training throughput on synthetic batches: every position is a target, as in a plain causal
//! LM fine-tune (the comparison PEFT's figure uses).

use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use crate::{
    training_dtype, tune_allocator, Example, Hyperparameters, Llama, ModelWeights, Result,
    SeededNormal, TrainConfig, Trainer,
};

/// Steps timed after the warmup step.
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
    tune_allocator();
    let config = TrainConfig {
        checkpoint_every: 0,
        ..hyperparameters.train_config(1000, None)
    };
    let model = Llama::new(ModelWeights::load(base, device, training_dtype(device))?);
    let vocab = model.weights.config.vocab_size;
    let mut rng = SeededNormal::new(7);
    let examples: Vec<Example> = (0..config.batch * 8)
        .map(|_| Example {
            ids: (0..config.max_len)
                .map(|_| rng.below(vocab) as u32)
                .collect(),
            targets: vec![true; config.max_len],
        })
        .collect();
    let scratch =
        std::env::temp_dir().join(format!("skillpack-bench-train-{}", std::process::id()));
    let mut trainer = Trainer::new(model, config.clone(), examples, &scratch)?;
    let measured = (|| {
        let warmup = trainer.train_step()?;
        let started = Instant::now();
        let mut tokens = 0;
        for _ in 0..TIMED_STEPS {
            tokens += trainer.train_step()?.tokens;
        }
        Ok::<_, crate::TrainError>((warmup.seconds, tokens, started.elapsed().as_secs_f64()))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    crate::release_packed_weights();
    let (warmup_step_seconds, tokens, seconds) = measured?;
    Ok(TrainingBench {
        config,
        threads: candle_core::utils::get_num_threads(),
        warmup_step_seconds,
        seconds_per_step: seconds / TIMED_STEPS as f64,
        tokens_per_s: tokens as f64 / seconds,
        peak_rss_mib: crate::peak_rss_mib(),
    })
}
