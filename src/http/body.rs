//! Body decoding: Content-Length, chunked and close-delimited bodies, resumable at any byte.
//!
//! Chunk framing is walked one byte at a time through an explicit state, so a body that
//! arrives a byte per read decodes exactly like one that arrives whole; chunk data is copied in
//! runs. Every run of framing bytes that yields no body byte is bounded.

use super::error::Error;
use super::head::Framing;
use super::{MAX_CHUNK_EXTENSION_BYTES, MAX_CHUNK_SIZE_DIGITS};

/// Where the chunked decoder is within the framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size.
    Size { size: u64, digits: u32 },
    /// Blanks after the size, before `;` or CR.
    SizeBlank { size: u64 },
    /// Inside a chunk extension, up to CR.
    Extension { size: u64 },
    /// Saw CR after the size line; LF must follow.
    SizeLf { size: u64 },
    /// Copying chunk data.
    Data { remaining: u64 },
    /// Chunk data done; CR must follow.
    DataCr,
    /// Chunk data done and CR seen; LF must follow.
    DataLf,
    /// At the start of a trailer line (or of the final blank line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// Trailer line ended with CR; LF must follow.
    TrailerLf,
    /// The final blank line's CR was seen; LF ends the body.
    EndLf,
}

/// The framing state of one message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length { remaining: u64 },
    Chunked(Chunk),
    ToEof,
}

/// Decodes one body into the caller's buffer, enforcing the body and trailer limits.
#[derive(Debug, Clone)]
pub(crate) struct BodyDecoder {
    state: State,
    /// Body bytes accepted so far (declared chunk sizes count as soon as they are read).
    received: u64,
    max_body: u64,
    /// Chunk-extension and size-blank bytes seen, against `MAX_CHUNK_EXTENSION_BYTES`.
    extension_bytes: usize,
    /// Trailer bytes still allowed: what the head left of `max_head_bytes`.
    trailer_bytes_left: usize,
    /// Trailer lines still allowed: what the head left of `max_headers`.
    trailer_lines_left: usize,
}

