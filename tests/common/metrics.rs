//! Reading a weir process's Prometheus endpoint (`--metrics-addr`).

use std::io::{Read, Write};
use std::time::Duration;

/// GET `path` at `addr` (host:port): the status and the body, `None` if
/// nothing answers (not started yet, stopped, killed) within 500 ms, or
/// the answer does not come within 10 s.
pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sock = std::net::ToSocketAddrs::to_socket_addrs(addr).ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The body of GET /metrics at `addr`, `None` if nothing answers with 200.
pub fn scrape(addr: &str) -> Option<String> {
    get(addr, "/metrics").and_then(|(status, body)| (status == 200).then_some(body))
}

/// Sum of the series of metric `name` (that exact name) whose line
/// contains `filter` (e.g. `reason="late"`; "" for all); `None` if no such
/// series is exported.
pub fn metric(text: &str, name: &str, filter: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
