//! A campaign's suppression (do-not-contact) list: phones whose leads are refused as `suppressed`.

use super::MixState;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Most phones one list may hold. At about 16 bytes a phone in the set this bounds a list at
/// roughly 1 GiB; a national do-not-call list is larger and belongs in a dedicated service.
pub const MAX_SUPPRESSED: usize = 50_000_000;
/// Longest line accepted, so a file that is not a phone list fails fast instead of being read
/// into memory whole.
pub const MAX_SUPPRESSION_LINE_BYTES: usize = 256;
/// How much of an offending line an error quotes.
const QUOTE_CHARS: usize = 40;

/// Why a suppression list could not be loaded. Every variant names the file; those about its
/// content name the line (1-based), so the operator can fix it.
#[derive(Debug)]
pub enum SuppressionError {
    /// The file could not be opened or read.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A line is neither blank, a comment, nor a US phone number (10 digits, or 11 with a leading 1).
    BadPhone {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// A line is longer than [`MAX_SUPPRESSION_LINE_BYTES`] or not UTF-8.
    BadLine {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
    /// The list holds more than [`MAX_SUPPRESSED`] distinct phones.
    TooMany { path: PathBuf, line: usize },
}

impl fmt::Display for SuppressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuppressionError::Io { path, error } => {
                write!(
                    f,
                    "cannot read suppression file {}: {}",
                    path.display(),
                    error
                )
            }
            SuppressionError::BadPhone { path, line, text } => write!(
                f,
                "{}:{}: not a phone number: {:?} (expected 10 digits, or 11 starting with 1)",
                path.display(),
                line,
                text
            ),
            SuppressionError::BadLine { path, line, why } => {
                write!(f, "{}:{}: {}", path.display(), line, why)
            }
            SuppressionError::TooMany { path, line } => write!(
                f,
                "{}:{}: more than {} phones in one suppression file",
                path.display(),
                line,
                MAX_SUPPRESSED
            ),
        }
    }
}

impl std::error::Error for SuppressionError {}

/// The set of suppressed phones, each stored as its 10 digits read as a number.
///
/// Immutable once loaded, so workers share it (`Arc`) without locks. Storing numbers instead of
/// strings makes a lookup a parse of ten bytes and one probe, with no allocation.
#[derive(Debug, Clone, Default)]
pub struct Suppression {
    phones: HashSet<u64, MixState>,
}

impl Suppression {
    /// Reads a list: one phone a line in any common format (`7135550147`, `(713) 555-0147`,
    /// `+1 713 555 0147`); blank lines and lines starting with `#` are skipped, and text after a
    /// `#` is a comment. Any other line fails the whole load: a list that silently drops entries
    /// would let suppressed consumers be sold.
    pub fn load(path: &Path) -> Result<Suppression, SuppressionError> {
        let io_err = |error| SuppressionError::Io {
            path: path.to_path_buf(),
            error,
        };
        // A FIFO or a device would block the load, or never end.
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let file = File::open(path).map_err(io_err)?;
        Suppression::from_reader(path, BufReader::new(file))
    }

    /// As [`Suppression::load`], from any reader; `path` only names the source in errors.
    pub fn from_reader(
        path: &Path,
        mut reader: impl BufRead,
    ) -> Result<Suppression, SuppressionError> {
        let mut phones = HashSet::with_hasher(MixState::with_seed(0));
        let mut raw = Vec::with_capacity(MAX_SUPPRESSION_LINE_BYTES + 1);
        let mut line_no = 0usize;
        loop {
            raw.clear();
            line_no += 1;
            // Read at most one byte past the limit, so an endless line cannot exhaust memory.
            let limit = (MAX_SUPPRESSION_LINE_BYTES + 1) as u64;
            let n = Read::take(&mut reader, limit)
                .read_until(b'\n', &mut raw)
                .map_err(|error| SuppressionError::Io {
                    path: path.to_path_buf(),
                    error,
                })?;
            if n == 0 {
                break;
            }
            if raw.last() != Some(&b'\n') && n as u64 == limit {
                return Err(SuppressionError::BadLine {
                    path: path.to_path_buf(),
                    line: line_no,
                    why: "line too long",
                });
            }
            let text = std::str::from_utf8(&raw).map_err(|_| SuppressionError::BadLine {
                path: path.to_path_buf(),
                line: line_no,
                why: "not UTF-8 text",
            })?;
            // A byte-order mark from a spreadsheet export is not part of the first phone.
            let text = text.trim_start_matches('\u{feff}');
            let text = match text.find('#') {
                Some(i) => &text[..i],
                None => text,
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let digits = crate::lead::normalized_phone(crate::lead::Field::Str(text))
                .and_then(|d| phone_number(&d))
                .ok_or_else(|| SuppressionError::BadPhone {
                    path: path.to_path_buf(),
                    line: line_no,
                    text: text.chars().take(QUOTE_CHARS).collect(),
                })?;
            if phones.len() >= MAX_SUPPRESSED && !phones.contains(&digits) {
                return Err(SuppressionError::TooMany {
                    path: path.to_path_buf(),
                    line: line_no,
                });
            }
            phones.insert(digits);
        }
        phones.shrink_to_fit();
        Ok(Suppression { phones })
    }

    /// Whether the phone, given as its 10 digits (as [`crate::lead::normalized_phone`] returns
    /// it), is suppressed. Anything that is not exactly 10 ASCII digits is not on the list.
    pub fn contains(&self, phone_10_digits: &str) -> bool {
        match phone_number(phone_10_digits) {
            Some(n) => self.phones.contains(&n),
            None => false,
        }
    }

    /// Distinct phones on the list.
    pub fn len(&self) -> usize {
        self.phones.len()
    }

    /// Whether the list is empty (a file of only comments, say).
    pub fn is_empty(&self) -> bool {
        self.phones.is_empty()
    }
}

/// Exactly 10 ASCII digits, read as a number; `None` otherwise.
fn phone_number(digits: &str) -> Option<u64> {
    let bytes = digits.as_bytes();
    if bytes.len() != 10 {
        return None;
    }
    let mut n = 0u64;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}
