//! Weight packing: done once, when an engine is built.
//!
//! A [`PackedMatrix`] holds the transpose of a PyTorch weight (`[rows, k]`, row-major) as column
//! *tiles* of `4·N` output columns (`N` = the backend's lanes). Tile `t` is `k` runs of `4·N`
//! floats: run `kk` holds column `kk` of the tile's rows, so a kernel reads the tile front to
//! back, four vectors per `kk`, with no gathers. Tiles are padded with zero rows.
//!
//! For the gate weights (`W_ih`, `W_hh`, `[4H, k]`) the rows of a tile are *gate-interleaved*
//! ([`pack_gate_weights`]): tile `t` covers hidden units `t·N .. t·N + N` and holds, in order,
//! their `i`, `f`, `g` and `o` rows. One tile thus yields all four gates of `N` units, which is
//! what lets the fused step finish a unit's cell update while its gates are still in registers.

#![forbid(unsafe_code)]

use lstm_core::precision::{bf16_bits, i8_scale, quantize_i8};
use lstm_core::tensor::try_filled_vec;
use lstm_core::{Precision, Result};

/// A buffer whose usable part starts on a 64-byte boundary (one cache line, one zmm): f32s,
/// or 32-bit pairs of bf16 weights.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlignedBuf<T = f32> {
    data: Vec<T>,
    offset: usize,
    len: usize,
}

/// Elements of 4 bytes in one 64-byte cache line.
const ALIGN_ELEMENTS: usize = 16;

impl<T: Copy + Default> AlignedBuf<T> {
    /// `len` zeros; fails with a typed error when the allocation does.
    pub(crate) fn zeros(what: &str, len: usize) -> Result<Self> {
        debug_assert_eq!(std::mem::size_of::<T>(), 4);
        let data = try_filled_vec(what, len.saturating_add(ALIGN_ELEMENTS), T::default())?;
        let addr = data.as_ptr() as usize;
        let offset = (64 - addr % 64) % 64 / 4;
        Ok(AlignedBuf { data, offset, len })
    }

    /// Grows to at least `len` elements (contents unspecified afterwards).
    pub(crate) fn ensure(&mut self, what: &str, len: usize) -> Result<()> {
        if self.len < len {
            *self = AlignedBuf::zeros(what, len)?;
        }
        Ok(())
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        &self.data[self.offset..self.offset + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data[self.offset..self.offset + self.len]
    }
}

/// The packed elements of a [`PackedMatrix`], in its precision.
#[derive(Clone, Debug)]
enum PackedData {
    /// Run `kk` of a tile: `4·lanes` f32s, column `kk` of the tile's rows.
    F32(AlignedBuf<f32>),
    /// Run `p` of a tile: `4·lanes` pairs, each the bf16 of columns `2p` (low half) and
    /// `2p + 1` (high half) of one row (zero past `k`): the operand layout of `vdpbf16ps`,
    /// and widened to two f32 vectors by a shift and a mask elsewhere.
    Bf16(AlignedBuf<u32>),
    /// A tile is a header of `2·4·lanes` words, then its runs. The header holds each column's
    /// scale (f32 bits: `max |row| / 127`), then `128 · Σ_kk q[kk]` (i32: what the unsigned
    /// offset of the activations adds to a dot product, subtracted before scaling). Run `q`:
    /// `4·lanes` quads, each the int8s of columns `4q .. 4q + 4` of one row (byte 0 first,
    /// zero past `k`): the signed operand of `vpdpbusd`, widened byte by byte elsewhere.
    Int8(AlignedBuf<u32>),
}

/// Words of an int8 tile's header per column: its scale and its offset correction.
pub(crate) const INT8_HEADER_WORDS: usize = 2;

/// The longest reduction int8 products take: `vpdpbusd` sums wrap modulo 2^32, and the
/// corrected sum `Σ (u - 128)·q` (at most `127²·k` in magnitude) is exact while it fits an
/// i32, up to `k = 133_143`.
pub(crate) const INT8_MAX_K: usize = 1 << 17;

/// A weight matrix packed for one backend (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct PackedMatrix {
    data: PackedData,
    /// The reduction length (columns of the PyTorch weight).
    pub(crate) k: usize,
    /// Number of tiles of `4·lanes` output columns.
    pub(crate) tiles: usize,
    pub(crate) lanes: usize,
}

