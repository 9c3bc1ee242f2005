//! The `http` capability: `wasi:http/outgoing-handler`, to the hosts a pipeline's
//! `[pipeline.http]` section allows and within its budgets.
//!
//! Every request is checked before any connection is made: its scheme, host and
//! port must match a rule of the grant ([`AllowRule`]). The host then resolves the
//! name itself, checks every address it got ([`classify`]: loopback, private,
//! link-local, cloud-metadata and other special ranges are refused unless the rule
//! names that address literally), and connects to a checked address, so a name
//! that resolves differently the second time (DNS rebinding) cannot reach a host
//! nobody granted. Redirects are answers like any other: the guest sees them, and
//! a request to the new location is checked like the first.
//!
//! An https rule's requests go over TLS (rustls), verified for the request's host
//! against the Mozilla roots and the CAs of the grant's `ca_file`; a certificate
//! that does not verify ends the connection before any byte of the request is
//! sent. A rule's scheme is part of it: plain http to an https-only host is
//! refused like any host not granted.
//!
//! A guest's requests share per-call budgets ([`HttpLimits`]): a count, the bytes
//! sent and received, the requests in flight at once, and a time limit per request
//! that never outlives the call's deadline. Everything a request does (resolving,
//! connecting, waiting for the answer, reading its body) ends by then. Every
//! refusal is an error the guest sees, never a host fault.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks};

use super::Grants;
use crate::sandbox::guest_state::GuestState;

/// The most a connection reads ahead of the guest: what the host holds per open
/// request (operators.md's memory formula), and the largest response head.
pub const READ_BUFFER: usize = 32 << 10;

/// The interface that makes requests (its types come with it).
pub const IMPORT: &str = "wasi:http/outgoing-handler";

/// Whether `import` (`wasi:http/<interface>@0.2.*`) is part of this capability.
pub(super) fn is_import(import: &str) -> bool {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    matches!(interface, "wasi:http/outgoing-handler" | "wasi:http/types") && version.starts_with("0.2.")
}

/// `None` if granted, else how to grant it.
pub(super) fn check_grant(grants: &Grants) -> Option<&'static str> {
    grants.http.is_none().then_some(
        " (give the pipeline a `[pipeline.http]` section whose `allow` lists the URLs it may call, \
         as scheme://host:port)",
    )
}

/// Links `wasi:http` (the async implementation) into `linker`. Only components whose
/// pipeline has a grant get past [`super::check_grants`], so only they reach it.
pub(super) fn link(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    Ok(())
}

/// A pipeline's `[pipeline.http]`: where its processor may send requests, and how
/// much it may spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The rules; a request must match one.
    pub allow: Vec<AllowRule>,
    /// Its budgets.
    pub limits: HttpLimits,
    /// PEM certificates of the CAs its https servers may also chain to, besides
    /// the Mozilla roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// The TLS client of https requests: the Mozilla roots (webpki-roots), plus the
/// CAs of `ca_file`. Read once per file and process, and kept.
pub fn tls_client(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    static CLIENTS: Mutex<Vec<(Option<PathBuf>, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());
    let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, client)) = clients.iter().find(|(file, _)| file.as_deref() == ca_file) {
        return Ok(client.clone());
    }
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(file) = ca_file {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let shown = file.display();
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("cannot read `{shown}`: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("`{shown}` is not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("`{shown}` holds no PEM certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("`{shown}`: a certificate that is not a CA's: {e}"))?;
        }
    }
    // ring, not aws-lc: a fraction of the build (no cmake), at the price of no
    // post-quantum key exchange, which rustls flags by deprecating this call.
    #[expect(deprecated, reason = "ring has no post-quantum key exchange; chosen for its build cost")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = Arc::new(client);
    clients.push((ca_file.map(Path::to_path_buf), client.clone()));
    Ok(client)
}

/// A connection to a server: plain TCP, or TLS over it.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

/// What a guest's requests may spend, per guest call (one batch, or each part of a
/// batch split around a faulting record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most requests per call.
    pub requests_per_batch: u32,
    /// Most bytes sent and received per call: request and response bodies, and
    /// their head (method, URL, status and headers).
    pub bytes_per_batch: u64,
    /// Most requests in flight at once (connecting or awaiting their answer's
    /// head), per instance; more wait for a turn (within their time limit).
    pub concurrent_requests: u32,
    /// Longest one request may take, from its start to the end of its response
    /// body; never past the call's deadline.
    pub request_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            requests_per_batch: 1_000,
            bytes_per_batch: 16 << 20,
            concurrent_requests: 16,
            request_timeout_ms: 2_000,
        }
    }
}

