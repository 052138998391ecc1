//! Recognises the glue `torch.onnx.export` puts between the LSTM nodes of one multi-layer
//! `nn.LSTM`: layer k's `Y` (`[T, D, B, H]`) reshaped to the next layer's `X` (`[T, B, D·H]`)
//! by Transpose/Reshape (bidirectional) or Squeeze (unidirectional).
//!
//! The ops between the two nodes are followed symbolically: each dimension is the list of the
//! axes (T, D, B, H) it spans, in memory order. The link is accepted only when the result is
//! exactly `[T, B, D·H]` (`[B, T, D·H]` with layout 1) with the data in that order, so any
//! other rearrangement leaves the nodes separate models.

use crate::consts::{int_attr, ints_attr, Fold, Folder};
use crate::proto::NodeProto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    T,
    D,
    B,
    H,
}

/// What the symbolic walk knows: D and H, each dim's axes.
struct Sym {
    d: usize,
    h: usize,
    dims: Vec<Vec<Axis>>,
}

impl Sym {
    fn size(&self, a: Axis) -> Option<usize> {
        match a {
            Axis::D => Some(self.d),
            Axis::H => Some(self.h),
            Axis::T | Axis::B => None,
        }
    }

    /// Drops axes of size 1 (a unidirectional D): they never move data.
    fn normalised(&self) -> Vec<Vec<Axis>> {
        self.dims
            .iter()
            .map(|g| {
                g.iter()
                    .copied()
                    .filter(|&a| self.size(a) != Some(1))
                    .collect()
            })
            .collect()
    }

    fn transpose(&mut self, perm: &[i64]) -> Option<()> {
        let rank = self.dims.len();
        let mut seen = vec![false; rank];
        let mut out = Vec::with_capacity(rank);
        for &p in perm {
            let p = usize::try_from(p).ok().filter(|&p| p < rank && !seen[p])?;
            seen[p] = true;
            out.push(self.dims[p].clone());
        }
        (out.len() == rank).then(|| self.dims = out)
    }

    fn squeeze(&mut self, axes: &[i64]) -> Option<()> {
        let rank = self.dims.len() as i64;
        let mut remove = Vec::new();
        for &a in axes {
            let a = if a < 0 { a + rank } else { a };
            let a = usize::try_from(a).ok().filter(|&a| a < self.dims.len())?;
            // Only dims whose every axis has size 1.
            if !self.dims[a].iter().all(|&x| self.size(x) == Some(1)) {
                return None;
            }
            remove.push(a);
        }
        let dims = std::mem::take(&mut self.dims);
        self.dims = dims
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !remove.contains(i))
            .map(|(_, g)| g)
            .collect();
        Some(())
    }

    fn reshape(&mut self, shape: &[i64]) -> Option<()> {
        let flat: Vec<Axis> = self.dims.iter().flatten().copied().collect();
        // Start offsets of the input dims within `flat`, for 0 ("copy dim i").
        let mut starts = Vec::with_capacity(self.dims.len());
        let mut at = 0;
        for g in &self.dims {
            starts.push(at);
            at += g.len();
        }
        let infer = shape.iter().position(|&s| s == -1);
        if shape.iter().filter(|&&s| s == -1).count() > 1 {
            return None;
        }
        let take =
            |cursor: &mut usize, i: usize, s: i64, dims: &[Vec<Axis>]| -> Option<Vec<Axis>> {
                if s == 0 {
                    let g = dims.get(i)?;
                    if starts.get(i) != Some(cursor) {
                        return None;
                    }
                    *cursor += g.len();
                    return Some(g.clone());
                }
                let want = usize::try_from(s).ok()?;
                let mut group = Vec::new();
                let mut product = 1usize;
                while product < want {
                    let a = *flat.get(*cursor)?;
                    product = product.checked_mul(self.size(a)?)?;
                    group.push(a);
                    *cursor += 1;
                }
                (product == want).then_some(group)
            };
        let mut out = vec![Vec::new(); shape.len()];
        let mut cursor = 0;
        let split = infer.unwrap_or(shape.len());
        for i in 0..split {
            out[i] = take(&mut cursor, i, shape[i], &self.dims)?;
        }
        match infer {
            None => {
                if cursor != flat.len() {
                    return None;
                }
            }
            Some(k) => {
                // Entries after -1 may only copy dims (0) at the same index from the end.
                let mut end = flat.len();
                for i in (k + 1..shape.len()).rev() {
                    if shape[i] != 0 {
                        return None;
                    }
                    let g = self.dims.get(i)?;
                    if starts.get(i).map(|s| s + g.len()) != Some(end) {
                        return None;
                    }
                    end -= g.len();
                    out[i] = g.clone();
                }
                if cursor > end {
                    return None;
                }
                out[k] = flat[cursor..end].to_vec();
            }
        }
        self.dims = out;
        Some(())
    }
}