impl PackedMatrix {
    /// Packs `tiles` tiles of `4·lanes` columns in `precision`; `row_of(tile, j)` gives the
    /// PyTorch row feeding column `j` of tile `tile`, or `None` for a zero pad.
    fn pack(
        what: &str,
        weight: &[f32],
        (k, tiles, lanes): (usize, usize, usize),
        precision: Precision,
        row_of: impl Fn(usize, usize) -> Option<usize>,
    ) -> Result<Self> {
        let width = 4 * lanes;
        let data = match precision {
            Precision::Bf16 => {
                let pairs = k.div_ceil(2);
                let mut buf = AlignedBuf::<u32>::zeros(what, tiles * pairs * width)?;
                let out = buf.as_mut_slice();
                for t in 0..tiles {
                    for j in 0..width {
                        if let Some(row) = row_of(t, j) {
                            let src = &weight[row * k..(row + 1) * k];
                            for (kk, &w) in src.iter().enumerate() {
                                let shift = 16 * (kk % 2);
                                out[(t * pairs + kk / 2) * width + j] |=
                                    u32::from(bf16_bits(w)) << shift;
                            }
                        }
                    }
                }
                PackedData::Bf16(buf)
            }
            Precision::Int8 => {
                let quads = k.div_ceil(4);
                let tile = (INT8_HEADER_WORDS + quads) * width;
                let mut buf = AlignedBuf::<u32>::zeros(what, tiles * tile)?;
                let out = buf.as_mut_slice();
                for t in 0..tiles {
                    let out = &mut out[t * tile..(t + 1) * tile];
                    for j in 0..width {
                        let Some(row) = row_of(t, j) else { continue };
                        let src = &weight[row * k..(row + 1) * k];
                        let scale = i8_scale(src);
                        let mut sum = 0i32;
                        for (kk, &w) in src.iter().enumerate() {
                            let q = quantize_i8(w, scale);
                            sum = sum.wrapping_add(i32::from(q));
                            let word = &mut out[(INT8_HEADER_WORDS + kk / 4) * width + j];
                            *word |= u32::from(q as u8) << (8 * (kk % 4));
                        }
                        out[j] = scale.to_bits();
                        // Modulo 2^32, as the kernel's i32 sums: their difference is exact
                        // while |Σ (u - 128)·q| <= 127²·k fits, k <= INT8_MAX_K.
                        out[width + j] = sum.wrapping_mul(128) as u32;
                    }
                }
                PackedData::Int8(buf)
            }
            _ => {
                let mut buf = AlignedBuf::<f32>::zeros(what, tiles * k * width)?;
                let out = buf.as_mut_slice();
                for t in 0..tiles {
                    for j in 0..width {
                        if let Some(row) = row_of(t, j) {
                            let src = &weight[row * k..(row + 1) * k];
                            for (kk, &w) in src.iter().enumerate() {
                                out[(t * k + kk) * width + j] = w;
                            }
                        }
                    }
                }
                PackedData::F32(buf)
            }
        };
        Ok(PackedMatrix {
            data,
            k,
            tiles,
            lanes,
        })
    }

    /// The precision of the packed weights.
    pub(crate) fn precision(&self) -> Precision {
        match self.data {
            PackedData::F32(_) => Precision::F32,
            PackedData::Bf16(_) => Precision::Bf16,
            PackedData::Int8(_) => Precision::Int8,
        }
    }

    /// The packed f32s (`tiles` tiles of `k · 4·lanes`), for repacking; `None` for bf16.
    pub(crate) fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            PackedData::F32(b) => Some(b.as_slice()),
            PackedData::Bf16(_) | PackedData::Int8(_) => None,
        }
    }

    /// Bytes of one packed tile.
    pub(crate) fn tile_bytes(&self) -> usize {
        let width = 4 * self.lanes;
        match self.data {
            PackedData::F32(_) => self.k * width * 4,
            PackedData::Bf16(_) => self.k.div_ceil(2) * width * 4,
            PackedData::Int8(_) => (INT8_HEADER_WORDS + self.k.div_ceil(4)) * width * 4,
        }
    }

    /// Bytes of packed tiles.
    pub(crate) fn len_bytes(&self) -> usize {
        match &self.data {
            PackedData::F32(b) => std::mem::size_of_val(b.as_slice()),
            PackedData::Bf16(b) | PackedData::Int8(b) => std::mem::size_of_val(b.as_slice()),
        }
    }

    /// The first byte of tile `t0` (`t0 <= tiles`; the kernels read through it only after
    /// checking [`len_bytes`](Self::len_bytes)).
    pub(crate) fn tile_ptr(&self, t0: usize) -> *const u8 {
        let base = match &self.data {
            PackedData::F32(b) => b.as_slice().as_ptr().cast::<u8>(),
            PackedData::Bf16(b) | PackedData::Int8(b) => b.as_slice().as_ptr().cast::<u8>(),
        };
        base.wrapping_add(t0.min(self.tiles) * self.tile_bytes())
    }

    /// Output columns (`tiles · 4 · lanes`).
    pub(crate) fn cols(&self) -> usize {
        self.tiles * 4 * self.lanes
    }
}

/// Hidden size rounded up to whole vectors.
pub(crate) fn padded_hidden(hidden: usize, lanes: usize) -> usize {
    hidden.div_ceil(lanes) * lanes
}

