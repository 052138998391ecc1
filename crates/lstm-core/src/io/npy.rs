//! `.npy` read and write.
//!
//! The header is parsed here by a small, strict parser of the Python dict literal NumPy writes
//! (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`), not by `eval`-like code:
//! it allocates nothing from a size found in the file, and the data length is checked against
//! the shape and dtype before a single element is decoded. Fortran-order arrays are reordered
//! to C order; big-endian data is byte-swapped.
//!
//! Files are streamed: [`read_npy`] decodes the data from the file straight into the array's
//! element vector, and [`write_npy_f32_to`] encodes a tensor into a writer in small blocks, so
//! that neither holds a second copy of the data as bytes (a 131 MB input costs 131 MB, not
//! 262).

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{LstmError, Result};
use crate::tensor::{checked_numel, Tensor};

/// The element data of a `.npy` array, in the dtypes we accept.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyData {
    /// `<f4` / `>f4`.
    F32(Vec<f32>),
    /// `<f8` / `>f8`.
    F64(Vec<f64>),
    /// `<i4` / `>i4`.
    I32(Vec<i32>),
    /// `<i8` / `>i8`.
    I64(Vec<i64>),
}

impl NpyData {
    /// The NumPy name of the element type.
    fn dtype_name(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "float32",
            NpyData::F64(_) => "float64",
            NpyData::I32(_) => "int32",
            NpyData::I64(_) => "int64",
        }
    }
}

/// A `.npy` array in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: NpyData,
}

/// Names `what` in the errors of [`Tensor::new`].
fn tensor_named<T>(what: &str, shape: Vec<usize>, data: Vec<T>) -> Result<Tensor<T>> {
    Tensor::new(shape, data).map_err(|e| match e {
        LstmError::ElementCount {
            shape,
            expected,
            found,
            ..
        } => LstmError::ElementCount {
            what: what.into(),
            shape,
            expected,
            found,
        },
        other => other,
    })
}

impl NpyArray {
    /// Float data as an f32 tensor; `what` names the array in errors.
    ///
    /// float64 is rounded to the nearest f32; integer arrays are refused.
    pub fn into_f32_tensor(self, what: &str) -> Result<Tensor<f32>> {
        let data = match self.data {
            NpyData::F32(v) => v,
            NpyData::F64(v) => v.into_iter().map(|x| x as f32).collect(),
            other => {
                return Err(LstmError::UnsupportedDtype {
                    name: what.to_string(),
                    dtype: other.dtype_name().to_string(),
                    expected: "float32 or float64",
                })
            }
        };
        tensor_named(what, self.shape, data)
    }

    /// Float data as an f64 tensor (float32 widens exactly); integer arrays are refused.
    pub fn into_f64_tensor(self, what: &str) -> Result<Tensor<f64>> {
        let data = match self.data {
            NpyData::F32(v) => v.into_iter().map(f64::from).collect(),
            NpyData::F64(v) => v,
            other => {
                return Err(LstmError::UnsupportedDtype {
                    name: what.to_string(),
                    dtype: other.dtype_name().to_string(),
                    expected: "float32 or float64",
                })
            }
        };
        tensor_named(what, self.shape, data)
    }

    /// A 1-D int32/int64 array as lengths (negative values are an error).
    ///
    /// A 0-d array counts as one length. Whether each length fits the input is checked where
    /// the input is known (`SequenceBatch::new`).
    pub fn into_lengths(self, what: &str) -> Result<Vec<usize>> {
        if self.shape.len() > 1 {
            return Err(LstmError::RankMismatch {
                what: what.into(),
                expected: "a 1-D array of per-sequence lengths".to_string(),
                found: self.shape.len(),
                shape: self.shape,
            });
        }
        let values: Vec<i64> = match self.data {
            NpyData::I32(v) => v.into_iter().map(i64::from).collect(),
            NpyData::I64(v) => v,
            other => {
                return Err(LstmError::UnsupportedDtype {
                    name: what.to_string(),
                    dtype: other.dtype_name().to_string(),
                    expected: "int32 or int64",
                })
            }
        };
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                usize::try_from(v).map_err(|_| LstmError::LengthOutOfRange {
                    sequence: i,
                    length: v,
                    max: None,
                })
            })
            .collect()
    }
}

/// The `.npy` magic string.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// What the header's `descr` names, among the dtypes we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F4,
    F8,
    I4,
    I8,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::F4 | Elem::I4 => 4,
            Elem::F8 | Elem::I8 => 8,
        }
    }
}