/// The result of feeding bytes to a body decoder.
pub(crate) struct Progress {
    /// Bytes of input used.
    pub consumed: usize,
    /// The body is complete.
    pub done: bool,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`; `None` when there is no body to read.
    pub(crate) fn new(
        framing: Framing,
        max_body: usize,
        trailer_bytes_left: usize,
        trailer_lines_left: usize,
    ) -> Option<BodyDecoder> {
        let state = match framing {
            Framing::Empty => return None,
            Framing::Length(n) => State::Length { remaining: n },
            Framing::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
            Framing::ToEof => State::ToEof,
        };
        Some(BodyDecoder {
            state,
            received: 0,
            max_body: max_body as u64,
            extension_bytes: 0,
            trailer_bytes_left,
            trailer_lines_left,
        })
    }

    /// True when the body ends only when the peer closes.
    pub(crate) fn is_close_delimited(&self) -> bool {
        self.state == State::ToEof
    }

    /// Feeds `input`, appending body bytes to `body`.
    pub(crate) fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Progress, Error> {
        match self.state {
            State::Length { remaining } => {
                let n = remaining.min(input.len() as u64) as usize;
                body.extend_from_slice(&input[..n]);
                let remaining = remaining - n as u64;
                self.received += n as u64;
                self.state = State::Length { remaining };
                Ok(Progress {
                    consumed: n,
                    done: remaining == 0,
                })
            }
            State::ToEof => {
                let total = self.received + input.len() as u64;
                if total > self.max_body {
                    return Err(Error::BodyTooLarge);
                }
                body.extend_from_slice(input);
                self.received = total;
                Ok(Progress {
                    consumed: input.len(),
                    done: false,
                })
            }
            State::Chunked(chunk) => self.decode_chunked(chunk, input, body),
        }
    }

    fn decode_chunked(
        &mut self,
        mut chunk: Chunk,
        input: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<Progress, Error> {
        let mut i = 0;
        let mut done = false;
        while i < input.len() {
            if let Chunk::Data { remaining } = chunk {
                let n = remaining.min((input.len() - i) as u64) as usize;
                body.extend_from_slice(&input[i..i + n]);
                i += n;
                let remaining = remaining - n as u64;
                chunk = if remaining == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { remaining }
                };
                continue;
            }
            let byte = input[i];
            i += 1;
            match self.step(chunk, byte) {
                Ok(Some(next)) => chunk = next,
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    self.state = State::Chunked(chunk);
                    return Err(e);
                }
            }
        }
        self.state = State::Chunked(chunk);
        Ok(Progress { consumed: i, done })
    }

    /// One framing byte; `Ok(None)` when it ends the body.
    fn step(&mut self, chunk: Chunk, byte: u8) -> Result<Option<Chunk>, Error> {
        let next = match chunk {
            Chunk::Size { size, digits } => match hex_value(byte) {
                Some(v) => {
                    if digits >= MAX_CHUNK_SIZE_DIGITS {
                        return Err(Error::InvalidChunkSize);
                    }
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(v)))
                        .ok_or(Error::InvalidChunkSize)?;
                    Chunk::Size {
                        size,
                        digits: digits + 1,
                    }
                }
                None if digits == 0 => return Err(Error::InvalidChunkSize),
                None => match byte {
                    b' ' | b'\t' => {
                        self.count_extension()?;
                        Chunk::SizeBlank { size }
                    }
                    b';' => {
                        self.count_extension()?;
                        Chunk::Extension { size }
                    }
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => return Err(Error::InvalidChunk),
                    _ => return Err(Error::InvalidChunkSize),
                },
            },
            Chunk::SizeBlank { size } => match byte {
                b' ' | b'\t' => {
                    self.count_extension()?;
                    Chunk::SizeBlank { size }
                }
                b';' => {
                    self.count_extension()?;
                    Chunk::Extension { size }
                }
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return Err(Error::InvalidChunk),
                _ => return Err(Error::InvalidChunkSize),
            },
            Chunk::Extension { size } => match byte {
                b'\r' => Chunk::SizeLf { size },
                b'\t' => {
                    self.count_extension()?;
                    Chunk::Extension { size }
                }
                // A bare LF or another control byte inside an extension is how parsers are
                // made to disagree on where the size line ends.
                0..=0x1f | 0x7f => return Err(Error::InvalidChunk),
                _ => {
                    self.count_extension()?;
                    Chunk::Extension { size }
                }
            },
            Chunk::SizeLf { size } => {
                if byte != b'\n' {
                    return Err(Error::InvalidChunk);
                }
                if size == 0 {
                    Chunk::TrailerStart
                } else {
                    // Refuse as soon as the declared size would pass the limit, before
                    // buffering any of it.
                    let total = self.received.checked_add(size).ok_or(Error::BodyTooLarge)?;
                    if total > self.max_body {
                        return Err(Error::BodyTooLarge);
                    }
                    self.received = total;
                    Chunk::Data { remaining: size }
                }
            }
            Chunk::Data { remaining } => Chunk::Data { remaining },
            Chunk::DataCr => match byte {
                b'\r' => Chunk::DataLf,
                _ => return Err(Error::InvalidChunk),
            },
            Chunk::DataLf => match byte {
                b'\n' => Chunk::Size { size: 0, digits: 0 },
                _ => return Err(Error::InvalidChunk),
            },
            Chunk::TrailerStart => match byte {
                b'\r' => Chunk::EndLf,
                b if is_tchar(b) => {
                    if self.trailer_lines_left == 0 {
                        return Err(Error::TrailersTooLarge);
                    }
                    self.trailer_lines_left -= 1;
                    self.count_trailer()?;
                    Chunk::TrailerName
                }
                // Blank first: a folded line. Anything else: not a field.
                _ => return Err(Error::InvalidTrailer),
            },
            Chunk::TrailerName => match byte {
                b':' => {
                    self.count_trailer()?;
                    Chunk::TrailerValue
                }
                b if is_tchar(b) => {
                    self.count_trailer()?;
                    Chunk::TrailerName
                }
                _ => return Err(Error::InvalidTrailer),
            },
            Chunk::TrailerValue => match byte {
                b'\r' => Chunk::TrailerLf,
                b'\t' => {
                    self.count_trailer()?;
                    Chunk::TrailerValue
                }
                0..=0x1f | 0x7f => return Err(Error::InvalidTrailer),
                _ => {
                    self.count_trailer()?;
                    Chunk::TrailerValue
                }
            },
            Chunk::TrailerLf => match byte {
                b'\n' => Chunk::TrailerStart,
                _ => return Err(Error::InvalidTrailer),
            },
            Chunk::EndLf => match byte {
                b'\n' => return Ok(None),
                _ => return Err(Error::InvalidChunk),
            },
        };
        Ok(Some(next))
    }

    fn count_extension(&mut self) -> Result<(), Error> {
        self.extension_bytes += 1;
        if self.extension_bytes > MAX_CHUNK_EXTENSION_BYTES {
            return Err(Error::ChunkExtensionTooLarge);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), Error> {
        if self.trailer_bytes_left == 0 {
            return Err(Error::TrailersTooLarge);
        }
        self.trailer_bytes_left -= 1;
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 9110 token characters, the only ones allowed in a field name or method.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `is_tchar` as a table: it runs for every byte of every header name written.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};