/// Packs a gate weight `[4H, k]` (`W_ih` or `W_hh`) into gate-interleaved tiles of `lanes`
/// hidden units.
pub(crate) fn pack_gate_weights(
    what: &str,
    weight: &[f32],
    hidden: usize,
    k: usize,
    lanes: usize,
    precision: Precision,
) -> Result<PackedMatrix> {
    let tiles = hidden.div_ceil(lanes);
    PackedMatrix::pack(what, weight, (k, tiles, lanes), precision, |t, j| {
        let (gate, lane) = (j / lanes, j % lanes);
        let unit = t * lanes + lane;
        (unit < hidden).then_some(gate * hidden + unit)
    })
}

/// Lays a gate vector `[4H]` (a bias) out in the columns of [`pack_gate_weights`].
pub(crate) fn pack_gate_vector(values: &[f32], hidden: usize, lanes: usize) -> Result<AlignedBuf> {
    let tiles = hidden.div_ceil(lanes);
    let mut buf = AlignedBuf::zeros("bias", tiles * 4 * lanes)?;
    let out = buf.as_mut_slice();
    for t in 0..tiles {
        for gate in 0..4 {
            for lane in 0..lanes {
                let unit = t * lanes + lane;
                if unit < hidden {
                    out[(t * 4 + gate) * lanes + lane] = values[gate * hidden + unit];
                }
            }
        }
    }
    Ok(buf)
}

/// Packs a plain weight `[rows, k]` (`W_hr`) into tiles of `4·lanes` consecutive rows.
pub(crate) fn pack_plain(
    what: &str,
    weight: &[f32],
    rows: usize,
    k: usize,
    lanes: usize,
    precision: Precision,
) -> Result<PackedMatrix> {
    let tiles = rows.div_ceil(4 * lanes);
    PackedMatrix::pack(what, weight, (k, tiles, lanes), precision, |t, j| {
        let row = t * 4 * lanes + j;
        (row < rows).then_some(row)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gate_tiles_interleave_i_f_g_o() {
        // H = 3, k = 2, lanes = 2: two tiles (units 0-1, unit 2 + pad).
        let w: Vec<f32> = (0..24).map(|v| v as f32).collect(); // row r = [2r, 2r+1]
        let p = pack_gate_weights("w", &w, 3, 2, 2, Precision::F32).unwrap();
        assert_eq!((p.tiles, p.cols()), (2, 16));
        let s = p.as_f32().unwrap();
        // tile 0, kk = 0: i0 i1 f0 f1 g0 g1 o0 o1 -> rows 0 1 3 4 6 7 9 10, column 0.
        assert_eq!(&s[0..8], &[0., 2., 6., 8., 12., 14., 18., 20.]);
        // tile 0, kk = 1: the same rows, column 1.
        assert_eq!(&s[8..16], &[1., 3., 7., 9., 13., 15., 19., 21.]);
        // tile 1, kk = 0: unit 2 then a zero pad, per gate: rows 2, 5, 8, 11.
        assert_eq!(&s[16..24], &[4., 0., 10., 0., 16., 0., 22., 0.]);
        let b = pack_gate_vector(&(0..12).map(|v| v as f32).collect::<Vec<_>>(), 3, 2).unwrap();
        assert_eq!(
            b.as_slice(),
            &[0., 1., 3., 4., 6., 7., 9., 10., 2., 0., 5., 0., 8., 0., 11., 0.]
        );
    }

    #[test]
    fn plain_tiles_and_alignment() {
        let w: Vec<f32> = (0..10).map(|v| v as f32).collect(); // [5, 2]
        let p = pack_plain("w", &w, 5, 2, 1, Precision::F32).unwrap();
        assert_eq!(p.tiles, 2);
        assert_eq!(&p.as_f32().unwrap()[..8], &[0., 2., 4., 6., 1., 3., 5., 7.]);
        assert_eq!(
            &p.as_f32().unwrap()[8..16],
            &[8., 0., 0., 0., 9., 0., 0., 0.]
        );
        assert_eq!(p.tile_ptr(0) as usize % 64, 0);
    }

    #[test]
    fn bf16_pairs_hold_consecutive_columns() {
        // [5, 3] plain, lanes 1: tile 0 rows 0..4, tile 1 row 4; k = 3 -> 2 pairs, the last
        // one's high half zero.
        let w: Vec<f32> = (0..15).map(|v| v as f32 + 0.5).collect();
        let p = pack_plain("w", &w, 5, 3, 1, Precision::Bf16).unwrap();
        assert_eq!(
            (p.tiles, p.tile_bytes(), p.precision()),
            (2, 32, Precision::Bf16)
        );
        let PackedData::Bf16(buf) = &p.data else {
            panic!("not bf16")
        };
        let s = buf.as_slice();
        let pair = |lo: f32, hi: f32| u32::from(bf16_bits(lo)) | (u32::from(bf16_bits(hi)) << 16);
        assert_eq!(s[0], pair(0.5, 1.5)); // row 0, columns 0 and 1
        assert_eq!(s[3], pair(9.5, 10.5)); // row 3
        assert_eq!(s[4], pair(2.5, 0.0)); // row 0, column 2 and the pad
        assert_eq!(s[8], pair(12.5, 13.5)); // tile 1: row 4
        assert_eq!(s[9], 0); // padded rows
    }
}
