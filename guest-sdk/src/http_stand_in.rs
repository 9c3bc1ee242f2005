//! The host's HTTP capability as a native test sees it: the pipeline's `allow`
//! rules checked as the host checks them, and the answers of a service the test
//! gives its [`Harness`](crate::testing::Harness). Native only.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::http::{HttpError, HttpErrorKind, Request, Response};

/// A test's stand-in for the services a processor calls.
pub(crate) type Service = dyn Fn(&Request) -> Result<Response, HttpError>;

/// What a harness grants and answers.
#[derive(Clone)]
pub(crate) struct StandIn {
    /// Whether the pipeline grants `http` at all (has a `[pipeline.http]` section).
    pub(crate) granted: bool,
    /// `None`: every URL (a harness not read from a config).
    pub(crate) allow: Option<Vec<Rule>>,
    /// Answers the requests that pass the rules.
    pub(crate) service: Option<Rc<Service>>,
}

impl Default for StandIn {
    fn default() -> Self {
        StandIn { granted: true, allow: None, service: None }
    }
}

impl fmt::Debug for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandIn")
            .field("granted", &self.granted)
            .field("allow", &self.allow)
            .field("service", &self.service.as_ref().map(|_| "a test's service"))
            .finish()
    }
}

/// One `allow` entry: `scheme://host[:port]`, `*.` before a name for its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    scheme: String,
    host: String,
    port: u16,
}

impl Rule {
    /// Reads a rule as the host's config does (its finer checks stay the host's).
    pub(crate) fn parse(rule: &str) -> Result<Rule, String> {
        let (scheme, host, port) = endpoint(rule.strip_suffix('/').unwrap_or(rule))
            .ok_or_else(|| format!("`{rule}` is not scheme://host[:port] with scheme http or https"))?;
        Ok(Rule { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => self.host == host,
        }
    }
}

/// Scheme, host (lowercased) and port of `scheme://host[:port]`.
fn endpoint(text: &str) -> Option<(String, String, u16)> {
    let (scheme, authority) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok().filter(|p| *p > 0)?),
        _ => (authority, default),
    };
    let host = host.to_ascii_lowercase();
    Some((scheme, host.strip_suffix('.').unwrap_or(&host).to_owned(), port))
}

thread_local! {
    /// The stand-in of the harness running a batch on this thread.
    static CURRENT: RefCell<Option<StandIn>> = const { RefCell::new(None) };
}

/// Puts `stand_in` in charge of this thread's requests until the guard drops.
pub(crate) fn install(stand_in: &StandIn) -> Installed {
    Installed(CURRENT.with(|current| current.replace(Some(stand_in.clone()))))
}

/// Restores what was in charge before.
pub(crate) struct Installed(Option<StandIn>);

impl Drop for Installed {
    fn drop(&mut self) {
        let before = self.0.take();
        CURRENT.with(|current| *current.borrow_mut() = before);
    }
}

/// Answers `request` (to `scheme://authority`) as the harness in charge would.
pub(crate) fn send(request: &Request, scheme: &str, authority: &str) -> Result<Response, HttpError> {
    let Some(stand_in) = CURRENT.with(|current| current.borrow().clone()) else {
        return Err(HttpError::new(
            HttpErrorKind::Failed,
            "requests are sent by the ferry host; natively, only a testing::Harness with an http_service answers them",
        ));
    };
    if !stand_in.granted {
        panic!(
            "the processor sends HTTP requests, and the host would refuse to load it for this pipeline: the \
             component imports `wasi:http/outgoing-handler`, which this pipeline does not grant (give the pipeline \
             a `[pipeline.http]` section whose `allow` lists the URLs it may call, as scheme://host:port)"
        );
    }
    let (scheme, host, port) = endpoint(&format!("{scheme}://{authority}")).ok_or_else(|| {
        HttpError::new(HttpErrorKind::Invalid, format!("`{}` is not http(s)://host[:port]/path", request.url()))
    })?;
    if let Some(allow) = &stand_in.allow
        && !allow.iter().any(|rule| rule.matches(&scheme, &host, port))
    {
        return Err(HttpError::new(
            HttpErrorKind::Refused,
            format!("HttpRequestDenied: {scheme}://{host}:{port} is not in the pipeline's [pipeline.http] allow"),
        ));
    }
    match &stand_in.service {
        Some(service) => service(request),
        None => Err(HttpError::new(
            HttpErrorKind::Failed,
            "no service answers in this test (give the harness one with Harness::http_service)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_scheme_host_and_port() {
        let rule = Rule::parse("http://127.0.0.1:8089").unwrap();
        assert!(rule.matches("http", "127.0.0.1", 8089));
        assert!(!rule.matches("http", "127.0.0.1", 8090));
        assert!(!rule.matches("https", "127.0.0.1", 8089));
        let wild = Rule::parse("https://*.example.com").unwrap();
        assert!(wild.matches("https", "api.example.com", 443));
        assert!(!wild.matches("https", "example.com", 443));
        assert!(!wild.matches("https", "a.b.example.com", 443));
        assert!(!wild.matches("https", "evilexample.com", 443));
        assert!(Rule::parse("ftp://x").is_err());
        assert!(Rule::parse("http://x/path").is_err());
        assert_eq!(endpoint("HTTP://Api.Example.COM."), Some(("http".into(), "api.example.com".into(), 80)));
    }
}
