//! Every HTTP error ordo answers, in one place: its status, its code, and contract §7 JSON body
//! `{"error": "<code>", "message": "<text>"}`, including the rejections of the framework's own
//! extractors (query strings, path decoding, bodies).

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::log::LogsError;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An HTTP error: the variant decides status and code, the text is the message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 `not_found`: no such reservation, user or route.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 400 `invalid_json`: the body is not a JSON object.
    #[error("{0}")]
    InvalidJson(BadJson),
    /// 400 `invalid_field`: a field that must not be there, or has the wrong form.
    #[error("{0}")]
    InvalidField(String),
    /// 400 `missing_field`.
    #[error("{0}")]
    MissingField(String),
    /// 400 `invalid_event`: the event fails the processor's validation.
    #[error(transparent)]
    InvalidEvent(#[from] crate::core::event::Malformed),
    /// 400 `invalid_token`: an `after` that is not a token of this deployment.
    #[error("{0}")]
    InvalidToken(String),
    /// 400 `invalid_query`: the query string does not parse.
    #[error("{0}")]
    InvalidQuery(String),
    /// 400 `invalid_path`: the path does not decode.
    #[error("{0}")]
    InvalidPath(String),
    /// 400 `bad_body`: the body could not be read.
    #[error("cannot read the body: {0}")]
    BadBody(Box<dyn std::error::Error + Send + Sync>),
    /// 401 `unauthorized`: the member requires a bearer token and the request has no valid
    /// one.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 408 `request_timeout`: the body did not arrive in time.
    #[error("the request body did not arrive within {} s; send it whole", super::BODY_READ_TIMEOUT.as_secs())]
    BodyTimeout,
    /// 413 `too_large`.
    #[error("request body over {MAX_BODY_BYTES} bytes; send one event per request")]
    TooLarge,
    /// 404 `no_reservation`: an association by user, and the user has no open reservation.
    #[error("{0}")]
    NoReservation(String),
    /// 409 `ambiguous`: an association by user, and the user has several.
    #[error("{0}")]
    Ambiguous(String),
    /// 503 `not_ready`: partitions still restoring.
    #[error("{0}")]
    NotReady(String),
    /// 503 `no_owner`: no member serves the partition now.
    #[error("{0}")]
    NoOwner(String),
    /// 503 `owner_unreachable`: the partition's owner did not answer in time, or not as a
    /// member answers.
    #[error(transparent)]
    OwnerUnreachable(#[from] Unreachable),
    /// 503 `shutting_down`: the member is stopping.
    #[error("this member is shutting down; retry on another")]
    ShuttingDown,
    /// 503 `append_failed`: the input log refused an append.
    #[error("cannot append to the input log: {0}")]
    AppendFailed(LogsError),
    /// 503 `log_unavailable`: the log could not be read.
    #[error("cannot read the log: {0}")]
    LogUnavailable(LogsError),
    /// 504 `timeout`: a read-your-writes wait ran out.
    #[error("{0}")]
    Timeout(String),
    /// 500 `internal`: a failure inside this member, with its cause.
    #[error(transparent)]
    Internal(#[from] Internal),
    /// 400 `bad_request`: not an HTTP/1.1 request (its request line or a header does not
    /// parse); answered for hyper, which refuses it before any route.
    #[error("the request is not valid HTTP/1.1: check its request line and headers")]
    BadRequest,
    /// 414 `uri_too_long`, answered for hyper.
    #[error("the request's URI is over 65534 bytes; send long input in a body")]
    UriTooLong,
    /// 431 `headers_too_large`, answered for hyper.
    #[error("the request's headers are too large or too many (at most 100); send fewer")]
    HeadersTooLarge,
}

/// What went wrong inside a member, behind a `500 internal`.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// A task serving the request ended without an answer (a panic or a cancellation).
    #[error("a task serving the request failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The request to forward could not be built.
    #[error("cannot build a forwarded request: {0}")]
    Request(#[from] axum::http::Error),
    /// A member's successful answer did not parse.
    #[error("bad answer from {url}: {cause}")]
    Answer {
        /// The member asked.
        url: String,
        /// Why its body did not parse.
        cause: serde_json::Error,
    },
}

/// Why a forwarded request got no usable answer from the partition's owner.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// The exchange failed: no connection, a broken answer, one over the relay's bound.
    #[error("the owner of partition {partition} at {url} did not answer: {cause}; retry")]
    Exchange {
        partition: crate::core::Partition,
        url: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer within the request's limit.
    #[error(
        "the owner of partition {partition} at {url} did not answer: no answer within {} ms; retry",
        limit.as_millis()
    )]
    TimedOut {
        partition: crate::core::Partition,
        url: String,
        limit: std::time::Duration,
    },
    /// An error answer that is not a member's JSON error.
    #[error("{url} answered {status}: {cause}")]
    Unreadable {
        url: String,
        status: StatusCode,
        cause: serde_json::Error,
    },
    /// A member's error answer this member does not relay as it is.
    #[error("{url} answered {status}: {message}")]
    Refused {
        url: String,
        status: StatusCode,
        message: String,
    },
}

