//! The server: a listener that bounds open connections (and speaks TLS when configured), the
//! router, and the guards every request passes before a handler sees it: GET or HEAD only,
//! a bounded URI, the access token, and the security headers on every answer.

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

use crate::auth::Access;
use crate::{Dashboard, WebError, api, metrics, pages};

/// Connections open at once, at most: a dashboard must never take the gateway's resources.
const CONNECTIONS_MAX: usize = 64;
/// The longest request line accepted (path and query), in bytes.
pub(crate) const URI_BYTES_MAX: usize = 2048;
/// A TLS handshake must be over within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The answers' security headers: nothing from elsewhere, no framing, no sniffing, no caching.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A running web server. Dropping it does not stop it: call [`RunningWeb::stop`].
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
}

/// Starts the web server of `config` over `dashboard` on the current tokio runtime (call it
/// from within the runtime).
pub fn start(config: &airlock_config::Web, dashboard: Dashboard) -> Result<RunningWeb, WebError> {
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
    let listener = std::net::TcpListener::bind(config.listen).map_err(listen)?;
    listener.set_nonblocking(true).map_err(listen)?;
    let listener = TcpListener::from_std(listener).map_err(listen)?;
    let address = listener.local_addr().map_err(|source| WebError::Listen { address: config.listen, source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let login_url = access.login_code().map(|code| format!("{scheme}://{address}/login?code={code}"));
    let app = App { dashboard: Arc::new(dashboard), access, rates: Arc::default() };
    let router = router(app);
    let (stop, mut stopped) = watch::channel(false);
    let accepting = Accepting::start(listener, tls, stopped.clone());
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(accepting, router).with_graceful_shutdown(shutdown).await {
            log::error!("web: the server stopped: {e}");
        }
    });
    log::info!("web: dashboard on {scheme}://{address}/");
    Ok(RunningWeb { address, login_url, stop, task })
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
    } else if request.uri().path() != "/login" && !app.access.allows(request.headers()) {
        let mut r =
            (StatusCode::UNAUTHORIZED, "a token is needed: the bearer header, or the login link\n").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
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

/// A connection the server reads, counted against [`CONNECTIONS_MAX`] until it closes.
pub(crate) struct Connection {
    io: Pin<Box<dyn ReadWrite>>,
    _permit: OwnedSemaphorePermit,
}

trait ReadWrite: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> ReadWrite for T {}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
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
    address: SocketAddr,
}

impl Accepting {
    fn start(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, mut stop: watch::Receiver<bool>) -> Self {
        let address = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(8);
        let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
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
                let _ = stream.set_nodelay(true);
                match &tls {
                    None => {
                        let connection = Connection { io: Box::pin(stream), _permit: permit };
                        if tx.send((connection, peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => {
                                    let _ = tx.send((Connection { io: Box::pin(tls), _permit: permit }, peer)).await;
                                }
                                Ok(Err(e)) => log::debug!("web: TLS handshake with {peer}: {e}"),
                                Err(_) => log::debug!("web: TLS handshake with {peer} took too long"),
                            }
                        });
                    }
                }
            }
        });
        Self { ready, address }
    }
}

impl axum::serve::Listener for Accepting {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended (stopping): wait for the graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.address)
    }
}
