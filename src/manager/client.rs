//! A client for damocles-manager (and the embedded dev manager, which speaks the same API).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::call::{Call, Manager, Method, Reply};
use super::wire::{
    self, ERR_INVALID_PARAMS, ERR_METHOD_NOT_FOUND, ERR_PARSE, ERR_SECTOR_STATE_NOT_FOUND,
    LegacyDeal, OnChainState, Request, Response, SectorPiece, SubmitResult,
};
use crate::sector::FailureLevel;

/// Why a manager call failed, graded into the failure levels the plans use.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(
        "manager address {0:?} is not an http(s) URL, HOST:PORT or a multiaddr such as /ip4/ADDR/tcp/PORT (also /ip6, /dns, /dns4, /dns6, and /https)"
    )]
    Address(String),
    /// No connection could be made: the call never reached the manager.
    #[error("{method}: cannot reach the manager at {endpoint}: {message}")]
    Unreachable {
        method: String,
        endpoint: String,
        message: String,
    },
    /// The connection failed after the call went out: the manager may have acted on it.
    #[error(
        "{method}: the connection to the manager at {endpoint} broke before it answered: {message}"
    )]
    Dropped {
        method: String,
        endpoint: String,
        message: String,
    },
    #[error("{method}: no answer from the manager within {timeout:?}")]
    Timeout { method: String, timeout: Duration },
    #[error("{method}: the manager answered HTTP {status}: {body}")]
    Http {
        method: String,
        status: u16,
        body: String,
    },
    #[error("{method}: the manager returned error {code}: {message}")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("{method}: cannot understand the manager's answer: {message}")]
    Malformed { method: String, message: String },
    #[error("manager token file {path}: {message}")]
    Token { path: String, message: String },
}

impl ManagerError {
    /// What went wrong, as a metric label: unreachable, timeout, http, rpc, malformed, or config
    /// (an address or token the operator was given).
    pub fn kind(&self) -> &'static str {
        match self {
            ManagerError::Unreachable { .. } | ManagerError::Dropped { .. } => "unreachable",
            ManagerError::Timeout { .. } => "timeout",
            ManagerError::Http { .. } => "http",
            ManagerError::Rpc { .. } => "rpc",
            ManagerError::Malformed { .. } => "malformed",
            ManagerError::Address(_) | ManagerError::Token { .. } => "config",
        }
    }

    /// The JSON-RPC error code the manager answered with, if it answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            ManagerError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The manager did not answer: it cannot be reached, did not answer in time, or something in
    /// front of it answered HTTP 5xx without a JSON-RPC body (go-jsonrpc's own errors carry
    /// one). An outage says nothing about the task, so a task waits it out without spending
    /// retries.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ManagerError::Unreachable { .. }
            | ManagerError::Dropped { .. }
            | ManagerError::Timeout { .. } => true,
            ManagerError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The call provably never reached the manager (no connection could be made, or the
    /// operator's own address or token is wrong): whatever it would have handed out is still
    /// the manager's to hand out. A timeout, a connection broken mid-call or an HTTP error may
    /// follow a call the manager acted on.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            ManagerError::Unreachable { .. }
                | ManagerError::Address(_)
                | ManagerError::Token { .. }
        )
    }

    /// Connection trouble, timeouts and 5xx are temporary (retry after a back-off); an API the
    /// manager does not have, an unknown sector or an answer we cannot read is for a person.
    pub fn level(&self) -> FailureLevel {
        match self {
            ManagerError::Unreachable { .. }
            | ManagerError::Dropped { .. }
            | ManagerError::Timeout { .. } => FailureLevel::Temporary,
            ManagerError::Http { status, .. } if *status >= 500 => FailureLevel::Temporary,
            ManagerError::Http { .. } => FailureLevel::Permanent,
            ManagerError::Rpc { code, .. }
                if [
                    ERR_INVALID_PARAMS,
                    ERR_METHOD_NOT_FOUND,
                    ERR_PARSE,
                    ERR_SECTOR_STATE_NOT_FOUND,
                ]
                .contains(code) =>
            {
                FailureLevel::Permanent
            }
            // The manager's own logic errors (code 1): damocles-worker retries them.
            ManagerError::Rpc { .. } => FailureLevel::Temporary,
            ManagerError::Address(_)
            | ManagerError::Malformed { .. }
            | ManagerError::Token { .. } => FailureLevel::Permanent,
        }
    }
}

