//! `--listen`: live measurements over HTTP, for Prometheus and pprof scrapers.
//!
//! The run loop publishes a summary every refresh period ([`Server::publish`]: an `Arc` swapped
//! into a watch channel, nothing rendered); the server runs on its own thread and runtime and
//! renders for each request from the latest one. A slow or stalled client holds a connection
//! task on that thread, never the event path.
//!
//! - `/metrics`: Prometheus text (OpenMetrics when `Accept` asks), see [`metrics`];
//! - `/debug/pprof/heap` and `/debug/pprof/allocs` (`?pid=N`: one process of a `--follow` or
//!   `--cgroup` run; `?seconds=N`: the allocations between a
//!   state taken at the request and one taken N seconds later, each published on demand):
//!   gzipped pprof, as Go's net/http/pprof serves them;
//! - `/report.html`: the HTML report as of now; `/`: an index.

pub mod conn;
pub mod metrics;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    report::{html, pprof},
    summary::{self, Summary, merge::frames_key},
};

/// The longest `?seconds=` of a delta profile.
pub const MAX_DELTA_SECONDS: u64 = 3600;

/// Connections served at once: more are closed as they come (each holds a descriptor and what
/// it has not yet sent).
const MAX_CONNECTIONS: usize = 64;
/// How long accepting pauses after it failed (out of descriptors): never a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--listen {addr}: not an address and port such as 127.0.0.1:9464 or [::1]:9464")]
    BadAddress { addr: String },
    #[error(
        "--listen {addr} is not a loopback address: the endpoints expose the target's symbols \
         and memory layout; add --listen-any to serve it anyway"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("--listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("--listen-token {path}: {problem}")]
    Token { path: String, problem: String },
}

/// Checks and binds the address before anything runs (a port in use fails at once).
pub fn bind(addr: &str, any: bool) -> Result<TcpListener, ServeError> {
    let parsed: SocketAddr = addr.parse().map_err(|_| ServeError::BadAddress {
        addr: addr.to_string(),
    })?;
    if !parsed.ip().is_loopback() && !any {
        return Err(ServeError::NotLoopback { addr: parsed });
    }
    let listener = TcpListener::bind(parsed).map_err(|source| ServeError::Bind {
        addr: parsed,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Bind {
            addr: parsed,
            source,
        })?;
    Ok(listener)
}

/// Reads a bearer token: the file's first line, which must not be empty.
/// The most of a token file read: a token is a line.
const MAX_TOKEN_FILE: u64 = 4096;

pub fn read_token(path: &std::path::Path) -> Result<String, ServeError> {
    let err = |problem: String| ServeError::Token {
        path: path.display().to_string(),
        problem,
    };
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    // Never blocks: a FIFO or a device is refused, not waited on.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(err("the file holds no token".into()));
    }
    if token.chars().any(char::is_control) {
        return Err(err("the token holds control characters".into()));
    }
    use std::os::unix::fs::PermissionsExt as _;
    if meta.permissions().mode() & 0o044 != 0 {
        log::warn!(
            "--listen-token {}: readable by others than its owner (chmod 600 it)",
            path.display()
        );
    }
    Ok(token)
}

/// One published state of the run.
pub struct Published {
    /// Every site listed (metrics rank them by live bytes).
    pub summary: Summary,
    /// Sites in the HTML and pprof (`--max-sites`).
    pub max_sites: usize,
    /// Sites with their own series in `/metrics` (`--max-metric-sites`).
    pub max_metric_sites: usize,
    pub page_size: u64,
    pub taken: SystemTime,
    /// The HTML report of this state, made by the first request for it and shared by the
    /// others (a page can be megabytes: never one copy per client).
    pub html: std::sync::OnceLock<Result<Bytes, String>>,
}

type Latest = watch::Receiver<Option<Arc<Published>>>;

struct State {
    latest: Latest,
    token: Option<String>,
    started: SystemTime,
    /// Asks the run loop to publish now (a delta profile's ends).
    refresh: mpsc::UnboundedSender<()>,
    /// Users (besides root) who may see the target's addresses without a token: its own.
    readers: Vec<u32>,
}