/// What a rule's host is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostPattern {
    /// An address, written literally: the only way to reach a loopback, private,
    /// link-local or metadata address.
    Ip(IpAddr),
    /// One name.
    Name(String),
    /// `*.<name>`: any name one label below it (not the name itself).
    Subdomains(String),
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// One entry of `allow`: `scheme://host[:port]`, the port defaulting to the
/// scheme's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowRule {
    /// The scheme.
    pub scheme: Scheme,
    /// The host.
    pub host: HostPattern,
    /// The port.
    pub port: u16,
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        match &self.host {
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "{scheme}://[{ip}]:{}", self.port),
            HostPattern::Ip(ip) => write!(f, "{scheme}://{ip}:{}", self.port),
            HostPattern::Name(name) => write!(f, "{scheme}://{name}:{}", self.port),
            HostPattern::Subdomains(name) => write!(f, "{scheme}://*.{name}:{}", self.port),
        }
    }
}

impl FromStr for AllowRule {
    type Err = String;

    fn from_str(rule: &str) -> Result<Self, String> {
        let (scheme, rest) = rule.split_once("://").ok_or("write it as scheme://host[:port]")?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("the scheme `{other}` is not http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', '\\']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("a rule is scheme://host[:port], without path, query, user or spaces".to_owned());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, after) = v6.split_once(']').ok_or("an IPv6 address needs its closing `]`")?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| format!("`{ip}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("expected `:port` after the IPv6 address")?),
            };
            (HostPattern::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            (parse_host(host)?, port)
        };
        let port = match port {
            None => scheme.default_port(),
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("`{port}` is not a port (1-65535)")),
            },
        };
        Ok(AllowRule { scheme, host, port })
    }
}

fn parse_host(host: &str) -> Result<HostPattern, String> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(HostPattern::Ip(IpAddr::V4(ip)));
    }
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    check_name(name)?;
    // A wildcard covers subdomains of a registrable name, never a whole top-level domain.
    if wildcard && !name.contains('.') {
        return Err(format!("`*.{name}` would cover a whole top-level domain"));
    }
    Ok(if wildcard { HostPattern::Subdomains(name.to_owned()) } else { HostPattern::Name(name.to_owned()) })
}

/// A DNS name: dot-separated labels of letters, digits and hyphens.
fn check_name(name: &str) -> Result<(), String> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        return Err(format!(
            "`{name}` is not a host name (letters, digits, hyphens and dots; a wildcard only as `*.` before a name)"
        ));
    }
    // All-numeric names are addresses to resolvers (`127.1`): only dotted quads are.
    if name.split('.').all(|label| label.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("`{name}` is neither a host name nor a dotted-quad IPv4 address"));
    }
    Ok(())
}

/// The host of a request, as the rules compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost {
    /// An address literal.
    Ip(IpAddr),
    /// A name, lowercased and without a trailing dot.
    Name(String),
}

impl RequestHost {
    /// Reads the host part of a URL (`[..]` around IPv6 addresses).
    pub fn parse(host: &str) -> Option<RequestHost> {
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse().ok().map(RequestHost::Ip);
        }
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            return Some(RequestHost::Ip(IpAddr::V4(ip)));
        }
        let name = host.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        check_name(name).ok()?;
        Some(RequestHost::Name(name.to_owned()))
    }
}

impl AllowRule {
    /// Whether a request to `scheme://host:port` matches this rule.
    pub fn matches(&self, scheme: Scheme, host: &RequestHost, port: u16) -> bool {
        if scheme != self.scheme || port != self.port {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Ip(rule), RequestHost::Ip(ip)) => rule == ip,
            (HostPattern::Name(rule), RequestHost::Name(name)) => rule == name,
            (HostPattern::Subdomains(parent), RequestHost::Name(name)) => name
                .strip_suffix(parent.as_str())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            _ => false,
        }
    }

    /// Whether the rule lets a request connect to `ip`: any public address, and a
    /// refused one only when the rule names it literally.
    pub fn admits(&self, ip: IpAddr) -> bool {
        classify(ip).is_none() || self.host == HostPattern::Ip(ip)
    }
}

