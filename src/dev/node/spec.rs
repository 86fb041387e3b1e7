//! The pure parts of the dev node: parsing `--node` specs and mapping a pod's paths onto local
//! directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Extended resources and standard ones a dev node may advertise.
pub const CAPACITY_KEYS: [&str; 7] = [
    "cpu",
    "memory",
    "pods",
    "ephemeral-storage",
    "nvidia.com/gpu",
    "hugepages-1Gi",
    "hugepages-2Mi",
];

/// One Node the dev node registers: `NAME[,RESOURCE=QUANTITY...][,label:KEY=VALUE...][,pull=fail]`,
/// e.g. `gpu-0,cpu=8,memory=32Gi,nvidia.com/gpu=1,label:damocles.io/gpu=true`. `pull=fail` makes
/// every image pull on the node fail (its pods stay Pending in ErrImagePull), to test pods that
/// never start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: BTreeMap<String, String>,
    pub image_pulls_fail: bool,
}

impl FromStr for NodeSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let name = parts.next().unwrap_or_default().trim().to_string();
        let valid_name = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_name {
            return Err(format!(
                "node name {name:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.')"
            ));
        }
        let mut capacity: BTreeMap<String, String> =
            [("cpu", "4"), ("memory", "16Gi"), ("pods", "110")]
                .map(|(k, v)| (k.into(), v.into()))
                .into();
        let mut labels = BTreeMap::new();
        let mut image_pulls_fail = false;
        for part in parts.map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("{part:?} in node {name} is not KEY=VALUE (resources) or label:KEY=VALUE")
            })?;
            if key == "pull" {
                if value != "fail" {
                    return Err(format!(
                        "pull={value:?} in node {name}: the only value is fail"
                    ));
                }
                image_pulls_fail = true;
            } else if let Some(label) = key.strip_prefix("label:") {
                labels.insert(label.to_string(), value.to_string());
            } else if CAPACITY_KEYS.contains(&key) {
                if value.is_empty() || !value.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(format!("{key}={value:?} in node {name} is not a quantity"));
                }
                capacity.insert(key.to_string(), value.to_string());
            } else {
                return Err(format!(
                    "unknown resource {key:?} in node {name}; known: {} (labels: label:KEY=VALUE)",
                    CAPACITY_KEYS.join(", ")
                ));
            }
        }
        Ok(NodeSpec {
            name,
            labels,
            capacity,
            image_pulls_fail,
        })
    }
}

/// Container paths (volume mounts, the termination-message file) and the local directories or
/// files that stand in for them, longest container path first.
#[derive(Clone, Debug, Default)]
pub struct PathMap {
    entries: Vec<(String, PathBuf)>,
}

impl PathMap {
    pub fn insert(&mut self, container_path: &str, local: PathBuf) {
        let container_path = container_path.trim_end_matches('/').to_string();
        self.entries.retain(|(p, _)| *p != container_path);
        self.entries.push((container_path, local));
        self.entries
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// The local path for a container path, if it lies under a mapped one.
    pub fn local(&self, path: &str) -> Option<PathBuf> {
        self.entries.iter().find_map(|(prefix, local)| {
            if path == prefix {
                Some(local.clone())
            } else {
                path.strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| local.join(rest))
            }
        })
    }

    /// Rewrites every container path in an argument or environment value (a whole path, the value
    /// of `--flag=path`, a path inside a `sh -c` script) to its local stand-in, in one left-to-right
    /// pass so a replacement is never rewritten again. A process has no mount namespace here, so
    /// this is how it finds its volumes.
    pub fn rewrite(&self, text: &str) -> String {
        let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut previous: Option<char> = None;
        'scan: while let Some(c) = rest.chars().next() {
            if previous.is_none_or(|p| !is_path_char(p)) {
                for (prefix, local) in &self.entries {
                    if let Some(after) = rest.strip_prefix(prefix.as_str())
                        && after
                            .chars()
                            .next()
                            .is_none_or(|n| n == '/' || !is_path_char(n))
                    {
                        out.push_str(&local.display().to_string());
                        rest = after;
                        previous = prefix.chars().last();
                        continue 'scan;
                    }
                }
            }
            out.push(c);
            rest = &rest[c.len_utf8()..];
            previous = Some(c);
        }
        out
    }
}

