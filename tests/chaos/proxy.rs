//! A small TCP proxy the chaos campaign controls (std threads, no runtime):
//! it listens on a port, forwards every connection to an upstream address
//! (the broker's `PROXIED` listener, see `./dev help`), and can at any
//! moment
//!
//! - delay every forwarded chunk, in both directions ([`Proxy::set_latency`]);
//! - reset every open connection with an RST, `SO_LINGER` 0
//!   ([`Proxy::reset_all`]);
//! - black-hole: keep the connections open (and accept new ones) but forward
//!   nothing ([`Proxy::set_blackhole`]; the campaign resets them when it
//!   ends it, as a partition that heals with the connections timed out);
//! - refuse new connections: accept and reset them at once
//!   ([`Proxy::set_refuse`]);
//! - black-hole the connections of one process only ([`Proxy::isolate`]):
//!   every connection is told apart by the process that holds its client
//!   end, found through `/proc` (the socket's inode in `/proc/net/tcp`,
//!   then `/proc/<pid>/fd`), so one instance of a group can be cut off
//!   while the others go on. All the instances reach the broker through the
//!   one address its `PROXIED` listener advertises, so the proxy cannot
//!   tell them apart by port.
//!
//! Each connection has, per direction, a reader thread (reads chunks as they
//! come, timestamps them) and a writer thread (writes each chunk once it is
//! `latency` old and no black hole is on), so latency does not cap
//! throughput. The sockets are shared by the four threads of a connection
//! (`&TcpStream` reads and writes) and closed when the last one exits.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What every connection of a proxy consults before forwarding a chunk.
#[derive(Default)]
struct Shared {
    latency_ms: AtomicU64,
    blackhole: AtomicBool,
    refuse: AtomicBool,
    stop: AtomicBool,
    /// The process whose connections are black-holed (0: none).
    isolated: AtomicU64,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Weak<Conn>>>,
}

/// One proxied connection: both sockets, owned by its four threads.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    dead: AtomicBool,
    /// Held by the isolated process: nothing forwarded.
    isolated: AtomicBool,
}