/// Why an address is refused unless a rule names it literally; `None`: a public
/// address. IPv4 addresses embedded in IPv6 ones (mapped, NAT64, 6to4) are judged
/// as the IPv4 address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        (169, 254, _) => "link-local",
        (127, _, _) => "loopback",
        (0, _, _) => "this-network",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("cloud metadata");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => "unspecified",
        [0, 0, 0, 0, 0, 0, 0, 1] => "loopback",
        // NAT64 (64:ff9b::/96) reaches the IPv4 address in its low bits.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return classify_v4(embedded(hi, lo)),
        // 6to4 (2002::/16) carries an IPv4 address after its prefix.
        [0x2002, hi, lo, ..] => return classify_v4(embedded(hi, lo)),
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "documentation",
        [first, ..] if first & 0xfe00 == 0xfc00 => "unique local (private)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "link-local",
        [first, ..] if first & 0xffc0 == 0xfec0 => "site-local",
        [first, ..] if first & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// The rules of a grant, as the pipeline's section lists them.
pub fn parse_rules(allow: &[String]) -> Result<Vec<AllowRule>, String> {
    let mut rules = BTreeSet::new();
    for rule in allow {
        rules.insert(rule.parse::<AllowRule>().map_err(|e| format!("`{rule}`: {e}"))?);
    }
    Ok(rules.into_iter().collect())
}

/// Upper bounds of the request duration histogram's buckets, in µs.
pub const DURATION_BUCKETS_US: [u64; 12] =
    [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000];

/// A pipeline's outgoing requests, counted for `/metrics`: shared by its workers.
#[derive(Debug, Default)]
pub struct HttpMeter {
    /// Requests by the rule they matched and their end (a status class or `error`).
    requests: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
    /// Requests that got no answer, by kind.
    errors: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Bytes charged to budgets.
    bytes: AtomicU64,
    /// Requests started and not finished (their answer's body read or dropped).
    in_flight: AtomicU64,
    /// Finished requests by duration, from their start to the end of their answer.
    durations: [AtomicU64; DURATION_BUCKETS_US.len() + 1],
    /// Their durations added up, in µs.
    duration_sum_us: AtomicU64,
    /// Numbers requests in the order the guest made them.
    next_request: AtomicU64,
    /// Every finished request, for `ferry test` (`None`: not kept).
    journal: Option<std::sync::Mutex<Vec<SentRequest>>>,
}

/// One request a guest made, as `ferry test` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// Its place among the guest's requests.
    pub number: u64,
    /// The method.
    pub method: String,
    /// The URL, as the guest gave it.
    pub url: String,
    /// The status of the answer, if one came.
    pub status: Option<u16>,
    /// Why there was no answer, or why its body ended early.
    pub error: Option<String>,
    /// Bytes of the answer's body the guest read.
    pub bytes: u64,
    /// From its start to the end of its answer (or its error).
    pub elapsed: Duration,
}

impl fmt::Display for SentRequest {
    /// `GET http://host/path → 200, 52 bytes` (no time: reports stay comparable).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} → ", self.method, self.url)?;
        match (self.status, &self.error) {
            (Some(status), None) => write!(f, "{status}, {} bytes", self.bytes),
            (Some(status), Some(error)) => write!(f, "{status}, {} bytes, then {error}", self.bytes),
            (None, Some(error)) => f.write_str(error),
            (None, None) => f.write_str("no answer"),
        }
    }
}

impl HttpMeter {
    /// A meter that also keeps every request ([`take_journal`](Self::take_journal)).
    pub fn journaling() -> Self {
        HttpMeter { journal: Some(std::sync::Mutex::default()), ..HttpMeter::default() }
    }

    /// The requests that finished since the last call, in the order they were made.
    pub fn take_journal(&self) -> Vec<SentRequest> {
        let Some(journal) = &self.journal else { return Vec::new() };
        let mut taken = std::mem::take(&mut *crate::sync::lock(journal));
        taken.sort_by_key(|r| r.number);
        taken
    }

