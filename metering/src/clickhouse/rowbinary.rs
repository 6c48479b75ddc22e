//! Encoding of the few column types Tally writes, in ClickHouse's RowBinary
//! format (the same bytes on 18.16 and on current servers).

use rust_decimal::Decimal;

/// The columns of a table's RowBinary rows, in order, with their ClickHouse types: the one
/// spelling from which an INSERT's column list ([`Layout::columns`]) and a reader's structure
/// ([`Layout::structure`]) are made, and which [`Row`] checks every encoded row against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout(pub &'static [(&'static str, &'static str)]);

impl Layout {
    /// `(a, b, c)`, for `INSERT INTO t (a, b, c) FORMAT RowBinary`.
    pub fn columns(&self) -> String {
        format!("({})", self.0.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "))
    }

    /// `a String, b UInt64`, for `file()` and `input()` readers of the same bytes.
    pub fn structure(&self) -> String {
        self.0.iter().map(|(name, ty)| format!("{name} {ty}")).collect::<Vec<_>>().join(", ")
    }
}

/// One row of a [`Layout`], written column by column. Each write names its column; a test or
/// debug build panics when a name is not the layout's next column, so the order of the writes
/// cannot drift from the layout the INSERT declares.
#[must_use = "a row is complete only once `finish` is called"]
pub struct Row<'a> {
    out: &'a mut Vec<u8>,
    layout: Layout,
    next: usize,
}

impl<'a> Row<'a> {
    /// Starts a row of `layout` at the end of `out`.
    pub fn new(layout: Layout, out: &'a mut Vec<u8>) -> Self {
        Self { out, layout, next: 0 }
    }

    fn column(&mut self, name: &str) -> &mut Vec<u8> {
        debug_assert_eq!(
            self.layout.0.get(self.next).map(|c| c.0),
            Some(name),
            "column {} of {:?}",
            self.next,
            self.layout
        );
        self.next += 1;
        self.out
    }

    /// A `String` column.
    pub fn str(mut self, name: &str, value: &str) -> Self {
        put_str(self.column(name), value);
        self
    }

    /// A `UInt64` column.
    pub fn u64(mut self, name: &str, value: u64) -> Self {
        put_u64(self.column(name), value);
        self
    }

    /// A `DateTime` column (Unix seconds).
    pub fn datetime(mut self, name: &str, secs: u32) -> Self {
        put_datetime(self.column(name), secs);
        self
    }

    /// A `Decimal(38, scale)` column.
    pub fn decimal(mut self, name: &str, value: Decimal, scale: u32) -> Self {
        put_decimal128(self.column(name), value, scale);
        self
    }

    /// An `Array(T)` column, each element written by `put`.
    pub fn array<T>(
        mut self,
        name: &str,
        items: impl ExactSizeIterator<Item = T>,
        put: impl FnMut(&mut Vec<u8>, T),
    ) -> Self {
        put_array(self.column(name), items, put);
        self
    }

    /// Ends the row; every column of the layout must have been written.
    pub fn finish(self) {
        debug_assert_eq!(self.next, self.layout.0.len(), "a row of {:?} ended early", self.layout);
    }
}

