//! The fused `rms_norm`, `swiglu` and `rotary` ops of `model::ops` against their references:
//! values and gradients (through `Var`s, with a random upstream gradient), over odd sizes, a
//! single row, 3-D and 4-D shapes, and the dtypes each fused kernel covers.

use candle_core::{DType, Device, Tensor, Var};
use model::ops::{Kernels, rms_norm, rope, swiglu};

use crate::{max_abs, max_abs_difference};

/// Deterministic values uniform in `[-scale, scale)` (a 64-bit LCG; the top 24 bits).
fn uniform(dims: &[usize], scale: f32, seed: u64) -> Tensor {
    let count = dims.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let values: Vec<f32> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu).expect("tensor")
}

/// `actual` within `tolerance` of `expected`, relative to `expected`'s largest magnitude when
/// that exceeds 1.
fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tolerance: f32) {
    let actual = actual.to_dtype(DType::F32).expect("f32");
    let expected = expected.to_dtype(DType::F32).expect("f32");
    let difference = max_abs_difference(&actual, &expected);
    let scale = max_abs(&expected).max(1.0);
    assert!(
        difference <= tolerance * scale,
        "{what}: max |difference| {difference} > {tolerance} × {scale}"
    );
}

/// `actual` equal to `expected` element for element (as f32; `-0 == 0`).
fn assert_identical(what: &str, actual: &Tensor, expected: &Tensor) {
    let actual = actual.to_dtype(DType::F32).expect("f32");
    let expected = expected.to_dtype(DType::F32).expect("f32");
    let difference = max_abs_difference(&actual, &expected);
    assert!(
        difference <= 0.0,
        "{what}: max |difference| {difference}, expected none"
    );
}

/// The output of `op` on `inputs` (made `Var`s) and the gradient of each input under
/// `loss = (output * upstream).sum_all()`.
fn output_and_gradients(
    op: &dyn Fn(&[Tensor]) -> model::Result<Tensor>,
    inputs: &[Tensor],
    upstream: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).expect("var"))
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let output = op(&tensors).expect("op");
    let loss = (&output * upstream.to_dtype(output.dtype()).expect("cast"))
        .expect("product")
        .sum_all()
        .expect("sum");
    let grads = loss.backward().expect("backward");
    let gradients = vars
        .iter()
        .map(|v| grads.get(v).expect("a gradient for every input").clone())
        .collect();
    (output, gradients)
}

