//! The connection under the router: hyper answers a request it cannot parse (a bad request
//! line or header, a URI over 64 KiB, headers over its buffer) itself, before any route, with
//! an empty body. [`JsonErrors`] puts ordo's JSON error in place of that answer as it is
//! written, so every error a client gets is JSON (contract §7).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBufCursor, Write};

use super::ApiError;

/// A connection whose framework errors are answered as JSON.
pub struct JsonErrors<T> {
    io: T,
    /// An answer put in place of hyper's, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonErrors<T> {
    pub fn new(io: T) -> Self {
        JsonErrors { io, pending: None }
    }
}

impl<T: Write + Unpin> JsonErrors<T> {
    /// Writes what is left of the answer put in place of hyper's.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, at)) = &mut self.pending {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
            if *at == answer.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Read + Unpin> Read for JsonErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for JsonErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        // Each answer's head comes in one write (writes are not vectored, so hyper flattens
        // head and body into one buffer).
        if let Some(e) = ApiError::of_framework(buf) {
            tracing::debug!(
                status = e.status().as_u16(),
                "answering a request hyper refused"
            );
            this.pending = Some((e.to_wire(), 0));
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_bodiless_answers_are_replaced() {
        let date = "date: Mon, 07 Dec 2026 19:28:31 GMT\r\n\r\n";
        let auto = |status: &str| {
            format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n{date}")
        };
        for (status, code) in [
            ("414 URI Too Long", "uri_too_long"),
            ("431 Request Header Fields Too Large", "headers_too_large"),
            ("400 Bad Request", "bad_request"),
        ] {
            let e = ApiError::of_framework(auto(status).as_bytes()).expect(status);
            assert_eq!(e.code(), code);
            let wire = String::from_utf8(e.to_wire()).unwrap();
            let (head, body) = wire.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{head}"
            );
            assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"], code);
        }
        // ordo's own answers, errors included, carry a body: left alone.
        let own = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n";
        assert!(ApiError::of_framework(own.as_bytes()).is_none());
        assert!(ApiError::of_framework(auto("404 Not Found").as_bytes()).is_none());
        assert!(ApiError::of_framework(b"{\"error\":").is_none());
    }
}
