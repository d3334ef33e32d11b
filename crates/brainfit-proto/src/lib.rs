//! brainfit's wire protocol: the `brainfit.v1` gRPC package (generated from
//! `proto/brainfit/v1/brainfit.proto`), plus the two things both ends of every connection must
//! agree on — the shared-token check and how a channel is set up (TLS, timeouts).
//!
//! One crate holds the generated code so the coordinator (brainfit-coordinator), the workers
//! (brainfit-worker) and the clients (brainfit-client) compile the same messages. It also holds
//! the one back-off rule of every RPC retry loop ([`Backoff`]).

#![warn(missing_docs)]

use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

/// The generated `brainfit.v1` messages, clients and servers.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("brainfit.v1");
}

/// Wire protocol version of this build (the `N` of `brainfit.vN`).
pub const PROTOCOL: u32 = 1;

/// Metadata key carrying the shared token (`authorization: Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";

/// Largest message either side accepts (job definitions of very large plans).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Errors of connection set-up and of the handshake.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The coordinator URL or TLS settings are unusable.
    #[error("coordinator {url}: {message}")]
    Config {
        /// The coordinator URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The coordinator does not enforce the token this side has: refusing to talk to it.
    #[error(
        "coordinator {url} does not require a token but one is configured here (--token / \
         BRAINFIT_TOKEN): refusing to talk to a coordinator that accepts anyone; start it \
         with the same token"
    )]
    Unprotected {
        /// The coordinator URL.
        url: String,
    },
    /// The coordinator speaks another protocol version.
    #[error("coordinator {url} speaks brainfit.v{theirs}, this build brainfit.v{PROTOCOL}")]
    Protocol {
        /// The coordinator URL.
        url: String,
        /// Its protocol version.
        theirs: u32,
    },
}

/// Installs rustls' ring crypto provider as the process default: the one installation that
/// TLS for gRPC and for object storage share (it lives in brainfit-io, the lowest crate using
/// TLS). Idempotent.
pub use brainfit_io::install_crypto_provider;

/// Exponential back-off for the retry loops around RPCs (reports, job definitions, reconnects,
/// watches, leases while the coordinator is away): the first wait is `first`, every further
/// failure doubles it up to `max`, and a success starts again from `first`. One helper, so
/// every loop follows the same rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits of `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first, failures: 0 }
    }

    /// Records a failure; returns how long to wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        self.failures += 1;
        wait
    }

    /// Records a success: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.next = self.first;
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Compares two byte strings in time independent of where they differ (the length may leak).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Server side: rejects requests that do not carry `token` (when one is set) with
/// `UNAUTHENTICATED`. Never logs or echoes what it received.
#[derive(Clone)]
pub struct RequireToken {
    expected: Option<std::sync::Arc<str>>,
}

impl RequireToken {
    /// Checks for `token`; `None` accepts every request.
    pub fn new(token: Option<&str>) -> Self {
        RequireToken { expected: token.map(Into::into) }
    }

    /// Whether a token is enforced.
    pub fn enforced(&self) -> bool {
        self.expected.is_some()
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let got = request
            .metadata()
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match got {
            Some(got) if constant_time_eq(got.as_bytes(), expected.as_bytes()) => Ok(request),
            _ => Err(Status::unauthenticated(
                "missing or wrong brainfit token (--token / BRAINFIT_TOKEN)",
            )),
        }
    }
}

