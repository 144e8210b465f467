//! A small HTTP/1.1 GET client for the city API: a deadline on the whole
//! exchange (connect, headers, body), a cap on the body size, pooled
//! keep-alive connections, and errors that say what went wrong without the
//! request URL (which carries the API key).
//!
//! `http://` (the city serves the API on `http://…:8088`) or `https://`
//! where an endpoint (or a proxy before it) allows: the key is in the URL
//! path, so it should travel encrypted wherever it can. TLS through the
//! OpenSSL weir already links for Kafka and Postgres, verifying the server
//! against the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
//! point OpenSSL at others).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest body read (a full citydata response is a few hundred KiB).
pub(super) const MAX_BODY: usize = 16 << 20;

const USER_AGENT: &str = concat!("weir/", env!("CARGO_PKG_VERSION"), " (ingest citydata)");

/// Why a GET failed. Messages never contain the URL.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("no complete response within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP {status}{}", if .snippet.is_empty() { String::new() } else { format!(": {}", .snippet) })]
    Status { status: u16, snippet: String },
    #[error("response body larger than {} MiB", MAX_BODY >> 20)]
    TooLarge,
}

/// A base URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    #[error("--base-url {0:?} is not a URL")]
    Invalid(String),
    #[error(
        "--base-url {0:?}: only http:// and https:// are supported (the city API is served at {default})",
        default = super::citydata::DEFAULT_BASE_URL
    )]
    Scheme(String),
}

/// Check `--base-url`: an `http(s)://host[:port][/path]` URL.
pub(crate) fn check_base_url(base: &str) -> Result<(), BaseUrlError> {
    let uri: hyper::Uri = base.parse().map_err(|_| BaseUrlError::Invalid(base.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(BaseUrlError::Scheme(base.to_string())),
        None => return Err(BaseUrlError::Invalid(base.to_string())),
    }
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(BaseUrlError::Invalid(base.to_string()));
    }
    Ok(())
}

#[derive(Clone)]
pub(super) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HttpClient {
    /// Must be called inside a Tokio runtime.
    pub(super) fn new(connect_timeout: Duration) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        // https:// goes to the TLS layer above.
        connector.enforce_http(false);
        let tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
            .and_then(|ssl| HttpsConnector::with_connector(connector, ssl))
            .map_err(|e| format!("setting up TLS (OpenSSL): {e}"))?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(tls);
        Ok(Self { client })
    }

    /// GET `url`; the body of a 2xx answer. Everything, body included, must
    /// arrive within `timeout`.
    pub(super) async fn get(&self, url: &str, timeout: Duration) -> Result<Bytes, FetchError> {
        match tokio::time::timeout(timeout, self.exchange(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(timeout)),
        }
    }

    async fn exchange(&self, url: &str) -> Result<Bytes, FetchError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| FetchError::Request("the request URL is not valid".into()))?;
        let request = hyper::Request::get(uri)
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| {
            let chain = error_chain(&e);
            if e.is_connect() {
                FetchError::Connect(chain)
            } else {
                FetchError::Request(chain)
            }
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    FetchError::TooLarge
                } else {
                    FetchError::Request(format!("reading the body: {}", error_chain(e.as_ref())))
                }
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                snippet: snippet(&body),
            });
        }
        Ok(body)
    }
}

/// An error and its sources, `a: b: c`, without repeats.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The start of a body for a log line: one line, at most 200 characters.
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(200).collect();
    if one_line.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_http_or_https() {
        assert!(check_base_url("http://openapi.seoul.go.kr:8088").is_ok());
        assert!(check_base_url("http://127.0.0.1:1234/prefix/").is_ok());
        assert!(check_base_url("https://openapi.seoul.go.kr").is_ok());
        let e = check_base_url("ftp://openapi.seoul.go.kr:8088").unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
        assert!(check_base_url("openapi.seoul.go.kr").is_err());
        assert!(check_base_url("http://").is_err());
        assert!(check_base_url("not a url").is_err());
    }

    #[test]
    fn snippets_are_short_single_lines() {
        assert_eq!(
            snippet(b"<h1>500</h1>\n  Internal\r\nError"),
            "<h1>500</h1> Internal Error"
        );
        let long = "가".repeat(300);
        let s = snippet(long.as_bytes());
        assert_eq!(s.chars().count(), 201);
        assert!(s.ends_with('…'));
        assert_eq!(
            FetchError::Status {
                status: 500,
                snippet: String::new()
            }
            .to_string(),
            "HTTP 500"
        );
        assert_eq!(
            FetchError::Timeout(Duration::from_millis(1500)).to_string(),
            "no complete response within 1s 500ms"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = HttpClient::new(Duration::from_secs(2)).unwrap();
        let err = client
            .get(&format!("http://127.0.0.1:{port}/secret/json"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