impl Conn {
    /// Ends the connection. `rst`: with `SO_LINGER` 0 the sockets send an
    /// RST when the last thread closes them (`shutdown(Read)` wakes the
    /// blocked readers without sending anything); else FIN both ways.
    fn kill(&self, rst: bool) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        for s in [&self.client, &self.upstream] {
            if rst {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                let _ = s.shutdown(Shutdown::Read);
            } else {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    fn dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// A running proxy; stops (and resets its connections) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `listen` (port 0: any free port) and forwards to
    /// `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, upstream, sh))?;
        Ok(Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delay of every chunk from now on (chunks already waiting too), in
    /// both directions; zero: none.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// On: nothing is forwarded any more (chunks are held), connections
    /// stay open and new ones are accepted. Off: what was held goes on.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::SeqCst);
    }

    /// On: every new connection is accepted and reset at once.
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Resets every open connection (an RST to both ends); how many.
    pub fn reset_all(&self) -> usize {
        let conns: Vec<Arc<Conn>> = {
            let mut map = self.shared.conns.lock().unwrap();
            let live = map.values().filter_map(Weak::upgrade).collect();
            map.clear();
            live
        };
        let n = conns.iter().filter(|c| !c.dead()).count();
        for c in &conns {
            c.kill(true);
        }
        n
    }

    /// Black-holes every connection of process `pid`, open now or opened
    /// until [`Proxy::heal`] (the others go on); how many are open now.
    pub fn isolate(&self, pid: u32) -> usize {
        self.shared.isolated.store(pid as u64, Ordering::SeqCst);
        let conns: Vec<Arc<Conn>> = {
            let map = self.shared.conns.lock().unwrap();
            map.values().filter_map(Weak::upgrade).filter(|c| !c.dead()).collect()
        };
        let mut n = 0;
        for c in conns {
            if c.client.peer_addr().ok().and_then(owner) == Some(pid) {
                c.isolated.store(true, Ordering::SeqCst);
                n += 1;
            }
        }
        n
    }

    /// Ends an isolation: the isolated connections are reset (they timed
    /// out meanwhile), new ones flow; how many were reset.
    pub fn heal(&self) -> usize {
        self.shared.isolated.store(0, Ordering::SeqCst);
        let conns: Vec<Arc<Conn>> = {
            let map = self.shared.conns.lock().unwrap();
            map.values().filter_map(Weak::upgrade).collect()
        };
        let cut: Vec<&Arc<Conn>> = conns
            .iter()
            .filter(|c| c.isolated.load(Ordering::SeqCst) && !c.dead())
            .collect();
        for c in &cut {
            c.kill(true);
        }
        cut.len()
    }

    /// Every open connection silently cut for good (a NAT or a load
    /// balancer that dropped their state, a server failed over behind the
    /// same address): nothing more is forwarded on them, nothing tells
    /// either end; new connections flow. How many.
    pub fn strand_all(&self) -> usize {
        let conns: Vec<Arc<Conn>> = {
            let mut map = self.shared.conns.lock().unwrap();
            let live = map.values().filter_map(Weak::upgrade).filter(|c| !c.dead()).collect();
            // Forgotten: a later reset or heal leaves them as they are.
            map.clear();
            live
        };
        for c in &conns {
            c.isolated.store(true, Ordering::SeqCst);
        }
        conns.len()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        let map = self.shared.conns.lock().unwrap();
        map.values().filter_map(Weak::upgrade).filter(|c| !c.dead()).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.reset_all();
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            drop(client);
            continue;
        }
        let sh = shared.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-connect".into())
            .stack_size(64 * 1024)
            .spawn(move || connect(client, upstream, sh));
    }
}

/// Connects to `upstream` for `client` and starts the connection's threads.
fn connect(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    let up = match TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(_) => {
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return;
        }
    };
    for s in [&client, &up] {
        let _ = s.set_nodelay(true);
        // Writers check for a reset at least this often while the peer
        // does not read.
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    }
    let isolated = match shared.isolated.load(Ordering::SeqCst) {
        0 => false,
        pid => client.peer_addr().ok().and_then(owner) == Some(pid as u32),
    };
    let conn = Arc::new(Conn {
        client,
        upstream: up,
        dead: AtomicBool::new(false),
        isolated: AtomicBool::new(isolated),
    });
    {
        let mut map = shared.conns.lock().unwrap();
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(shared.next_id.fetch_add(1, Ordering::SeqCst), Arc::downgrade(&conn));
    }
    for to_upstream in [true, false] {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let (c, sh) = (conn.clone(), shared.clone());
        let _ = std::thread::Builder::new()
            .name("proxy-read".into())
            .stack_size(128 * 1024)
            .spawn(move || read_side(&c, to_upstream, tx));
        let c = conn.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-write".into())
            .stack_size(64 * 1024)
            .spawn(move || write_side(&c, to_upstream, rx, &sh));
    }
}

/// Reads chunks from one end, timestamped, for the writer of the other.
fn read_side(conn: &Conn, to_upstream: bool, tx: mpsc::Sender<(Instant, Vec<u8>)>) {
    let mut src = if to_upstream { &conn.client } else { &conn.upstream };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match src.read(&mut buf) {
            // EOF: the writer sends what is queued, then a FIN.
            Ok(0) => return,
            Ok(n) => {
                if conn.dead() || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                // Reset by that end: reset the other one too.
                conn.kill(true);
                return;
            }
        }
    }
}