/// The parsed header of a `.npy` file.
#[derive(Debug)]
struct Header {
    /// The `descr` string as written (for messages).
    descr: String,
    elem: Elem,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

fn npy_err(message: impl Into<String>) -> LstmError {
    LstmError::Npy(message.into())
}

/// A Python literal of the kinds a `.npy` header may hold.
#[derive(Debug)]
enum Value {
    Str(Vec<u8>),
    Bool(bool),
    None,
    Int(u64),
    Tuple(Vec<Value>),
    List(Vec<Value>),
}

/// Deepest nesting of tuples and lists accepted (NumPy's own headers nest at most 2 deep for
/// the structured dtypes we refuse anyway).
const MAX_DEPTH: usize = 32;

/// A cursor over the header text.
struct Literal<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Literal<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn fail(&self, what: &str) -> LstmError {
        let found = match self.peek() {
            Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
            None => "the end of the header".to_string(),
        };
        npy_err(format!(
            "malformed header: expected {what} at offset {}, found {found}",
            self.pos
        ))
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(&format!("`{}`", byte as char)))
        }
    }

    fn string(&mut self) -> Result<Vec<u8>> {
        self.skip_ws();
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.fail("a quoted string")),
        };
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.fail("the end of the string")),
                Some(b) if b == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) => out.push(b),
                        None => return Err(self.fail("an escaped character")),
                    }
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
            self.pos += 1;
        }
        self.text.get(start..self.pos).unwrap_or(&[])
    }

    /// Items up to `close`, comma-separated, with an optional trailing comma. Returns the
    /// items and whether any comma was seen.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Value>, bool)> {
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, comma));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    comma = true;
                }
                Some(b) if b == close => {}
                _ => return Err(self.fail(&format!("`,` or `{}`", close as char))),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(npy_err(format!(
                "malformed header: literals nested deeper than {MAX_DEPTH}"
            )));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let (mut items, comma) = self.items(b')', depth)?;
                // As in Python, `(3)` is the integer 3; only `(3,)` is a tuple.
                if items.len() == 1 && !comma {
                    Ok(items.remove(0))
                } else {
                    Ok(Value::Tuple(items))
                }
            }
            Some(b'[') => {
                self.pos += 1;
                Ok(Value::List(self.items(b']', depth)?.0))
            }
            Some(b'-') => Err(self.fail("a non-negative integer")),
            Some(b) if b.is_ascii_digit() => {
                let start = self.pos;
                let digits = self.word();
                // Python 2 wrote longs as `3L`.
                let digits = digits
                    .strip_suffix(b"L")
                    .or_else(|| digits.strip_suffix(b"l"))
                    .unwrap_or(digits);
                let mut n: u64 = 0;
                for &d in digits {
                    if !d.is_ascii_digit() {
                        self.pos = start;
                        return Err(self.fail("an integer"));
                    }
                    n = n
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(d - b'0')))
                        .ok_or_else(|| {
                            npy_err(format!(
                                "malformed header: integer at offset {start} does not fit in 64 bits"
                            ))
                        })?;
                }
                Ok(Value::Int(n))
            }
            Some(b) if b.is_ascii_alphabetic() => {
                let start = self.pos;
                match self.word() {
                    b"True" => Ok(Value::Bool(true)),
                    b"False" => Ok(Value::Bool(false)),
                    b"None" => Ok(Value::None),
                    _ => {
                        self.pos = start;
                        Err(self.fail("a Python literal"))
                    }
                }
            }
            _ => Err(self.fail("a Python literal")),
        }
    }
}

