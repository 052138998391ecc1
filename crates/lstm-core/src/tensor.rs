//! [`Tensor`]: a dense, row-major (C-order) array with its shape, as PyTorch and NumPy hold them.

use crate::error::{LstmError, Result};

/// A dense row-major array: `data[i0*s0 + i1*s1 + ...]` with the last axis contiguous.
///
/// The invariant `data.len() == shape.iter().product()` holds for every `Tensor`
/// ([`Tensor::new`] checks it, the fields are private).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

/// The number of elements of `shape`, or `None` when the product overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `n` copies of `value`, or an [`LstmError::Allocation`] naming `what` when the buffer cannot
/// be allocated: engines size their outputs from caller-given shapes, and a failed allocation
/// must be an error, not an abort.
pub fn try_filled_vec<T: Clone>(what: &str, n: usize, value: T) -> Result<Vec<T>> {
    let fail = || LstmError::Allocation {
        what: what.to_string(),
        elements: n,
        element_bytes: std::mem::size_of::<T>(),
    };
    if n.checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(fail());
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| fail())?;
    v.resize(n, value);
    Ok(v)
}

impl<T> Tensor<T> {
    /// Wraps `data` with `shape`; fails when the element count does not match.
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<T>) -> Result<Self> {
        let shape = shape.into();
        match checked_numel(&shape) {
            Some(n) if n == data.len() => Ok(Tensor { shape, data }),
            n => Err(LstmError::ElementCount {
                what: "tensor".into(),
                expected: n.unwrap_or(usize::MAX),
                found: data.len(),
                shape,
            }),
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements in row-major order, mutable (the shape cannot change).
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Splits into shape and data.
    pub fn into_parts(self) -> (Vec<usize>, Vec<T>) {
        (self.shape, self.data)
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: impl Into<Vec<usize>>) -> Result<Self> {
        Tensor::new(shape, self.data)
    }

    /// Applies `f` to every element.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(f).collect(),
        }
    }
}

impl<T: Copy + Default> Tensor<T> {
    /// A tensor of `T::default()` (zero for floats).
    pub fn zeros(shape: impl Into<Vec<usize>>) -> Result<Self> {
        let shape = shape.into();
        let n = checked_numel(&shape).ok_or_else(|| LstmError::InvalidArgument {
            what: "shape",
            reason: format!("{shape:?} has more elements than memory can hold"),
        })?;
        Ok(Tensor {
            data: try_filled_vec("tensor", n, T::default())?,
            shape,
        })
    }

    /// Swaps the first two axes of a tensor of rank ≥ 2 (`[A, B, ...]` → `[B, A, ...]`),
    /// as `batch_first` needs.
    pub fn swap_leading_axes(&self) -> Result<Self> {
        if self.rank() < 2 {
            return Err(LstmError::RankMismatch {
                what: "tensor".into(),
                expected: "at least 2 dimensions".to_string(),
                found: self.rank(),
                shape: self.shape.clone(),
            });
        }
        let mut shape = self.shape.clone();
        shape.swap(0, 1);
        if self.data.is_empty() {
            return Ok(Tensor {
                shape,
                data: Vec::new(),
            });
        }
        // Non-empty, so every axis is ≥ 1 and no partial product can overflow.
        let (a, b) = (self.shape[0], self.shape[1]);
        let inner: usize = self.shape[2..].iter().product();
        let mut data = Vec::with_capacity(self.data.len());
        for j in 0..b {
            for i in 0..a {
                let start = (i * b + j) * inner;
                data.extend_from_slice(&self.data[start..start + inner]);
            }
        }
        Ok(Tensor { shape, data })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_count() {
        assert!(Tensor::new(vec![2, 3], vec![0.0f32; 6]).is_ok());
        assert!(matches!(
            Tensor::new(vec![2, 3], vec![0.0f32; 5]),
            Err(LstmError::ElementCount {
                expected: 6,
                found: 5,
                ..
            })
        ));
        assert!(Tensor::new(vec![usize::MAX, 3], Vec::<f32>::new()).is_err());
        assert!(Tensor::<f32>::zeros(vec![usize::MAX, 3]).is_err());
    }

    #[test]
    fn swap_leading_axes_transposes() {
        let t = Tensor::new(vec![2, 3, 2], (0..12).collect::<Vec<i32>>()).unwrap();
        let s = t.swap_leading_axes().unwrap();
        assert_eq!(s.shape(), &[3, 2, 2]);
        assert_eq!(s.data(), &[0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]);
        assert_eq!(s.swap_leading_axes().unwrap(), t);
        let v = Tensor::new(vec![3], vec![1, 2, 3]).unwrap();
        assert!(v.swap_leading_axes().is_err());
        let empty = Tensor::<f32>::new(vec![1, 0, usize::MAX, 2], vec![]).unwrap();
        assert_eq!(
            empty.swap_leading_axes().unwrap().shape(),
            &[0, 1, usize::MAX, 2]
        );
        assert!(matches!(
            Tensor::<f32>::zeros(vec![1 << 62]),
            Err(LstmError::Allocation { .. })
        ));
    }
}