    /// Requests by rule (`-` for requests no rule matched) and end.
    pub fn requests(&self) -> Vec<(String, &'static str, u64)> {
        crate::sync::lock(&self.requests).iter().map(|((h, c), n)| (h.clone(), *c, *n)).collect()
    }

    /// Errors by kind: `refused`, `timeout`, `budget` or `failed`.
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        crate::sync::lock(&self.errors).iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// Bytes sent and received, as the budgets count them.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Requests started and not finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Finished requests per bucket of [`DURATION_BUCKETS_US`] (and one past the
    /// last), and their durations added up in µs.
    pub fn durations(&self) -> (Vec<u64>, u64) {
        (
            self.durations.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            self.duration_sum_us.load(Ordering::Relaxed),
        )
    }

    fn request(&self, rule: Option<&AllowRule>, end: &'static str) {
        let host = rule.map_or_else(|| "-".to_owned(), AllowRule::to_string);
        *crate::sync::lock(&self.requests).entry((host, end)).or_default() += 1;
    }

    fn error(&self, error: &HttpError) {
        *crate::sync::lock(&self.errors).entry(error_kind(error)).or_default() += 1;
    }

    fn finished(&self, request: SentRequest) {
        let us = u64::try_from(request.elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_US.iter().position(|&b| us <= b).unwrap_or(DURATION_BUCKETS_US.len());
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(journal) = &self.journal {
            crate::sync::lock(journal).push(request);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request from its start until its answer's body is read or dropped (the
/// last holder drops it): in flight until then, and then counted as finished.
struct Tracked {
    meter: Arc<HttpMeter>,
    number: u64,
    method: String,
    url: String,
    started: Instant,
    /// Status, error, body bytes so far.
    end: std::sync::Mutex<(Option<u16>, Option<String>, u64)>,
}

impl Tracked {
    fn start(meter: &Arc<HttpMeter>, request: &http::Request<WasiBody>) -> Arc<Tracked> {
        meter.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut url = request.uri().to_string();
        if url.len() > 300 {
            let mut end = 300;
            while !url.is_char_boundary(end) {
                end -= 1;
            }
            url.truncate(end);
            url.push('…');
        }
        Arc::new(Tracked {
            meter: meter.clone(),
            number: meter.next_request.fetch_add(1, Ordering::Relaxed),
            method: request.method().to_string(),
            url,
            started: Instant::now(),
            end: std::sync::Mutex::default(),
        })
    }

    fn answered(&self, status: u16) {
        crate::sync::lock(&self.end).0 = Some(status);
    }

    fn failed(&self, error: &HttpError) {
        let mut end = crate::sync::lock(&self.end);
        if end.1.is_none() {
            end.1 = Some(describe(error));
        }
    }

    fn read(&self, bytes: usize) {
        crate::sync::lock(&self.end).2 += bytes as u64;
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let (status, error, bytes) = std::mem::take(&mut *crate::sync::lock(&self.end));
        self.meter.finished(SentRequest {
            number: self.number,
            method: std::mem::take(&mut self.method),
            url: std::mem::take(&mut self.url),
            status,
            error,
            bytes,
            elapsed: self.started.elapsed(),
        });
    }
}

/// An error in words, for `ferry test`: its kind, and what happened.
fn describe(error: &HttpError) -> String {
    let what = match error {
        HttpError::HttpRequestDenied => "not in the pipeline's [pipeline.http] allow".to_owned(),
        HttpError::DestinationIpProhibited => {
            "its host resolves to an address the rule does not name (loopback, private, link-local or metadata)"
                .to_owned()
        }
        HttpError::TlsCertificateError => {
            "TLS: the server's certificate is not for this host, or not from a trusted CA".to_owned()
        }
        other => format!("{other:?}"),
    };
    format!("{} ({what})", error_kind(error))
}

/// The kind of an error, as `/metrics` counts it.
fn error_kind(error: &HttpError) -> &'static str {
    match error {
        HttpError::HttpRequestDenied | HttpError::DestinationIpProhibited | HttpError::TlsCertificateError => "refused",
        HttpError::ConnectionTimeout
        | HttpError::ConnectionReadTimeout
        | HttpError::HttpResponseTimeout
        | HttpError::DnsTimeout => "timeout",
        HttpError::ConnectionLimitReached
        | HttpError::HttpRequestBodySize(_)
        | HttpError::HttpResponseBodySize(_)
        | HttpError::HttpRequestHeaderSectionSize(_)
        | HttpError::HttpResponseHeaderSectionSize(_) => "budget",
        _ => "failed",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What a guest's requests have spent in the current call. Shared with the tasks
/// that carry its requests.
#[derive(Debug, Default)]
struct Spent {
    requests: AtomicU64,
    bytes: AtomicU64,
    meter: Arc<HttpMeter>,
}

/// The `http` capability's part of a guest's store.
pub(crate) struct HttpState {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl HttpState {
    pub(crate) fn new(grant: Option<Arc<HttpGrant>>, meter: Arc<HttpMeter>) -> Self {
        let concurrent = grant.as_ref().map_or(1, |g| g.limits.concurrent_requests as usize);
        HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks {
                grant,
                spent: Arc::new(Spent { meter, ..Spent::default() }),
                in_flight: Arc::new(Semaphore::new(concurrent)),
                deadline: Instant::now(),
            },
        }
    }

    /// The start of a guest call that must end by `deadline`: its requests start
    /// with the whole budget. (Requests of an earlier call still running keep
    /// charging the budget they started with.)
    pub(crate) fn begin(&mut self, deadline: Instant) {
        let meter = self.hooks.spent.meter.clone();
        self.hooks.spent = Arc::new(Spent { meter, ..Spent::default() });
        self.hooks.deadline = deadline;
    }

    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView { ctx: &mut self.ctx, table, hooks: &mut self.hooks }
    }
}

struct Hooks {
    grant: Option<Arc<HttpGrant>>,
    spent: Arc<Spent>,
    in_flight: Arc<Semaphore>,
    deadline: Instant,
}

type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;
type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let Some(grant) = self.grant.clone() else {
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        let timeout = Duration::from_millis(grant.limits.request_timeout_ms);
        let deadline = self.deadline.min(Instant::now() + timeout);
        let tracked = Tracked::start(&self.spent.meter, &request);
        let outgoing =
            Outgoing { grant, spent: self.spent.clone(), in_flight: self.in_flight.clone(), deadline, tracked };
        Box::new(outgoing.send(request))
    }

    // Guests set no `Host` header of their own: the host sets it from the URL.
    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        Arc::new(|name| wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name))
    }

    // A request without a scheme is not guessed at.
    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        None
    }
}

