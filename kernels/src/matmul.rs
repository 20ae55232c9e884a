//! `dst = accumulate·dst + scale · lhs · rhs` over strided f32 views, checked before the kernel runs.
//!
//! A view is a slice plus `(rows, columns, row_stride, column_stride)`: element `(r, c)` is
//! `data[r * row_stride + c * column_stride]`, so a transpose is a swap of the strides, never a
//! copy. Every view is checked to stay inside its slice, and the shapes to agree, before the one
//! `unsafe` call into `gemm::gemm`.

use std::fmt;

use gemm::Parallelism;

/// The geometry of a strided view: element `(r, c)` at `r * row_stride + c * column_stride`.
#[derive(Debug, Clone, Copy)]
struct Layout {
    rows: usize,
    columns: usize,
    row_stride: usize,
    column_stride: usize,
}

impl Layout {
    fn row_major(rows: usize, columns: usize, row_stride: usize) -> Self {
        Self {
            rows,
            columns,
            row_stride,
            column_stride: 1,
        }
    }

    fn transpose(self) -> Self {
        Self {
            rows: self.columns,
            columns: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
        }
    }

    /// An error unless every element lies inside a slice of `length`.
    fn check_inside(&self, name: &str, length: usize) -> Result<(), ShapeError> {
        if self.rows == 0 || self.columns == 0 {
            return Ok(());
        }
        let last = (self.rows - 1) * self.row_stride + (self.columns - 1) * self.column_stride;
        if last >= length {
            return Err(ShapeError(format!(
                "{name}: a {}×{} view with strides ({}, {}) reaches element {last} of a slice of \
                 {length}",
                self.rows, self.columns, self.row_stride, self.column_stride
            )));
        }
        Ok(())
    }

    /// An error unless no two elements share an offset (a writable view).
    fn check_disjoint(&self, name: &str) -> Result<(), ShapeError> {
        let (inner, outer) = if self.column_stride <= self.row_stride {
            ((self.columns, self.column_stride), self.row_stride)
        } else {
            ((self.rows, self.row_stride), self.column_stride)
        };
        if self.rows > 1 && self.columns > 1 && (inner.1 == 0 || outer < inner.0 * inner.1) {
            return Err(ShapeError(format!(
                "{name}: a {}×{} view with strides ({}, {}) writes some elements twice",
                self.rows, self.columns, self.row_stride, self.column_stride
            )));
        }
        Ok(())
    }
}

/// A read-only strided matrix view of an f32 slice.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    layout: Layout,
}

/// A writable strided matrix view of an f32 slice. Its elements must not overlap each other
/// (checked: `column_stride >= 1` and `row_stride >= columns * column_stride`, or the transpose).
#[derive(Debug)]
pub struct MatrixMut<'a> {
    data: &'a mut [f32],
    layout: Layout,
}

/// Shapes that do not multiply, or a view that leaves its slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

impl<'a> Matrix<'a> {
    /// A row-major `rows × columns` view starting at `data[0]` with rows `row_stride` apart.
    #[must_use]
    pub fn new(data: &'a [f32], rows: usize, columns: usize, row_stride: usize) -> Self {
        Self {
            data,
            layout: Layout::row_major(rows, columns, row_stride),
        }
    }

    /// The transposed view (no copy).
    #[must_use]
    pub fn transpose(self) -> Self {
        Self {
            data: self.data,
            layout: self.layout.transpose(),
        }
    }
}

impl<'a> MatrixMut<'a> {
    /// A row-major `rows × columns` view starting at `data[0]` with rows `row_stride` apart.
    #[must_use]
    pub fn new(data: &'a mut [f32], rows: usize, columns: usize, row_stride: usize) -> Self {
        Self {
            data,
            layout: Layout::row_major(rows, columns, row_stride),
        }
    }

    /// The transposed view (no copy).
    #[must_use]
    pub fn transpose(self) -> Self {
        Self {
            data: self.data,
            layout: self.layout.transpose(),
        }
    }
}

