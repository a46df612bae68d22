//! A fault-injecting HTTP proxy between the binaries and the S3 test server, on 127.0.0.1.
//!
//! HTTP-aware just enough: it reads each request's head, draws a fault for it from a seeded
//! RNG (so a seed always produces the same sequence of decisions), and either answers itself
//! (503 SlowDown, 500 InternalError) or forwards the request with `Connection: close` and
//! pumps bytes both ways, cutting the stream where the fault says (a TCP reset, a clean
//! close, or a stall that keeps the connection open and silent). One request per upstream
//! connection, so no response parsing is needed. [`Proxy::down`] closes the port and every
//! open connection (an S3 outage without losing the server's state); [`Proxy::up`] reopens
//! the same port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way the bytes a fault counts flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server: the request body (a PUT's upload).
    Request,
    /// Server to client: the response, headers included (a GET's download).
    Response,
}

/// One fault, applied to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Wait this long before forwarding the request.
    Delay(Duration),
    /// Answer `503 SlowDown` (S3's throttling) without forwarding.
    SlowDown,
    /// Answer `500 InternalError` without forwarding.
    InternalError,
    /// Forward, then reset both connections (RST) after `after` bytes in `dir`.
    Reset { dir: Dir, after: u64 },
    /// Forward, then close both connections cleanly (FIN) after `after` bytes in `dir`.
    Close { dir: Dir, after: u64 },
    /// Forward `after` bytes in `dir`, then nothing more: the connection stays open and silent.
    Stall { dir: Dir, after: u64 },
}

impl Fault {
    /// A short name for counters and messages.
    pub fn label(&self) -> &'static str {
        match self {
            Fault::Delay(_) => "delay",
            Fault::SlowDown => "slowdown-503",
            Fault::InternalError => "internal-500",
            Fault::Reset { dir: Dir::Request, .. } => "reset-request",
            Fault::Reset { dir: Dir::Response, .. } => "reset-response",
            Fault::Close { dir: Dir::Request, .. } => "close-request",
            Fault::Close { dir: Dir::Response, .. } => "close-response",
            Fault::Stall { dir: Dir::Request, .. } => "stall-request",
            Fault::Stall { dir: Dir::Response, .. } => "stall-response",
        }
    }
}

/// Which faults to inject, how often, and to which requests.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub seed: u64,
    /// `(probability, fault)`: one uniform draw per eligible request picks the first fault
    /// whose cumulative probability covers it, or none.
    pub faults: Vec<(f64, Fault)>,
    /// HTTP methods eligible for faults; empty means every method.
    pub methods: Vec<&'static str>,
    /// Let this many eligible requests through untouched first (a fault that starts mid-run).
    pub after: u64,
    /// At most this many faults in a row on one request target (method and path, and the part
    /// number of a multipart upload's part); the next
    /// eligible request for it passes. With fewer than the client's attempts, every request
    /// succeeds in the end: a transient fault. Counted per target so that concurrent requests
    /// (wal-fetch's prefetch workers) cannot use up another request's pass.
    pub max_run: Option<u64>,
}

impl Plan {
    /// No faults: a transparent proxy.
    pub fn clean() -> Plan {
        Plan::default()
    }