/// One request on its way, with what it may spend.
struct Outgoing {
    grant: Arc<HttpGrant>,
    spent: Arc<Spent>,
    in_flight: Arc<Semaphore>,
    deadline: Instant,
    /// This request, for the meter.
    tracked: Arc<Tracked>,
}

impl Outgoing {
    async fn send(self, request: http::Request<WasiBody>) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let (spent, rule, tracked) = (self.spent.clone(), self.rule_of(&request), self.tracked.clone());
        let result = match tokio::time::timeout_at(deadline, self.send_within(request)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::ConnectionTimeout),
        };
        match &result {
            Ok((response, _)) => {
                tracked.answered(response.status().as_u16());
                spent.meter.request(rule.as_ref(), status_class(response.status().as_u16()));
            }
            Err(error) => {
                tracked.failed(error);
                spent.meter.request(rule.as_ref(), "error");
                spent.meter.error(error);
            }
        }
        result
    }

    /// The rule a request matches, if any (for the meter's host label: never the
    /// guest's own text, so the label's values are bounded by the grant).
    fn rule_of(&self, request: &http::Request<WasiBody>) -> Option<AllowRule> {
        let uri = request.uri();
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return None,
        };
        let host = uri.host().and_then(RequestHost::parse)?;
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        self.grant.allow.iter().find(|rule| rule.matches(scheme, &host, port)).cloned()
    }

    async fn send_within(
        self,
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let uri = request.uri().clone();
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(HttpError::HttpRequestDenied),
        };
        let host = uri.host().and_then(RequestHost::parse).ok_or(HttpError::HttpRequestUriInvalid)?;
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let Some(rule) = self.grant.allow.iter().find(|rule| rule.matches(scheme, &host, port)).cloned() else {
            tracing::debug!(%uri, "HTTP request refused: not in the pipeline's [pipeline.http] allow list");
            return Err(HttpError::HttpRequestDenied);
        };
        let limits = self.grant.limits;
        if self.spent.requests.fetch_add(1, Ordering::Relaxed) >= u64::from(limits.requests_per_batch) {
            return Err(HttpError::ConnectionLimitReached);
        }
        let head = head_bytes(&request);
        charge(&self.spent, limits.bytes_per_batch, head).map_err(|_| HttpError::HttpRequestHeaderSectionSize(None))?;
        let permit = self.in_flight.clone().acquire_owned().await.map_err(|_| HttpError::ConnectionLimitReached)?;
        let addresses = match &host {
            RequestHost::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            RequestHost::Name(name) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|_| HttpError::DnsError { rcode: Some("name not resolved".to_owned()), info_code: None })?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(HttpError::DestinationNotFound);
        }
        // Every address the name has must be allowed, not only the one tried first.
        if let Some(refused) = addresses.iter().find(|a| !rule.admits(a.ip())) {
            tracing::debug!(%uri, address = %refused.ip(), kind = classify(refused.ip()), "HTTP request refused: address not granted");
            return Err(HttpError::DestinationIpProhibited);
        }
        let mut last = HttpError::ConnectionRefused;
        let mut stream = None;
        for address in &addresses {
            match tokio::net::TcpStream::connect(address).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = HttpError::Connect(e),
            }
        }
        let stream = stream.ok_or(last)?;
        let _ = stream.set_nodelay(true);
        // An https rule's requests go only over TLS, verified for the request's host.
        let stream: Box<dyn Connection> = match scheme {
            Scheme::Http => Box::new(stream),
            Scheme::Https => Box::new(self.tls(&host, stream).await?),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake(wasmtime_wasi_http::io::TokioIo::new(stream))
            .await?;
        // The request line carries only the path: the host is in the `Host` header.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() =
            http::Uri::builder().path_and_query(path).build().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let request = request.map(|body| {
            Metered {
                inner: body,
                spent: self.spent.clone(),
                budget: limits.bytes_per_batch,
                outgoing: true,
                done: false,
            }
            .boxed_unsync()
        });
        let mut conn = Box::pin(conn);
        let mut send = Box::pin(sender.send_request(request));
        // Drive the connection while waiting for the response's head.
        let response = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = send.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(HttpError::from));
            }
            match conn.as_mut().poll(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(HttpError::from(e))),
                _ => Poll::Pending,
            }
        })
        .await?;
        // In flight no more: the guest reads bodies when it likes, and a place held
        // until then could keep the request it waits for from ever starting.
        drop(permit);
        charge(&self.spent, limits.bytes_per_batch, response_head_bytes(&response))
            .map_err(|_| HttpError::HttpResponseHeaderSectionSize(None))?;
        let response = response.map(|body| {
            Metered {
                inner: body.map_err(HttpError::from),
                spent: self.spent.clone(),
                budget: limits.bytes_per_batch,
                outgoing: false,
                done: false,
            }
            .boxed_unsync()
        });
        // The connection is driven until the body is read, and no longer than the
        // request's own time.
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let io: IoFuture = Box::new(async move {
            match tokio::time::timeout_at(deadline, conn).await {
                Ok(result) => result.map_err(HttpError::from),
                Err(_) => Err(HttpError::HttpResponseTimeout),
            }
        });
        // The body stops at the request's deadline too.
        let meter = self.spent.meter.clone();
        let tracked = self.tracked.clone();
        let response = response.map(|body| {
            let sleep = Box::pin(tokio::time::sleep_until(deadline));
            Deadlined { inner: body, sleep, meter, timed_out: false, tracked }.boxed_unsync()
        });
        Ok((response, io))
    }
}

