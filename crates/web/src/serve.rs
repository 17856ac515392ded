//! The server: a listener that bounds open connections (and speaks TLS when configured), the
//! router, and the guards every request passes before a handler sees it: GET or HEAD only,
//! a bounded URI, the access token, and the security headers on every answer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::answers::{ANSWER_BYTES_HELD_MAX, AnswerBudget};
use crate::auth::Access;
use crate::{Dashboard, WebError, api, metrics, pages};

/// Connections open at once, at most: a dashboard must never take the gateway's resources.
const CONNECTIONS_MAX: usize = 64;
/// Connections one client address may hold open at once: a client that opens many and sends
/// nothing takes this share of [`CONNECTIONS_MAX`], and cannot lock the others out (the token
/// is only asked once a request comes).
const CONNECTIONS_PER_CLIENT_MAX: usize = 16;
/// The longest request line accepted (path and query), in bytes.
pub(crate) const URI_BYTES_MAX: usize = 2048;
/// A TLS handshake must be over within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answers' security headers: nothing from elsewhere, no framing, no sniffing, no caching.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A running web server: [`RunningWeb::stop`] stops it (dropping it stops it too, at once).
pub struct RunningWeb {
    pub address: SocketAddr,
    /// The one-time login link (when access needs a token), to print at start.
    pub login_url: Option<String>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWeb {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Clone)]
pub(crate) struct App {
    pub dashboard: Arc<Dashboard>,
    pub access: Arc<Access>,
    pub rates: Arc<api::Rates>,
    /// Permits for historian queries ([`QUERIES_AT_ONCE`]).
    pub queries: Arc<Semaphore>,
    /// The bytes of large answers held at once.
    pub answers: AnswerBudget,
}

/// Starts the web server of `config` over `dashboard` on the current tokio runtime (call it
/// from within the runtime).
pub fn start(config: &airlock_config::Web, dashboard: Dashboard) -> Result<RunningWeb, WebError> {
    let listen = |source| WebError::Listen { address: config.listen, source };
    let listener = std::net::TcpListener::bind(config.listen).map_err(listen)?;
    start_on(listener, config, dashboard)
}

/// As [`start`], on a listener bound already (the demo binds its own, falling back to a free
/// port); `config.listen` is then only what it was asked for.
pub fn start_on(
    listener: std::net::TcpListener,
    config: &airlock_config::Web,
    dashboard: Dashboard,
) -> Result<RunningWeb, WebError> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            airlock_tls::server_config(cert, key).map_err(WebError::Tls)?,
        ))),
        None => None,
    };
    let token = match &config.token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| WebError::Token(format!("the variable {var} is not set")))?),
        None => None,
    };
    let access = Arc::new(Access::new(token, tls.is_some()).map_err(WebError::Token)?);
    let listen = |source| WebError::Listen { address: config.listen, source };
    listener.set_nonblocking(true).map_err(listen)?;
    let listener = TcpListener::from_std(listener).map_err(listen)?;
    let address = listener.local_addr().map_err(|source| WebError::Listen { address: config.listen, source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let login_url = access.login_code().map(|code| format!("{scheme}://{address}/login?code={code}"));
    let queries = Arc::new(Semaphore::new(QUERIES_AT_ONCE));
    let answers = AnswerBudget::new(ANSWER_BYTES_HELD_MAX);
    let app = App { dashboard: Arc::new(dashboard), access, rates: Arc::default(), queries, answers };
    let router = router(app);
    let (stop, stopped) = watch::channel(false);
    let accepting = Accepting::start(listener, tls, stopped.clone());
    let task = tokio::spawn(serve(accepting, router, stopped));
    log::info!("web: dashboard on {scheme}://{address}/");
    Ok(RunningWeb { address, login_url, stop, task })
}

/// Historian queries run at once, at most: the historian's lock is shared with the writer the
/// plant's data goes through.
pub(crate) const QUERIES_AT_ONCE: usize = 2;
/// A request's headers must arrive within this (a client that trickles them is cut off).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no byte read for this long is closed (idle keep-alive included).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// When stopping, open connections get this long to finish their answer.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Serves each connection on a task of its own (hyper's HTTP/1.1, header timeout), until
/// `stopped`; then gives open connections [`STOP_GRACE`] and cuts the rest.
async fn serve(mut accepting: Accepting, router: Router, mut stopped: watch::Receiver<bool>) {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let connection = tokio::select! {
            c = accepting.ready.recv() => c,
            _ = stopped.wait_for(|s| *s) => None,
        };
        let Some((io, _peer)) = connection else { break };
        let service = service.clone();
        connections.spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .await;
            if let Err(e) = served {
                log::debug!("web: a connection ended: {e}");
            }
        });
        // Reap finished connections as we go, so the set stays as small as what is open.
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(STOP_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    connections.abort_all();
}

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/tags", get(pages::tags))
        .route("/trend", get(pages::trend))
        .route("/trend.svg", get(pages::trend_svg))
        .route("/events", get(pages::events))
        .route("/ledger", get(pages::ledger))
        .route("/static/app.css", get(pages::css))
        .route("/static/app.js", get(pages::js))
        .route("/login", get(crate::auth::login))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/overview", get(api::overview))
        .route("/api/v1/devices", get(api::devices))
        .route("/api/v1/tags", get(api::tags))
        .route("/api/v1/values", get(api::values))
        .route("/api/v1/history", get(api::history))
        .route("/api/v1/history.csv", get(api::history_csv))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/sinks", get(api::sinks))
        .route("/api/v1/ledger", get(api::ledger))
        .route("/api/v1/openapi.json", get(api::openapi))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Every request: GET or HEAD only (405 otherwise, whatever the path), a bounded URI, the