pub struct Server {
    pub addr: SocketAddr,
    tx: watch::Sender<Option<Arc<Published>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on `listener` from a thread of its own until dropped. The receiver gets a
    /// message whenever a request needs a state newer than the last published: the run loop
    /// then publishes at once.
    pub fn start(
        listener: TcpListener,
        token: Option<String>,
        readers: Vec<u32>,
    ) -> std::io::Result<(Server, mpsc::UnboundedReceiver<()>)> {
        let addr = listener.local_addr()?;
        let (tx, latest) = watch::channel(None);
        let (shutdown, stop) = oneshot::channel();
        let (refresh, requests) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            latest,
            token,
            started: SystemTime::now(),
            refresh,
            readers,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("tracer-http".into())
            .spawn(move || runtime.block_on(serve(listener, state, stop)))?;
        Ok((
            Server {
                addr,
                tx,
                shutdown: Some(shutdown),
                thread: Some(thread),
            },
            requests,
        ))
    }

    /// Makes `p` what requests see from now on.
    pub fn publish(&self, p: Published) {
        self.tx.send_replace(Some(Arc::new(p)));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tracer: warning: --listen: {e}; not serving");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                // Past the cap the connection is closed at once (dropped).
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let state = state.clone();
                let peer = stream
                    .peer_addr()
                    .ok()
                    .zip(stream.local_addr().ok())
                    .and_then(|(peer, local)| conn::peer_uid(peer, local));
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(TokioIo::new(conn::StallLimit::new(stream)), service)
                        .await;
                    drop(slot);
                });
            }
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.into())
}

/// Whether `given` is `token`, in a time that depends on neither's content nor on how long
/// `given` is: every byte of the longer is compared, against a zero past the other's end.
fn same(given: &[u8], token: &[u8]) -> bool {
    let n = given.len().max(token.len());
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let differ = (0..n).fold(u8::from(given.len() != token.len()), |d, i| {
        d | (at(given, i) ^ at(token, i))
    });
    differ == 0
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| same(given.trim().as_bytes(), token.as_bytes()))
}

fn query_seconds(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("seconds=") {
            let n: u64 = v
                .parse()
                .map_err(|_| format!("seconds={v} is not a whole number of seconds"))?;
            if n == 0 || n > MAX_DELTA_SECONDS {
                return Err(format!(
                    "seconds={v}: from 1 to {MAX_DELTA_SECONDS} seconds"
                ));
            }
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// `?pid=N`: one process of a `--follow` or `--cgroup` run.
fn query_pid(query: Option<&str>) -> Result<Option<u32>, String> {
    let Some(q) = query else { return Ok(None) };
    for pair in q.split('&') {
        if let Some(v) = pair.strip_prefix("pid=") {
            return v
                .parse()
                .map(Some)
                .map_err(|_| format!("pid={v} is not a process id"));
        }
    }
    Ok(None)
}

/// The summary of process `pid` in `summary` (the whole run's without one): its own, when the
/// run traced several.
pub fn of_process(
    summary: &Summary,
    pid: Option<u32>,
) -> Result<std::borrow::Cow<'_, Summary>, String> {
    use std::borrow::Cow;
    let Some(pid) = pid else {
        return Ok(Cow::Borrowed(summary));
    };
    if summary.processes.is_empty() && summary.target.pid == pid {
        return Ok(Cow::Borrowed(summary));
    }
    summary
        .processes
        .iter()
        .rev()
        .find(|p| p.pid == pid)
        .map(|p| Cow::Owned(p.summary.clone()))
        .ok_or_else(|| format!("pid {pid} is not one of the traced processes"))
}

/// The endpoints whose answers hold the target's addresses (its memory layout).
const WITH_ADDRESSES: [&str; 3] = ["/debug/pprof/heap", "/debug/pprof/allocs", "/report.html"];

/// `peer`: the uid of the client's process, when it is on this machine.
async fn handle(req: Request<Incoming>, state: &State, peer: Option<u32>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    if let Some(token) = &state.token
        && !authorized(&req, token)
    {
        let mut r = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"tracer\""),
        );
        return r;
    }
    let path = req.uri().path().to_string();
    if path == "/" {
        return index(state);
    }
    // Without a token, the target's layout is shown only to who could read its maps.
    if state.token.is_none()
        && WITH_ADDRESSES.contains(&path.as_str())
        && !peer.is_some_and(|uid| uid == 0 || state.readers.contains(&uid))
    {
        return text(
            StatusCode::FORBIDDEN,
            "this endpoint shows the traced process's memory layout: without --listen-token, \
             only root and the process's own user may read it\n",
        );
    }
    let Some(now) = state.latest.borrow().clone() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no measurements yet: the first is published a refresh period after tracing starts\n",
        );
    };
    match path.as_str() {
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = metrics::Format::from_accept(accept);
            let body = metrics::render(&now.summary, format, now.max_metric_sites, now.page_size);
            reply(StatusCode::OK, format.content_type(), body)
        }
        // Profiles are for tools: every site; `?pid=` one process's.
        "/debug/pprof/heap" | "/debug/pprof/allocs" => {
            let pid = match query_pid(req.uri().query()) {
                Ok(pid) => pid,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            let one = |s: &Summary| of_process(s, pid).map(std::borrow::Cow::into_owned);
            let unknown = |e: String| text(StatusCode::NOT_FOUND, format!("{e}\n"));
            if path == "/debug/pprof/heap" {
                return match one(&now.summary) {
                    Ok(s) => profile(&s, "inuse_space", now.taken),
                    Err(e) => unknown(e),
                };
            }
            match query_seconds(req.uri().query()) {
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                Ok(None) => match one(&now.summary) {
                    Ok(s) => profile(&s, "alloc_space", now.taken),
                    Err(e) => unknown(e),
                },
                Ok(Some(seconds)) => {
                    // From a state taken now to one taken N seconds later.
                    let first = fresh(state).await;
                    tokio::time::sleep(Duration::from_secs(seconds)).await;
                    let last = fresh(state).await;
                    match (one(&first.summary), one(&last.summary)) {
                        (Ok(a), Ok(b)) => {
                            profile(&allocations_between(&a, &b), "alloc_space", last.taken)
                        }
                        (Err(e), _) | (_, Err(e)) => unknown(e),
                    }
                }
            }
        }
        "/report.html" => {
            let page = now.html.get_or_init(|| {
                let mut page = Vec::new();
                html::render(&now.summary.truncated(now.max_sites), &mut page)
                    .map(|()| Bytes::from(page))
                    .map_err(|e| e.to_string())
            });
            match page {
                Ok(page) => reply(StatusCode::OK, "text/html; charset=utf-8", page.clone()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: see / for the endpoints\n",
        ),
    }
}

/// A state published after this call: the run loop is asked for one (and if it has ended,
/// the last one stands).
async fn fresh(state: &State) -> Arc<Published> {
    let mut latest = state.latest.clone();
    let _ = latest.borrow_and_update();
    let _ = state.refresh.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), latest.changed()).await;
    latest.borrow().clone().expect("published before")
}