impl Outgoing {
    /// TLS over `stream`, the server's certificate verified for `host` (a name, or
    /// an address the certificate must list).
    async fn tls(
        &self,
        host: &RequestHost,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, HttpError> {
        use rustls::pki_types::ServerName;
        let client = tls_client(self.grant.ca_file.as_deref()).map_err(|e| {
            tracing::warn!(error = %e, "HTTP request failed: the TLS client cannot be made");
            HttpError::InternalError(Some(e))
        })?;
        let name = match host {
            RequestHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            RequestHost::Name(name) => {
                ServerName::try_from(name.clone()).map_err(|_| HttpError::HttpRequestUriInvalid)?
            }
        };
        tokio_rustls::TlsConnector::from(client).connect(name, stream).await.map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
            tracing::debug!(error = %e, "HTTP request failed: TLS handshake");
            if certificate { HttpError::TlsCertificateError } else { HttpError::TlsProtocolError }
        })
    }
}

/// What a request's head costs the budget: its method, URL and headers.
fn head_bytes(request: &http::Request<WasiBody>) -> u64 {
    let headers: usize = request.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (request.method().as_str().len() + request.uri().to_string().len() + headers + 12) as u64
}

fn response_head_bytes<B>(response: &http::Response<B>) -> u64 {
    let headers: usize = response.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    (headers + 17) as u64
}

