//! One segment file: a header, then records of `[len u32 LE][crc32 u32 LE][payload]`.
//!
//! A record is only acknowledged after the write that holds it returned (and,
//! with `fsync: always`, after the file was synced), so a record cut short at
//! the end of a file is one nobody was told was kept: it is ignored. A record
//! whose checksum does not match is damage: reading stops there (a bad length
//! means the rest cannot be framed), and the caller counts what was lost.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The first bytes of every segment: a name and a format version.
pub const MAGIC: &[u8; 8] = b"TALLYWL\x01";
/// Bytes before each record's payload.
pub const RECORD_HEADER: u64 = 8;
/// The largest payload a record may carry (a request is at most 64 MiB by default).
pub const MAX_RECORD: u32 = 1 << 30;

/// A segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Increasing with the order segments were written.
    pub id: u64,
    /// The file.
    pub path: PathBuf,
    /// Its size when it was sealed.
    pub bytes: u64,
}

/// The file name of segment `id`; names sort in write order.
pub fn file_name(id: u64) -> String {
    format!("{id:020}.wal")
}

/// The id of a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Appends one framed record to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What a segment held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// The intact records, in order.
    pub records: Vec<Vec<u8>>,
    /// Damage found, if any: the records from there on are lost.
    pub damage: Option<Damage>,
    /// Bytes of an unfinished last record (a write cut short by a crash, never acknowledged).
    pub torn_tail: u64,
}

/// Where and how a segment was damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// Bytes from there to the end of the file, which are skipped.
    pub bytes_lost: u64,
    /// What was wrong.
    pub reason: String,
}

/// Reads a segment file.
pub fn read(path: &Path) -> std::io::Result<Contents> {
    let mut data = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut data)?;
    Ok(parse(&data))
}

/// Parses a segment's bytes.
pub fn parse(data: &[u8]) -> Contents {
    let mut out = Contents::default();
    let damaged = |offset: usize, reason: String| Damage {
        offset: offset as u64,
        bytes_lost: (data.len() - offset) as u64,
        reason,
    };
    if data.len() < MAGIC.len() {
        // Created but never written to: nothing was acknowledged from it.
        out.torn_tail = data.len() as u64;
        return out;
    }
    if &data[..MAGIC.len()] != MAGIC {
        out.damage = Some(damaged(0, "not a Tally WAL segment (bad header)".to_owned()));
        return out;
    }
    let mut at = MAGIC.len();
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < RECORD_HEADER as usize {
            out.torn_tail = rest.len() as u64;
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            out.damage = Some(damaged(at, format!("record length {len} is over the limit of {MAX_RECORD}")));
            break;
        }
        let end = RECORD_HEADER as usize + len as usize;
        if rest.len() < end {
            out.torn_tail = rest.len() as u64;
            break;
        }
        let payload = &rest[RECORD_HEADER as usize..end];
        if crc32fast::hash(payload) != crc {
            out.damage = Some(damaged(at, "record checksum mismatch".to_owned()));
            break;
        }
        out.records.push(payload.to_vec());
        at += end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut data = MAGIC.to_vec();
        for p in payloads {
            frame(p, &mut data);
        }
        data
    }

    #[test]
    fn names_sort_in_write_order() {
        assert_eq!(file_name(7), "00000000000000000007.wal");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("7.wal"), None);
        assert_eq!(parse_name("0000000000000000000x.wal"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_not_damage() {
        let data = segment(&[b"one", b"", b"three"]);
        let c = parse(&data);
        assert_eq!(c.records, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!((c.damage, c.torn_tail), (None, 0));
        // A crash in the middle of the last write.
        let c = parse(&data[..data.len() - 2]);
        assert_eq!(c.records.len(), 2);
        assert_eq!((c.damage, c.torn_tail), (None, 8 + 3));
        assert_eq!(parse(&MAGIC[..3]).torn_tail, 3);
    }

    #[test]
    fn a_flipped_byte_loses_that_record_and_what_follows_it_only() {
        let mut data = segment(&[b"first", b"second", b"third"]);
        let second = MAGIC.len() + 8 + 5;
        data[second + 8 + 2] ^= 0x40;
        let c = parse(&data);
        assert_eq!(c.records, vec![b"first".to_vec()]);
        let damage = c.damage.unwrap();
        assert_eq!((damage.offset, damage.bytes_lost), (second as u64, (data.len() - second) as u64));
        assert_eq!(damage.reason, "record checksum mismatch");
        let mut data = segment(&[b"x"]);
        data[0] = b'X';
        assert_eq!(parse(&data).damage.unwrap().reason, "not a Tally WAL segment (bad header)");
    }
}
