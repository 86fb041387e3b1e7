//! The kubelet's log endpoint, as the API server reaches it for `kubectl logs` and for the
//! operator's `pods/log` reads: HTTPS on the port each Node advertises
//! (`status.daemonEndpoints.kubeletEndpoint.Port`, on its InternalIP 127.0.0.1), serving
//! `GET /containerLogs/<namespace>/<pod>/<container>` with `tailLines` and `limitBytes`. The API
//! server does not check a kubelet's serving certificate unless told a CA, so a self-signed one
//! does, as on a kubeadm cluster without serving-certificate rotation.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::warn;

use super::DevNode;

/// The query `kubectl logs` and client libraries send (the kubelet's PodLogOptions).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

/// Binds the log endpoint on 127.0.0.1 and serves it in the background; returns its port.
pub(super) async fn serve(node: DevNode) -> anyhow::Result<u16> {
    crate::install_crypto_provider();
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let key =
        rcgen::generate_simple_self_signed(names).context("cannot make a serving certificate")?;
    let certificate = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], private)
        .context("cannot configure TLS")?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the log endpoint")?;
    let port = listener.local_addr()?.port();
    let tls = TlsListener {
        tcp: listener,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
    };
    let router = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_log),
        )
        .with_state(node);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(tls, router).await {
            warn!("the log endpoint stopped: {err}");
        }
    });
    Ok(port)
}

async fn container_log(
    State(node): State<DevNode>,
    Path((namespace, name, container)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<String, (StatusCode, String)> {
    let not_found = |what: String| (StatusCode::NOT_FOUND, what);
    let pods: Api<Pod> = Api::namespaced(node.client.clone(), &namespace);
    let pod = pods
        .get_opt(&name)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .ok_or_else(|| not_found(format!("pod {namespace}/{name} not found")))?;
    let on_this_node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| node.owns(n));
    if !on_this_node {
        return Err(not_found(format!(
            "pod {namespace}/{name} is not on this node"
        )));
    }
    let path = node.pod_dir(&pod).join(format!("{container}.log"));
    let bytes = std::fs::read(&path).map_err(|_| {
        not_found(format!(
            "container {container} of pod {namespace}/{name} has no log (not started)"
        ))
    })?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(select(&text, &query))
}

/// The last `tailLines` lines, then at most `limitBytes` bytes of them, as the kubelet cuts a log.
fn select(text: &str, query: &LogQuery) -> String {
    let mut selected = match query.tail_lines {
        Some(tail) => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            lines[lines.len().saturating_sub(tail)..].concat()
        }
        None => text.to_string(),
    };
    if let Some(limit) = query.limit_bytes
        && selected.len() > limit
    {
        let cut = crate::text::prefix(&selected, limit).len();
        selected.truncate(cut);
    }
    selected
}

/// TCP with a TLS handshake per connection, for `axum::serve`.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!("log endpoint: cannot accept: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.acceptor.accept(stream).await {
                Ok(tls) => return (tls, address),
                Err(err) => warn!("log endpoint: TLS handshake with {address} failed: {err}"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_then_limit_bytes_as_the_kubelet_cuts() {
        let log = "one\ntwo\nthree\n";
        let query = |tail_lines, limit_bytes| LogQuery {
            tail_lines,
            limit_bytes,
        };
        assert_eq!(select(log, &query(None, None)), log);
        assert_eq!(select(log, &query(Some(2), None)), "two\nthree\n");
        assert_eq!(select(log, &query(Some(9), None)), log);
        assert_eq!(select(log, &query(Some(2), Some(5))), "two\nt");
        assert_eq!(select("no newline", &query(Some(1), None)), "no newline");
    }
}
