//! Fitting router heads on features: a linear softmax head by cross-entropy against (soft)
//! skill labels, and prototype heads (cosine similarity to each skill's mean feature).

/// Per-dimension mean and standard deviation of `features`.
pub fn standardization(features: &[Vec<f32>]) -> (Vec<f32>, Vec<f32>) {
    let d = features.first().map_or(0, Vec::len);
    let n = features.len().max(1) as f64;
    let mut mean = vec![0f64; d];
    for f in features {
        mean.iter_mut()
            .zip(f)
            .for_each(|(m, x)| *m += *x as f64 / n);
    }
    let mut var = vec![0f64; d];
    for f in features {
        var.iter_mut()
            .zip(f)
            .zip(&mean)
            .for_each(|((v, x), m)| *v += (*x as f64 - m).powi(2) / n);
    }
    (
        mean.iter().map(|m| *m as f32).collect(),
        var.iter().map(|v| (v.sqrt() as f32).max(1e-4)).collect(),
    )
}

/// Settings of [`fit_linear`].
#[derive(Debug, Clone)]
pub struct LinearFit {
    pub steps: usize,
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub l2: f32,
}

impl Default for LinearFit {
    fn default() -> Self {
        LinearFit {
            steps: 300,
            learning_rate: 0.05,
            // Prompts of different skills are nearly separable in 576 dimensions; without a
            // firm penalty the head saturates at one-hot weights.
            l2: 1e-2,
        }
    }
}

/// The result of [`fit_linear`].
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// `[outputs, dim]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// Mean cross-entropy at the end.
    pub loss: f32,
    /// Fraction of examples whose largest target is the head's argmax.
    pub accuracy: f32,
}

/// Fits `softmax(W z + b)` to `targets` (rows summing to 1) by full-batch Adam (cosine-decayed
/// step) on the mean cross-entropy plus `l2·‖W‖²`. `inputs` are standardized features.
pub fn fit_linear(inputs: &[Vec<f32>], targets: &[Vec<f32>], options: &LinearFit) -> LinearHead {
    let n = inputs.len();
    let d = inputs.first().map_or(0, Vec::len);
    let k = targets.first().map_or(0, Vec::len);
    let mut w = vec![0f32; k * d];
    let mut b = vec![0f32; k];
    let (mut mw, mut vw) = (vec![0f32; k * d], vec![0f32; k * d]);
    let (mut mb, mut vb) = (vec![0f32; k], vec![0f32; k]);
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut loss = 0.0;
    for step in 1..=options.steps {
        let mut gw = vec![0f32; k * d];
        let mut gb = vec![0f32; k];
        loss = 0.0;
        for (z, t) in inputs.iter().zip(targets) {
            let logits: Vec<f32> = (0..k)
                .map(|j| {
                    w[j * d..(j + 1) * d]
                        .iter()
                        .zip(z)
                        .map(|(a, x)| a * x)
                        .sum::<f32>()
                        + b[j]
                })
                .collect();
            let p = crate::router::softmax(&logits, 1.0);
            for j in 0..k {
                loss -= t[j] * p[j].max(1e-12).ln();
                let g = (p[j] - t[j]) / n as f32;
                gb[j] += g;
                gw[j * d..(j + 1) * d]
                    .iter_mut()
                    .zip(z)
                    .for_each(|(acc, x)| *acc += g * x);
            }
        }
        loss /= n as f32;
        gw.iter_mut()
            .zip(&w)
            .for_each(|(g, x)| *g += 2.0 * options.l2 * x);
        let bias1 = 1.0 - beta1.powi(step as i32);
        let bias2 = 1.0 - beta2.powi(step as i32);
        // Cosine decay to zero: a constant step keeps Adam circling the optimum, and heads fitted
        // with different penalties would then differ by where the circling stopped.
        let progress = (step - 1) as f32 / options.steps.max(1) as f32;
        let lr = options.learning_rate * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        let adam = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for i in 0..p.len() {
                m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
                v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
                p[i] -= lr * (m[i] / bias1) / ((v[i] / bias2).sqrt() + eps);
            }
        };
        adam(&mut w, &gw, &mut mw, &mut vw);
        adam(&mut b, &gb, &mut mb, &mut vb);
    }
    let mut head = LinearHead {
        weight: w,
        bias: b,
        loss,
        accuracy: 0.0,
    };
    let correct = inputs
        .iter()
        .zip(targets)
        .filter(|(z, t)| head.predict(z) == argmax(t))
        .count();
    head.accuracy = correct as f32 / n.max(1) as f32;
    head
}

impl LinearHead {
    /// The output with the largest score `W z + b` for standardized features `z`.
    pub fn predict(&self, z: &[f32]) -> usize {
        let d = z.len();
        let scores: Vec<f32> = self
            .bias
            .iter()
            .enumerate()
            .map(|(k, b)| {
                self.weight[k * d..(k + 1) * d]
                    .iter()
                    .zip(z)
                    .map(|(w, x)| w * x)
                    .sum::<f32>()
                    + b
            })
            .collect();
        argmax(&scores)
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Prototype head: row `k` is the L2-normalized mean of the (L2-normalized) standardized
/// features of class `k`, divided by `temperature`, so the logits are cosine similarities over
/// the temperature. Classes without examples get a zero row.
pub fn prototypes(
    inputs: &[Vec<f32>],
    labels: &[usize],
    classes: usize,
    temperature: f32,
) -> Vec<f32> {
    let d = inputs.first().map_or(0, Vec::len);
    let mut rows = vec![0f32; classes * d];
    for (z, &c) in inputs.iter().zip(labels) {
        let norm = z.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        rows[c * d..(c + 1) * d]
            .iter_mut()
            .zip(z)
            .for_each(|(r, v)| *r += v / norm);
    }
    for c in 0..classes {
        let row = &mut rows[c * d..(c + 1) * d];
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm * temperature);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_are_learned() {
        // Two clusters in 3-D; the head must separate them and match soft targets' argmax.
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        for i in 0..40 {
            let s = (i % 7) as f32 * 0.05;
            if i % 2 == 0 {
                inputs.push(vec![1.0 + s, -1.0, 0.2]);
                targets.push(vec![0.9, 0.1]);
            } else {
                inputs.push(vec![-1.0, 1.0 - s, 0.2]);
                targets.push(vec![0.2, 0.8]);
            }
        }
        let head = fit_linear(&inputs, &targets, &LinearFit::default());
        assert_eq!(head.accuracy, 1.0);
        // Soft targets bound the loss from below by their entropy (≈ 0.33 / 0.50).
        assert!(head.loss > 0.3 && head.loss < 0.7, "{}", head.loss);
        let (mean, std) = standardization(&inputs);
        assert!(mean[2] - 0.2 < 1e-6 && std[2] == 1e-4);
        let rows = prototypes(&inputs, &(0..40).map(|i| i % 2).collect::<Vec<_>>(), 3, 0.5);
        // Unit rows over the temperature; the empty class is zero.
        let norm0: f32 = rows[0..3].iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm0 - 2.0).abs() < 1e-5);
        assert!(rows[6..9].iter().all(|v| *v == 0.0));
    }
}
