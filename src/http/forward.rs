//! Forwarding to a partition's owner (several members on Kafka, contract §7): one hop over a pooled
//! keep-alive HTTP/1 client. A forwarded request carries `ordo-forwarded: 1` and is never
//! forwarded again; the owner's answer is relayed as it came, with its `ordo-served-by`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ApiError;
use super::error::Unreachable;
use crate::core::Partition;
use crate::metrics::Metrics;

/// Header set on a forwarded request.
pub const FORWARDED: &str = "ordo-forwarded";
/// Header naming the member that served a query.
pub const SERVED_BY: &str = "ordo-served-by";
/// How long connecting to an owner may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an owner may take to answer beyond the wait the request itself asks for.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The most bytes of an owner's answer relayed; a longer one is `503 owner_unreachable`.
pub const MAX_RELAY_BYTES: usize = 4 << 20;

/// Whether `url` is a member's base URL as `--advertise` takes it: `http://host[:port]`, with
/// no credentials, path, query or fragment.
pub fn is_base_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    uri.scheme_str() == Some("http")
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && !url.contains('#')
}

/// Whether `headers` mark a request as forwarded by another member.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.get(FORWARDED).is_some_and(|v| v == "1")
}

/// An owner's answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, Body::from(self.body)).into_response();
        for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
            if let Some(v) = self.headers.get(&name) {
                response.headers_mut().insert(name, v.clone());
            }
        }
        if let Some(v) = self.headers.get(SERVED_BY) {
            response.headers_mut().insert(SERVED_BY, v.clone());
        }
        response
    }
}

/// The pooled client to the other members.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    /// The deployment's bearer token, sent with every request to another member.
    token: Option<super::auth::Token>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Forwarder {
    /// A client to the other members, sending `token` when the deployment has one.
    pub fn new(token: Option<super::auth::Token>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Forwarder {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(64)
                .build(connector),
            token,
        }
    }

    /// `GET base + path_and_query` on the owner of `partition`, within `limit`; an owner that
    /// cannot be reached in time is `503 owner_unreachable`.
    pub async fn get(
        &self,
        metrics: &Metrics,
        partition: Partition,
        base: &str,
        path_and_query: &str,
        limit: Duration,
    ) -> Result<Answer, ApiError> {
        let unreachable = |why: Unreachable| {
            metrics.forwarded.with_label_values(&["unreachable"]).inc();
            ApiError::OwnerUnreachable(why)
        };
        let mut request = Request::get(format!("{base}{path_and_query}"))
            .header(FORWARDED, HeaderValue::from_static("1"));
        if let Some(token) = &self.token {
            request = request.header(axum::http::header::AUTHORIZATION, token.header_value());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| ApiError::Internal(e.into()))?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_RELAY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("{e} (an answer is relayed up to {MAX_RELAY_BYTES} bytes)"))?
                .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(answer)) => {
                metrics.forwarded.with_label_values(&["relayed"]).inc();
                Ok(answer)
            }
            Ok(Err(cause)) => Err(unreachable(Unreachable::Exchange {
                partition,
                url: base.to_owned(),
                cause,
            })),
            Err(_) => Err(unreachable(Unreachable::TimedOut {
                partition,
                url: base.to_owned(),
                limit,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_base_urls_are_members() {
        for ok in [
            "http://10.0.0.7:8080",
            "http://ordo-1.ordo-headless:8080/",
            "http://[::1]:1",
        ] {
            assert!(is_base_url(ok), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:8080/v1/users/u?x=",
            "http://h:1/latest/meta-data",
            "http://h:1?x=1",
            "http://user:pw@h:1",
            "https://h:1",
            "file:///etc/passwd",
            "h:1",
            "http://h:1/#x",
            "",
        ] {
            assert!(!is_base_url(bad), "{bad}");
        }
    }
}
