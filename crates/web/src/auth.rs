//! Who may look: everyone on loopback when no token is configured; otherwise a request carries
//! the token as `Authorization: Bearer TOKEN` (for scripts and Prometheus), or the session
//! cookie a browser gets from the one-time login link printed at start. Secrets are compared in
//! constant time; the cookie is HttpOnly, SameSite=Strict, and Secure over TLS.

use std::sync::Mutex;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::rand::{SecureRandom, SystemRandom};

use crate::serve::App;

const COOKIE: &str = "airlock_session";

pub(crate) struct Access {
    token: Option<String>,
    /// The login link's code, until it is used.
    login_code: Mutex<Option<String>>,
    /// The value of the session cookie the login link sets.
    session: String,
    secure_cookie: bool,
}

fn random_hex(rng: &SystemRandom) -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).map_err(|_| "the system's random source failed".to_owned())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `a == b`, taking as long whatever the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    pub fn new(token: Option<String>, secure_cookie: bool) -> Result<Self, String> {
        if token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("the token must be at least 16 characters".into());
        }
        let rng = SystemRandom::new();
        let login_code = match token {
            Some(_) => Some(random_hex(&rng)?),
            None => None,
        };
        Ok(Self { token, login_code: Mutex::new(login_code), session: random_hex(&rng)?, secure_cookie })
    }

    /// The one-time login code, while unused (none when no token is needed).
    pub fn login_code(&self) -> Option<String> {
        self.login_code.lock().ok().and_then(|c| c.clone())
    }

    /// Whether requests need the token (one is configured).
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()));
        bearer || self.cookie(headers).is_some_and(|c| same(c.as_bytes(), self.session.as_bytes()))
    }

    fn cookie<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|rest| rest.strip_prefix('=')))
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct Login {
    code: Option<String>,
}

/// `/login?code=...`: the one-time link; it sets the session cookie and leads to the overview.
pub(crate) async fn login(State(app): State<App>, Query(q): Query<Login>) -> Response {
    let access = &app.access;
    let Ok(mut code) = access.login_code.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let matches = match (code.as_deref(), q.code.as_deref()) {
        (Some(expected), Some(given)) => same(expected.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if !matches {
        return (StatusCode::UNAUTHORIZED, "this login link is not valid (it works once; restart for a new one)\n")
            .into_response();
    }
    *code = None;
    let secure = if access.secure_cookie { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/{secure}", access.session);
    let mut r = (StatusCode::SEE_OTHER, "logged in\n").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn a_token_or_the_session_cookie_lets_in() {
        let access = Access::new(Some("0123456789abcdef".into()), false).unwrap();
        let mut h = HeaderMap::new();
        assert!(!access.allows(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer 0123456789abcdef"));
        assert!(access.allows(&h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer 0123456789abcdeX"));
        assert!(!access.allows(&h));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("a=b; {COOKIE}={}", access.session)).unwrap());
        assert!(access.allows(&h));
        assert!(Access::new(Some("short".into()), false).is_err());
        assert!(Access::new(None, false).unwrap().allows(&HeaderMap::new()));
    }
}
