//! A manifest file's bytes as UTF-8, whatever saved it. A UTF-8 byte-order mark is dropped; a
//! UTF-16 file with its byte-order mark (a spreadsheet's "Unicode text", an editor's "UTF-16") is
//! transcoded as it is read; anything else passes through untouched, so a cell that is not UTF-8
//! is still reported on its own line. UTF-16 without a byte-order mark cannot be told apart from
//! other bytes for sure; its NUL bytes give it away, and it is refused with what to do.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};

use super::error::ManifestError;

/// A manifest file, read as UTF-8.
pub(crate) type Decoded = DecodeReaderBytes<File, Vec<u8>>;

/// What to do with a UTF-16 file that has no byte-order mark.
pub(crate) const UTF16_WITHOUT_BOM: &str = "the file looks like UTF-16 without a byte-order \
     mark; save it as UTF-8 (a spreadsheet's \"CSV UTF-8\"), or as UTF-16 with a byte-order mark";

/// Opens the manifest at `path` for reading as UTF-8.
pub(crate) fn open(path: &Path) -> Result<Decoded, ManifestError> {
    let file = File::open(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(DecodeReaderBytesBuilder::new()
        .utf8_passthru(true)
        .strip_bom(true)
        .build(file))
}

/// Whether text that ought to be printable (a header of field names, a TOML document) holds NUL
/// bytes: the mark of UTF-16 read as if it were UTF-8.
pub(crate) fn looks_like_utf16(bytes: &[u8]) -> bool {
    bytes.contains(&0)
}

/// Line endings as `\n` alone: `\r\n` and a lone `\r` (an old Mac spreadsheet's) both become
/// `\n`, and a last line without an ending gets one. The CSV reader counts lines by `\n`, and
/// `csv.rs` finds a record's line from where the record ends: with every line ending one `\n`,
/// that is exact (the csv crate's own record positions are not, after a blank line or a `\r\n`).
pub(crate) struct UnixLines<R> {
    inner: R,
    /// The last byte read was a `\r`, already passed on as `\n`: a `\n` right after it is
    /// the same line ending.
    after_cr: bool,
    /// The last byte passed on, to end an unterminated last line.
    last: Option<u8>,
    done: bool,
}

impl<R: Read> UnixLines<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            after_cr: false,
            last: None,
            done: false,
        }
    }
}

impl<R: Read> Read for UnixLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.done && !buf.is_empty() {
            let n = self.inner.read(buf)?;
            if n == 0 {
                self.done = true;
                if self.last.is_some_and(|b| b != b'\n') {
                    buf[0] = b'\n';
                    return Ok(1);
                }
                return Ok(0);
            }
            let kept = if !self.after_cr && !buf[..n].contains(&b'\r') {
                n
            } else {
                let mut kept = 0;
                for i in 0..n {
                    let byte = buf[i];
                    if byte == b'\n' && self.after_cr {
                        self.after_cr = false;
                        continue;
                    }
                    self.after_cr = byte == b'\r';
                    buf[kept] = if byte == b'\r' { b'\n' } else { byte };
                    kept += 1;
                }
                kept
            };
            if kept > 0 {
                self.last = Some(buf[kept - 1]);
                return Ok(kept);
            }
            // Only the `\n` of a `\r\n` split across reads: read on.
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn decoded(bytes: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.csv");
        std::fs::write(&path, bytes).expect("write");
        let mut out = Vec::new();
        open(&path)
            .expect("opens")
            .read_to_end(&mut out)
            .expect("reads");
        out
    }

    fn utf16(text: &str, little_endian: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        for unit in std::iter::once(0xfeff).chain(text.encode_utf16()) {
            let pair = if little_endian {
                unit.to_le_bytes()
            } else {
                unit.to_be_bytes()
            };
            bytes.extend(pair);
        }
        bytes
    }

    #[test]
    fn utf16_with_a_byte_order_mark_is_transcoded_either_way_round() {
        let text = "order_id,common_name\n1,bücher.example\n";
        assert_eq!(decoded(&utf16(text, true)), text.as_bytes());
        assert_eq!(decoded(&utf16(text, false)), text.as_bytes());
    }

    #[test]
    fn a_utf8_byte_order_mark_is_dropped_and_other_bytes_pass_through_untouched() {
        assert_eq!(decoded(b"\xEF\xBB\xBForder_id\n1\n"), b"order_id\n1\n");
        // Not UTF-8 (Latin-1): passed through for the cell to be reported on its line.
        assert_eq!(
            decoded(b"order_id,comments\n1,caf\xE9\n"),
            b"order_id,comments\n1,caf\xE9\n"
        );
    }

    fn unix_lines(bytes: &[u8], chunk: usize) -> Vec<u8> {
        /// Hands out at most `chunk` bytes per read, to split `\r\n` across reads.
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        UnixLines::new(Trickle(bytes, chunk))
            .read_to_end(&mut out)
            .expect("reads");
        out
    }

    #[test]
    fn every_line_ending_becomes_one_newline_and_the_last_line_gets_one() {
        for chunk in [1, 2, 3, 4096] {
            assert_eq!(
                unix_lines(b"a\r\nb\r\n\r\nc", chunk),
                b"a\nb\n\nc\n",
                "{chunk}"
            );
            assert_eq!(unix_lines(b"a\rb\r\rc\r", chunk), b"a\nb\n\nc\n", "{chunk}");
            assert_eq!(unix_lines(b"a\nb\n", chunk), b"a\nb\n", "{chunk}");
            assert_eq!(unix_lines(b"\r\n\r\n", chunk), b"\n\n", "{chunk}");
            assert_eq!(unix_lines(b"", chunk), b"", "{chunk}");
        }
    }

    #[test]
    fn nul_bytes_give_away_utf16_without_a_byte_order_mark() {
        let bare: Vec<u8> = utf16("order_id\n", true).split_off(2);
        assert!(looks_like_utf16(&bare));
        assert!(!looks_like_utf16(b"order_id,common_name\n"));
    }
}