/// If the value `x` is `Y` of an LSTM node reached through glue ops only, the name of that
/// `Y` value; `d`, `h` and `batch_first` describe the upstream node (checked by the caller).
pub(crate) fn upstream_y(
    folder: &mut Folder<'_, '_>,
    x: &str,
    is_lstm_y: impl Fn(&str) -> bool,
    d: impl Fn(&str) -> Option<(usize, usize, bool)>,
) -> Option<String> {
    // Walk back to the LSTM output, collecting the ops (last first).
    let mut ops: Vec<&NodeProto> = Vec::new();
    let mut value = x.to_string();
    while !is_lstm_y(&value) {
        let (node, k) = folder.producer_node(&value)?;
        if k != 0 || ops.len() > 16 {
            return None;
        }
        if !matches!(
            node.op_type(),
            "Identity" | "Transpose" | "Reshape" | "Squeeze"
        ) {
            return None;
        }
        ops.push(node);
        value = node.input.first()?.clone();
    }
    let (dirs, hidden, batch_first) = d(&value)?;
    let start = if batch_first {
        vec![vec![Axis::B], vec![Axis::T], vec![Axis::D], vec![Axis::H]]
    } else {
        vec![vec![Axis::T], vec![Axis::D], vec![Axis::B], vec![Axis::H]]
    };
    let mut sym = Sym {
        d: dirs,
        h: hidden,
        dims: start,
    };
    let const_ints =
        |folder: &mut Folder<'_, '_>, node: &NodeProto, k: usize| -> Option<Vec<i64>> {
            let name = node.input.get(k).filter(|s| !s.is_empty())?;
            match folder.fold(name) {
                Ok(c) => c.ints("glue").ok().map(<[i64]>::to_vec),
                Err(Fold::Dynamic(_) | Fold::Error(_)) => None,
            }
        };
    for node in ops.into_iter().rev() {
        match node.op_type() {
            "Identity" => {}
            "Transpose" => {
                let perm = ints_attr(node, "perm")?;
                sym.transpose(&perm)?;
            }
            "Squeeze" => {
                let axes = match const_ints(folder, node, 1) {
                    Some(a) => a,
                    None => ints_attr(node, "axes")?,
                };
                sym.squeeze(&axes)?;
            }
            "Reshape" => {
                if int_attr(node, "allowzero").unwrap_or(0) != 0 {
                    return None;
                }
                let shape = const_ints(folder, node, 1)?;
                sym.reshape(&shape)?;
            }
            _ => return None,
        }
    }
    let want = if batch_first {
        vec![vec![Axis::B], vec![Axis::T], vec![Axis::D, Axis::H]]
    } else {
        vec![vec![Axis::T], vec![Axis::B], vec![Axis::D, Axis::H]]
    };
    let canon = Sym {
        d: dirs,
        h: hidden,
        dims: want,
    };
    (sym.normalised() == canon.normalised()).then_some(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sym(d: usize) -> Sym {
        Sym {
            d,
            h: 5,
            dims: vec![vec![Axis::T], vec![Axis::D], vec![Axis::B], vec![Axis::H]],
        }
    }

    #[test]
    fn torch_glue_is_recognised_and_other_reshapes_are_not() {
        let mut s = sym(2);
        s.transpose(&[0, 2, 1, 3]).unwrap();
        s.reshape(&[0, 0, -1]).unwrap();
        assert_eq!(
            s.normalised(),
            vec![vec![Axis::T], vec![Axis::B], vec![Axis::D, Axis::H]]
        );
        let mut s = sym(1);
        s.squeeze(&[1]).unwrap();
        assert_eq!(
            s.normalised(),
            vec![vec![Axis::T], vec![Axis::B], vec![Axis::H]]
        );
        // Without the transpose, D and B are interleaved wrongly.
        let mut s = sym(2);
        assert!(s.squeeze(&[1]).is_none());
        s.reshape(&[0, 0, -1]).unwrap();
        assert_ne!(
            s.normalised(),
            vec![vec![Axis::T], vec![Axis::B], vec![Axis::D, Axis::H]]
        );
        let mut s = sym(2);
        s.transpose(&[0, 2, 1, 3]).unwrap();
        s.reshape(&[0, 0, 10]).unwrap();
        assert_eq!(
            s.normalised(),
            vec![vec![Axis::T], vec![Axis::B], vec![Axis::D, Axis::H]]
        );
        assert!(sym(2).reshape(&[0, 0, 7]).is_none());
    }
}