/// Client side: adds the token (if any) to every request once [armed](AddToken::arm), marked
/// sensitive so that no layer logs it. It starts disarmed: the handshake goes out without the
/// token, so a coordinator that turns out not to require one never receives it.
#[derive(Clone)]
pub struct AddToken {
    value: Option<MetadataValue<tonic::metadata::Ascii>>,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AddToken {
    /// Sends `token` with every request (`None`: sends nothing).
    pub fn new(token: Option<&str>) -> Result<Self, ProtoError> {
        let value = match token {
            None => None,
            Some(t) => {
                let mut v: MetadataValue<_> =
                    format!("Bearer {t}").parse().map_err(|_| ProtoError::Config {
                        url: String::new(),
                        message: "the token must be printable ASCII".into(),
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(AddToken { value, armed: Default::default() })
    }

    /// Whether this side has a token to send.
    pub fn has_token(&self) -> bool {
        self.value.is_some()
    }

    /// Starts sending the token (this and every clone): call once the coordinator's handshake
    /// showed that it requires one.
    pub fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for AddToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddToken")
            .field("token", &self.value.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for AddToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value
            && self.armed.load(std::sync::atomic::Ordering::SeqCst)
        {
            request.metadata_mut().insert(AUTH_HEADER, v.clone());
        }
        Ok(request)
    }
}

/// Where a coordinator is and how to reach it.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `http://host:port`, or `https://host:port` (TLS); a bare `host:port` means `http://`.
    pub url: String,
    /// The shared token, if any.
    pub token: Option<String>,
    /// PEM of the CA that signed the coordinator's certificate (makes the connection TLS).
    pub tls_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca.as_ref().map(std::vec::Vec::len))
            .finish()
    }
}

/// A channel to the coordinator, connected lazily (and reconnected after failures) on first
/// use, with the token interceptor to wrap clients in.
pub fn channel(options: &ConnectOptions) -> Result<(Channel, AddToken), ProtoError> {
    install_crypto_provider();
    let url = if options.url.contains("://") {
        options.url.clone()
    } else {
        format!("http://{}", options.url)
    };
    let config = |message: String| ProtoError::Config { url: url.clone(), message };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| config(format!("not a valid URL: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .tcp_nodelay(true);
    let https = url.starts_with("https://");
    match (&options.tls_ca, https) {
        (Some(ca), _) => {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .map_err(|e| config(format!("TLS set-up failed: {e}")))?;
        }
        (None, true) => {
            return Err(config(
                "https:// needs --tls-ca (the PEM of the CA that signed the coordinator's \
                 certificate, e.g. /etc/ssl/certs/ca-certificates.crt for a public CA)"
                    .into(),
            ));
        }
        (None, false) => {}
    }
    if options.tls_ca.is_some() && !https {
        return Err(config(
            "--tls-ca is set but the URL is not https://; write https://host:port".into(),
        ));
    }
    let auth = AddToken::new(options.token.as_deref()).map_err(|e| match e {
        ProtoError::Config { message, .. } => config(message),
        other => other,
    })?;
    Ok((endpoint.connect_lazy(), auth))
}

/// Whether a refused token-less handshake means "the coordinator requires a token": then arm
/// `auth` and handshake again, with it.
pub fn needs_token(status: &Status, auth: &AddToken) -> bool {
    status.code() == tonic::Code::Unauthenticated
        && auth.has_token()
        && !auth.armed.load(std::sync::atomic::Ordering::SeqCst)
}

/// Checks a coordinator's handshake: same protocol, and a token enforced whenever this side
/// has one.
pub fn check_handshake(
    url: &str,
    reply: &v1::HandshakeReply,
    have_token: bool,
) -> Result<(), ProtoError> {
    if reply.protocol != PROTOCOL {
        return Err(ProtoError::Protocol { url: url.to_string(), theirs: reply.protocol });
    }
    if have_token && !reply.auth_required {
        return Err(ProtoError::Unprotected { url: url.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_restarts_after_a_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        let waits: Vec<Duration> = (0..4).map(|_| b.failed()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(350), ms(350)]);
        assert_eq!(b.failures(), 4);
        b.succeeded();
        assert_eq!((b.failures(), b.failed()), (0, ms(100)));
    }

    #[test]
    fn the_token_goes_out_only_once_armed() {
        let add = AddToken::new(Some("s3cret")).unwrap();
        let mut clone = add.clone();
        let req = clone.call(Request::new(())).unwrap();
        assert!(req.metadata().get(AUTH_HEADER).is_none(), "sent before the handshake");
        assert!(needs_token(&Status::unauthenticated("no token"), &add));
        add.arm();
        let req = clone.call(Request::new(())).unwrap();
        assert!(req.metadata().get(AUTH_HEADER).is_some(), "clones share the arming");
        assert!(!needs_token(&Status::unauthenticated("wrong token"), &add));
    }

    #[test]
    fn token_check_accepts_only_the_right_bearer_token() {
        let mut check = RequireToken::new(Some("s3cret"));
        let add = AddToken::new(Some("s3cret")).unwrap();
        add.arm();
        let mut add = add;
        let req = add.call(Request::new(())).unwrap();
        assert!(check.call(req).is_ok());
        let mut wrong = AddToken::new(Some("s3cres")).unwrap();
        wrong.arm();
        let e = check.call(wrong.call(Request::new(())).unwrap()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains("s3cre"), "never echo tokens");
        assert!(check.call(Request::new(())).is_err(), "no token");
        let mut open = RequireToken::new(None);
        assert!(open.call(Request::new(())).is_ok());
        assert!(!format!("{add:?}").contains("s3cret"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn handshake_refuses_unprotected_coordinators_when_holding_a_token() {
        let reply = |auth| v1::HandshakeReply {
            auth_required: auth,
            version: "x".into(),
            protocol: PROTOCOL,
        };
        assert!(check_handshake("u", &reply(true), true).is_ok());
        assert!(check_handshake("u", &reply(false), false).is_ok());
        let e = check_handshake("u", &reply(false), true).unwrap_err();
        assert!(matches!(e, ProtoError::Unprotected { .. }));
        let mut r = reply(true);
        r.protocol = 2;
        assert!(check_handshake("u", &r, true).is_err());
    }

    #[test]
    fn channel_options_are_checked() {
        let opts = |url: &str, ca: Option<Vec<u8>>| ConnectOptions {
            url: url.into(),
            token: None,
            tls_ca: ca,
        };
        assert!(channel(&opts("https://h:1", None)).is_err());
        assert!(channel(&opts("http://h:1", Some(b"x".to_vec()))).is_err());
        assert!(channel(&opts("not a url", None)).is_err());
    }
}