fn profile(summary: &Summary, default_type: &str, taken: SystemTime) -> Response<Full<Bytes>> {
    let nanos = taken
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mut body = Vec::new();
    match pprof::render_served(summary, default_type, nanos, &mut body) {
        Ok(()) => {
            let mut r = reply(StatusCode::OK, "application/octet-stream", body);
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                header::HeaderValue::from_static("attachment; filename=\"profile\""),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `later` with each site's allocation counts and bytes less those of `earlier` (sites matched
/// by their frames): what was allocated in between. Live and resident values stay `later`'s.
pub fn allocations_between(earlier: &Summary, later: &Summary) -> Summary {
    let before: HashMap<summary::merge::FramesKey, (u64, u64)> = earlier
        .user
        .sites
        .iter()
        .map(|s| (frames_key(&s.stack), (s.stats.allocs, s.stats.bytes)))
        .collect();
    let mut delta = later.clone();
    for s in &mut delta.user.sites {
        if let Some(&(allocs, bytes)) = before.get(&frames_key(&s.stack)) {
            s.stats.allocs = s.stats.allocs.saturating_sub(allocs);
            s.stats.bytes = s.stats.bytes.saturating_sub(bytes);
        }
    }
    delta.duration_ms = later.duration_ms - earlier.duration_ms;
    delta
}

fn index(state: &State) -> Response<Full<Bytes>> {
    let latest = state.latest.borrow().clone();
    let (pid, command) = latest.as_ref().map_or((0, String::new()), |p| {
        (p.summary.target.pid, p.summary.target.command.join(" "))
    });
    let uptime = state.started.elapsed().unwrap_or_default().as_secs();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tracer: pid {pid}</title></head>\
         <body><h1>tracer: pid {pid}</h1><p>{}</p><p>serving for {uptime} s{}</p><ul>\
         <li><a href=\"/metrics\">/metrics</a>: Prometheus and OpenMetrics</li>\
         <li><a href=\"/debug/pprof/heap\">/debug/pprof/heap</a>: in-use space and objects, \
         resident space (pprof)</li>\
         <li><a href=\"/debug/pprof/allocs\">/debug/pprof/allocs</a>: allocated since the start; \
         <code>?seconds=N</code> for the next N seconds (pprof)</li>\
         <li><a href=\"/report.html\">/report.html</a>: the HTML report as of now</li>\
         </ul></body></html>\n",
        html::esc(&summary::visible(&command)),
        if latest.is_none() {
            " (no measurements yet)"
        } else {
            ""
        },
    );
    reply(StatusCode::OK, "text/html; charset=utf-8", page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_unless_told() {
        assert!(matches!(
            bind("0.0.0.0:0", false),
            Err(ServeError::NotLoopback { .. })
        ));
        assert!(matches!(
            bind("localhost", false),
            Err(ServeError::BadAddress { .. })
        ));
        let l = bind("127.0.0.1:0", false).unwrap();
        let taken = l.local_addr().unwrap().to_string();
        let err = bind(&taken, false).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        let msg = ServeError::NotLoopback {
            addr: "10.0.0.1:9464".parse().unwrap(),
        }
        .to_string();
        assert!(msg.contains("--listen-any"), "{msg}");
    }

    #[test]
    fn tokens_and_queries() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT") && !same(b"secret", b"secret2"));
        // A prefix, or the token padded with zero bytes, is not the token.
        assert!(!same(b"", b"secret") && !same(b"secret\0", b"secret") && !same(b"sec", b"secret"));
        assert_eq!(query_seconds(None), Ok(None));
        assert_eq!(query_seconds(Some("debug=1&seconds=30")), Ok(Some(30)));
        assert!(query_seconds(Some("seconds=0")).is_err());
        assert!(query_seconds(Some("seconds=abc")).is_err());
        assert!(query_seconds(Some("seconds=99999")).is_err());
        let dir = std::env::temp_dir().join(format!("tracer-token-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        assert_eq!(read_token(&dir).unwrap(), "s3cret");
        std::fs::write(&dir, "\n").unwrap();
        assert!(
            read_token(&dir)
                .unwrap_err()
                .to_string()
                .contains("no token")
        );
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_pid_picks_one_process_of_a_followed_run() {
        assert_eq!(query_pid(Some("seconds=5&pid=42")), Ok(Some(42)));
        assert_eq!(query_pid(Some("seconds=5")), Ok(None));
        assert!(query_pid(Some("pid=x")).is_err());
        let one = summary::tests::sample_summary();
        // One process: its pid, or none, is the whole run.
        assert_eq!(of_process(&one, None).unwrap().target.pid, 4242);
        assert_eq!(of_process(&one, Some(4242)).unwrap().target.pid, 4242);
        assert!(of_process(&one, Some(7)).is_err());
        let mut child = one.clone();
        child.target.pid = 7;
        child.user.malloc.calls = 99;
        let mut run = one.clone();
        run.processes = vec![summary::ProcessReport {
            pid: 7,
            ppid: Some(4242),
            command: vec!["child".into()],
            exit_code: None,
            signal: None,
            started_ms: 0.0,
            ended_ms: None,
            summary: child,
        }];
        let picked = of_process(&run, Some(7)).unwrap();
        assert_eq!(picked.user.malloc.calls, 99);
        let err = of_process(&run, Some(8)).unwrap_err();
        assert!(err.contains("pid 8"), "{err}");
    }

    #[test]
    fn a_delta_counts_what_was_allocated_in_between() {
        use crate::{aggregate::heap::SiteStats, summary::user::SiteReport, symbolize::Frame};
        let site = |f: &str, allocs, bytes| SiteReport {
            stack: vec![Frame {
                function: Some(f.into()),
                ..Frame::unknown(0x1000)
            }]
            .into(),
            stats: SiteStats {
                allocs,
                bytes,
                live_bytes: bytes,
                ..Default::default()
            },
            path: "brk",
            paths: Default::default(),
            caused: Default::default(),
            bytes_error: None,
            marks: Default::default(),
        };
        let mut a = summary::tests::sample_summary();
        a.user.sites = vec![site("old", 10, 1000)];
        let mut b = a.clone();
        b.user.sites = vec![site("old", 15, 1500), site("new", 2, 64)];
        b.duration_ms += 1000.0;
        let d = allocations_between(&a, &b);
        let got: Vec<_> = d
            .user
            .sites
            .iter()
            .map(|s| (s.stats.allocs, s.stats.bytes, s.stats.live_bytes))
            .collect();
        assert_eq!(got, [(5, 500, 1500), (2, 64, 64)]);
        assert_eq!(d.duration_ms, 1000.0);
    }
}
