//! One spool record: the RowBinary rows one request produced, per table.
//!
//! Rows are encoded before they are spooled, so the sink only concatenates
//! them into INSERTs, and a replay after a crash sends byte-identical rows
//! (same batch identity), which the store collapses.

/// Tables the sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    /// `usage`
    Usage,
    /// `sla`
    Sla,
}

impl Table {
    const fn tag(self) -> u8 {
        match self {
            Table::Usage => 1,
            Table::Sla => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Table::Usage),
            2 => Some(Table::Sla),
            _ => None,
        }
    }
}

/// Rows for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    /// The table.
    pub table: Table,
    /// How many rows `data` holds.
    pub rows: u32,
    /// RowBinary rows.
    pub data: &'a [u8],
}

/// Encodes sections as one spool record: `[tag u8][rows u32 LE][len u32 LE][data]`...
pub fn encode(sections: &[Section<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sections.iter().map(|s| 9 + s.data.len()).sum());
    for s in sections {
        out.push(s.table.tag());
        out.extend_from_slice(&s.rows.to_le_bytes());
        out.extend_from_slice(&(s.data.len() as u32).to_le_bytes());
        out.extend_from_slice(s.data);
    }
    out
}

/// Decodes a spool record. A record that passed its checksum but does not
/// parse was written by another version: an error, never a guess.
pub fn decode(mut record: &[u8]) -> Result<Vec<Section<'_>>, String> {
    let mut sections = Vec::new();
    while !record.is_empty() {
        if record.len() < 9 {
            return Err(format!("{} trailing bytes are not a section", record.len()));
        }
        let table = Table::from_tag(record[0]).ok_or_else(|| format!("unknown table tag {}", record[0]))?;
        let rows = u32::from_le_bytes(record[1..5].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(record[5..9].try_into().expect("4 bytes")) as usize;
        let data = record.get(9..9 + len).ok_or_else(|| format!("a section of {len} bytes runs past the record"))?;
        sections.push(Section { table, rows, data });
        record = &record[9 + len..];
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let sections =
            [Section { table: Table::Usage, rows: 2, data: b"abc" }, Section { table: Table::Sla, rows: 0, data: b"" }];
        let bytes = encode(&sections);
        assert_eq!(decode(&bytes).unwrap(), sections);
        assert_eq!(decode(&bytes[..bytes.len() - 10]).unwrap_err(), "a section of 3 bytes runs past the record");
        assert_eq!(decode(&[9; 9]).unwrap_err(), "unknown table tag 9");
        assert_eq!(decode(&[1, 0]).unwrap_err(), "2 trailing bytes are not a section");
    }
}