    /// `fault` on a fraction `rate` of requests (of `methods`, or all when empty).
    pub fn one(seed: u64, rate: f64, fault: Fault, methods: &[&'static str]) -> Plan {
        Plan { seed, faults: vec![(rate, fault)], methods: methods.to_vec(), after: 0, max_run: None }
    }

    /// The same plan with at most `n` faults in a row.
    pub fn transient(self, n: u64) -> Plan {
        Plan { max_run: Some(n), ..self }
    }

    /// Every fault of `faults`, each on a fraction `rate` of requests.
    pub fn mixed(seed: u64, rate: f64, faults: &[Fault], methods: &[&'static str]) -> Plan {
        Plan {
            seed,
            faults: faults.iter().map(|f| (rate, *f)).collect(),
            methods: methods.to_vec(),
            after: 0,
            max_run: None,
        }
    }
}

/// splitmix64: small, seeded, good enough to spread faults (and kill times).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a plan has seen so far.
#[derive(Default)]
struct Seen {
    eligible: u64,
    /// Faults in a row, per `METHOD path`.
    faults_in_a_row: std::collections::HashMap<String, u64>,
}

struct Shared {
    upstream: SocketAddr,
    /// The plan, its RNG, and its counters.
    plan: Mutex<(Plan, Rng, Seen)>,
    counts: Mutex<BTreeMap<String, u64>>,
    /// Bumped by `down`: every connection and the accept loop of an older generation ends.
    generation: watch::Sender<u64>,
}

impl Shared {
    fn count(&self, what: &str) {
        *self.counts.lock().expect("counts").entry(what.to_string()).or_default() += 1;
    }

    fn draw(&self, method: &str, target: &str) -> Option<Fault> {
        let mut guard = self.plan.lock().expect("plan");
        let (plan, rng, seen) = &mut *guard;
        if !plan.methods.is_empty() && !plan.methods.contains(&method) {
            return None;
        }
        seen.eligible += 1;
        if seen.eligible <= plan.after {
            return None;
        }
        let mut u = rng.unit();
        let drawn = plan.faults.iter().find_map(|(p, fault)| {
            if u < *p {
                return Some(*fault);
            }
            u -= p;
            None
        });
        // One counter per object, and per part of a multipart upload (its parts go up at once).
        let path = target.split('?').next().unwrap_or(target);
        let key = match target.split(['?', '&']).find(|q| q.starts_with("partNumber=")) {
            Some(part) => format!("{method} {path}?{part}"),
            None => format!("{method} {path}"),
        };
        let run = seen.faults_in_a_row.entry(key).or_default();
        match drawn {
            Some(_) if plan.max_run.is_some_and(|n| *run >= n) => {
                *run = 0;
                None
            }
            Some(f) => {
                *run += 1;
                Some(f)
            }
            None => {
                *run = 0;
                None
            }
        }
    }
}

/// The running proxy. Dropping it stops it.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream` (`http://host:port`).
    pub fn start(upstream: &str, plan: Plan) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream}: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("fault-proxy")
            .build()
            .expect("proxy runtime");
        let seed = plan.seed;
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new((plan, Rng(seed), Seen::default())),
            counts: Mutex::new(BTreeMap::new()),
            generation: watch::channel(0).0,
        });
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        rt.spawn(accept_loop(listener, Arc::clone(&shared)));
        Proxy { endpoint: format!("http://{addr}"), addr, shared, rt: Some(rt) }
    }

    /// Replace the plan (and restart its RNG from the new seed).
    pub fn set_plan(&self, plan: Plan) {
        let seed = plan.seed;
        *self.shared.plan.lock().expect("plan") = (plan, Rng(seed), Seen::default());
    }

    /// Faults injected so far by label, plus `requests` (every request head read).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.shared.counts.lock().expect("counts").clone()
    }

    /// Close the port and every open connection: clients get "connection refused".
    pub fn down(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
        // Let the accept loop drop its listener before anyone connects again.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Listen again on the same port.
    pub fn up(&self) {
        let rt = self.rt.as_ref().expect("runtime");
        let mut tries = 0;
        let listener = loop {
            match rt.block_on(TcpListener::bind(self.addr)) {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("proxy: rebinding {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("proxy: cannot rebind {}: {e}", self.addr),
            }
        };
        rt.spawn(accept_loop(listener, Arc::clone(&self.shared)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.generation.send_modify(|g| *g += 1);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                let mut gen_rx = shared.generation.subscribe();
                gen_rx.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(client, &shared) => {}
                        _ = gen_rx.changed() => {}
                    }
                });
            }
            _ = generation.changed() => return,
        }
    }
}

/// The parts of a request head the proxy needs.
struct Head {
    method: String,
    /// The request target (path and query).
    target: String,
    content_length: Option<u64>,
    /// The head rewritten for upstream: `Connection: close`, no keep-alive.
    forward: Vec<u8>,
}

fn parse_head(raw: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next()?;
    let mut words = request_line.split(' ');
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut forward = format!("{request_line}\r\n");
    let mut content_length = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let lower = name.trim().to_ascii_lowercase();
        if lower == "connection" || lower == "keep-alive" {
            continue;
        }
        if lower == "content-length" {
            content_length = value.trim().parse().ok();
        }
        forward.push_str(line);
        forward.push_str("\r\n");
    }
    forward.push_str("Connection: close\r\n\r\n");
    Some(Head { method, target, content_length, forward: forward.into_bytes() })
}

