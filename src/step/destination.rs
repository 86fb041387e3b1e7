//! Where an unsealed piece goes: the destination URLs damocles-manager hands out with
//! AcquireUnsealDest, read as damocles-worker's unseal upload reads them. Parsing is pure, so the
//! task refuses a destination it could never deliver to before it runs a step, and the upload step
//! delivers to exactly what was checked.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

/// What a market token is replaced with where the task records a destination: the task's status
/// is readable by everyone who may list tasks, the market's (droplet's) token is not. The upload
/// step takes the token from [`MARKET_TOKEN_ENV`] instead.
pub const REDACTED_TOKEN: &str = "redacted";

/// The market (droplet) token in the step's environment: damocles-worker's `piece_token`, sent on
/// the piece fetches the manager redirects to the market and on `market://` uploads.
pub const MARKET_TOKEN_ENV: &str = "PIECE_FETCHER_TOKEN";

/// One destination of an unsealed piece.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `http(s)://...`: a PUT of the bytes to the URL as given; any 2xx is delivered.
    Http(String),
    /// `market://<store>/<piece>?host=&scheme=&token=` (the manager adds host, scheme and token
    /// to what the market asked for): a PUT to the market's
    /// `<scheme>://<host>/resource?resource-id=<piece>&store=<store>` with the token as bearer;
    /// only 200 is delivered.
    Market { endpoint: String, token: String },
    /// `file:///<path>`: a copy to that path on the step's node.
    File(PathBuf),
    /// `store://<instance>/<path>`: a copy into the persist store of that name.
    Store { instance: String, path: String },
    /// `store:///<piece>`: a PUT to the manager's piece store (the manager's own unseal command
    /// asks for this).
    PieceStore { piece: String },
}

/// A destination that cannot be delivered to, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unseal destination {destination}: {reason}")]
pub struct DestinationError {
    /// The destination, with any token redacted.
    pub destination: String,
    pub reason: String,
}

