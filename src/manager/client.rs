//! A client for damocles-manager (and the embedded dev manager, which speaks the same API).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::wire::{
    self, AllocateSectorSpec, AllocatedSector, ERR_INVALID_PARAMS, ERR_METHOD_NOT_FOUND,
    ERR_SECTOR_STATE_NOT_FOUND, OnChainState, PollResp, PreCommitOnChainInfo, ProofOnChainInfo,
    ReportStateReq, Request, Response, SectorId, SectorStateResp, SubmitResp, SubmitResult, Ticket,
    WaitSeedResp,
};
use crate::api::FailureLevel;

/// Why a manager call failed, graded into the failure levels the plans use.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("manager address {0:?} is not http://HOST:PORT, HOST:PORT or /ip4/ADDR/tcp/PORT")]
    Address(String),
    #[error("{method}: cannot reach the manager at {endpoint}: {message}")]
    Unreachable {
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
}

impl ManagerError {
    /// Connection trouble, timeouts and 5xx are temporary (retry after a back-off); an API the
    /// manager does not have, an unknown sector or an answer we cannot read is for a person.
    pub fn level(&self) -> FailureLevel {
        match self {
            ManagerError::Unreachable { .. } | ManagerError::Timeout { .. } => {
                FailureLevel::Temporary
            }
            ManagerError::Http { status, .. } if *status >= 500 => FailureLevel::Temporary,
            ManagerError::Http { .. } => FailureLevel::Permanent,
            ManagerError::Rpc { code, .. }
                if [
                    ERR_INVALID_PARAMS,
                    ERR_METHOD_NOT_FOUND,
                    ERR_SECTOR_STATE_NOT_FOUND,
                ]
                .contains(code) =>
            {
                FailureLevel::Permanent
            }
            // The manager's own logic errors (code 1): damocles-worker retries them.
            ManagerError::Rpc { .. } => FailureLevel::Temporary,
            ManagerError::Address(_) | ManagerError::Malformed { .. } => FailureLevel::Permanent,
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

/// The manager's endpoint URL from the forms operators write: a URL, HOST:PORT, or damocles-worker's
/// multiaddr form.
pub fn endpoint(address: &str) -> Result<String, ManagerError> {
    let bad = || ManagerError::Address(address.to_string());
    let base = if let Some(rest) = address
        .strip_prefix("/ip4/")
        .or_else(|| address.strip_prefix("/dns/"))
    {
        let mut parts = rest.split('/');
        let (host, proto, port) = (parts.next(), parts.next(), parts.next());
        match (host, proto, port) {
            (Some(host), Some("tcp"), Some(port)) if port.parse::<u16>().is_ok() => {
                format!("http://{host}:{port}")
            }
            _ => return Err(bad()),
        }
    } else if address.starts_with("http://") {
        address
            .trim_end_matches('/')
            .trim_end_matches(wire::RPC_PATH)
            .to_string()
    } else if address.starts_with("https://") {
        // damocles-manager serves plain HTTP; TLS belongs to a proxy this client does not speak yet.
        return Err(bad());
    } else if address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    {
        format!("http://{address}")
    } else {
        return Err(bad());
    };
    Ok(format!("{base}{}", wire::RPC_PATH))
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

    /// One JSON-RPC call; `T` is the result type (`Option<T>` where the manager may return null).
    pub async fn call<T: DeserializeOwned>(
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
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(&method, e))?;
        // Protocol errors come as HTTP 500 with a JSON-RPC error body: read the body first.
        let parsed: Result<Response, _> = serde_json::from_str(&body);
        let response = match parsed {
            Ok(response) => response,
            Err(_) if !status.is_success() => {
                return Err(ManagerError::Http {
                    method,
                    status: status.as_u16(),
                    body: shorten(&body),
                });
            }
            Err(err) => {
                return Err(ManagerError::Malformed {
                    method,
                    message: format!("{err}; body: {}", shorten(&body)),
                });
            }
        };
        if let Some(error) = response.error {
            return Err(ManagerError::Rpc {
                method,
                code: error.code,
                message: error.message,
            });
        }
        if !status.is_success() {
            return Err(ManagerError::Http {
                method,
                status: status.as_u16(),
                body: shorten(&body),
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

    fn transport_error(&self, method: &str, err: reqwest::Error) -> ManagerError {
        if err.is_timeout() {
            ManagerError::Timeout {
                method: method.to_string(),
                timeout: self.timeout,
            }
        } else {
            ManagerError::Unreachable {
                method: method.to_string(),
                endpoint: self.endpoint.clone(),
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
        match self.call(name, newest).await {
            Err(ManagerError::Rpc {
                code: ERR_INVALID_PARAMS,
                ..
            }) => self.call(name, older).await,
            other => other,
        }
    }

    pub async fn allocate_sector(
        &self,
        spec: &AllocateSectorSpec,
    ) -> Result<Option<AllocatedSector>, ManagerError> {
        self.call_versioned(
            "AllocateSector",
            vec![json!(spec), json!(false)],
            vec![json!(spec)],
        )
        .await
    }

    pub async fn assign_ticket(&self, sector: SectorId) -> Result<Ticket, ManagerError> {
        self.call("AssignTicket", vec![json!(sector)]).await
    }

    pub async fn submit_pre_commit(
        &self,
        sector: &AllocatedSector,
        info: &PreCommitOnChainInfo,
        reset: bool,
    ) -> Result<SubmitResp, ManagerError> {
        self.call(
            "SubmitPreCommit",
            vec![json!(sector), json!(info), json!(reset)],
        )
        .await
    }

    pub async fn poll_pre_commit_state(&self, sector: SectorId) -> Result<PollResp, ManagerError> {
        self.call("PollPreCommitState", vec![json!(sector)]).await
    }

    /// Tells the manager where the persisted files are; false means it could not find or check them.
    pub async fn submit_persisted(
        &self,
        sector: SectorId,
        instance: &str,
        upgrade: bool,
    ) -> Result<bool, ManagerError> {
        self.call(
            "SubmitPersistedEx",
            vec![json!(sector), json!(instance), json!(upgrade)],
        )
        .await
    }

    pub async fn wait_seed(
        &self,
        sector: SectorId,
        proof_type: i64,
    ) -> Result<WaitSeedResp, ManagerError> {
        self.call_versioned(
            "WaitSeed",
            vec![json!(sector), json!(proof_type)],
            vec![json!(sector)],
        )
        .await
    }

    pub async fn submit_proof(
        &self,
        sector: SectorId,
        proof: &ProofOnChainInfo,
        reset: bool,
    ) -> Result<SubmitResp, ManagerError> {
        self.call(
            "SubmitProof",
            vec![json!(sector), json!(proof), json!(reset)],
        )
        .await
    }

    pub async fn poll_proof_state(&self, sector: SectorId) -> Result<PollResp, ManagerError> {
        self.call("PollProofState", vec![json!(sector)]).await
    }

    pub async fn report_state(
        &self,
        sector: SectorId,
        report: &ReportStateReq,
    ) -> Result<Option<SectorStateResp>, ManagerError> {
        self.call("ReportState", vec![json!(sector), json!(report)])
            .await
    }

    pub async fn report_finalized(&self, sector: SectorId) -> Result<(), ManagerError> {
        self.call::<Value>("ReportFinalized", vec![json!(sector)])
            .await
            .map(drop)
    }

    pub async fn report_aborted(&self, sector: SectorId, reason: &str) -> Result<(), ManagerError> {
        self.call::<Value>("ReportAborted", vec![json!(sector), json!(reason)])
            .await
            .map(drop)
    }
}

fn shorten(body: &str) -> String {
    let mut end = body.len().min(512);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_the_forms_operators_write() {
        assert_eq!(
            endpoint("/ip4/127.0.0.1/tcp/1789").unwrap(),
            "http://127.0.0.1:1789/rpc/v0"
        );
        assert_eq!(
            endpoint("127.0.0.1:1789").unwrap(),
            "http://127.0.0.1:1789/rpc/v0"
        );
        assert_eq!(
            endpoint("http://manager.sealing:1789/").unwrap(),
            "http://manager.sealing:1789/rpc/v0"
        );
        assert_eq!(
            endpoint("http://manager:1789/rpc/v0").unwrap(),
            "http://manager:1789/rpc/v0"
        );
        for bad in [
            "manager",
            "/ip4/1.2.3.4/udp/1",
            "https://m:1789",
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
        let err = client
            .assign_ticket(SectorId {
                miner: 1000,
                number: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(err.level(), FailureLevel::Temporary, "{err}");
        assert!(
            err.to_string().contains("Venus.AssignTicket")
                && err.to_string().contains("127.0.0.1:1"),
            "{err}"
        );
    }
}