/// Why a body is not a JSON object.
#[derive(Debug, thiserror::Error)]
pub enum BadJson {
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("the body is not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(Internal::Task(e))
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) | Self::NoReservation(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InvalidJson(_)
            | Self::InvalidField(_)
            | Self::MissingField(_)
            | Self::InvalidEvent(_)
            | Self::InvalidToken(_)
            | Self::InvalidQuery(_)
            | Self::InvalidPath(_)
            | Self::BadBody(_)
            | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Ambiguous(_) => StatusCode::CONFLICT,
            Self::NotReady(_)
            | Self::NoOwner(_)
            | Self::OwnerUnreachable(_)
            | Self::ShuttingDown
            | Self::AppendFailed(_)
            | Self::LogUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidField(_) => "invalid_field",
            Self::MissingField(_) => "missing_field",
            Self::InvalidEvent(_) => "invalid_event",
            Self::InvalidToken(_) => "invalid_token",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidPath(_) => "invalid_path",
            Self::BadBody(_) => "bad_body",
            Self::Unauthorized(_) => "unauthorized",
            Self::TooLarge => "too_large",
            Self::BodyTimeout => "request_timeout",
            Self::NoReservation(_) => "no_reservation",
            Self::Ambiguous(_) => "ambiguous",
            Self::NotReady(_) => "not_ready",
            Self::NoOwner(_) => "no_owner",
            Self::OwnerUnreachable(_) => "owner_unreachable",
            Self::ShuttingDown => "shutting_down",
            Self::AppendFailed(_) => "append_failed",
            Self::LogUnavailable(_) => "log_unavailable",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal",
            Self::BadRequest => "bad_request",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
        }
    }

    /// The error hyper answers itself, before any route, with the status `head` begins with
    /// (its automatic answers to a request it cannot parse have no body: `content-length: 0`).
    pub fn of_framework(head: &[u8]) -> Option<ApiError> {
        let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        let bodiless = head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w == b"\r\ncontent-length: 0\r\n");
        match status {
            b"400" if bodiless => Some(ApiError::BadRequest),
            b"414" if bodiless => Some(ApiError::UriTooLong),
            b"431" if bodiless => Some(ApiError::HeadersTooLarge),
            _ => None,
        }
    }

    /// The whole HTTP/1.1 answer, for a connection that closes after it.
    pub fn to_wire(&self) -> Vec<u8> {
        let status = self.status();
        let body = json!({"error": self.code(), "message": self.to_string()}).to_string();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Every 5xx is logged here, once, with its cause: a failure of ordo or of its log at
        // warn, the answers of a member that is starting, moving or stopping at info.
        if status.is_server_error() {
            let code = self.code();
            match self {
                Self::NotReady(_) | Self::NoOwner(_) | Self::ShuttingDown => {
                    tracing::info!(status = status.as_u16(), code, cause = %self, "http error")
                }
                _ => tracing::warn!(status = status.as_u16(), code, cause = %self, "http error"),
            }
        }
        let body = axum::Json(json!({"error": self.code(), "message": self.to_string()}));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            (status, [(header::RETRY_AFTER, "1")], body).into_response()
        } else if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::InvalidQuery(format!(
            "{}; expected `after=<partition>.<offset>` and `wait=<milliseconds>`, each at most once",
            e.body_text()
        ))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::InvalidPath(format!(
            "{}; percent-encode the path as UTF-8",
            e.body_text()
        ))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge
        } else {
            Self::BadBody(e.body_text().into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_json_with_its_status_and_code() {
        let cases = [
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::TooLarge, 413, "too_large"),
            (ApiError::Ambiguous("x".into()), 409, "ambiguous"),
            (ApiError::Timeout("x".into()), 504, "timeout"),
            (ApiError::NotReady("x".into()), 503, "not_ready"),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status().as_u16(), e.code()), (status, code));
            let r = e.into_response();
            assert_eq!(
                r.headers()[header::CONTENT_TYPE],
                "application/json",
                "{code}"
            );
            assert_eq!(r.headers().contains_key(header::RETRY_AFTER), status == 503);
        }
    }
}