impl Destination {
    pub fn parse(text: &str) -> Result<Self, DestinationError> {
        let error = |reason: &str| DestinationError {
            destination: redact(text),
            reason: reason.to_string(),
        };
        let url = Url::parse(text).map_err(|e| error(&format!("not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default();
        let path = url.path().trim_start_matches('/');
        match url.scheme() {
            "http" | "https" => Ok(Destination::Http(text.to_string())),
            "market" => {
                let query = |key: &str| {
                    url.query_pairs()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.into_owned())
                        .filter(|v| !v.is_empty())
                };
                let (Some(market_host), Some(scheme), Some(token)) =
                    (query("host"), query("scheme"), query("token"))
                else {
                    return Err(error(
                        "a market destination needs host, scheme and token (the manager adds \
                         them from its market API settings)",
                    ));
                };
                if host.is_empty() || path.is_empty() {
                    return Err(error(
                        "a market destination is market://<store>/<piece cid>",
                    ));
                }
                let mut endpoint = Url::parse(&format!("{scheme}://{market_host}/resource"))
                    .map_err(|e| error(&format!("market address {scheme}://{market_host}: {e}")))?;
                endpoint
                    .query_pairs_mut()
                    .append_pair("resource-id", path)
                    .append_pair("store", host);
                Ok(Destination::Market {
                    endpoint: endpoint.to_string(),
                    token,
                })
            }
            "file" => url
                .to_file_path()
                .ok()
                .filter(|p| p.is_absolute() && p.file_name().is_some())
                .map(Destination::File)
                .ok_or_else(|| error("a file destination is file:///<absolute path of a file>")),
            "store" if host.is_empty() => {
                if path.is_empty() || path.contains('/') {
                    return Err(error("store:///<piece cid> names one piece"));
                }
                Ok(Destination::PieceStore {
                    piece: path.to_string(),
                })
            }
            "store" => {
                let climbs = text
                    .split(['/', '?', '#'])
                    .any(|part| part == ".." || part.eq_ignore_ascii_case("%2e%2e"));
                if path.is_empty() || climbs {
                    return Err(error(
                        "a store destination is store://<instance>/<path inside the store>",
                    ));
                }
                Ok(Destination::Store {
                    instance: host.to_string(),
                    path: path.to_string(),
                })
            }
            other => Err(error(&format!(
                "unsupported scheme {other}: damocles-worker delivers to http(s), market, file \
                 and store"
            ))),
        }
    }
}

impl Destination {
    /// Why the admin's allowlists forbid this destination: an http(s) or market host not in
    /// `allowed_hosts`, a file outside every one of `delivery_roots`. `None`: allowed.
    pub fn forbidden(
        &self,
        allowed_hosts: &[String],
        delivery_roots: &[PathBuf],
    ) -> Option<String> {
        let host_refused = |url: &str| {
            (!host_allowed(allowed_hosts, url)).then(|| {
                format!(
                    "host {} is not in profiles.allowedHosts ({allowed_hosts:?}; the manager's \
                     and the piece store's hosts are always allowed): add it there if the farm \
                     trusts it",
                    host_of(url).unwrap_or_default()
                )
            })
        };
        match self {
            Destination::Http(url) => host_refused(url),
            Destination::Market { endpoint, .. } => host_refused(endpoint),
            Destination::File(path) => delivery_root(delivery_roots, path).is_none().then(|| {
                format!(
                    "{} is not under profiles.deliveryRoots ({delivery_roots:?}): file:// \
                     destinations are written on the node only below a directory the admin \
                     named",
                    path.display()
                )
            }),
            Destination::Store { .. } | Destination::PieceStore { .. } => None,
        }
    }
}

/// The host of `url`, lower-case, without its port.
pub fn host_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    url.host_str().map(str::to_ascii_lowercase)
}

/// Whether an `allowedHosts` entry is a host (any port) or `host:port` and nothing more.
pub fn check_allowed_host(entry: &str) -> Result<(), String> {
    let url = Url::parse(&format!("http://{entry}/"))
        .map_err(|e| format!("not a host or host:port: {e}"))?;
    if entry.contains(['/', '@', '?', '#']) || url.host_str().is_none() {
        return Err("not a host or host:port (no scheme, path or user)".into());
    }
    Ok(())
}

/// Whether `url` is http(s) to a host `allowed` lists: an entry `host` allows every port of it,
/// `host:port` that port only.
pub fn host_allowed(allowed: &[String], url: &str) -> bool {
    let Ok(url) = Url::parse(url) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    allowed.iter().any(|entry| {
        Url::parse(&format!("http://{entry}/")).is_ok_and(|pattern| {
            pattern
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
                && (pattern.port().is_none() || pattern.port() == Some(port))
        })
    })
}

/// The root of `roots` that `path` lies under, judged on the path as written: it must be
/// absolute, without `.` or `..`, and strictly below the root. Symlinks are the step's to refuse
/// (it sees the files).
pub fn delivery_root<'a>(roots: &'a [PathBuf], path: &Path) -> Option<&'a PathBuf> {
    use std::path::Component;
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean {
        return None;
    }
    roots
        .iter()
        .find(|root| path.starts_with(root) && path != root.as_path())
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Http(url) => f.write_str(url),
            Destination::Market { endpoint, .. } => write!(f, "market {endpoint}"),
            Destination::File(path) => write!(f, "file://{}", path.display()),
            Destination::Store { instance, path } => write!(f, "store://{instance}/{path}"),
            Destination::PieceStore { piece } => write!(f, "store:///{piece}"),
        }
    }
}

