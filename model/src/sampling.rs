//! Choosing the next token from one row's logits: greedy argmax at temperature 0, otherwise
//! temperature, top-k and top-p (nucleus, Holtzman et al. 2020) in the order of transformers'
//! `generate` (`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`), then a draw from
//! the renormalised distribution.
//!
//! Runs on host f32 logits with its own seeded generator, xoshiro256** (Blackman & Vigna 2018)
//! seeded through `SplitMix64`, because candle's CPU generator cannot be seeded. A vocabulary of
//! 128k floats per row per step is cheap next to the forward.

use crate::init::SplitMix64;

/// xoshiro256**: a small, fast, seedable generator; one stream per generated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xoshiro256 {
    state: [u64; 4],
}

impl Xoshiro256 {
    /// A stream seeded from `seed` (expanded by `SplitMix64`, as the authors recommend).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut seeder = SplitMix64::new(seed);
        Self {
            state: [
                seeder.next_u64(),
                seeder.next_u64(),
                seeder.next_u64(),
                seeder.next_u64(),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.state[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let shifted = self.state[1] << 17;
        self.state[2] ^= self.state[0];
        self.state[3] ^= self.state[1];
        self.state[1] ^= self.state[2];
        self.state[0] ^= self.state[3];
        self.state[2] ^= shifted;
        self.state[3] = self.state[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a token is drawn from logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Logits are divided by it; 0 means greedy argmax.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (`None`: all).
    pub top_p: Option<f64>,
}

impl Sampler {
    /// The next token for one row's `logits` (length `vocab`).
    pub fn sample(&self, logits: &[f32], rng: &mut Xoshiro256) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let scaled: Vec<f64> = logits
            .iter()
            .map(|&logit| f64::from(logit) / self.temperature)
            .collect();
        // Candidates, most likely first; the sort is stable so equal logits keep id order.
        let mut order: Vec<usize> = (0..scaled.len()).collect();
        order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]));
        if let Some(top_k) = self.top_k {
            order.truncate(top_k.max(1));
        }
        let max = order.first().map_or(0.0, |&id| scaled[id]);
        let mut weights: Vec<f64> = order.iter().map(|&id| (scaled[id] - max).exp()).collect();
        if let Some(top_p) = self.top_p {
            let total: f64 = weights.iter().sum();
            let mut cumulative = 0.0;
            // Keep tokens up to and including the one that reaches top_p (at least one).
            let keep = weights
                .iter()
                .position(|weight| {
                    cumulative += weight / total;
                    cumulative >= top_p
                })
                .map_or(weights.len(), |last| last + 1);
            weights.truncate(keep);
        }
        let total: f64 = weights.iter().sum();
        let mut threshold = rng.uniform() * total;
        for (&id, weight) in order.iter().zip(&weights) {
            if threshold < *weight {
                return id as u32;
            }
            threshold -= weight;
        }
        // Rounding left the threshold past the end: the last kept token.
        order[weights.len() - 1] as u32
    }
}

/// The id of the largest logit, the first one on ties (as `torch.argmax`).
#[must_use]
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (id, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = id;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(sampler: Sampler, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut rng = Xoshiro256::new(3);
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[sampler.sample(logits, &mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn xoshiro_matches_the_reference_sequence() {
        // Reference: xoshiro256** from state [1, 2, 3, 4] gives 11520, 0, 1509978240, 1215971899390074240.
        let mut rng = Xoshiro256 {
            state: [1, 2, 3, 4],
        };
        let draws: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(draws, [11_520, 0, 1_509_978_240, 1_215_971_899_390_074_240]);
    }

    #[test]
    fn temperature_zero_is_argmax_with_first_on_ties() {
        let greedy = Sampler {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        };
        assert_eq!(histogram(greedy, &[0.0, 2.0, 2.0, 1.0], 10), [0, 10, 0, 0]);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        // Probabilities ∝ e^[3, 2, 1, 0] = [0.644, 0.237, 0.087, 0.032].
        let logits = [3.0, 2.0, 1.0, 0.0];
        let top_k = Sampler {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let counts = histogram(top_k, &logits, 10_000);
        assert_eq!(counts[2..], [0, 0]);
        // Renormalised over two tokens: 0.731 / 0.269.
        assert!(
            (counts[0] as f64 / 10_000.0 - 0.731).abs() < 0.02,
            "{counts:?}"
        );
        // top_p 0.85: 0.644 < 0.85 <= 0.881, so the first two tokens are kept.
        let top_p = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.85),
        };
        assert_eq!(histogram(top_p, &logits, 10_000)[2..], [0, 0]);
        // top_p 0.5: the first token alone reaches it.
        let narrow = Sampler {
            top_p: Some(0.5),
            ..top_p
        };
        assert_eq!(histogram(narrow, &logits, 100), [100, 0, 0, 0]);
    }

    #[test]
    fn full_distribution_at_temperature_two() {
        // Probabilities ∝ e^([2, 0] / 2) = [0.731, 0.269].
        let sampler = Sampler {
            temperature: 2.0,
            top_k: None,
            top_p: None,
        };
        let counts = histogram(sampler, &[2.0, 0.0], 20_000);
        assert!(
            (counts[0] as f64 / 20_000.0 - 0.731).abs() < 0.015,
            "{counts:?}"
        );
    }
}
