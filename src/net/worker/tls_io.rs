//! Reading and writing through a TLS session on a non-blocking socket.

use super::*;

/// What a round of reads on a seller TLS session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsRead {
    /// The connection is open (and the socket drained, or `rbuf` full).
    Open,
    /// The seller ended the session (close_notify, or the transport ended).
    Closed,
    /// Not TLS, or a TLS error: the connection must go.
    Broken,
}

/// Move decrypted bytes out of the session into `rbuf` (dropped when `discard`) while `rbuf`
/// has room. Returns the bytes moved and, when the session has no more to give, how it stands.
pub(super) fn tls_plaintext(
    tls: &mut rustls::ServerConnection,
    rbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    cap: usize,
    discard: bool,
) -> (usize, Option<TlsRead>) {
    let mut got = 0;
    loop {
        if !discard && rbuf.len() >= cap {
            // Back-pressure: the rest waits in the session and the socket.
            return (got, Some(TlsRead::Open));
        }
        match tls.reader().read(scratch) {
            // close_notify: the seller ended the session cleanly.
            Ok(0) => return (got, Some(TlsRead::Closed)),
            Ok(n) => {
                got += n;
                if !discard {
                    rbuf.extend_from_slice(&scratch[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, None),
            // The transport ended without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return (got, Some(TlsRead::Closed))
            }
            Err(_) => return (got, Some(TlsRead::Broken)),
        }
    }
}

/// Read TLS records from the socket until it is drained, `rbuf` is full, or the session ends;
/// the plaintext goes into `rbuf`. The session's plaintext is always emptied before more
/// records are read, so rustls never holds more than one read's worth.
pub(super) fn tls_read(
    tls: &mut rustls::ServerConnection,
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    cap: usize,
    discard: bool,
) -> (usize, TlsRead) {
    let mut got = 0;
    loop {
        let (n, state) = tls_plaintext(tls, rbuf, scratch, cap, discard);
        got += n;
        if let Some(state) = state {
            return (got, state);
        }
        match tls.read_tls(stream) {
            // End of stream: the next round of plaintext says how the session ended.
            Ok(0) => {
                let (n, state) = tls_plaintext(tls, rbuf, scratch, cap, discard);
                return (got + n, state.unwrap_or(TlsRead::Closed));
            }
            Ok(_) => {
                if tls.process_new_packets().is_err() {
                    return (got, TlsRead::Broken);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (got, TlsRead::Open),
            Err(_) => return (got, TlsRead::Broken),
        }
    }
}

/// Write `buf[*pos..]` through the session to the socket: plaintext in (as much as the bounded
/// session takes), records out, until everything is on the socket, the socket is full, or it
/// fails. Also sends what the session has of its own (handshake records, alerts).
pub(super) fn tls_flush(
    tls: &mut rustls::ServerConnection,
    stream: &mut TcpStream,
    buf: &[u8],
    pos: &mut usize,
) -> Flush {
    use std::io::Write;
    loop {
        while *pos < buf.len() {
            match tls.writer().write(&buf[*pos..]) {
                Ok(0) => break,
                Ok(n) => *pos += n,
                Err(_) => return Flush::Failed,
            }
        }
        if !tls.wants_write() {
            if *pos < buf.len() {
                // Only during a handshake: the session takes no more until the peer speaks.
                return Flush::Blocked;
            }
            return Flush::Done;
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Flush::Failed,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(_) => return Flush::Failed,
            }
        }
    }
}

/// The name to verify for an https endpoint.
pub(super) fn tls_host(e: &Option<Endpoint>) -> Option<String> {
    e.as_ref()
        .filter(|e| e.scheme == Scheme::Https)
        .map(|e| e.host.clone())
}