/// What a submission's result means for the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Accepted now, or already (a duplicate of an identical earlier submission).
    Accepted,
    Failed(FailureLevel),
    /// The manager cannot find the persisted files: persist again.
    FilesMissed,
}

impl From<SubmitResult> for SubmitOutcome {
    fn from(result: SubmitResult) -> Self {
        match result {
            SubmitResult::Accepted | SubmitResult::DuplicateSubmit => SubmitOutcome::Accepted,
            SubmitResult::MismatchedSubmission => SubmitOutcome::Failed(FailureLevel::Permanent),
            SubmitResult::Rejected => SubmitOutcome::Failed(FailureLevel::Abort),
            SubmitResult::FilesMissed => SubmitOutcome::FilesMissed,
            SubmitResult::Unknown => SubmitOutcome::Failed(FailureLevel::Temporary),
        }
    }
}

/// What a poll's on-chain state means for the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Landed,
    /// Not there yet: poll again later.
    Wait,
    /// The message failed; submit again.
    Resubmit,
    Failed(FailureLevel),
}

impl From<OnChainState> for PollOutcome {
    fn from(state: OnChainState) -> Self {
        match state {
            OnChainState::Landed => PollOutcome::Landed,
            OnChainState::Pending | OnChainState::Packed | OnChainState::Unknown => {
                PollOutcome::Wait
            }
            OnChainState::Failed => PollOutcome::Resubmit,
            OnChainState::NotFound | OnChainState::PermFailed => {
                PollOutcome::Failed(FailureLevel::Permanent)
            }
            OnChainState::ShouldAbort => PollOutcome::Failed(FailureLevel::Abort),
        }
    }
}

/// The manager's endpoint URL from the forms damocles-worker accepts (util/net.rs `rpc_addr`): a
/// multiaddr (`/ip4`, `/ip6`, `/dns`, `/dns4` or `/dns6`, then an optional `/tcp/PORT`, and `/http`
/// or `/https` anywhere; http by default) or an http(s) URL, whose path is replaced by `/rpc/v0`;
/// also a bare `HOST:PORT`.
pub fn endpoint(address: &str) -> Result<String, ManagerError> {
    let bad = || ManagerError::Address(address.to_string());
    let (scheme, host, port) = if address.starts_with('/') {
        multiaddr_parts(address).ok_or_else(bad)?
    } else if address.contains("://") {
        let url = reqwest::Url::parse(address).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad());
        }
        // An IPv6 host comes back in brackets.
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        (url.scheme().to_string(), host.to_string(), url.port())
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains('/') => {
                let port = port.parse::<u16>().map_err(|_| bad())?;
                ("http".to_string(), host.to_string(), Some(port))
            }
            _ => return Err(bad()),
        }
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{scheme}://{host}{port}{}", wire::RPC_PATH))
}