/// Appends a `String`: LEB128 length, then the bytes.
pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_leb128(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Appends a `UInt64`.
pub fn put_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Appends a `UInt16`.
pub fn put_u16(buf: &mut Vec<u8>, n: u16) {
    buf.extend_from_slice(&n.to_le_bytes());
}

/// Appends a `UInt8`.
pub fn put_u8(buf: &mut Vec<u8>, n: u8) {
    buf.push(n);
}

/// Appends an `Array(T)`: LEB128 length, then each element as `put` writes it.
pub fn put_array<T>(buf: &mut Vec<u8>, items: impl ExactSizeIterator<Item = T>, mut put: impl FnMut(&mut Vec<u8>, T)) {
    put_leb128(buf, items.len() as u64);
    for item in items {
        put(buf, item);
    }
}

/// Appends a `DateTime` (Unix seconds, `UInt32`).
pub fn put_datetime(buf: &mut Vec<u8>, secs: u32) {
    buf.extend_from_slice(&secs.to_le_bytes());
}

/// Appends a `Decimal(38, scale)`: the value times 10^scale as a little-endian
/// `Int128`. The caller has checked that the value has at most `scale` decimals.
pub fn put_decimal128(buf: &mut Vec<u8>, value: Decimal, scale: u32) {
    let mut v = value;
    v.rescale(scale);
    buf.extend_from_slice(&v.mantissa().to_le_bytes());
}

fn put_leb128(buf: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

/// Why RowBinary bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The bytes end inside a value.
    #[error("RowBinary ends inside a value at byte {0}")]
    Truncated(usize),
    /// A string is not UTF-8.
    #[error("RowBinary string at byte {0} is not UTF-8")]
    NotUtf8(usize),
    /// A decimal is past the 28 digits an exact decimal here holds.
    #[error("RowBinary decimal at byte {0} is larger than 28 digits")]
    DecimalRange(usize),
}

/// Reads the values of RowBinary rows in order, borrowing strings from the bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(ReadError::Truncated(self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A `String` (its length as unsigned LEB128, then its bytes).
    pub fn str(&mut self) -> Result<&'a str, ReadError> {
        let at = self.pos;
        let mut len = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                let bytes = self.take(len)?;
                return std::str::from_utf8(bytes).map_err(|_| ReadError::NotUtf8(at));
            }
        }
        Err(ReadError::Truncated(at))
    }

    /// A `UInt64`.
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| ReadError::Truncated(self.pos))?))
    }

    /// A `UInt32` or `DateTime`.
    pub fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| ReadError::Truncated(self.pos))?))
    }

    /// A `Decimal128(scale)` (`Decimal(38, scale)`).
    pub fn decimal128(&mut self, scale: u32) -> Result<Decimal, ReadError> {
        let at = self.pos;
        let raw = i128::from_le_bytes(self.take(16)?.try_into().map_err(|_| ReadError::Truncated(at))?);
        Decimal::try_from_i128_with_scale(raw, scale).map_err(|_| ReadError::DecimalRange(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut b = Vec::new();
        put_str(&mut b, "ab");
        assert_eq!(b, [2, b'a', b'b']);
        b.clear();
        put_str(&mut b, &"x".repeat(300));
        assert_eq!(&b[..2], &[0xac, 0x02]);
        b.clear();
        put_decimal128(&mut b, "1.5".parse().unwrap(), 9);
        assert_eq!(b, 1_500_000_000i128.to_le_bytes());
        b.clear();
        put_datetime(&mut b, 0x01020304);
        assert_eq!(b, [4, 3, 2, 1]);
        b.clear();
        put_array(&mut b, [1u16, 0x0203].into_iter(), put_u16);
        assert_eq!(b, [2, 1, 0, 3, 2]);
        b.clear();
        put_array(&mut b, ["a"].into_iter(), put_str);
        assert_eq!(b, [1, 1, b'a']);
    }

    #[test]
    fn a_reader_reads_what_the_encoders_write_and_refuses_the_rest() {
        let mut b = Vec::new();
        put_str(&mut b, &"é".repeat(100));
        put_u64(&mut b, u64::MAX - 1);
        put_datetime(&mut b, 1_796_000_000);
        put_decimal128(&mut b, "-12.000000345".parse().unwrap(), 9);
        let mut r = Reader::new(&b);
        assert_eq!(r.str().unwrap(), "é".repeat(100));
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.u32().unwrap(), 1_796_000_000);
        assert_eq!(r.decimal128(9).unwrap(), "-12.000000345".parse::<Decimal>().unwrap());
        assert!(r.is_empty());
        assert_eq!(Reader::new(&b[..150]).str(), Err(ReadError::Truncated(2)));
        assert_eq!(Reader::new(&[2, 0xff, 0xfe]).str(), Err(ReadError::NotUtf8(0)));
        assert_eq!(Reader::new(&i128::MAX.to_le_bytes()).decimal128(9), Err(ReadError::DecimalRange(0)));
    }

    const LAYOUT: Layout = Layout(&[("name", "String"), ("n", "UInt64")]);

    #[test]
    fn a_layout_is_spelled_once() {
        assert_eq!(LAYOUT.columns(), "(name, n)");
        assert_eq!(LAYOUT.structure(), "name String, n UInt64");
        let mut b = Vec::new();
        Row::new(LAYOUT, &mut b).str("name", "a").u64("n", 1).finish();
        assert_eq!(b, [1, b'a', 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "column 0")]
    fn a_row_written_out_of_order_panics() {
        Row::new(LAYOUT, &mut Vec::new()).u64("n", 1).str("name", "a").finish();
    }

    #[test]
    #[should_panic(expected = "ended early")]
    fn a_short_row_panics() {
        Row::new(LAYOUT, &mut Vec::new()).str("name", "a").finish();
    }
}
