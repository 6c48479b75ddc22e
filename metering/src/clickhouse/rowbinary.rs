//! Encoding of the few column types Tally writes, in ClickHouse's RowBinary
//! format (the same bytes on 18.16 and on current servers).

use rust_decimal::Decimal;

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
}