/// Read until the end of the request head; returns the head and the body bytes read with it.
async fn read_head(client: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((buf, rest));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve(mut client: TcpStream, shared: &Shared) {
    let Some((raw, rest)) = read_head(&mut client).await else { return };
    let Some(head) = parse_head(&raw) else { return };
    shared.count("requests");
    let fault = shared.draw(&head.method, &head.target);
    if let Some(f) = &fault {
        shared.count(f.label());
    }
    match fault {
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::SlowDown) => {
            return answer(
                client,
                &head,
                rest.len() as u64,
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            )
            .await;
        }
        Some(Fault::InternalError) => {
            return answer(
                client,
                &head,
                rest.len() as u64,
                500,
                "Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
            .await;
        }
        _ => {}
    }
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else { return };
    let (request_cut, response_cut) = match fault {
        Some(Fault::Reset { dir, after }) => split_cut(dir, Cut::Reset, after),
        Some(Fault::Close { dir, after }) => split_cut(dir, Cut::Close, after),
        Some(Fault::Stall { dir, after }) => split_cut(dir, Cut::Stall, after),
        _ => (None, None),
    };
    let (client_read, client_write) = client.into_split();
    let (upstream_read, mut upstream_write) = upstream.into_split();
    if upstream_write.write_all(&head.forward).await.is_err() {
        return;
    }
    let request = pump(client_read, upstream_write, rest, request_cut);
    let response = pump(upstream_read, client_write, Vec::new(), response_cut);
    // Whichever side ends first ends the exchange: the response is complete (the server
    // closes after it), the client gave up, or a cut fired. A stalled side never ends.
    tokio::select! {
        _ = request => {}
        _ = response => {}
    }
}

/// Where a direction is cut: after how many bytes, and how.
type CutAt = Option<(u64, Cut)>;

fn split_cut(dir: Dir, cut: Cut, after: u64) -> (CutAt, CutAt) {
    match dir {
        Dir::Request => (Some((after, cut)), None),
        Dir::Response => (None, Some((after, cut))),
    }
}

/// How long a stalled connection is held open at most (a proxy `down` ends it sooner).
const STALL_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
enum Cut {
    Reset,
    Close,
    Stall,
}

/// Copy `prefix` then `from` into `to`, applying `cut` once `after` bytes went through.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, prefix: Vec<u8>, cut: CutAt) {
    let limit = cut.map(|(after, _)| after);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = prefix;
    loop {
        if pending.is_empty() {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let allowed = limit.map_or(pending.len(), |l| (l.saturating_sub(sent) as usize).min(pending.len()));
        if to.write_all(&pending[..allowed]).await.is_err() {
            return;
        }
        sent += allowed as u64;
        pending.drain(..allowed);
        if let (Some((_, how)), true) = (cut, limit.is_some_and(|l| sent >= l)) {
            match how {
                Cut::Reset => {
                    let _ = from.as_ref().set_zero_linger();
                    let _ = to.as_ref().set_zero_linger();
                    to.forget();
                }
                Cut::Close => {
                    let _ = to.shutdown().await;
                }
                // Silent, but not forever: a stalled request body is never read again, so
                // the client's giving up goes unseen; two minutes bounds the leak.
                Cut::Stall => tokio::time::sleep(STALL_LIMIT).await,
            }
            return;
        }
    }
}

/// Answer the request with an S3 error document, without forwarding it. The request body
/// (when its length is known) is read first, so the client sees a clean response.
async fn answer(
    mut client: TcpStream,
    head: &Head,
    body_read: u64,
    status: u16,
    reason: &str,
    code: &str,
    message: &str,
) {
    if let Some(len) = head.content_length {
        let mut left = len.saturating_sub(body_read);
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = (left as usize).min(buf.len());
            match tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf[..want])).await {
                Ok(Ok(n)) if n > 0 => left -= n as u64,
                _ => return,
            }
        }
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let body = if head.method == "HEAD" { String::new() } else { body };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}