/// `text` with the value of a `token` query parameter replaced by [`REDACTED_TOKEN`], the rest
/// of it as it was.
pub fn redact(text: &str) -> String {
    let Some((head, rest)) = text.split_once('?') else {
        return text.to_string();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (rest, None),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => format!("token={REDACTED_TOKEN}"),
            _ => pair.to_string(),
        })
        .collect();
    let mut redacted = format!("{head}?{}", query.join("&"));
    if let Some(fragment) = fragment {
        redacted.push('#');
        redacted.push_str(fragment);
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECE: &str = "baga6ea4seaqpiece";

    #[test]
    fn every_scheme_damocles_worker_delivers_to_is_read() {
        assert_eq!(
            Destination::parse("https://host/put/here?x=1").unwrap(),
            Destination::Http("https://host/put/here?x=1".into())
        );
        assert_eq!(
            Destination::parse(&format!(
                "market://retrievals/{PIECE}?host=10.0.0.2:41235&scheme=http&token=s3cret"
            ))
            .unwrap(),
            Destination::Market {
                endpoint: format!(
                    "http://10.0.0.2:41235/resource?resource-id={PIECE}&store=retrievals"
                ),
                token: "s3cret".into(),
            }
        );
        assert_eq!(
            Destination::parse("file:///data/out/piece.bin").unwrap(),
            Destination::File("/data/out/piece.bin".into())
        );
        assert_eq!(
            Destination::parse("store://store-1/unsealed/piece").unwrap(),
            Destination::Store {
                instance: "store-1".into(),
                path: "unsealed/piece".into()
            }
        );
        assert_eq!(
            Destination::parse(&format!("store:///{PIECE}")).unwrap(),
            Destination::PieceStore {
                piece: PIECE.into()
            }
        );
    }

    #[test]
    fn destinations_that_cannot_be_delivered_say_why_without_the_token() {
        for (text, reason) in [
            ("ftp://host/x", "unsupported scheme ftp"),
            (
                "market://store/piece?host=h&scheme=http",
                "needs host, scheme and token",
            ),
            (
                "market://store?host=h&scheme=http&token=t",
                "market://<store>/<piece cid>",
            ),
            ("file:///", "file:///<absolute path"),
            ("store://store-1/../etc/passwd", "store://<instance>/<path"),
            ("store://store-1/", "store://<instance>/<path"),
            ("store:///a/b", "names one piece"),
            ("not a url", "not a URL"),
        ] {
            let error = Destination::parse(text).unwrap_err();
            assert!(error.reason.contains(reason), "{text}: {error}");
        }
        let error = Destination::parse("market://s?host=h&scheme=http&token=s3cret").unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn a_recorded_destination_carries_no_token() {
        let text = format!("market://retrievals/{PIECE}?host=h:1&scheme=http&token=s3cret");
        let recorded = redact(&text);
        assert!(!recorded.contains("s3cret"), "{recorded}");
        assert_eq!(
            recorded,
            format!("market://retrievals/{PIECE}?host=h:1&scheme=http&token=redacted")
        );
        // Everything else is kept, so the step delivers to the same place.
        let Destination::Market { endpoint, token } = Destination::parse(&recorded).unwrap() else {
            panic!("still a market destination")
        };
        assert_eq!(token, REDACTED_TOKEN);
        assert_eq!(
            endpoint,
            format!("http://h:1/resource?resource-id={PIECE}&store=retrievals")
        );
        assert_eq!(redact("file:///x"), "file:///x");
    }

    #[test]
    fn only_allowed_hosts_and_delivery_roots_are_reached() {
        let hosts = vec!["10.0.0.2".to_string(), "market.farm:41235".to_string()];
        let roots = vec![PathBuf::from("/srv/retrieved")];
        let allowed = |text: &str| Destination::parse(text).unwrap().forbidden(&hosts, &roots);
        assert_eq!(allowed("http://10.0.0.2:9999/put"), None);
        assert_eq!(allowed("https://10.0.0.2/put"), None);
        assert_eq!(
            allowed(&format!(
                "market://s/{PIECE}?host=MARKET.farm:41235&scheme=http&token=t"
            )),
            None
        );
        assert_eq!(allowed("file:///srv/retrieved/a/piece"), None);
        assert_eq!(allowed("store://store-1/x"), None);
        for (text, reason) in [
            (
                "http://evil.example/put",
                "host evil.example is not in profiles.allowedHosts",
            ),
            ("http://market.farm:80/put", "host market.farm is not in"),
            (
                "market://s/p?host=169.254.169.254&scheme=http&token=t",
                "host 169.254.169.254 is not in",
            ),
            (
                "file:///etc/cron.d/job",
                "/etc/cron.d/job is not under profiles.deliveryRoots",
            ),
            (
                "file:///srv/retrieved-other/x",
                "is not under profiles.deliveryRoots",
            ),
            // The url crate resolves the climb before we see it: still outside.
            ("file:///srv/retrieved/../../etc/x", "/etc/x is not under"),
        ] {
            let reason_given = allowed(text).unwrap_or_else(|| panic!("{text} allowed"));
            assert!(reason_given.contains(reason), "{text}: {reason_given}");
        }
        assert!(
            Destination::File("/srv/retrieved".into())
                .forbidden(&hosts, &roots)
                .is_some(),
            "the root itself is not a file under it"
        );
        assert!(
            delivery_root(&roots, Path::new("/srv/retrieved/a/../../../etc/x")).is_none(),
            "a climb written out is refused too"
        );
    }

    #[test]
    fn allowed_host_entries_are_hosts() {
        for good in ["10.0.0.2", "market.farm:41235", "[::1]:8080", "localhost"] {
            assert_eq!(check_allowed_host(good), Ok(()), "{good}");
        }
        for bad in ["http://h", "h/path", "user@h", "", "h:notaport"] {
            assert!(check_allowed_host(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            host_of("http://Manager.Farm:1789/rpc/v0").unwrap(),
            "manager.farm"
        );
        assert!(host_allowed(&["[::1]".into()], "http://[::1]:5/x"));
        assert!(!host_allowed(&["h".into()], "ftp://h/x"));
    }
}
