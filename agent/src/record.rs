//! What the agent keeps in its WAL for one accepted request: the signal, the
//! process (boot) that accepted it, when, its items per tenant (so that what a
//! collector acknowledges or refuses is accounted per tenant without decoding
//! again), and the request as OTLP protobuf.
//!
//! `[version u8][signal u8][boot u64 LE][accepted unix-millis u64 LE]`
//! `[tenants u16 LE]{[len u8][tenant][items u64 LE]}[protobuf]`

use otlp::Signal;

const VERSION: u8 = 1;
const HEADER: usize = 18;

/// One accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its signal.
    pub signal: Signal,
    /// The agent process that accepted it.
    pub boot: u64,
    /// When, in Unix milliseconds: the collector meters it in that minute.
    pub accepted_millis: u64,
    /// Items (spans, data points, log records) per tenant; empty for the agent's own usage reports.
    pub items: Vec<(String, u64)>,
    /// The `Export*ServiceRequest`, protobuf-encoded.
    pub request: &'a [u8],
}

fn signal_tag(signal: Signal) -> u8 {
    match signal {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

impl<'a> Record<'a> {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.request.len());
        out.push(VERSION);
        out.push(signal_tag(self.signal));
        out.extend_from_slice(&self.boot.to_le_bytes());
        out.extend_from_slice(&self.accepted_millis.to_le_bytes());
        out.extend_from_slice(&(self.items.len() as u16).to_le_bytes());
        for (tenant, n) in &self.items {
            // Tenant ids are at most 128 bytes (validated where they are resolved).
            out.push(tenant.len() as u8);
            out.extend_from_slice(tenant.as_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(self.request);
        out
    }

    /// Reads a record; an error names what does not parse (a WAL written by another version).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < HEADER {
            return Err(format!("a WAL record of {} bytes is shorter than its header", bytes.len()));
        }
        if bytes[0] != VERSION {
            return Err(format!("WAL record version {} is not known to this agent", bytes[0]));
        }
        let signal = match bytes[1] {
            1 => Signal::Traces,
            2 => Signal::Metrics,
            3 => Signal::Logs,
            other => return Err(format!("unknown signal tag {other} in a WAL record")),
        };
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let short = || "a WAL record's tenant counts run past its end".to_owned();
        let mut at = HEADER;
        let n = u16::from_le_bytes(bytes.get(at..at + 2).ok_or_else(short)?.try_into().expect("2 bytes"));
        at += 2;
        let mut items = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = *bytes.get(at).ok_or_else(short)? as usize;
            let tenant = bytes.get(at + 1..at + 1 + len).ok_or_else(short)?;
            let tenant = std::str::from_utf8(tenant).map_err(|_| "a WAL record's tenant is not UTF-8".to_owned())?;
            let count = bytes.get(at + 1 + len..at + 9 + len).ok_or_else(short)?;
            items.push((tenant.to_owned(), u64::from_le_bytes(count.try_into().expect("8 bytes"))));
            at += 9 + len;
        }
        Ok(Self { signal, boot: word(2), accepted_millis: word(10), items, request: &bytes[at..] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let items = vec![("acme".to_owned(), 7), ("globex".to_owned(), 1 << 40)];
        let r = Record {
            signal: Signal::Logs,
            boot: 0xfeed,
            accepted_millis: 1_700_000_000_123,
            items,
            request: b"\x0a\x00",
        };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Ok(r));
        assert_eq!(Record::decode(&bytes[..HEADER + 5]).unwrap_err(), "a WAL record's tenant counts run past its end");
        assert_eq!(Record::decode(&bytes[..5]).unwrap_err(), "a WAL record of 5 bytes is shorter than its header");
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(Record::decode(&other).unwrap_err(), "WAL record version 9 is not known to this agent");
    }
}
