//! Metric names and the Prometheus exporter, with the health endpoints.
//!
//! Names follow Kafka Streams' (records consumed/processed/produced, process
//! latency, commit latency, dropped records, restore progress), prefixed
//! `weir_`; every series is listed in `docs/metrics.md`. Latencies are real
//! Prometheus histograms (explicit buckets), not summaries, so they can be
//! aggregated across the instances of a group.
//!
//! The metrics address serves `/metrics`, `/healthz` and `/readyz` (see
//! [`crate::health`]); any other path is 404. The exporter's own listener
//! answers every path with the metrics text, so this is a small hyper
//! server of its own (hyper is the exporter's dependency anyway).
//!
//! The server must never cost the process what it needs to work: every
//! connection is a file descriptor, and under the common 1,024 descriptor
//! limit idle clients could otherwise take the ones a broker reconnect, a
//! new RocksDB file or a restore needs. So it holds at most
//! [`MAX_CONNECTIONS`] at once (one more is closed as soon as it is
//! accepted, not queued), gives a client [`HEADER_READ_TIMEOUT`] to send
//! its request head (which also closes an idle keep-alive connection:
//! hyper runs that timer while it waits for the next request), and ends
//! any connection after [`CONNECTION_LIFETIME`] (a client that never
//! reads its response).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::health::Health;

/// Buckets (seconds) for every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// How often histograms are drained when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Connections served at once; one more is closed when accepted. A
/// Prometheus or two and the probes of an orchestrator need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// How long a client has to send a request's head, counted from when the
/// server starts waiting for it: on a new connection, and on a keep-alive
/// connection after each response (so an idle keep-alive connection is
/// closed after this long). Prometheus sends its request at once, and its
/// scrape interval (15 s by default) is longer anyway: it reconnects, one
/// TCP handshake per scrape.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Any connection ends after this long, whatever it is doing.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Largest request head read (hyper's minimum; the default is ~400 KiB per
/// connection).
const MAX_REQUEST_BUFFER: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("metrics recorder: {0}")]
    Build(#[from] BuildError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Install the global recorder and serve `/metrics`, `/healthz` and
/// `/readyz` on `addr` (bound before this returns, so a taken port is an
/// error here). Must be called inside a Tokio runtime.
pub fn install(addr: SocketAddr) -> Result<(), InstallError> {
    let listener = bind(addr)?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(serve(listener, Some(handle), crate::health::global()));
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, InstallError> {
    let err = |source| InstallError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(err)
}

/// Serve `/metrics`, `/healthz` and `/readyz` until the process ends.
async fn serve(listener: tokio::net::TcpListener, metrics: Option<PrometheusHandle>, health: &'static Health) {
    accept_loop(listener, "metrics", MAX_CONNECTIONS, move |req| {
        let response = respond(&req, metrics.as_ref(), health);
        async move { response }
    })
    .await
}

/// Accept connections until the process ends, at most `max_connections`
/// at once, each served by `handler` within the limits above (also the
/// query server's, `query`).
pub(crate) async fn accept_loop<H, F>(
    listener: tokio::net::TcpListener,
    name: &'static str,
    max_connections: usize,
    handler: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper ignores the header read timeout (silently).
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BUFFER)
        .keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE/ENFILE included: the connection waits in the
                // backlog, nothing is taken from the process meanwhile.
                tracing::warn!(error = %e, "{name} listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Full: close it now (its descriptor freed at once) rather than
        // keep it waiting for a slot.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(
                max = max_connections,
                "{name} listener: too many connections, closing one"
            );
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "{name} listener: connection ended"),
                Ok(Ok(())) => {}
                Err(_) => tracing::debug!("{name} listener: connection open too long, closed"),
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn respond<B>(req: &Request<B>, metrics: Option<&PrometheusHandle>, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET and HEAD\n".into());
    }
    let verdict = |r: Result<(), String>, ok: &str| match r {
        Ok(()) => text(StatusCode::OK, PLAIN, format!("{ok}\n")),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
    };
    match req.uri().path() {
        "/metrics" => match metrics {
            Some(h) => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", h.render()),
            None => text(StatusCode::OK, PLAIN, String::new()),
        },
        "/healthz" => verdict(health.liveness(), "ok"),
        "/readyz" => verdict(health.readiness(), "ready"),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: /metrics, /healthz and /readyz are served here\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Role;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn status(response: &str) -> &str {
        response.split(' ').nth(1).unwrap_or("")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_health_and_metrics_and_404_elsewhere() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let health: &'static Health = Box::leak(Box::new(Health::new()));
        health.set_role(Role::Run);
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("weir_test_total", "topology" => "t").increment(3);
        });
        tokio::spawn(serve(listener, Some(handle), health));
        let r = tokio::task::spawn_blocking(move || {
            let metrics = get(addr, "GET", "/metrics");
            let alive = get(addr, "GET", "/healthz");
            let starting = get(addr, "GET", "/readyz");
            health.beat();
            health.set_in_group(true);
            let ready = get(addr, "GET", "/readyz");
            let other = get(addr, "GET", "/");
            let other2 = get(addr, "GET", "/metricsx");
            let post = get(addr, "POST", "/metrics");
            (metrics, alive, starting, ready, other, other2, post)
        })
        .await
        .unwrap();
        let (metrics, alive, starting, ready, other, other2, post) = r;
        assert_eq!(status(&metrics), "200", "{metrics}");
        assert!(metrics.contains("weir_test_total{topology=\"t\"} 3"), "{metrics}");
        assert_eq!(status(&alive), "200", "{alive}");
        assert_eq!(status(&starting), "503", "{starting}");
        assert!(starting.contains("starting"), "{starting}");
        assert!(!starting.contains("weir_test_total"), "{starting}");
        assert_eq!(status(&ready), "200", "{ready}");
        assert_eq!(status(&other), "404", "{other}");
        assert_eq!(status(&other2), "404", "{other2}");
        assert_eq!(status(&post), "405", "{post}");
    }

    /// Reads until the peer closes (Ok(bytes)) or `within` passes (Err).
    fn closed_within(s: &mut std::net::TcpStream, within: Duration) -> Result<usize, String> {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        let mut n = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(n),
                Err(e) => return Err(format!("still open: {e}")),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_and_excess_connections_are_closed() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let health: &'static Health = Box::leak(Box::new(Health::new()));
        tokio::spawn(serve(listener, None, health));
        tokio::task::spawn_blocking(move || {
            // Every slot taken by a half-sent request…
            let mut idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
                .map(|_| {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
                    s
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            // …so one more is closed at once, not queued.
            let mut extra = std::net::TcpStream::connect(addr).unwrap();
            assert_eq!(
                closed_within(&mut extra, Duration::from_secs(2)),
                Ok(0),
                "excess connection"
            );
            let started = std::time::Instant::now();
            // The half-sent ones are closed after the header read timeout.
            for s in &mut idle {
                closed_within(s, HEADER_READ_TIMEOUT + Duration::from_secs(3)).expect("half-sent request closed");
            }
            assert!(started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1));
            // Then the server answers again; a keep-alive connection left
            // idle after its response is closed after the same timeout.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            let served = std::time::Instant::now();
            closed_within(&mut s, HEADER_READ_TIMEOUT + Duration::from_secs(3)).expect("idle keep-alive closed");
            assert!(served.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1));
        })
        .await
        .unwrap();
    }
}