/// Where a hostPath volume lives on this machine: under `host_root` when given (so tests and demos
/// do not write into /var/lib), else the path itself.
pub fn host_path(host_root: Option<&Path>, path: &str) -> PathBuf {
    match host_root {
        Some(root) => root.join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// The exit code Kubernetes reports for a process: its own, or 128 + the signal that killed it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_specs_with_resources_and_labels() {
        let spec: NodeSpec =
            "gpu-0,cpu=8,nvidia.com/gpu=1,hugepages-1Gi=4Gi,label:damocles.io/gpu=true"
                .parse()
                .unwrap();
        assert_eq!(spec.name, "gpu-0");
        assert_eq!(spec.capacity["cpu"], "8");
        assert_eq!(spec.capacity["memory"], "16Gi", "defaults stay");
        assert_eq!(spec.capacity["nvidia.com/gpu"], "1");
        assert_eq!(spec.labels["damocles.io/gpu"], "true");
        assert!(!spec.image_pulls_fail);
        assert!("n1,pull=fail".parse::<NodeSpec>().unwrap().image_pulls_fail);
        let err = "n1,pull=slow".parse::<NodeSpec>().unwrap_err();
        assert!(err.contains("the only value is fail"), "{err}");
    }

    #[test]
    fn refuses_bad_node_specs_by_name() {
        let err = "Node_1".parse::<NodeSpec>().unwrap_err();
        assert!(err.contains("DNS subdomain"), "{err}");
        let err = "n1,gpus=1".parse::<NodeSpec>().unwrap_err();
        assert!(
            err.contains("unknown resource \"gpus\"") && err.contains("nvidia.com/gpu"),
            "{err}"
        );
        let err = "n1,cpu".parse::<NodeSpec>().unwrap_err();
        assert!(err.contains("KEY=VALUE"), "{err}");
        let err = "n1,memory=lots".parse::<NodeSpec>().unwrap_err();
        assert!(err.contains("not a quantity"), "{err}");
    }

    #[test]
    fn maps_container_paths_longest_prefix_first() {
        let mut map = PathMap::default();
        map.insert("/etc/damocles", PathBuf::from("/tmp/pod/volumes/request"));
        map.insert("/etc/damocles/params/", PathBuf::from("/cache/params"));
        map.insert(
            "/dev/termination-log",
            PathBuf::from("/tmp/pod/step.termination-log"),
        );
        assert_eq!(
            map.rewrite("/etc/damocles/request.json"),
            "/tmp/pod/volumes/request/request.json"
        );
        assert_eq!(
            map.rewrite("/etc/damocles/params/x.vk"),
            "/cache/params/x.vk"
        );
        assert_eq!(
            map.rewrite("--request=/etc/damocles/r.json"),
            "--request=/tmp/pod/volumes/request/r.json"
        );
        assert_eq!(
            map.rewrite("/dev/termination-log"),
            "/tmp/pod/step.termination-log"
        );
        assert_eq!(
            map.rewrite("/etc/damoclesX"),
            "/etc/damoclesX",
            "not a path under the mount"
        );
        assert_eq!(map.rewrite("run"), "run");
        assert_eq!(
            map.rewrite(
                "echo $(cat /etc/damocles/r.json) > /dev/termination-log; ls /etc/damocles"
            ),
            "echo $(cat /tmp/pod/volumes/request/r.json) > /tmp/pod/step.termination-log; ls /tmp/pod/volumes/request"
        );
        assert_eq!(
            map.rewrite("/x/etc/damocles/a"),
            "/x/etc/damocles/a",
            "only whole paths"
        );
        assert_eq!(
            host_path(Some(Path::new("/tmp/h")), "/var/lib/w"),
            PathBuf::from("/tmp/h/var/lib/w")
        );
    }
}