/// The host a bearer token would cross the network to in the clear: `Some(host)` when the
/// manager address is plain http to a host other than this one (loopback).
pub fn token_exposure(address: &str) -> Result<Option<String>, ManagerError> {
    let url = reqwest::Url::parse(&endpoint(address)?)
        .map_err(|_| ManagerError::Address(address.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    Ok((url.scheme() == "http" && !loopback)
        .then(|| url.host_str().unwrap_or_default().to_string()))
}

/// Scheme, host and port of a manager multiaddr; None for a protocol a manager address cannot
/// have (its value could not even be skipped reliably).
fn multiaddr_parts(address: &str) -> Option<(String, String, Option<u16>)> {
    let mut parts = address.split('/').skip(1);
    let (mut scheme, mut host, mut port) = ("http", None, None);
    while let Some(protocol) = parts.next() {
        match protocol {
            "ip4" => {
                host = Some(
                    parts
                        .next()?
                        .parse::<std::net::Ipv4Addr>()
                        .ok()?
                        .to_string(),
                )
            }
            "ip6" => {
                let ip = parts.next()?.parse::<std::net::Ipv6Addr>().ok()?;
                host = Some(format!("[{ip}]"));
            }
            "dns" | "dns4" | "dns6" => {
                host = Some(parts.next().filter(|h| !h.is_empty())?.to_string())
            }
            "tcp" => port = Some(parts.next()?.parse::<u16>().ok()?),
            "http" => scheme = "http",
            "https" => scheme = "https",
            _ => return None,
        }
    }
    Some((scheme.to_string(), host?, port))
}

/// Reads a bearer token from a file (a mounted Secret key, for instance): surrounding whitespace is
/// dropped; an empty or unreadable file is an error that names it.
pub fn read_token(path: &std::path::Path) -> Result<String, ManagerError> {
    let error = |message: String| ManagerError::Token {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(error("the file is empty".into()));
    }
    if token.contains(char::is_whitespace) {
        return Err(error(
            "the token has whitespace inside; a file must hold one token".into(),
        ));
    }
    Ok(token.to_string())
}

/// The pieces `AcquireDeals` returned: the newest managers send `SectorPieces`, older ones legacy
/// `Deals` (`{"ID","PayloadSize","Piece":{"Size","Offset","Cid"}}`), read here into the same form.
pub fn pieces_of(method: &str, value: Value) -> Result<Vec<SectorPiece>, ManagerError> {
    let Value::Array(items) = value else {
        return match value {
            Value::Null => Ok(vec![]),
            other => Err(ManagerError::Malformed {
                method: method.to_string(),
                message: format!("expected a list of pieces, got {other}"),
            }),
        };
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let legacy = item.get("Piece").is_some_and(|p| p.get("Cid").is_some());
            let parsed = if legacy {
                serde_json::from_value::<LegacyDeal>(item).map(SectorPiece::from)
            } else {
                serde_json::from_value(item)
            };
            parsed.map_err(|e| ManagerError::Malformed {
                method: method.to_string(),
                message: format!("piece {index}: {e}"),
            })
        })
        .collect()
}

pub struct ManagerClient {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
    timeout: Duration,
    next_id: AtomicU64,
}

impl ManagerClient {
    /// `token`, when given, goes out as `Authorization: Bearer` (for managers behind an auth proxy;
    /// damocles-manager itself has no auth on /rpc/v0).
    pub fn new(
        address: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ManagerError> {
        // Builds that also link a TLS stack (tests do) need rustls' provider chosen first.
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ManagerError::Address(format!("{address}: {e}")))?;
        Ok(Self {
            http,
            endpoint: endpoint(address)?,
            token,
            timeout,
            next_id: AtomicU64::new(1),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The manager's piece store, where damocles-worker fetches deal pieces: `/piecestore/<cid>`
    /// beside `/rpc/v0` (damocles-manager pkg/piecestore; a piece it does not hold is redirected
    /// to the market).
    pub fn piece_store(&self) -> String {
        let origin = self
            .endpoint
            .strip_suffix(wire::RPC_PATH)
            .unwrap_or(&self.endpoint);
        format!("{origin}/piecestore/")
    }

    /// One JSON-RPC call; `T` is the result type (`Option<T>` where the manager may return null).
    /// The answer's body, refused past [`MAX_ANSWER_BYTES`] without reading the rest.
    async fn read_answer(
        &self,
        method: &str,
        mut response: reqwest::Response,
    ) -> Result<String, ManagerError> {
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(method, e))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ManagerError::Malformed {
                    method: method.to_string(),
                    message: format!(
                        "the answer is larger than {} MiB; not read further",
                        MAX_ANSWER_BYTES >> 20
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn call_raw<T: DeserializeOwned>(
        &self,
        name: &str,
        params: Vec<Value>,
    ) -> Result<T, ManagerError> {
        let request = Request::new(self.next_id.fetch_add(1, Ordering::Relaxed), name, params);
        let method = request.method.clone();
        let mut builder = self.http.post(&self.endpoint).json(&request);
        if let Some(token) = &self.token {
            builder = builder.bearer_auth(token);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(&method, e))?;
        let status = response.status().as_u16();
        let body = self.read_answer(&method, response).await?;
        parse_answer(method, status, &body)
    }

    /// A failure before an answer came, told apart by whether the call may have reached the
    /// manager: a connect error (refused, no route, a connect timeout) means it did not.
    fn transport_error(&self, method: &str, err: reqwest::Error) -> ManagerError {
        let (method, endpoint) = (method.to_string(), self.endpoint.clone());
        if err.is_connect() {
            ManagerError::Unreachable {
                method,
                endpoint,
                message: format!("{err:#}"),
            }
        } else if err.is_timeout() {
            ManagerError::Timeout {
                method,
                timeout: self.timeout,
            }
        } else {
            ManagerError::Dropped {
                method,
                endpoint,
                message: format!("{err:#}"),
            }
        }
    }

    /// Calls the newest API shape first and the older one when the manager counts params differently.
    async fn call_versioned<T: DeserializeOwned>(
        &self,
        name: &str,
        newest: Vec<Value>,
        older: Vec<Value>,
    ) -> Result<T, ManagerError> {
        match self.call_raw(name, newest).await {
            Err(ManagerError::Rpc {
                code: ERR_INVALID_PARAMS,
                ..
            }) => self.call_raw(name, older).await,
            other => other,
        }
    }

    /// One call, by its [`Call`]: the newest API shape first, the older one when the manager
    /// counts the params differently.
    pub async fn send(&self, call: &Call) -> Result<Reply, ManagerError> {
        let name: &'static str = call.method().into();
        let result: Value = match call.older_params() {
            Some(older) => self.call_versioned(name, call.params(), older).await?,
            None => self.call_raw(name, call.params()).await?,
        };
        if call.method() == Method::AcquireDeals {
            return pieces_of(&wire::method(name), result).map(Reply::Deals);
        }
        call.reply(result).map_err(|e| ManagerError::Malformed {
            method: wire::method(name),
            message: format!("at {}: {}", e.path(), e.inner()),
        })
    }
}

impl Manager for ManagerClient {
    async fn call(&self, call: &Call) -> Result<Reply, ManagerError> {
        self.send(call).await
    }
}

/// The largest answer the client reads. damocles-manager's biggest (a sector's piece list) is
/// well under a megabyte; anything past this is not an answer to trust.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// The result of a JSON-RPC answer: `status` the HTTP status, `body` what came with it. Protocol
/// errors come as HTTP 500 with a JSON-RPC error body, so the body is read first. Pure, so the
/// fuzz targets (src/dev/fuzzing.rs) reach it with any bytes.
pub fn parse_answer<T: DeserializeOwned>(
    method: String,
    status: u16,
    body: &str,
) -> Result<T, ManagerError> {
    let success = (200..300).contains(&status);
    let parsed: Result<Response, _> = serde_json::from_str(body);
    let response = match parsed {
        Ok(response) => response,
        Err(_) if !success => {
            return Err(ManagerError::Http {
                method,
                status,
                body: shorten(body),
            });
        }
        Err(err) => {
            return Err(ManagerError::Malformed {
                method,
                message: format!("{err}; body: {}", shorten(body)),
            });
        }
    };
    if let Some(error) = response.error {
        return Err(ManagerError::Rpc {
            method,
            code: error.code,
            message: shorten(&error.message),
        });
    }
    if !success {
        return Err(ManagerError::Http {
            method,
            status,
            body: shorten(body),
        });
    }
    let result = response.result.unwrap_or(Value::Null);
    serde_path_to_error::deserialize(result).map_err(|e| {
        let path = e.path().to_string();
        ManagerError::Malformed {
            method,
            message: format!("at {path}: {}", e.into_inner()),
        }
    })
}

fn shorten(body: &str) -> String {
    crate::text::prefix(body, 512).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_crosses_the_network_only_encrypted() {
        for (address, exposed) in [
            ("http://10.0.0.5:1789", Some("10.0.0.5")),
            ("damocles-manager:1789", Some("damocles-manager")),
            ("/dns/manager.farm/tcp/1789", Some("manager.farm")),
            ("https://10.0.0.5:1789", None),
            ("/dns/manager.farm/tcp/1789/https", None),
            ("http://127.0.0.1:1789", None),
            ("localhost:1789", None),
            ("http://[::1]:1789", None),
        ] {
            assert_eq!(
                token_exposure(address).unwrap().as_deref(),
                exposed,
                "{address}"
            );
        }
    }

    #[test]
    fn endpoints_from_the_forms_damocles_worker_accepts() {
        for (address, expected) in [
            ("/ip4/127.0.0.1/tcp/1789", "http://127.0.0.1:1789/rpc/v0"),
            (
                "/ip6/2001:db8:3333:4444:5555:6666:7777:8888/tcp/1789",
                "http://[2001:db8:3333:4444:5555:6666:7777:8888]:1789/rpc/v0",
            ),
            ("/dns/manager/tcp/1789", "http://manager:1789/rpc/v0"),
            ("/dns4/hello.com/tcp/1789", "http://hello.com:1789/rpc/v0"),
            (
                "/dns6/hello.com/tcp/1789/https",
                "https://hello.com:1789/rpc/v0",
            ),
            ("/dns/hello.com/https", "https://hello.com/rpc/v0"),
            ("127.0.0.1:1789", "http://127.0.0.1:1789/rpc/v0"),
            ("manager.sealing:1789", "http://manager.sealing:1789/rpc/v0"),
            (
                "http://manager.sealing:1789/",
                "http://manager.sealing:1789/rpc/v0",
            ),
            ("http://manager:1789/rpc/v0", "http://manager:1789/rpc/v0"),
            (
                "http://manager:1789/some/path",
                "http://manager:1789/rpc/v0",
            ),
            ("https://m:1789", "https://m:1789/rpc/v0"),
            (
                "https://sealing.example.com",
                "https://sealing.example.com/rpc/v0",
            ),
            ("http://[::1]:1789", "http://[::1]:1789/rpc/v0"),
        ] {
            assert_eq!(endpoint(address).unwrap(), expected, "{address}");
        }
        for bad in [
            "manager",
            "/ip4/1.2.3.4/udp/1",
            "/ip4/999.2.3.4/tcp/1",
            "/tcp/1789",
            "ftp://m:1789",
            ":1789",
            "m:port",
        ] {
            let err = endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn results_map_to_what_the_task_does_next() {
        assert_eq!(
            SubmitOutcome::from(SubmitResult::DuplicateSubmit),
            SubmitOutcome::Accepted
        );
        assert_eq!(
            SubmitOutcome::from(SubmitResult::Rejected),
            SubmitOutcome::Failed(FailureLevel::Abort)
        );
        assert_eq!(
            SubmitOutcome::from(SubmitResult::MismatchedSubmission),
            SubmitOutcome::Failed(FailureLevel::Permanent)
        );
        assert_eq!(
            SubmitOutcome::from(SubmitResult::FilesMissed),
            SubmitOutcome::FilesMissed
        );
        assert_eq!(
            PollOutcome::from(OnChainState::ShouldAbort),
            PollOutcome::Failed(FailureLevel::Abort)
        );
        assert_eq!(
            PollOutcome::from(OnChainState::PermFailed),
            PollOutcome::Failed(FailureLevel::Permanent)
        );
        assert_eq!(PollOutcome::from(OnChainState::Packed), PollOutcome::Wait);
        assert_eq!(
            PollOutcome::from(OnChainState::Failed),
            PollOutcome::Resubmit
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_temporary() {
        // Port 1 on loopback: nothing listens there.
        let client = ManagerClient::new("127.0.0.1:1", None, Duration::from_secs(2)).unwrap();
        let sector = wire::SectorId {
            miner: 1000,
            number: 1,
        };
        let err = client.send(&Call::AssignTicket(sector)).await.unwrap_err();
        assert_eq!(err.level(), FailureLevel::Temporary, "{err}");
        assert!(err.is_unavailable() && err.never_sent(), "{err:?}");
        assert!(
            err.to_string().contains("Venus.AssignTicket")
                && err.to_string().contains("127.0.0.1:1"),
            "{err}"
        );
    }

    /// A manager that takes the call and dies before it answers may have acted on it.
    #[tokio::test]
    async fn a_connection_broken_after_the_call_went_out_may_have_reached_the_manager() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            // Closed without an answer.
        });
        let client =
            ManagerClient::new(&address.to_string(), None, Duration::from_secs(5)).unwrap();
        let sector = wire::SectorId {
            miner: 1000,
            number: 1,
        };
        let err = client.send(&Call::AssignTicket(sector)).await.unwrap_err();
        assert!(matches!(err, ManagerError::Dropped { .. }), "{err:?}");
        assert!(err.is_unavailable() && !err.never_sent(), "{err:?}");
        assert_eq!(err.level(), FailureLevel::Temporary, "{err}");
    }
}
