//! Optional API credentials (`ordo run --http-token-file`): one bearer token every member of a
//! deployment shares. With it, every route but `/healthz`, `/readyz`, `/metrics` and the status
//! page's own HTML needs `Authorization: Bearer <token>`; members send it when they forward a
//! request to each other. Without it, nothing is asked for (the chart's NetworkPolicy, or the
//! loopback default, is then what keeps the port private).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The shared token, as read from its file.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Why a token file cannot be used; each names the file and the fix, never the contents.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "--http-token-file {path}: cannot read the file ({source}); mount it, or drop the flag"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "--http-token-file {path}: the token is empty or holds whitespace or control characters; \
         write one line of visible characters, e.g. `openssl rand -hex 32`"
    )]
    Unusable { path: String },
}

impl Token {
    /// Reads the token from `path`: one line, the trailing newline dropped.
    pub fn from_file(path: &std::path::Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(text.trim_end_matches(['\n', '\r'])).ok_or_else(|| TokenError::Unusable {
            path: path.display().to_string(),
        })
    }

    /// A token of visible ASCII characters (what an HTTP header carries as is).
    pub fn new(token: &str) -> Option<Self> {
        (!token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Token(token.into()))
    }

    /// The key the members sign their ownership records with: the same shared secret.
    pub fn owners_key(&self) -> crate::core::ownership::OwnersKey {
        crate::core::ownership::OwnersKey::new(self.0.as_bytes())
    }

    /// The `Authorization` header value that carries it.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `headers` carry this token, compared in time independent of where they differ.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        let want = self.0.as_bytes();
        given.len() == want.len()
            && given
                .iter()
                .zip(want)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

/// Routes open without the token: probes, the scrape, and the status page's HTML (its data
/// comes from `/v1/status`, which needs the token).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/")
}

/// Turns away a request without the member's token, `401 unauthorized` as JSON.
pub async fn require(State(s): State<AppState>, request: Request, next: Next) -> Response {
    match &s.token {
        Some(token) if !is_open(request.uri().path()) && !token.admits(request.headers()) => {
            ApiError::Unauthorized(
                "this member requires a bearer token: send `Authorization: Bearer <the token in \
                 its --http-token-file>`",
            )
            .into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = Token::new("s3cret-token").unwrap();
        assert!(token.admits(&headers("Bearer s3cret-token")));
        for bad in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Bearer S3cret-token",
            "bearer s3cret-token",
            "Basic s3cret-token",
            "s3cret-token",
            "Bearer ",
        ] {
            assert!(!token.admits(&headers(bad)), "{bad}");
        }
        assert!(!token.admits(&HeaderMap::new()));
        assert_eq!(token.header_value(), "Bearer s3cret-token");
        assert_eq!(format!("{token:?}"), "Token(…)");
    }

    #[test]
    fn a_token_file_is_one_visible_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc123\n").unwrap();
        assert!(
            Token::from_file(&file)
                .unwrap()
                .admits(&headers("Bearer abc123"))
        );
        for bad in ["", "\n", "two words\n", "tab\there"] {
            std::fs::write(&file, bad).unwrap();
            let e = Token::from_file(&file).unwrap_err().to_string();
            assert!(
                e.contains("is empty or holds whitespace") && !e.contains("abc"),
                "{e}"
            );
        }
        let missing = Token::from_file(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("--http-token-file ") && missing.contains("cannot read"),
            "{missing}"
        );
    }

    #[test]
    fn probes_the_scrape_and_the_page_stay_open() {
        for open in ["/healthz", "/readyz", "/metrics", "/"] {
            assert!(is_open(open), "{open}");
        }
        for closed in [
            "/v1/status",
            "/v1/reservations",
            "/v1/owners",
            "/v1/internal/applied",
            "/reservations/R-1",
            "/metrics/x",
        ] {
            assert!(!is_open(closed), "{closed}");
        }
    }
}
