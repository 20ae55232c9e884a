//! One criterion group per op of `model::ops`, the fused implementation beside the reference on
//! the same inputs: `cargo bench -p herd-model --bench ops`.

use criterion::{criterion_group, criterion_main};

mod attention;
mod linear_cross_entropy;
mod norm_rope_swiglu;

criterion_group!(
    ops,
    attention::bench,
    linear_cross_entropy::bench,
    norm_rope_swiglu::bench
);
criterion_main!(ops);