/// The text of a header value, for messages.
fn show(value: &Value) -> String {
    match value {
        Value::Str(s) => format!("'{}'", String::from_utf8_lossy(s)),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::None => "None".to_string(),
        Value::Int(n) => n.to_string(),
        Value::Tuple(items) => {
            let inner: Vec<String> = items.iter().map(show).collect();
            if items.len() == 1 {
                format!("({},)", inner.join(", "))
            } else {
                format!("({})", inner.join(", "))
            }
        }
        Value::List(items) => {
            let inner: Vec<String> = items.iter().map(show).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

/// Parses a `descr` into (element, big-endian), or `UnsupportedDtype`.
fn parse_descr(descr: &Value) -> Result<(String, Elem, bool)> {
    let unsupported = |dtype: String| LstmError::UnsupportedDtype {
        name: "array".to_string(),
        dtype,
        expected: "float32, float64, int32 or int64",
    };
    let Value::Str(bytes) = descr else {
        // A list of fields: a structured (record) dtype.
        return Err(unsupported(show(descr)));
    };
    let text = String::from_utf8_lossy(bytes).into_owned();
    let native_big = cfg!(target_endian = "big");
    let (big_endian, code) = match bytes.split_first() {
        Some((b'<', rest)) => (false, rest),
        Some((b'>', rest)) => (true, rest),
        Some((b'=' | b'|', rest)) => (native_big, rest),
        _ => (native_big, bytes.as_slice()),
    };
    let elem = match code {
        b"f4" => Elem::F4,
        b"f8" => Elem::F8,
        b"i4" => Elem::I4,
        b"i8" => Elem::I8,
        _ => return Err(unsupported(text)),
    };
    Ok((text, elem, big_endian))
}

/// Parses the magic, version and header dict; returns the header and where the data starts.
fn parse_header(bytes: &[u8]) -> Result<(Header, usize)> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(npy_err(
            "not a .npy file: it does not start with the magic string \\x93NUMPY",
        ));
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => {
            return Err(npy_err(
                "truncated file: no format version after the magic string",
            ))
        }
    };
    let (len_start, len_size) = match major {
        1 => (8usize, 2usize),
        2 | 3 => (8, 4),
        _ => {
            return Err(npy_err(format!(
                "unsupported .npy format version {major}.{minor} (expected 1.0, 2.0 or 3.0)"
            )))
        }
    };
    let header_start = len_start + len_size;
    let header_len = match bytes.get(len_start..header_start) {
        Some(&[a, b]) => usize::from(u16::from_le_bytes([a, b])),
        Some(&[a, b, c, d]) => {
            usize::try_from(u32::from_le_bytes([a, b, c, d])).unwrap_or(usize::MAX)
        }
        _ => {
            return Err(npy_err(
                "truncated file: no header length after the version",
            ))
        }
    };
    let available = bytes.len().saturating_sub(header_start);
    let text = header_start
        .checked_add(header_len)
        .and_then(|end| bytes.get(header_start..end))
        .ok_or_else(|| {
            npy_err(format!(
                "truncated file: the header claims {header_len} bytes, found only {available}"
            ))
        })?;
    if major == 3 && std::str::from_utf8(text).is_err() {
        return Err(npy_err(
            "malformed header: a version 3 header must be UTF-8",
        ));
    }

    let mut parser = Literal { text, pos: 0 };
    parser.expect(b'{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        parser.skip_ws();
        if parser.peek() == Some(b'}') {
            parser.pos += 1;
            break;
        }
        let key_pos = parser.pos;
        let key = parser.string()?;
        parser.expect(b':')?;
        let value = parser.value(0)?;
        let slot = match key.as_slice() {
            b"descr" => &mut descr,
            b"fortran_order" => &mut fortran_order,
            b"shape" => &mut shape,
            other => {
                return Err(npy_err(format!(
                "malformed header: unexpected key '{}' (expected descr, fortran_order and shape)",
                String::from_utf8_lossy(other)
            )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(npy_err(format!(
                "malformed header: key '{}' appears twice (offset {key_pos})",
                String::from_utf8_lossy(&key)
            )));
        }
        parser.skip_ws();
        match parser.peek() {
            Some(b',') => parser.pos += 1,
            Some(b'}') => {}
            _ => return Err(parser.fail("`,` or `}`")),
        }
    }
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.fail("only padding after the header dict"));
    }

    let missing = |key: &str| npy_err(format!("malformed header: no '{key}' key"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Value::Bool(b) => b,
        other => {
            return Err(npy_err(format!(
                "malformed header: fortran_order must be True or False, found {}",
                show(&other)
            )))
        }
    };
    let shape_value = shape.ok_or_else(|| missing("shape"))?;
    let shape = match &shape_value {
        Value::Tuple(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => usize::try_from(*n).ok(),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>(),
        _ => None,
    }
    .ok_or_else(|| {
        npy_err(format!(
            "malformed header: shape must be a tuple of non-negative integers, found {}",
            show(&shape_value)
        ))
    })?;
    let (descr, elem, big_endian) = parse_descr(&descr)?;
    Ok((
        Header {
            descr,
            elem,
            big_endian,
            fortran_order,
            shape,
        },
        header_start + header_len,
    ))
}

/// Bytes decoded or encoded per block when streaming the data.
const BLOCK_BYTES: usize = 64 << 10;

/// Decodes `count` fixed-size elements, in the file's byte order, from `reader` straight into
/// a new vector (read in blocks of [`BLOCK_BYTES`]; no copy of the data as bytes is kept).
///
/// The caller has checked that the source holds exactly `count · N` more bytes, so the
/// allocation is bounded by the data actually present.
fn decode<const N: usize, T>(
    reader: &mut impl Read,
    count: usize,
    big_endian: bool,
    from_le: fn([u8; N]) -> T,
    from_be: fn([u8; N]) -> T,
) -> std::io::Result<Result<Vec<T>>> {
    let convert = if big_endian { from_be } else { from_le };
    let mut out = Vec::new();
    if out.try_reserve_exact(count).is_err() {
        return Ok(Err(LstmError::Allocation {
            what: "array".to_string(),
            elements: count,
            element_bytes: N,
        }));
    }
    let mut block = vec![0u8; BLOCK_BYTES.min(count.saturating_mul(N)).max(N)];
    let mut left = count;
    while left > 0 {
        let n = left.min(block.len() / N);
        let bytes = &mut block[..n * N];
        reader.read_exact(bytes)?;
        out.extend(bytes.chunks_exact(N).map(|chunk| {
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            convert(b)
        }));
        left -= n;
    }
    Ok(Ok(out))
}

/// Reorders the elements of a Fortran-order (column-major) array of `shape` into C order.
///
/// `data.len()` must be the product of `shape` (checked by the caller); every index below
/// then stays in range.
fn fortran_to_c<T: Copy>(shape: &[usize], data: Vec<T>) -> Vec<T> {
    let rank = shape.len();
    if rank < 2 || data.is_empty() || checked_numel(shape) != Some(data.len()) {
        return data;
    }
    // In Fortran order axis 0 is contiguous: its stride is 1, axis k's is d_0 ... d_{k-1}.
    let mut strides = Vec::with_capacity(rank);
    let mut stride = 1usize;
    for &d in shape {
        strides.push(stride);
        stride = stride.saturating_mul(d);
    }
    let mut index = vec![0usize; rank];
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(data.len());
    for _ in 0..data.len() {
        match data.get(offset) {
            Some(&x) => out.push(x),
            None => break,
        }
        // Advance the C-order multi-index (last axis fastest), tracking the Fortran offset.
        for axis in (0..rank).rev() {
            index[axis] += 1;
            offset += strides[axis];
            if index[axis] < shape[axis] {
                break;
            }
            offset -= strides[axis] * shape[axis];
            index[axis] = 0;
        }
    }
    out
}

/// Parses a `.npy` file's bytes.
///
/// Accepts format versions 1.0, 2.0 and 3.0, dtypes float32, float64, int32 and int64 in
/// either byte order, and C or Fortran order (returned in C order). The data must be exactly
/// as long as the shape and dtype say.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray> {
    let mut reader = bytes;
    read_array(&mut reader, bytes.len() as u64)
        // Reading a slice of known length fails only where the checks above did already.
        .unwrap_or_else(|e| Err(npy_err(format!("truncated file: {e}"))))
}

/// Reads a `.npy` file, decoding its data straight from the file into the array (see
/// [`parse_npy`] for what is accepted).
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let io_err = |source| LstmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    read_array(&mut file, len)
        .map_err(io_err)?
        .map_err(|e| e.in_file(path))
}

/// Reads one array of `len` bytes from `reader`: the header, then the data, checked against
/// each other before anything is allocated from them. The outer error is the reader's, the
/// inner one what is wrong with the array.
fn read_array(reader: &mut impl Read, len: u64) -> std::io::Result<Result<NpyArray>> {
    // The magic, version and header length (at most 12 bytes), then the whole header.
    let mut head = Vec::new();
    reader.take(len.min(12)).read_to_end(&mut head)?;
    let header_end = match head.get(6) {
        Some(1) => head
            .get(8..10)
            .map(|b| 10 + u64::from(u16::from_le_bytes([b[0], b[1]]))),
        Some(2 | 3) => head
            .get(8..12)
            .map(|b| 12 + u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        _ => None,
    };
    if let Some(end) = header_end {
        let more = end.min(len).saturating_sub(head.len() as u64);
        reader.take(more).read_to_end(&mut head)?;
    }
    let (header, data_start) = match parse_header(&head) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let found = len.saturating_sub(data_start as u64);
    let count = checked_numel(&header.shape);
    let expected = count.and_then(|n| n.checked_mul(header.elem.size()));
    let (Some(count), true) = (count, expected.map(|n| n as u64) == Some(found)) else {
        return Ok(Err(npy_err(format!(
            "expected {} bytes of data for shape {:?} {}, found {found}",
            expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
            header.shape,
            header.descr,
        ))));
    };
    let big = header.big_endian;
    let data =
        match header.elem {
            Elem::F4 => decode(reader, count, big, f32::from_le_bytes, f32::from_be_bytes)?
                .map(NpyData::F32),
            Elem::F8 => decode(reader, count, big, f64::from_le_bytes, f64::from_be_bytes)?
                .map(NpyData::F64),
            Elem::I4 => decode(reader, count, big, i32::from_le_bytes, i32::from_be_bytes)?
                .map(NpyData::I32),
            Elem::I8 => decode(reader, count, big, i64::from_le_bytes, i64::from_be_bytes)?
                .map(NpyData::I64),
        };
    let mut data = match data {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    if header.fortran_order {
        let shape = &header.shape;
        data = match data {
            NpyData::F32(v) => NpyData::F32(fortran_to_c(shape, v)),
            NpyData::F64(v) => NpyData::F64(fortran_to_c(shape, v)),
            NpyData::I32(v) => NpyData::I32(fortran_to_c(shape, v)),
            NpyData::I64(v) => NpyData::I64(fortran_to_c(shape, v)),
        };
    }
    Ok(Ok(NpyArray {
        shape: header.shape,
        data,
    }))
}

/// NumPy's alignment of the data start.
const ARRAY_ALIGN: usize = 64;
/// Room NumPy leaves in the header for the growing axis to gain digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Encodes an f32 tensor as `.npy` bytes (`<f4`, C order): [`write_npy_f32_to`] into a
/// vector.
pub fn npy_bytes_f32(tensor: &Tensor<f32>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_npy_f32_to(&mut out, tensor).map_err(|e| LstmError::InvalidArgument {
        what: "tensor",
        reason: format!("cannot encode it: {e}"),
    })??;
    Ok(out)
}

/// The `.npy` header of an f32 array of `shape`.
///
/// It is byte-for-byte what `np.save` writes for the same array (format 1.0, or 2.0 when the
/// header does not fit 1.0's 16-bit length), so the data starts 64-byte aligned.
fn npy_header_f32(shape: &[usize]) -> Result<Vec<u8>> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_repr = match dims.len() {
        1 => format!("({},)", dims.join("")),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = dims.first() {
        let spare = GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.len());
        dict.extend(std::iter::repeat_n(' ', spare));
    }
    // Text + final newline, padded with spaces so that magic + version + length + text is a
    // multiple of ARRAY_ALIGN (a full ARRAY_ALIGN of padding when already aligned, as NumPy).
    let text_len = dict.len() + 1;
    let (version, len_size) = {
        let pad = ARRAY_ALIGN - (MAGIC.len() + 2 + 2 + text_len) % ARRAY_ALIGN;
        if text_len + pad <= usize::from(u16::MAX) {
            (1u8, 2usize)
        } else {
            (2u8, 4usize)
        }
    };
    let pad = ARRAY_ALIGN - (MAGIC.len() + 2 + len_size + text_len) % ARRAY_ALIGN;
    let header_len = text_len + pad;
    if checked_numel(shape)
        .and_then(|n| n.checked_mul(4))
        .is_none()
    {
        return Err(LstmError::InvalidArgument {
            what: "tensor",
            reason: format!("shape {shape:?} has too many elements to encode"),
        });
    }
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + len_size + header_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        let len = u16::try_from(header_len).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        let len = u32::try_from(header_len).map_err(|_| LstmError::InvalidArgument {
            what: "tensor",
            reason: format!("a rank-{} shape makes a .npy header too long", shape.len()),
        })?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    Ok(out)
}

/// Writes an f32 tensor as `.npy` (`<f4`, C order; the header as `np.save` writes it) to
/// `writer`, encoding the data in blocks: no copy of the tensor as bytes is made. The outer
/// error is the writer's, the inner one a tensor too large to encode (nothing is written
/// then).
pub fn write_npy_f32_to(
    writer: &mut impl Write,
    tensor: &Tensor<f32>,
) -> std::io::Result<Result<()>> {
    let header = match npy_header_f32(tensor.shape()) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    writer.write_all(&header)?;
    let mut block = Vec::with_capacity(BLOCK_BYTES.min(4 * tensor.len()));
    for values in tensor.data().chunks(BLOCK_BYTES / 4) {
        block.clear();
        for x in values {
            block.extend_from_slice(&x.to_le_bytes());
        }
        writer.write_all(&block)?;
    }
    Ok(Ok(()))
}

/// Writes an f32 tensor as `.npy`, atomically (streamed, as [`write_npy_f32_to`]).
pub fn write_npy_f32(path: &Path, tensor: &Tensor<f32>) -> Result<()> {
    super::write_atomic_with(path, |file| write_npy_f32_to(file, tensor))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A version-1.0 `.npy` file with a header dict made of the given pieces.
    fn npy_with_dict(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut text = dict.as_bytes().to_vec();
        while !(10 + text.len() + 1).is_multiple_of(64) {
            text.push(b' ');
        }
        text.push(b'\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(&text);
        out.extend_from_slice(data);
        out
    }

    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let fortran = if fortran { "True" } else { "False" };
        npy_with_dict(
            &format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"),
            data,
        )
    }

    fn npy_error(bytes: &[u8]) -> String {
        match parse_npy(bytes) {
            Err(LstmError::Npy(message)) => message,
            other => panic!("expected an Npy error, got {other:?}"),
        }
    }

    #[test]
    fn f32_round_trip_and_numpy_header() {
        for shape in [vec![], vec![3], vec![2, 3, 4], vec![0], vec![2, 0, 3]] {
            let n = checked_numel(&shape).unwrap();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.25).collect();
            let tensor = Tensor::new(shape.clone(), data).unwrap();
            let bytes = npy_bytes_f32(&tensor).unwrap();
            assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0, "{shape:?}");
            assert_eq!(bytes[10 + header_len - 1], b'\n');
            assert_eq!(bytes.len(), 10 + header_len + 4 * n);
            let array = parse_npy(&bytes).unwrap();
            assert_eq!(array.shape, shape);
            assert_eq!(array.clone().into_f32_tensor("x").unwrap(), tensor);
            assert_eq!(
                array.into_f64_tensor("x").unwrap(),
                tensor.map(|&x| f64::from(x))
            );
        }
        let text = |shape: Vec<usize>| {
            let n = checked_numel(&shape).unwrap();
            let bytes = npy_bytes_f32(&Tensor::new(shape, vec![0.0; n]).unwrap()).unwrap();
            let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            String::from_utf8(bytes[10..10 + len].to_vec()).unwrap()
        };
        assert!(text(vec![]).starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (), }"));
        assert!(
            text(vec![3]).starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }")
        );
        assert!(text(vec![2, 3, 4]).contains("'shape': (2, 3, 4), }"));
    }

    #[test]
    fn long_headers_use_version_2() {
        let shape = vec![1usize; 30_000];
        let tensor = Tensor::new(shape.clone(), vec![7.0f32]).unwrap();
        let bytes = npy_bytes_f32(&tensor).unwrap();
        assert_eq!(&bytes[6..8], &[2, 0]);
        let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        assert_eq!((12 + len) % 64, 0);
        let array = parse_npy(&bytes).unwrap();
        assert_eq!(array.shape, shape);
        assert_eq!(array.data, NpyData::F32(vec![7.0]));
    }

    #[test]
    fn reads_other_dtypes_and_byte_orders() {
        let f8: Vec<u8> = [1.5f64, -2.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = parse_npy(&npy("<f8", false, "(2,)", &f8)).unwrap();
        assert_eq!(a.data, NpyData::F64(vec![1.5, -2.25]));
        assert_eq!(a.into_f32_tensor("x").unwrap().data(), &[1.5, -2.25]);

        let i4: Vec<u8> = [3i32, -4].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            parse_npy(&npy("<i4", false, "(2,)", &i4)).unwrap().data,
            NpyData::I32(vec![3, -4])
        );
        let i8: Vec<u8> = [5i64, 1 << 40]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(
            parse_npy(&npy("<i8", false, "(2,)", &i8)).unwrap().data,
            NpyData::I64(vec![5, 1 << 40])
        );

        let be4: Vec<u8> = [1.0f32, 2.5, -3.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        assert_eq!(
            parse_npy(&npy(">f4", false, "(3,)", &be4)).unwrap().data,
            NpyData::F32(vec![1.0, 2.5, -3.0])
        );
        let be8: Vec<u8> = [7i64, -8].iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(
            parse_npy(&npy(">i8", false, "(2,)", &be8)).unwrap().data,
            NpyData::I64(vec![7, -8])
        );
        let bef8: Vec<u8> = 0.1f64.to_be_bytes().to_vec();
        assert_eq!(
            parse_npy(&npy(">f8", false, "()", &bef8)).unwrap(),
            NpyArray {
                shape: vec![],
                data: NpyData::F64(vec![0.1])
            }
        );
        let bei4: Vec<u8> = (-9i32).to_be_bytes().to_vec();
        assert_eq!(
            parse_npy(&npy(">i4", false, "(1,)", &bei4)).unwrap().data,
            NpyData::I32(vec![-9])
        );
        // Python 2 longs and double quotes.
        let a = parse_npy(&npy_with_dict(
            "{\"descr\": \"<i4\", \"shape\": (2L,), \"fortran_order\": False}",
            &i4,
        ))
        .unwrap();
        assert_eq!(a.shape, vec![2]);
    }

    #[test]
    fn fortran_order_is_reordered_to_c() {
        // A 2x3 array [[0, 1, 2], [3, 4, 5]] stored column by column.
        let f: Vec<u8> = [0.0f32, 3.0, 1.0, 4.0, 2.0, 5.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let a = parse_npy(&npy("<f4", true, "(2, 3)", &f)).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, NpyData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));

        // 3-D, big-endian int64: element (i, j, k) = 100i + 10j + k at offset i + 2j + 6k.
        let (d0, d1, d2) = (2usize, 3usize, 4usize);
        let mut fortran = vec![0i64; d0 * d1 * d2];
        let mut c = Vec::new();
        for i in 0..d0 {
            for j in 0..d1 {
                for k in 0..d2 {
                    let v = (100 * i + 10 * j + k) as i64;
                    fortran[i + d0 * j + d0 * d1 * k] = v;
                    c.push(v);
                }
            }
        }
        let bytes: Vec<u8> = fortran.iter().flat_map(|x| x.to_be_bytes()).collect();
        let a = parse_npy(&npy(">i8", true, "(2, 3, 4)", &bytes)).unwrap();
        assert_eq!(a.shape, vec![2, 3, 4]);
        assert_eq!(a.data, NpyData::I64(c));

        // 1-D and 0-d Fortran arrays are the same as C ones.
        let one: Vec<u8> = [1i32, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            parse_npy(&npy("<i4", true, "(3,)", &one)).unwrap().data,
            NpyData::I32(vec![1, 2, 3])
        );
        assert_eq!(
            parse_npy(&npy("<i4", true, "(3, 0)", &[])).unwrap().shape,
            vec![3, 0]
        );
    }

    #[test]
    fn data_length_must_match_shape() {
        let data = [0u8; 24];
        let message = npy_error(&npy("<f4", false, "(2, 3)", &data[..23]));
        assert!(
            message.contains("expected 24 bytes") && message.contains("found 23"),
            "{message}"
        );
        assert!(
            message.contains("[2, 3]") && message.contains("<f4"),
            "{message}"
        );
        let message = npy_error(&npy("<f4", false, "(2, 3)", &[0u8; 28]));
        assert!(message.contains("found 28"), "{message}");
        // A shape of 10^12 elements with 16 bytes of data: refused before any allocation.
        let message = npy_error(&npy("<f8", false, "(1000000000000,)", &[0u8; 16]));
        assert!(
            message.contains("expected 8000000000000 bytes"),
            "{message}"
        );
        // Products that overflow usize.
        let message = npy_error(&npy(
            "<f4",
            false,
            "(18446744073709551615, 18446744073709551615)",
            &[],
        ));
        assert!(message.contains("more than usize::MAX"), "{message}");
        assert!(parse_npy(&npy("<f4", false, "(99999999999999999999,)", &[])).is_err());
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let tensor = Tensor::new(vec![2, 3], (0..6).map(|i| i as f32).collect()).unwrap();
        let bytes = npy_bytes_f32(&tensor).unwrap();
        for len in 0..bytes.len() {
            assert!(
                parse_npy(&bytes[..len]).is_err(),
                "truncated to {len} bytes"
            );
        }
        // Any single corrupted byte: Ok or Err, never a panic.
        for i in 0..bytes.len() {
            for v in [0u8, b'(', b')', b'9', b',', b'\'', 0xff] {
                let mut bad = bytes.clone();
                bad[i] = v;
                let _ = parse_npy(&bad);
            }
        }
        assert!(parse_npy(b"").is_err());
        assert!(parse_npy(b"garbage garbage garbage").is_err());
        assert!(parse_npy(&[0x93, b'N', b'U', b'M', b'P', b'Y', 1, 0, 0xff, 0xff]).is_err());
        // A version-2 header length of 4 GiB in a tiny file.
        let message = npy_error(&[
            0x93, b'N', b'U', b'M', b'P', b'Y', 2, 0, 0xff, 0xff, 0xff, 0xff, b'{',
        ]);
        assert!(message.contains("4294967295"), "{message}");
        let message = npy_error(b"\x93NUMPY\x04\x00\x10\x00");
        assert!(message.contains("version 4.0"), "{message}");
    }

    #[test]
    fn malformed_headers_are_errors() {
        let data = [0u8; 8];
        let cases = [
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'shape': (2,)}",
            "{'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': 2}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': ((2,),)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk",
            "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,)}",
            "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",
            "{'descr: '<f4', 'fortran_order': False, 'shape': (2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}",
            "'descr': '<f4', 'fortran_order': False, 'shape': (2,)",
            "",
        ];
        for dict in cases {
            let result = parse_npy(&npy_with_dict(dict, &data));
            assert!(
                matches!(result, Err(LstmError::Npy(_))),
                "{dict}: {result:?}"
            );
        }
        // Deep nesting is refused, not recursed into.
        let deep = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': {}2{}}}",
            "(".repeat(10_000),
            ",)".repeat(10_000)
        );
        assert!(matches!(
            parse_npy(&npy_with_dict(&deep, &data)),
            Err(LstmError::Npy(_))
        ));
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        for descr in ["<u2", "|u1", "<f2", "<c8", "|b1", "<U3", "|O"] {
            match parse_npy(&npy(descr, false, "(2,)", &[0u8; 4])) {
                Err(LstmError::UnsupportedDtype {
                    name,
                    dtype,
                    expected,
                }) => {
                    assert_eq!(name, "array");
                    assert_eq!(dtype, descr);
                    assert_eq!(expected, "float32, float64, int32 or int64");
                }
                other => panic!("{descr}: {other:?}"),
            }
        }
        let structured = npy_with_dict(
            "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }",
            &[0u8; 8],
        );
        match parse_npy(&structured) {
            Err(LstmError::UnsupportedDtype { dtype, .. }) => {
                assert_eq!(dtype, "[('a', '<f4'), ('b', '<i4')]")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conversions_check_dtype_and_count() {
        let ints = NpyArray {
            shape: vec![2],
            data: NpyData::I32(vec![1, 2]),
        };
        match ints.clone().into_f32_tensor("input") {
            Err(LstmError::UnsupportedDtype {
                name,
                dtype,
                expected,
            }) => {
                assert_eq!((name.as_str(), dtype.as_str()), ("input", "int32"));
                assert_eq!(expected, "float32 or float64");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ints.into_f64_tensor("h0"),
            Err(LstmError::UnsupportedDtype { .. })
        ));
        let inconsistent = NpyArray {
            shape: vec![2, 2],
            data: NpyData::F64(vec![1.0; 3]),
        };
        match inconsistent.into_f32_tensor("c0") {
            Err(LstmError::ElementCount {
                what,
                expected: 4,
                found: 3,
                ..
            }) => assert_eq!(what, "c0".into()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lengths() {
        let arr = |shape: Vec<usize>, data| NpyArray { shape, data };
        assert_eq!(
            arr(vec![3], NpyData::I64(vec![5, 1, 0]))
                .into_lengths("lengths")
                .unwrap(),
            vec![5, 1, 0]
        );
        assert_eq!(
            arr(vec![], NpyData::I32(vec![4]))
                .into_lengths("lengths")
                .unwrap(),
            vec![4]
        );
        match arr(vec![2], NpyData::I32(vec![3, -1])).into_lengths("lengths") {
            Err(
                e @ LstmError::LengthOutOfRange {
                    sequence: 1,
                    length: -1,
                    max: None,
                },
            ) => {
                assert_eq!(
                    e.to_string(),
                    "invalid lengths: length of sequence 1 is -1; each length must lie in 1..=T"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            arr(vec![1, 2], NpyData::I64(vec![1, 2])).into_lengths("lengths"),
            Err(LstmError::RankMismatch { found: 2, .. })
        ));
        match arr(vec![2], NpyData::F32(vec![1.0, 2.0])).into_lengths("lengths") {
            Err(LstmError::UnsupportedDtype {
                dtype, expected, ..
            }) => {
                assert_eq!((dtype.as_str(), expected), ("float32", "int32 or int64"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// Arrays over many streaming blocks (and not a whole number of them) round-trip, in
    /// either byte order; a file cut inside its data is an error.
    #[test]
    fn streaming_spans_many_blocks() {
        let n = 3 * BLOCK_BYTES / 4 + 17;
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 7.0).collect();
        let t = Tensor::new([n], data.clone()).unwrap();
        let mut bytes = Vec::new();
        write_npy_f32_to(&mut bytes, &t).unwrap().unwrap();
        assert_eq!(bytes, npy_bytes_f32(&t).unwrap());
        let back = parse_npy(&bytes).unwrap().into_f32_tensor("x").unwrap();
        assert_eq!(back.data(), &data[..]);
        assert!(parse_npy(&bytes[..bytes.len() - 4]).is_err());

        let f8: Vec<u8> = data
            .iter()
            .flat_map(|&x| f64::from(x).to_be_bytes())
            .collect();
        let array = parse_npy(&npy(">f8", false, &format!("({n},)"), &f8)).unwrap();
        assert_eq!(array.into_f32_tensor("x").unwrap().data(), &data[..]);
    }

    #[test]
    fn file_round_trip_and_io_errors() {
        let dir = std::env::temp_dir().join(format!("lstm-core-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.npy");
        let tensor = Tensor::new(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        write_npy_f32(&path, &tensor).unwrap();
        assert_eq!(
            read_npy(&path).unwrap().into_f32_tensor("x").unwrap(),
            tensor
        );
        std::fs::write(&path, b"not npy").unwrap();
        match read_npy(&path) {
            Err(LstmError::InFile { path: p, source }) => {
                assert_eq!(p, path);
                assert!(matches!(*source, LstmError::Npy(_)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_npy(&dir.join("missing.npy")),
            Err(LstmError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
