//! The dev manager's JSON-RPC endpoint: faults injected from the admin API, then each sealer
//! method dispatched to the simulated chain.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::debug;

use super::admin::OutageMode;
use super::chain::{ChainError, Submit};
use super::lifecycle::{SnapUpChecks, reserve_space};
use super::server::Shared;
use super::verify::{verify, verify_snap};
use crate::manager::Method;
use crate::manager::wire::{
    AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector, CidJson, ERR_INVALID_PARAMS,
    ERR_METHOD_NOT_FOUND, ERR_PARSE, PreCommitOnChainInfo, ProofOnChainInfo, ReportStateReq,
    Request, SectorId, SectorStateResp, SnapUpOnChainInfo, SubmitResp,
};

fn rpc_error(id: &Value, code: i64, message: String) -> (StatusCode, Json<Value>) {
    // Like go-jsonrpc (server.go rpcError): protocol errors are HTTP 500 and their message starts
    // with the code; the manager's own errors are HTTP 200.
    let (status, message) = if code < 0 {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("(error code {code}) {message}"),
        )
    } else {
        (StatusCode::OK, message)
    };
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})),
    )
}

pub(super) async fn rpc(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let outage = *shared.outage.lock().expect("outage lock");
    if let Some((until, mode)) = outage
        && std::time::Instant::now() < until
    {
        match mode {
            // A manager that stopped answering: the call hangs until the outage is over (a
            // client with a shorter timeout gave up long before).
            OutageMode::Hang => tokio::time::sleep_until(until.into()).await,
            // What a proxy in front of a stopped manager answers: no JSON-RPC body.
            OutageMode::Unavailable => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "503 Service Unavailable: dev manager outage (fault injection)",
                )
                    .into_response();
            }
        }
    }
    answer(&shared, body).await.into_response()
}

async fn answer(shared: &Arc<Shared>, body: String) -> (StatusCode, Json<Value>) {
    let shared = shared.clone();
    let request: Request = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(err) => {
            return rpc_error(
                &Value::Null,
                ERR_PARSE,
                format!("unmarshaling request: {err}"),
            );
        }
    };
    let id = json!(request.id);
    // damocles-manager registers its API under the `Venus` namespace only.
    let Some(name) = request.method.strip_prefix("Venus.").map(str::to_string) else {
        return rpc_error(
            &id,
            ERR_METHOD_NOT_FOUND,
            format!("method '{}' not found", request.method),
        );
    };
    let fault = shared
        .faults
        .lock()
        .expect("faults lock")
        .get(&name)
        .cloned();
    if let Some(fault) = &fault {
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        if fault.fail_next > 0 {
            if let Some(f) = shared.faults.lock().expect("faults lock").get_mut(&name) {
                f.fail_next -= 1;
            }
            return rpc_error(
                &id,
                1,
                format!("injected failure of {name} (dev manager fault injection)"),
            );
        }
    }
    // A forced answer to a submission stands for a manager that refused it: nothing is recorded.
    if let Some(code) = fault.as_ref().and_then(|f| f.force_result)
        && name.starts_with("Submit")
        && name != "SubmitPersistedEx"
    {
        let desc = format!("result {code} forced by dev manager fault injection");
        return (
            StatusCode::OK,
            Json(json!({"jsonrpc": "2.0", "id": id, "result": {"Res": code, "Desc": desc}})),
        );
    }
    let started = std::time::Instant::now();
    let outcome = dispatch(&shared, &name, request.params).await;
    debug!(
        method = %name,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        ok = outcome.is_ok(),
        "answered"
    );
    match outcome {
        Ok(mut result) => {
            if let Some(code) = fault.and_then(|f| f.force_result) {
                for key in ["Res", "State"] {
                    if let Some(slot) = result.get_mut(key) {
                        *slot = json!(code);
                    }
                }
            }
            (
                StatusCode::OK,
                Json(json!({"jsonrpc": "2.0", "id": id, "result": result})),
            )
        }
        Err(RpcFailure { code, message }) => rpc_error(&id, code, message),
    }
}

pub(super) struct RpcFailure {
    pub(super) code: i64,
    pub(super) message: String,
}

impl RpcFailure {
    /// damocles-manager's logic error (code 1): the call may succeed later.
    pub(super) fn logic(message: String) -> Self {
        RpcFailure { code: 1, message }
    }
}

impl From<ChainError> for RpcFailure {
    fn from(err: ChainError) -> Self {
        let (code, message) = err.rpc();
        RpcFailure { code, message }
    }
}