/// Values and gradients of `fused` and `reference` on `inputs`, within `tolerance`.
fn assert_fused_matches(
    what: &str,
    reference: &dyn Fn(&[Tensor]) -> model::Result<Tensor>,
    fused: &dyn Fn(&[Tensor]) -> model::Result<Tensor>,
    inputs: &[Tensor],
    tolerance: f32,
) {
    // Every op here returns its first input's shape.
    let upstream = uniform(inputs[0].dims(), 1.0, 99);
    let (y_reference, g_reference) = output_and_gradients(reference, inputs, &upstream);
    let (y_fused, g_fused) = output_and_gradients(fused, inputs, &upstream);
    assert_eq!(y_fused.dtype(), y_reference.dtype(), "{what}: dtype");
    assert_close(
        &format!("{what}: values"),
        &y_fused,
        &y_reference,
        tolerance,
    );
    for (i, (fused, reference)) in g_fused.iter().zip(&g_reference).enumerate() {
        assert_eq!(fused.dims(), reference.dims(), "{what}: gradient {i} shape");
        assert_eq!(
            fused.dtype(),
            reference.dtype(),
            "{what}: gradient {i} dtype"
        );
        assert_close(
            &format!("{what}: gradient {i}"),
            fused,
            reference,
            tolerance,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

fn norm_reference(eps: f64) -> impl Fn(&[Tensor]) -> model::Result<Tensor> {
    move |t| rms_norm::reference(&t[0], &t[1], eps)
}

fn norm_fused(eps: f64) -> impl Fn(&[Tensor]) -> model::Result<Tensor> {
    move |t| rms_norm::fused(&t[0], &t[1], eps)
}

#[test]
fn rms_norm_matches_the_formula_by_hand() {
    // x = [3, 4]: mean(x²) = 12.5, rms = 3.5355; weight [1, 2] → [0.8485, 2.2627].
    let x = Tensor::new(&[[3.0f32, 4.0]], &Device::Cpu).expect("x");
    let weight = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).expect("weight");
    for kernels in [Kernels::Reference, Kernels::Fused] {
        let y: Vec<Vec<f32>> = rms_norm::rms_norm(&x, &weight, 0.0, kernels)
            .expect("norm")
            .to_vec2()
            .expect("values");
        assert!(
            (y[0][0] - 0.848_528).abs() < 1e-6 && (y[0][1] - 2.262_742).abs() < 1e-6,
            "{kernels:?}: {y:?}"
        );
    }
}

#[test]
fn rms_norm_fused_matches_the_reference_in_f32() {
    // One row, odd sizes (shorter and longer than the 32-lane sum), rows × 384 over several
    // rayon tasks, 3-D and 4-D.
    let shapes: [&[usize]; 7] = [
        &[1, 7],
        &[5, 1],
        &[3, 33],
        &[100, 384],
        &[2, 5, 97],
        &[2, 3, 4, 17],
        &[1, 1, 1, 384],
    ];
    for (i, dims) in shapes.into_iter().enumerate() {
        for eps in [1e-5, 1e-6, 0.1] {
            let size = dims[dims.len() - 1];
            let x = uniform(dims, 2.0, i as u64);
            let weight = (uniform(&[size], 0.5, 50 + i as u64) + 1.0).expect("weight");
            assert_fused_matches(
                &format!("rms_norm {dims:?} eps {eps}"),
                &norm_reference(eps),
                &norm_fused(eps),
                &[x, weight],
                1e-5,
            );
        }
    }
}

#[test]
fn rms_norm_fused_values_are_bit_identical_in_f32() {
    // The fused kernel mirrors the reference's f32 operations (and candle's AVX2 row sum).
    let x = uniform(&[64, 384], 3.0, 7);
    let weight = uniform(&[384], 1.0, 8);
    let reference = rms_norm::reference(&x, &weight, 1e-5).expect("reference");
    let fused = rms_norm::fused(&x, &weight, 1e-5).expect("fused");
    if std::arch::is_x86_feature_detected!("avx2") {
        assert_identical("AVX2: same summation order", &fused, &reference);
    } else {
        assert_close("without AVX2", &fused, &reference, 1e-6);
    }
}

#[test]
fn rms_norm_fused_matches_the_reference_in_bf16() {
    for (i, dims) in [&[1usize, 7][..], &[33, 384], &[2, 3, 65]]
        .into_iter()
        .enumerate()
    {
        let size = dims[dims.len() - 1];
        // Values over several binades, so the bf16 roundings (of n and of n·w) are exercised.
        let x = (uniform(dims, 4.0, 20 + i as u64).exp().expect("exp")
            * uniform(dims, 1.0, 30 + i as u64))
        .expect("x")
        .to_dtype(DType::BF16)
        .expect("bf16");
        let weight = uniform(&[size], 2.0, 40 + i as u64)
            .to_dtype(DType::BF16)
            .expect("bf16");
        let what = format!("rms_norm bf16 {dims:?}");

        // Values: the reference's cast points, so bit-identical (AVX2) or one bf16 rounding off.
        let reference = rms_norm::reference(&x, &weight, 1e-5).expect("reference");
        let fused = rms_norm::fused(&x, &weight, 1e-5).expect("fused");
        assert_eq!(fused.dtype(), DType::BF16);
        if std::arch::is_x86_feature_detected!("avx2") {
            assert_identical(&format!("{what}: values"), &fused, &reference);
        } else {
            assert_close(&format!("{what}: values"), &fused, &reference, 1e-2);
        }

        // Gradients: the fused kernel computes them in f32 from the bf16 inputs and rounds once,
        // the bf16 reference rounds at every op. Both are compared with the f32 gradients of the
        // same (bf16-valued) inputs, the fused one held to bf16's resolution.
        let upstream = uniform(reference.dims(), 1.0, 5);
        let inputs = [x.clone(), weight.clone()];
        let (_, g_fused) = output_and_gradients(&norm_fused(1e-5), &inputs, &upstream);
        let (_, g_reference) = output_and_gradients(&norm_reference(1e-5), &inputs, &upstream);
        let inputs_f32 = inputs.map(|t| t.to_dtype(DType::F32).expect("f32"));
        let (_, g_exact) = output_and_gradients(&norm_reference(1e-5), &inputs_f32, &upstream);
        for (i, ((fused, reference), exact)) in
            g_fused.iter().zip(&g_reference).zip(&g_exact).enumerate()
        {
            assert_eq!(fused.dtype(), DType::BF16, "{what}: gradient {i} dtype");
            let fused_error = max_abs_difference(&fused.to_dtype(DType::F32).expect("f32"), exact);
            let reference_error =
                max_abs_difference(&reference.to_dtype(DType::F32).expect("f32"), exact);
            let scale = max_abs(exact).max(1.0);
            assert!(
                fused_error <= 1e-2 * scale && fused_error <= reference_error.max(1e-2 * scale),
                "{what}: gradient {i}: fused error {fused_error}, bf16 reference error \
                 {reference_error}, scale {scale}"
            );
        }
    }
}

#[test]
fn rms_norm_fused_takes_non_contiguous_input_and_falls_back_off_its_kernel() {
    // A transposed x is made contiguous first; a weight of another shape and f16 go to the
    // reference (same result as calling it).
    let x = uniform(&[16, 6], 1.0, 3).t().expect("t");
    let weight = uniform(&[16], 1.0, 4);
    assert_fused_matches(
        "rms_norm transposed x",
        &norm_reference(1e-6),
        &norm_fused(1e-6),
        &[x.clone(), weight.clone()],
        1e-5,
    );
    let broadcast_weight = weight.reshape((1, 16)).expect("reshape");
    let fused = rms_norm::fused(&x, &broadcast_weight, 1e-6).expect("fused");
    let reference = rms_norm::reference(&x, &broadcast_weight, 1e-6).expect("reference");
    assert_identical("rms_norm broadcast weight fallback", &fused, &reference);
    let (x16, w16) = (
        x.to_dtype(DType::F16).expect("f16"),
        weight.to_dtype(DType::F16).expect("f16"),
    );
    let fused = rms_norm::fused(&x16, &w16, 1e-6).expect("fused f16");
    let reference = rms_norm::reference(&x16, &w16, 1e-6).expect("reference f16");
    assert_eq!(fused.dtype(), DType::F16);
    assert_identical("rms_norm f16 fallback", &fused, &reference);
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

fn swiglu_reference(t: &[Tensor]) -> model::Result<Tensor> {
    swiglu::reference(&t[0], &t[1])
}

fn swiglu_fused(t: &[Tensor]) -> model::Result<Tensor> {
    swiglu::fused(&t[0], &t[1])
}

#[test]
fn swiglu_fused_matches_the_reference() {
    let shapes: [&[usize]; 6] = [
        &[1, 1],
        &[3, 7],
        &[1, 1024],
        &[40, 1024],
        &[4, 33, 65],
        &[2, 3, 5, 7],
    ];
    for (i, dims) in shapes.into_iter().enumerate() {
        // Gates past silu's saturation on both sides (exp(-g) overflowing to inf included).
        for scale in [1.0, 12.0, 100.0] {
            let gate = uniform(dims, scale, i as u64);
            let up = uniform(dims, 3.0, 10 + i as u64);
            assert_fused_matches(
                &format!("swiglu {dims:?} scale {scale}"),
                &swiglu_reference,
                &swiglu_fused,
                &[gate, up],
                1e-5,
            );
        }
    }
}

#[test]
fn swiglu_fused_is_bit_identical_to_the_reference() {
    // Same formulas in the same order as candle's silu and its backward.
    let gate = uniform(&[8, 257], 9.0, 1);
    let up = uniform(&[8, 257], 2.0, 2);
    let upstream = uniform(&[8, 257], 1.0, 3);
    let inputs = [gate, up];
    let (y_reference, g_reference) = output_and_gradients(&swiglu_reference, &inputs, &upstream);
    let (y_fused, g_fused) = output_and_gradients(&swiglu_fused, &inputs, &upstream);
    assert_identical("swiglu values", &y_fused, &y_reference);
    assert_identical("swiglu d gate", &g_fused[0], &g_reference[0]);
    assert_identical("swiglu d up", &g_fused[1], &g_reference[1]);
}

#[test]
fn swiglu_fused_falls_back_for_bf16_and_takes_non_contiguous_input() {
    let gate = uniform(&[6, 10], 3.0, 4);
    let up = uniform(&[10, 6], 3.0, 5).t().expect("t");
    assert_fused_matches(
        "swiglu transposed up",
        &swiglu_reference,
        &swiglu_fused,
        &[gate.clone(), up.clone()],
        1e-5,
    );
    let (gate, up) = (
        gate.to_dtype(DType::BF16).expect("bf16"),
        up.to_dtype(DType::BF16).expect("bf16"),
    );
    let fused = swiglu::swiglu(&gate, &up, Kernels::Fused).expect("fused");
    let reference = swiglu::swiglu(&gate, &up, Kernels::Reference).expect("reference");
    assert_eq!(fused.dtype(), DType::BF16);
    assert_identical("swiglu bf16 fallback", &fused, &reference);
}

// ---------------------------------------------------------------------------------------------
// RoPE

/// cos/sin `(batch, 1, seq, head_dim)` as `model::rope` builds them: angle `position ×
/// inverse_frequency`, `cat(freqs, freqs)`, with `positions[b]` the positions of batch row `b`.
fn rope_tables(positions: &[Vec<u32>], head_dim: usize) -> (Tensor, Tensor) {
    let half = head_dim / 2;
    let inverse_frequencies: Vec<f32> = (0..half)
        .map(|i| 1.0 / 10_000f32.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &position in positions.iter().flatten() {
        let angles: Vec<f32> = inverse_frequencies
            .iter()
            .map(|f| position as f32 * f)
            .collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    let shape = (positions.len(), 1, positions[0].len(), head_dim);
    (
        Tensor::from_vec(cos, shape, &Device::Cpu).expect("cos"),
        Tensor::from_vec(sin, shape, &Device::Cpu).expect("sin"),
    )
}

fn rotary_reference(cos: &Tensor, sin: &Tensor) -> impl Fn(&[Tensor]) -> model::Result<Tensor> {
    let (cos, sin) = (cos.clone(), sin.clone());
    move |t| rope::reference(&t[0], &cos, &sin)
}

fn rotary_fused(cos: &Tensor, sin: &Tensor) -> impl Fn(&[Tensor]) -> model::Result<Tensor> {
    let (cos, sin) = (cos.clone(), sin.clone());
    move |t| rope::fused(&t[0], &cos, &sin)
}

#[test]
fn rotary_fused_matches_the_reference() {
    // Batch row 0 from position 0, row 1 packed (two documents, the second restarting at 0),
    // row 2 continuing after a cache.
    let seq = 9;
    let positions = vec![
        (0..seq).collect::<Vec<u32>>(),
        (0..4).chain(0..seq - 4).collect(),
        (100..100 + seq).collect(),
    ];
    for head_dim in [2, 8, 64] {
        for heads in [1, 3] {
            let (cos, sin) = rope_tables(&positions, head_dim);
            let x = uniform(&[3, heads, seq as usize, head_dim], 2.0, head_dim as u64);
            assert_fused_matches(
                &format!("rotary heads {heads} head_dim {head_dim}"),
                &rotary_reference(&cos, &sin),
                &rotary_fused(&cos, &sin),
                &[x],
                1e-6,
            );
        }
    }
}

#[test]
fn rotary_fused_is_bit_identical_to_the_reference() {
    let positions = vec![(3..40).collect::<Vec<u32>>(), (0..37).collect()];
    let (cos, sin) = rope_tables(&positions, 64);
    let x = uniform(&[2, 4, 37, 64], 3.0, 1);
    let upstream = uniform(&[2, 4, 37, 64], 1.0, 2);
    let inputs = [x];
    let (y_reference, g_reference) =
        output_and_gradients(&rotary_reference(&cos, &sin), &inputs, &upstream);
    let (y_fused, g_fused) = output_and_gradients(&rotary_fused(&cos, &sin), &inputs, &upstream);
    assert_identical("rotary values", &y_fused, &y_reference);
    assert_identical("rotary gradient", &g_fused[0], &g_reference[0]);
}

#[test]
fn rotary_fused_handles_any_tables_and_broadcasts() {
    // Tables whose halves differ (the backward's s_{i±h} indexing), shared by the batch
    // (1, 1, seq, d), per head (batch, heads, seq, d), and a transposed x.
    let (batch, heads, seq, dim) = (2, 3, 5, 8);
    let x = uniform(&[batch, heads, seq, dim], 1.0, 1);
    for (i, table) in [
        [1, 1, seq, dim],
        [batch, 1, seq, dim],
        [1, heads, seq, dim],
        [batch, heads, seq, dim],
    ]
    .into_iter()
    .enumerate()
    {
        let cos = uniform(&table, 1.0, 10 + i as u64);
        let sin = uniform(&table, 1.0, 20 + i as u64);
        assert_fused_matches(
            &format!("rotary tables {table:?}"),
            &rotary_reference(&cos, &sin),
            &rotary_fused(&cos, &sin),
            std::slice::from_ref(&x),
            1e-6,
        );
    }
    let cos = uniform(&[batch, 1, seq, dim], 1.0, 30);
    let sin = uniform(&[batch, 1, seq, dim], 1.0, 31);
    let transposed = uniform(&[batch, seq, heads, dim], 1.0, 32)
        .transpose(1, 2)
        .expect("transpose");
    assert_fused_matches(
        "rotary transposed x",
        &rotary_reference(&cos, &sin),
        &rotary_fused(&cos, &sin),
        &[transposed],
        1e-6,
    );
}

#[test]
fn rotary_fused_gradient_is_the_transpose_of_the_rotation() {
    // The map is linear: <R x, y> = <x, Rᵀ y>, and the gradient of (R x · y).sum() is Rᵀ y.
    let positions = vec![(0..6).collect::<Vec<u32>>()];
    let (cos, sin) = rope_tables(&positions, 8);
    let x = uniform(&[1, 2, 6, 8], 1.0, 1);
    let y = uniform(&[1, 2, 6, 8], 1.0, 2);
    let rx = rope::fused(&x, &cos, &sin).expect("R x");
    let (_, gradient) =
        output_and_gradients(&rotary_fused(&cos, &sin), std::slice::from_ref(&x), &y);
    let left = (&rx * &y)
        .expect("product")
        .sum_all()
        .expect("sum")
        .to_scalar::<f32>()
        .expect("s");
    let right = (&x * &gradient[0])
        .expect("product")
        .sum_all()
        .expect("sum")
        .to_scalar::<f32>()
        .expect("s");
    assert!((left - right).abs() < 1e-4, "{left} vs {right}");
    // And the rotation preserves each pair's norm (cos² + sin² = 1), so the whole norm.
    let norm = |t: &Tensor| {
        t.sqr()
            .expect("sqr")
            .sum_all()
            .expect("sum")
            .to_scalar::<f32>()
            .expect("s")
    };
    assert!((norm(&rx) - norm(&x)).abs() < 1e-4);
}

#[test]
fn rotary_fused_falls_back_for_bf16() {
    let positions = vec![(0..4).collect::<Vec<u32>>()];
    let (cos, sin) = rope_tables(&positions, 8);
    let cast = |t: &Tensor| t.to_dtype(DType::BF16).expect("bf16");
    let x = cast(&uniform(&[1, 2, 4, 8], 1.0, 1));
    let fused = rope::rotary(&x, &cast(&cos), &cast(&sin), Kernels::Fused).expect("fused");
    let reference = rope::rotary(&x, &cast(&cos), &cast(&sin), Kernels::Reference).expect("ref");
    assert_eq!(fused.dtype(), DType::BF16);
    assert_identical("rotary bf16 fallback", &fused, &reference);
}