/// Writes each chunk to the other end once due (and no black hole is on).
fn write_side(conn: &Conn, to_upstream: bool, rx: mpsc::Receiver<(Instant, Vec<u8>)>, shared: &Shared) {
    let mut dst = if to_upstream { &conn.upstream } else { &conn.client };
    loop {
        let (at, data) = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(x) => x,
            Err(mpsc::RecvTimeoutError::Timeout) if conn.dead() => return,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The source end closed (or the connection is being reset).
                if !conn.dead() {
                    let _ = dst.shutdown(Shutdown::Write);
                }
                return;
            }
        };
        loop {
            if conn.dead() {
                return;
            }
            if shared.blackhole.load(Ordering::SeqCst) || conn.isolated.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let due = at + Duration::from_millis(shared.latency_ms.load(Ordering::SeqCst));
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(10)));
        }
        let mut off = 0;
        while off < data.len() {
            match dst.write(&data[off..]) {
                Ok(0) => {
                    conn.kill(true);
                    return;
                }
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    if conn.dead() {
                        return;
                    }
                }
                Err(_) => {
                    conn.kill(true);
                    return;
                }
            }
        }
    }
}

/// The process holding the local end `addr` of a TCP connection (IPv4,
/// this host): the socket's inode from `/proc/net/tcp`, then the process
/// whose `/proc/<pid>/fd` links to it. `None` if gone or not ours to see.
fn owner(addr: SocketAddr) -> Option<u32> {
    let SocketAddr::V4(v4) = addr else { return None };
    // `0100007F:1F90`: the address as the kernel's u32 in host (little-
    // endian) order, the port big-endian, both in hex.
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&want.as_str())).then(|| cols.get(9).map(|s| s.to_string()))?
    })?;
    let link = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        std::fs::read_dir(e.path().join("fd"))
            .ok()?
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()))
            .then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    //! The proxy alone, against an echo server: runs in plain `cargo test`
    //! (no broker, no database).

    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// An echo server on a free port; counts the bytes it received.
    fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let r = received.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        r.fetch_add(n, Ordering::SeqCst);
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, received)
    }

    fn proxied() -> (Proxy, Arc<AtomicUsize>) {
        let (echo, received) = echo_server();
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo).unwrap();
        (proxy, received)
    }

    fn client(proxy: &Proxy) -> TcpStream {
        let s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends `msg`, reads the echo; the round trip.
    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let t = Instant::now();
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
        t.elapsed()
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn proxy_forwards_and_adds_latency() {
        let (proxy, _) = proxied();
        let mut s = client(&proxy);
        let fast = round_trip(&mut s, b"hello");
        assert!(fast < Duration::from_millis(200), "no latency set: {fast:?}");
        // A big message arrives whole.
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        round_trip(&mut s, &big);

        proxy.set_latency(Duration::from_millis(300));
        let slow = round_trip(&mut s, b"again");
        // 300 ms each way.
        assert!(
            slow >= Duration::from_millis(580),
            "latency 300 ms: round trip {slow:?}"
        );
        assert!(
            slow < Duration::from_millis(2000),
            "latency 300 ms: round trip {slow:?}"
        );
        // Latency delays, it does not serialise: ten chunks in flight at once.
        let t = Instant::now();
        for k in 0..10u8 {
            s.write_all(&[k]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut got = [0u8; 10];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "pipelined: {:?}",
            t.elapsed()
        );

        proxy.set_latency(Duration::ZERO);
        let fast = round_trip(&mut s, b"fast");
        assert!(fast < Duration::from_millis(200), "latency off: {fast:?}");
    }

    #[test]
    fn proxy_resets_connections() {
        let (proxy, _) = proxied();
        let mut a = client(&proxy);
        let mut b = client(&proxy);
        round_trip(&mut a, b"a");
        round_trip(&mut b, b"b");
        wait_until("2 connections", || proxy.open() == 2);
        assert_eq!(proxy.reset_all(), 2);
        for s in [&mut a, &mut b] {
            let mut buf = [0u8; 8];
            let err = s.read(&mut buf).expect_err("a reset connection reads an error");
            assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        }
        // New connections work.
        let mut c = client(&proxy);
        round_trip(&mut c, b"c");
    }

    #[test]
    fn proxy_blackhole_forwards_nothing() {
        let (proxy, received) = proxied();
        let mut s = client(&proxy);
        round_trip(&mut s, b"before");
        let before = received.load(Ordering::SeqCst);
        proxy.set_blackhole(true);
        s.write_all(b"into the void").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
        let mut buf = [0u8; 64];
        let err = s.read(&mut buf).expect_err("nothing comes back");
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
        assert_eq!(received.load(Ordering::SeqCst), before, "the server received nothing");
        // New connections are accepted and held too.
        let mut t = client(&proxy);
        t.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        t.write_all(b"x").unwrap();
        assert!(t.read(&mut buf).is_err());
        assert_eq!(received.load(Ordering::SeqCst), before);
        // The partition ends with the connections reset.
        assert_eq!(proxy.reset_all(), 2);
        proxy.set_blackhole(false);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let err = s.read(&mut buf).expect_err("reset");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        assert_eq!(received.load(Ordering::SeqCst), before, "held data was dropped");
        let mut u = client(&proxy);
        round_trip(&mut u, b"after");
    }

    #[test]
    fn proxy_refuses_new_connections() {
        let (proxy, received) = proxied();
        let mut kept = client(&proxy);
        round_trip(&mut kept, b"kept");
        proxy.set_refuse(true);
        let mut s = client(&proxy);
        let _ = s.write_all(b"refused");
        let mut buf = [0u8; 8];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("a refused connection read {n} bytes"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
        assert_eq!(received.load(Ordering::SeqCst), 4, "only `kept` reached the server");
        // Open connections are not affected.
        round_trip(&mut kept, b"still");
        proxy.set_refuse(false);
        let mut t = client(&proxy);
        round_trip(&mut t, b"back");
    }

    #[test]
    fn proxy_strands_open_connections_and_lets_new_ones_flow() {
        let (proxy, _) = proxied();
        let mut old = client(&proxy);
        round_trip(&mut old, b"before");
        assert_eq!(proxy.strand_all(), 1);
        old.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        old.write_all(b"lost").unwrap();
        let mut buf = [0u8; 4];
        let e = old
            .read(&mut buf)
            .expect_err("nothing forwarded on a stranded connection");
        assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e:?}");
        let mut fresh = client(&proxy);
        round_trip(&mut fresh, b"new ones flow");
        // Not reset later either: the client has to notice by itself.
        proxy.reset_all();
        let e = old.read(&mut buf).expect_err("still silent");
        assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e:?}");
    }

    #[test]
    fn proxy_isolates_the_connections_of_one_process() {
        let (proxy, _) = proxied();
        let mut s = client(&proxy);
        round_trip(&mut s, b"before");
        // The client end of the connection is this process's.
        assert_eq!(owner(s.local_addr().unwrap()), Some(std::process::id()));
        // Another process isolated: ours flow.
        assert_eq!(proxy.isolate(1), 0);
        round_trip(&mut s, b"others cut off");
        // Ours isolated: the open connection and a new one hold everything.
        assert_eq!(proxy.heal(), 0);
        assert_eq!(proxy.isolate(std::process::id()), 1);
        let mut fresh = client(&proxy);
        fresh.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        for c in [&mut s, &mut fresh] {
            c.write_all(b"held").unwrap();
            let mut buf = [0u8; 4];
            let e = c.read(&mut buf).expect_err("nothing forwarded while isolated");
            assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e:?}");
        }
        // Healed: the isolated connections are reset, a new one flows.
        wait_until("the fresh connection counted", || proxy.open() == 2);
        assert_eq!(proxy.heal(), 2);
        let mut buf = [0u8; 4];
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "an isolated connection is reset when the isolation ends"
        );
        let mut after = client(&proxy);
        round_trip(&mut after, b"healed");
    }
}