/// access token where one is needed; and the security headers on every answer.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let mut response = if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r =
            (StatusCode::METHOD_NOT_ALLOWED, "airlock's web face is read-only: GET and HEAD only\n").into_response();
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if request.uri().to_string().len() > URI_BYTES_MAX {
        (StatusCode::URI_TOO_LONG, format!("the request's path and query may be {URI_BYTES_MAX} bytes at most\n"))
            .into_response()
    } else if !app.access.needs_token() && !host_is_local(request.headers()) {
        // Without a token, only a browser that asked for this box by address or as localhost
        // is answered: a page elsewhere cannot rebind a name of its own to 127.0.0.1 and read.
        (StatusCode::MISDIRECTED_REQUEST, "ask for this dashboard by its address (127.0.0.1) or as localhost\n")
            .into_response()
    } else if request.uri().path() != "/login" && !app.access.allows(request.headers()) {
        let mut r =
            (StatusCode::UNAUTHORIZED, "a token is needed: the bearer header, or the login link\n").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(request).await
    };
    let refused = matches!(
        response.status(),
        StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::URI_TOO_LONG
            | StatusCode::MISDIRECTED_REQUEST
            | StatusCode::UNAUTHORIZED
    );
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    // A refused request ends its connection: clients without the token could otherwise hold
    // every connection the dashboard takes, asking again on each before the idle timeout.
    if refused {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request's Host is an IP address or `localhost` (any port; none given is fine).
fn host_is_local(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return true };
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host })
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// An answer of `content_type` (for handlers).
pub(crate) fn typed(content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A 400 that says what was wrong with the request.
pub(crate) fn bad_request(what: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", what.into())).into_response()
}

/// A connection the server reads, counted against [`CONNECTIONS_MAX`] until it closes, and
/// closed when nothing has been read from it for [`IDLE_TIMEOUT`].
pub(crate) struct Connection {
    io: Pin<Box<dyn ReadWrite>>,
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Connection {
    fn new(io: Pin<Box<dyn ReadWrite>>, permit: OwnedSemaphorePermit, client: ClientSlot) -> Self {
        Self { io, _permit: permit, _client: client, idle: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)) }
    }
}

/// Connections open per client address.
#[derive(Clone, Default)]
struct Clients(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One connection of a client, counted until it closes.
pub(crate) struct ClientSlot {
    clients: Clients,
    address: std::net::IpAddr,
}

impl Clients {
    /// A slot for one more connection of `address`; `None` when it holds its share already.
    fn take(&self, address: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = self.0.lock().ok()?;
        let n = open.entry(address).or_default();
        if *n >= CONNECTIONS_PER_CLIENT_MAX {
            return None;
        }
        *n += 1;
        Some(ClientSlot { clients: self.clone(), address })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.clients.0.lock()
            && let Some(n) = open.get_mut(&self.address)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.address);
            }
        }
    }
}

trait ReadWrite: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> ReadWrite for T {}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut().poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = tokio::time::Instant::now() + IDLE_TIMEOUT;
                self.idle.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle for too long"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

/// Accepts on a task of its own: at most [`CONNECTIONS_MAX`] open at once (the next waits in
/// the kernel's backlog), each TLS handshake on a task of its own under a timeout, so that a
/// slow or hostile client holds up nobody else.
struct Accepting {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
}

impl Accepting {
    fn start(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, mut stop: watch::Receiver<bool>) -> Self {
        let (tx, ready) = mpsc::channel(8);
        let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        let clients = Clients::default();
        tokio::spawn(async move {
            loop {
                let permit = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => p,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let Ok(permit) = permit else { return };
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        log::warn!("web: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // A client over its share: closed at once, its permit given back.
                let Some(client) = clients.take(peer.ip()) else {
                    log::debug!(
                        "web: {peer} holds {CONNECTIONS_PER_CLIENT_MAX} connections already; one more is closed"
                    );
                    continue;
                };
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let connection = Connection::new(Box::pin(stream), permit, client);
                        if tx.send((connection, peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    let _ = tx.send((Connection::new(Box::pin(tls), permit, client), peer)).await;
                                }
                                Ok(Err(e)) => log::debug!("web: TLS handshake with {peer}: {e}"),
                                Err(_) => log::debug!("web: TLS handshake with {peer} took too long"),
                            }
                        });
                    }
                }
            }
        });
        Self { ready }
    }
}
