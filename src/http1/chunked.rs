//! The body decoders of an answer the upstream client reads: a known length, chunked transfer coding
//! (RFC 9112 §7.1: sizes in hex, extensions ignored, trailers skipped), or to the end of the
//! connection. Pure: each step takes what the read buffer holds and says whether it needs more.

use bytes::{Buf, Bytes, BytesMut};

use super::CodecError;

/// Longest chunk-size line or trailer line accepted: 4 KiB.
const MAX_LINE: usize = 4096;

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, taken out of the buffer.
    Data(Bytes),
    /// The buffer holds no more of the body: read more.
    NeedMore,
    /// The body ended; what follows in the buffer is not part of it.
    Done,
}

/// A body being taken out of a connection's read buffer.
#[derive(Debug)]
pub enum Decoder {
    /// Bytes of a `content-length` body still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes; `true` once it did.
    Eof(bool),
}

impl Decoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, CodecError> {
        match self {
            Decoder::Length(0) | Decoder::Eof(true) => Ok(Decoded::Done),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = buf
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::Chunked(chunked) => chunked.decode(buf),
            Decoder::Eof(false) if buf.is_empty() => Ok(Decoded::NeedMore),
            Decoder::Eof(false) => Ok(Decoded::Data(buf.split().freeze())),
        }
    }

    /// The connection reached its end: the body's end for [`Decoder::Eof`], an error otherwise.
    pub fn at_eof(&mut self) -> Result<(), CodecError> {
        match self {
            Decoder::Eof(done) => {
                *done = true;
                Ok(())
            }
            Decoder::Length(0) => Ok(()),
            Decoder::Length(_) => Err(CodecError::Truncated),
            Decoder::Chunked(c) if c.is_done() => Ok(()),
            Decoder::Chunked(_) => Err(CodecError::Truncated),
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            Decoder::Length(remaining) => *remaining == 0,
            Decoder::Chunked(c) => c.is_done(),
            Decoder::Eof(done) => *done,
        }
    }

    /// Bytes still to come, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(remaining) => Some(*remaining),
            _ if self.is_done() => Some(0),
            _ => None,
        }
    }
}

/// The chunked decoder's place in the body.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to a blank line.
    Trailers,
    Done,
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, CodecError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = buf
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                state => {
                    let Some((len, consumed)) = find_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = next_after_line(state, &buf[..len])?;
                    buf.advance(consumed);
                }
            }
        }
    }
}

/// The state after a whole line (without its line ending) was read in `state`.
fn next_after_line(state: State, line: &[u8]) -> Result<State, CodecError> {
    Ok(match state {
        State::Size => match chunk_size(line)? {
            0 => State::Trailers,
            n => State::Data(n),
        },
        State::DataEnd if line.is_empty() => State::Size,
        State::DataEnd => return Err(CodecError::Chunked),
        State::Trailers if line.is_empty() => State::Done,
        State::Trailers => State::Trailers,
        State::Data(_) | State::Done => unreachable!("not a line state"),
    })
}

/// The next line in `buf`: its length without the CRLF (or bare LF), and with it; `None` while
/// it is incomplete.
fn find_line(buf: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let Some(end) = buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(CodecError::Chunked)
        } else {
            Ok(None)
        };
    };
    let len = if end > 0 && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    Ok(Some((len, end + 1)))
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions` (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, CodecError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(CodecError::Chunked);
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err(CodecError::Chunked);
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| CodecError::Chunked)?;
    u64::from_str_radix(hex, 16).map_err(|_| CodecError::Chunked)
}

#[cfg(test)]
mod tests;
