//! Journal segments: entries as gzip'd JSON lines, named by range, term and checksum.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::BackupError;
use super::layout::SegmentName;
use crate::storage::JournalEntry;

/// A decoded segment may not expand beyond this (a corrupt or hostile object must not
/// exhaust memory); segments are closed at [`super::SEGMENT_BYTES`] uncompressed.
const MAX_DECODED: u64 = 256 * 1024 * 1024;

/// Compresses `entries` (contiguous, non-empty) into a segment archived at `term`.
pub fn encode(entries: &[JournalEntry], term: u64) -> Result<(SegmentName, Vec<u8>), BackupError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err(BackupError::Corrupt("an empty segment".into()));
    };
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    for e in entries {
        gz.write_all(&e.encode()).map_err(BackupError::Io)?;
        gz.write_all(b"\n").map_err(BackupError::Io)?;
    }
    let bytes = gz.finish().map_err(BackupError::Io)?;
    let name = SegmentName {
        first: first.seq,
        last: last.seq,
        term,
        sha256: hex::encode(Sha256::digest(&bytes)),
    };
    Ok((name, bytes))
}

/// Checks the checksum and the range against the name, then decodes.
pub fn decode(name: &SegmentName, bytes: &[u8]) -> Result<Vec<JournalEntry>, BackupError> {
    let sum = hex::encode(Sha256::digest(bytes));
    if sum != name.sha256 {
        return Err(BackupError::Corrupt(format!(
            "segment {}: checksum {sum} does not match its name",
            name.file_name()
        )));
    }
    let mut text = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_DECODED + 1)
        .read_to_end(&mut text)
        .map_err(|e| BackupError::Corrupt(format!("segment {}: {e}", name.file_name())))?;
    if text.len() as u64 > MAX_DECODED {
        return Err(BackupError::Corrupt(format!(
            "segment {} expands beyond {MAX_DECODED} bytes",
            name.file_name()
        )));
    }
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let e = JournalEntry::decode(line)
            .map_err(|e| BackupError::Corrupt(format!("segment {}: {e}", name.file_name())))?;
        let expected = name.first + out.len() as u64;
        if e.seq != expected {
            return Err(BackupError::Corrupt(format!(
                "segment {}: entry {} where {expected} was expected",
                name.file_name(),
                e.seq
            )));
        }
        out.push(e);
    }
    if out.last().map(|e| e.seq) != Some(name.last) {
        return Err(BackupError::Corrupt(format!(
            "segment {}: ends before {}",
            name.file_name(),
            name.last
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::Op;

    fn entries(from: u64, n: u64) -> Vec<JournalEntry> {
        (from..from + n)
            .map(|seq| JournalEntry {
                seq,
                term: 2,
                time: 1_700_000_000_000 + seq as i64,
                op: Op::TermStart {
                    node: format!("n{seq}"),
                },
            })
            .collect()
    }

    #[test]
    fn a_segment_round_trips_and_names_its_range() {
        let es = entries(7, 50);
        let (name, bytes) = encode(&es, 4).unwrap();
        assert_eq!((name.first, name.last, name.term), (7, 56, 4));
        assert_eq!(decode(&name, &bytes).unwrap(), es);
    }

    #[test]
    fn a_damaged_or_misnamed_segment_is_refused() {
        let (name, mut bytes) = encode(&entries(1, 10), 1).unwrap();
        let mut longer = name.clone();
        longer.last = 11;
        assert!(matches!(
            decode(&longer, &bytes),
            Err(BackupError::Corrupt(_))
        ));
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        let err = decode(&name, &bytes).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}