/// Decodes one param as go-jsonrpc does: a param of the wrong type is a parse error (-32700)
/// naming the type it should have been, not an invalid-params error.
fn param<T: serde::de::DeserializeOwned>(
    params: &[Value],
    index: usize,
    method: &str,
) -> Result<T, RpcFailure> {
    serde_json::from_value(params[index].clone()).map_err(|e| {
        let type_name = std::any::type_name::<T>();
        let short = type_name.rsplit("::").next().unwrap_or(type_name);
        RpcFailure {
            code: ERR_PARSE,
            message: format!("unmarshaling params for 'Venus.{method}' (param: *{short}): {e}"),
        }
    })
}

/// Makes a submission of `method` through `send`. An armed `failOnChain` fault gives the message
/// its receipt, and is spent only if a new message was sent (a repeat without reset sends none).
fn submit_with_faults(
    shared: &Shared,
    method: &str,
    reset: bool,
    send: impl FnOnce(Submit) -> Result<(SubmitResp, bool), ChainError>,
) -> Result<SubmitResp, RpcFailure> {
    let armed = shared
        .faults
        .lock()
        .expect("faults lock")
        .get(method)
        .is_some_and(|f| f.fail_on_chain > 0);
    let fail_on_chain = armed.then(|| {
        "exit code SysErrInsufficientFunds (6): failed on chain (dev manager fault injection)"
            .to_string()
    });
    let (resp, sent) = send(Submit {
        reset,
        fail_on_chain,
    })?;
    if sent
        && armed
        && let Some(fault) = shared.faults.lock().expect("faults lock").get_mut(method)
    {
        fault.fail_on_chain = fault.fail_on_chain.saturating_sub(1);
    }
    Ok(resp)
}

fn expect_params(params: &[Value], count: usize, method: &str) -> Result<(), RpcFailure> {
    if params.len() != count {
        return Err(RpcFailure {
            code: ERR_INVALID_PARAMS,
            message: format!(
                "wrong param count (method 'Venus.{method}'): {} != {count}",
                params.len()
            ),
        });
    }
    Ok(())
}

