//! The training run's random number generator: xoshiro256** (Blackman & Vigna, "Scrambled linear
//! pseudorandom number generators", 2021; reference C at prng.di.unimi.it/xoshiro256starstar.c),
//! seeded through `SplitMix64` as the authors recommend.
//!
//! Written here rather than taken from a crate because its whole state is four `u64`s that go
//! into the checkpoint as JSON: a resumed run shuffles and drops out exactly as an uninterrupted
//! one would. Stages draw every random number of a run (shuffling, dropout masks, sampling)
//! from this one generator.

use serde::{Deserialize, Serialize};

/// xoshiro256**: 256 bits of state, period 2^256 − 1, fast, and good enough for shuffling and
/// dropout (not for cryptography).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// A generator whose state is filled from `seed` by `SplitMix64`, so that nearby seeds give
    /// unrelated streams and the state is never all zeros.
    #[must_use]
    pub fn from_seed(seed: u64) -> Self {
        let mut splitmix = seed;
        let mut next = || {
            splitmix = splitmix.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = splitmix;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// A uniform float in [0, 1) from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in [0, 1) from the top 24 bits (for dropout masks).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform integer in [0, bound), without modulo bias (Lemire's multiply-and-reject,
    /// "Fast random integer generation in an interval", 2019). `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0, "Rng::below(0)");
        let bound = bound.max(1);
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Shuffles in place (Fisher–Yates, from the back).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let other = self.below(last as u64 + 1) as usize;
            items.swap(last, other);
        }
    }

    /// The indices 0..count in a random order: an epoch's sample order.
    #[must_use]
    pub fn permutation(&mut self, count: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        self.shuffle(&mut order);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference C code (xoshiro256starstar.c, compiled and run with state {1, 2, 3, 4})
    /// prints 11520, 0, 1509978240, 1215971899390074240. The first by hand: s1·5 = 10,
    /// rotl(10, 7) = 1280, ·9 = 11520; the second is 0 because s1 becomes 2 ^ 3 ^ 2 ^ ... = 0.
    #[test]
    fn matches_the_reference_implementation() {
        let mut rng = Rng {
            state: [1, 2, 3, 4],
        };
        let outputs: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            outputs,
            [11520, 0, 1_509_978_240, 1_215_971_899_390_074_240]
        );
    }

    #[test]
    fn round_trips_through_json_mid_stream() {
        let mut rng = Rng::from_seed(42);
        rng.next_u64();
        let json = serde_json::to_string(&rng).unwrap();
        let mut restored: Rng = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (0..5).map(|_| rng.next_u64()).collect::<Vec<_>>(),
            (0..5).map(|_| restored.next_u64()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn permutation_is_a_permutation_and_below_is_in_range() {
        let mut rng = Rng::from_seed(7);
        let mut order = rng.permutation(100);
        assert_ne!(order, (0..100).collect::<Vec<_>>());
        order.sort_unstable();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        assert!((0..1000).all(|_| rng.below(3) < 3));
        assert!(
            (0..1000)
                .map(|_| rng.next_f64())
                .all(|x| (0.0..1.0).contains(&x))
        );
    }
}