/// `dst = dst + scale · lhs · rhs` when `accumulate`, else `dst = scale · lhs · rhs`, with
/// `lhs: m × k`, `rhs: k × n`, `dst: m × n`. `threads > 1` splits the product over rayon's pool
/// (worth it for large products only; inside an already parallel loop pass 1).
#[expect(
    clippy::needless_pass_by_value,
    reason = "taking the views by value lets callers build them inline, and a MatrixMut moved in \
              cannot be used again while the product writes through it"
)]
pub fn matmul(
    dst: MatrixMut<'_>,
    lhs: Matrix<'_>,
    rhs: Matrix<'_>,
    accumulate: bool,
    scale: f32,
    threads: usize,
) -> Result<(), ShapeError> {
    let (lhs_layout, rhs_layout, dst_layout) = (lhs.layout, rhs.layout, dst.layout);
    let (m, k, n) = (lhs_layout.rows, lhs_layout.columns, rhs_layout.columns);
    if rhs_layout.rows != k || dst_layout.rows != m || dst_layout.columns != n {
        return Err(ShapeError(format!(
            "({}×{}) · ({}×{}) into ({}×{})",
            lhs_layout.rows,
            lhs_layout.columns,
            rhs_layout.rows,
            rhs_layout.columns,
            dst_layout.rows,
            dst_layout.columns
        )));
    }
    lhs_layout.check_inside("lhs", lhs.data.len())?;
    rhs_layout.check_inside("rhs", rhs.data.len())?;
    dst_layout.check_disjoint("dst")?;
    dst_layout.check_inside("dst", dst.data.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst.data[r * dst_layout.row_stride + c * dst_layout.column_stride] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let stride = |s: usize| s as isize;
    // SAFETY: every element `gemm` touches is `(r, c)` of one of the three views with r < rows and
    // c < columns, at offset r·row_stride + c·column_stride, and `check_inside` proved the largest such
    // offset lies inside each slice. `dst` is a unique borrow whose elements do not overlap each
    // other (`check_disjoint`), and it cannot alias `lhs`/`rhs` (shared borrows). Strides fit in isize
    // because the offsets they produce are below the slices' lengths.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            stride(dst_layout.column_stride),
            stride(dst_layout.row_stride),
            accumulate,
            lhs.data.as_ptr(),
            stride(lhs_layout.column_stride),
            stride(lhs_layout.row_stride),
            rhs.data.as_ptr(),
            stride(rhs_layout.column_stride),
            stride(rhs_layout.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
#[expect(
    clippy::many_single_char_names,
    reason = "m, k, n, a, b are the names of the matrix-product formula; tests stop at the first failure"
)]
mod tests {
    use super::*;

    /// The plain triple loop the kernel must agree with.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k).map(|i| a[r * k + i] * b[i * n + c]).sum();
            }
        }
        out
    }

    #[test]
    fn agrees_with_the_triple_loop_including_transposed_views_and_accumulation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let expected = reference(&a, &b, m, k, n);
        let mut out = vec![1.0; m * n];
        matmul(
            MatrixMut::new(&mut out, m, n, n),
            Matrix::new(&a, m, k, k),
            Matrix::new(&b, k, n, n),
            false,
            1.0,
            1,
        )
        .unwrap();
        for (x, y) in out.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5);
        }
        // bᵀ stored as (n × k) and read transposed; accumulate 2·a·b onto the previous result.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(
            MatrixMut::new(&mut out, m, n, n),
            Matrix::new(&a, m, k, k),
            Matrix::new(&bt, n, k, k).transpose(),
            true,
            2.0,
            2,
        )
        .unwrap();
        for (x, y) in out.iter().zip(&expected) {
            assert!((x - 3.0 * y).abs() < 1e-4);
        }
    }

    #[test]
    fn views_that_leave_their_slice_or_overlap_are_refused() {
        let a = vec![0.0; 6];
        let mut out = vec![0.0; 4];
        let error = matmul(
            MatrixMut::new(&mut out, 2, 2, 2),
            Matrix::new(&a, 2, 3, 3),
            Matrix::new(&a, 3, 2, 3),
            false,
            1.0,
            1,
        )
        .unwrap_err();
        assert!(error.to_string().contains("rhs"), "{error}");
        let error = matmul(
            MatrixMut::new(&mut out, 2, 2, 1),
            Matrix::new(&a, 2, 3, 3),
            Matrix::new(&a, 3, 2, 2),
            false,
            1.0,
            1,
        )
        .unwrap_err();
        assert!(error.to_string().contains("twice"), "{error}");
    }
}