/// Charges `bytes` to the call's budget; `Err` when it would pass `budget` (the
/// bytes stay charged: the call has spent its budget either way).
fn charge(spent: &Spent, budget: u64, bytes: u64) -> Result<(), ()> {
    spent.meter.bytes.fetch_add(bytes, Ordering::Relaxed);
    let before = spent.bytes.fetch_add(bytes, Ordering::Relaxed);
    if before.saturating_add(bytes) > budget { Err(()) } else { Ok(()) }
}

/// A body whose bytes are charged to the call's budget as they pass: one that
/// would pass it ends in an error (the guest sees it), and nothing more is read.
struct Metered<B> {
    inner: B,
    spent: Arc<Spent>,
    budget: u64,
    outgoing: bool,
    /// Ended in an error: nothing more is read.
    done: bool,
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes, Error = HttpError> + Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
        if charge(&self.spent, self.budget, bytes).is_err() {
            let budget = Some(self.budget);
            self.done = true;
            let error = if self.outgoing {
                HttpError::HttpRequestBodySize(budget)
            } else {
                HttpError::HttpResponseBodySize(budget)
            };
            self.spent.meter.error(&error);
            return Poll::Ready(Some(Err(error)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends in a timeout at its request's deadline (and whose
/// request finishes when it is dropped).
struct Deadlined<B> {
    inner: B,
    sleep: Pin<Box<tokio::time::Sleep>>,
    meter: Arc<HttpMeter>,
    timed_out: bool,
    tracked: Arc<Tracked>,
}

impl<B> Body for Deadlined<B>
where
    B: Body<Data = Bytes, Error = HttpError> + Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        // The deadline first: past it, the connection is being closed too, and its
        // end must read as the timeout it is.
        if self.sleep.as_mut().poll(cx).is_ready() {
            if !self.timed_out {
                self.timed_out = true;
                self.meter.error(&HttpError::ConnectionReadTimeout);
                self.tracked.failed(&HttpError::ConnectionReadTimeout);
            }
            return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => self.tracked.read(frame.data_ref().map_or(0, Bytes::len)),
            Poll::Ready(Some(Err(error))) => self.tracked.failed(error),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rule(s: &str) -> AllowRule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn host(s: &str) -> RequestHost {
        RequestHost::parse(s).unwrap()
    }

    #[test]
    fn rules_are_scheme_host_and_port() {
        assert_eq!(
            rule("http://127.0.0.1:8089"),
            AllowRule { scheme: Scheme::Http, host: HostPattern::Ip([127, 0, 0, 1].into()), port: 8089 }
        );
        assert_eq!(rule("https://API.example.com/").port, 443);
        assert_eq!(rule("https://API.example.com").host, HostPattern::Name("api.example.com".into()));
        assert_eq!(rule("https://*.example.com").host, HostPattern::Subdomains("example.com".into()));
        assert_eq!(rule("http://[::1]:80").host, HostPattern::Ip(Ipv6Addr::LOCALHOST.into()));
        for bad in [
            "api.example.com",
            "ftp://example.com",
            "http://example.com/path",
            "http://user@example.com",
            "http://*.com",
            "http://a.*.example.com",
            "http://*example.com",
            "http://example.com:0",
            "http://example.com:99999",
            "http://127.1",
            "http://[::1",
            "http://exa mple.com",
            "http://",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn a_request_matches_scheme_host_and_port_exactly() {
        let name = rule("https://api.example.com");
        assert!(name.matches(Scheme::Https, &host("api.example.com"), 443));
        assert!(name.matches(Scheme::Https, &host("API.Example.com."), 443));
        assert!(!name.matches(Scheme::Http, &host("api.example.com"), 443));
        assert!(!name.matches(Scheme::Https, &host("api.example.com"), 8443));
        assert!(!name.matches(Scheme::Https, &host("x.api.example.com"), 443));
        assert!(!name.matches(Scheme::Https, &host("api.example.com.evil.net"), 443));
        let wild = rule("https://*.example.com");
        assert!(wild.matches(Scheme::Https, &host("a.example.com"), 443));
        assert!(!wild.matches(Scheme::Https, &host("example.com"), 443));
        assert!(!wild.matches(Scheme::Https, &host("a.b.example.com"), 443));
        assert!(!wild.matches(Scheme::Https, &host("aexample.com"), 443));
        let ip = rule("http://127.0.0.1:8089");
        assert!(ip.matches(Scheme::Http, &host("127.0.0.1"), 8089));
        assert!(!ip.matches(Scheme::Http, &host("localhost"), 8089));
        assert!(!ip.matches(Scheme::Http, &host("127.0.0.2"), 8089));
        assert!(!ip.matches(Scheme::Http, &host("[::ffff:127.0.0.1]"), 8089));
    }

    #[test]
    fn special_addresses_are_refused_unless_named_literally() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(classify(ip).is_some(), "{ip} should be refused");
        }
        assert_eq!(classify("169.254.169.254".parse().unwrap()), Some("cloud metadata"));
        assert_eq!(classify("fd00:ec2::254".parse().unwrap()), Some("cloud metadata"));
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert_eq!(classify(ip.parse().unwrap()), None, "{ip} is public");
        }
        let literal = rule("http://127.0.0.2:80");
        assert!(literal.admits("127.0.0.2".parse().unwrap()));
        assert!(!literal.admits("127.0.0.1".parse().unwrap()));
        assert!(!rule("http://localhost:80").admits("127.0.0.1".parse().unwrap()));
        assert!(rule("http://example.com").admits("93.184.216.34".parse().unwrap()));
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![any::<u32>().prop_map(|v| IpAddr::V4(v.into())), any::<u128>().prop_map(|v| IpAddr::V6(v.into()))]
    }

    proptest! {
        /// A name rule admits no special address; a literal rule admits its own
        /// address and, of the special ones, only it.
        #[test]
        fn only_a_literal_rule_reaches_a_special_address(ip in any_ip(), other in any_ip()) {
            let by_name = rule("http://service.example.com:80");
            prop_assert_eq!(by_name.admits(ip), classify(ip).is_none());
            let literal = AllowRule { scheme: Scheme::Http, host: HostPattern::Ip(ip), port: 80 };
            prop_assert!(literal.admits(ip));
            if other != ip && classify(other).is_some() {
                prop_assert!(!literal.admits(other));
            }
        }

        /// Mapped IPv4 addresses are judged as the IPv4 address they carry.
        #[test]
        fn mapped_addresses_are_judged_as_ipv4(v4 in any::<u32>()) {
            let v4 = Ipv4Addr::from(v4);
            prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), classify(IpAddr::V4(v4)));
        }

        /// A subdomain rule matches exactly the names one label below its name.
        #[test]
        fn wildcards_cover_one_label(label in "[a-z0-9]{1,10}", extra in "[a-z0-9]{1,10}", port in 1u16..) {
            let wild = AllowRule { scheme: Scheme::Https, host: HostPattern::Subdomains("example.com".into()), port };
            let one = format!("{label}.example.com");
            let two = format!("{extra}.{label}.example.com");
            let beside = format!("{label}example.com");
            prop_assert!(wild.matches(Scheme::Https, &host(&one), port));
            prop_assert!(!wild.matches(Scheme::Https, &host(&two), port));
            prop_assert!(!wild.matches(Scheme::Https, &host(&beside), port));
            prop_assert!(!wild.matches(Scheme::Http, &host(&one), port));
        }

        /// Whatever a rule is written as, it reads back the same from its display.
        #[test]
        fn rules_read_back(a in any::<u8>(), b in any::<u8>(), port in 1u16.., https in any::<bool>()) {
            let scheme = if https { "https" } else { "http" };
            let written = format!("{scheme}://10.{a}.{b}.1:{port}");
            let parsed = rule(&written);
            prop_assert_eq!(parsed.to_string(), written);
        }
    }
}