async fn dispatch(shared: &Shared, name: &str, params: Vec<Value>) -> Result<Value, RpcFailure> {
    let rules = &shared.config.rules;
    let head = shared.head();
    shared.chain().settle_upgrades(rules, head);
    let p = &params;
    let method: Option<Method> = name.parse().ok();
    let value = match method {
        Some(Method::AllocateSector) => {
            // [spec] in every release and on master; the [spec, niporep] shape exists only on
            // damocles' unreleased felix/niporep branch.
            expect_params(p, 1, name)?;
            let spec: AllocateSectorSpec = param(p, 0, name)?;
            json!(shared.chain().allocate(rules, &spec))
        }
        Some(Method::AssignTicket) => {
            expect_params(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .assign_ticket(rules, param(p, 0, name)?, head)?
            )
        }
        Some(Method::SubmitPreCommit) => {
            expect_params(p, 3, name)?;
            let sector: AllocatedSector = param(p, 0, name)?;
            let info: PreCommitOnChainInfo = param(p, 1, name)?;
            let reset: bool = param(p, 2, name)?;
            json!(submit_with_faults(shared, name, reset, |submit| {
                shared
                    .chain()
                    .submit_pre_commit(rules, &sector, &info, submit, head)
            })?)
        }
        Some(Method::PollPreCommitState) => {
            expect_params(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .poll_pre_commit(rules, param(p, 0, name)?, head)?
            )
        }
        Some(Method::SubmitPersistedEx | Method::SubmitPersisted) => {
            let extended = name == "SubmitPersistedEx";
            expect_params(p, if extended { 3 } else { 2 }, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let instance: String = param(p, 1, name)?;
            let upgrade: bool = if extended { param(p, 2, name)? } else { false };
            let present = shared.files_present(sector, &instance, upgrade);
            json!(
                shared
                    .chain()
                    .submit_persisted(rules, sector, &instance, upgrade, present)?
            )
        }
        Some(Method::AcquireDeals) => {
            expect_params(p, 2, name)?;
            let _: crate::manager::wire::AcquireDealsSpec = param(p, 1, name)?;
            json!(super::market::acquire_deals(shared, param(p, 0, name)?).await?)
        }
        Some(Method::StoreReserveSpace) => {
            expect_params(p, 3, name)?;
            let _: SectorId = param(p, 0, name)?;
            let candidates: Option<Vec<String>> = param(p, 2, name)?;
            json!(reserve_space(
                &shared.config.stores,
                &candidates.unwrap_or_default()
            ))
        }
        Some(Method::StoreBasicInfo) => {
            expect_params(p, 1, name)?;
            let instance: String = param(p, 0, name)?;
            json!(shared.store(&instance))
        }
        Some(Method::AllocateSanpUpSector) => {
            expect_params(p, 1, name)?;
            let spec: AllocateSnapUpSpec = param(p, 0, name)?;
            json!(super::market::allocate_snapup(shared, &spec).await?)
        }
        Some(Method::SubmitSnapUpProof) => {
            expect_params(p, 2, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let info: SnapUpOnChainInfo = param(p, 1, name)?;
            let checks = SnapUpChecks {
                proof_sha256: hex::encode(Sha256::digest(&info.proof.0)),
                files_present: shared.files_present(sector, &info.access_instance, true),
                verified: verify_snap(shared, sector, &info).await?,
            };
            json!(
                shared
                    .chain()
                    .submit_snapup(rules, sector, &info, &checks, head)?
            )
        }
        Some(Method::AllocateRebuildSector) => {
            expect_params(p, 1, name)?;
            let spec: AllocateSectorSpec = param(p, 0, name)?;
            json!(shared.chain().allocate_rebuild(rules, &spec))
        }
        Some(Method::AllocateUnsealSector) => {
            expect_params(p, 1, name)?;
            let spec: AllocateSectorSpec = param(p, 0, name)?;
            json!(shared.chain().allocate_unseal(rules, &spec)?)
        }
        Some(Method::AcquireUnsealDest) => {
            expect_params(p, 2, name)?;
            let cid: CidJson = param(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .unseal_dest(rules, param(p, 0, name)?, &cid.cid)?
            )
        }
        Some(Method::AchieveUnsealSector) => {
            expect_params(p, 3, name)?;
            let cid: CidJson = param(p, 1, name)?;
            let error: String = param(p, 2, name)?;
            shared
                .chain()
                .achieve_unseal(rules, param(p, 0, name)?, &cid.cid, &error)?;
            Value::Null
        }
        Some(Method::WaitSeed) => {
            // [sector, proof type] since v0.11.0 (v0.8.4-v0.10.2 took [sector]).
            expect_params(p, 2, name)?;
            json!(shared.chain().wait_seed(rules, param(p, 0, name)?, head)?)
        }
        Some(Method::SubmitProof) => {
            expect_params(p, 3, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let proof: ProofOnChainInfo = param(p, 1, name)?;
            let reset: bool = param(p, 2, name)?;
            let sha256 = hex::encode(Sha256::digest(&proof.proof.0));
            // A repeat or a refusal is answered before the proof is checked, as damocles-manager
            // answers it; only a proof that could be recorded is verified.
            let answered = shared
                .chain()
                .proof_answer_before_verify(rules, sector, &sha256, reset, head)?
                .is_some();
            let verified = answered || verify(shared, sector, &proof.proof.0).await?;
            json!(submit_with_faults(shared, name, reset, |submit| {
                shared
                    .chain()
                    .submit_proof(rules, sector, &sha256, verified, submit, head)
            })?)
        }
        Some(Method::PollProofState) => {
            expect_params(p, 1, name)?;
            json!(shared.chain().poll_proof(rules, param(p, 0, name)?, head)?)
        }
        Some(Method::ReportState) => {
            expect_params(p, 2, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let report: ReportStateReq = param(p, 1, name)?;
            let mut text = format!(
                "{} -> {} ({})",
                report.state_change.prev, report.state_change.next, report.state_change.event
            );
            if let Some(failure) = &report.failure {
                text.push_str(&format!(" failure {}: {}", failure.level, failure.desc));
            }
            let mut chain = shared.chain();
            let record = chain.report(rules, sector, text)?;
            json!(SectorStateResp {
                id: sector,
                finalized: record.finalized,
                // A Go string: "" when the sector was not aborted, never null.
                abort_reason: Some(record.aborted.clone().unwrap_or_default())
            })
        }
        Some(Method::ReportFinalized) => {
            expect_params(p, 1, name)?;
            shared.chain().finalize(rules, param(p, 0, name)?)?;
            Value::Null
        }
        Some(Method::ReportAborted) => {
            expect_params(p, 2, name)?;
            let reason: String = param(p, 1, name)?;
            shared.chain().abort(rules, param(p, 0, name)?, &reason)?;
            Value::Null
        }
        Some(Method::WorkerPing) => {
            expect_params(p, 1, name)?;
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            shared.chain().worker_ping(param(p, 0, name)?, now)?;
            Value::Null
        }
        None if name == "Version" => json!(concat!(
            "damocles-operator dev-manager ",
            env!("CARGO_PKG_VERSION")
        )),
        _ => {
            // The dev manager serves the sealer API only (and Version); the production manager
            // has more methods under the same namespace.
            return Err(RpcFailure {
                code: ERR_METHOD_NOT_FOUND,
                message: format!("method 'Venus.{name}' not found"),
            });
        }
    };
    let read_only = matches!(
        method,
        None | Some(
            Method::StoreBasicInfo
                | Method::StoreReserveSpace
                | Method::AcquireUnsealDest
                | Method::PollPreCommitState
                | Method::PollProofState
        )
    );
    if !read_only {
        shared
            .save()
            .await
            .map_err(|e| RpcFailure::logic(format!("cannot save state: {e:#}")))?;
    }
    Ok(value)
}
