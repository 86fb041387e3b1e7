//! The container images (images/*.Dockerfile, docs/images.md): every feature, binary and path a
//! Dockerfile names exists, including the CUDA one that cannot be built here; and, as a long run
//! after `scripts/build-images`, the operator and CPU step images built with podman are what the
//! chart expects (entrypoint, user, labels, files) and their binaries run from the image's own
//! root filesystem.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// This package as `cargo metadata` describes it: features, binaries, versions.
fn package() -> Value {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{output:?}");
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"][0].clone()
}

fn dockerfiles() -> Vec<(String, String)> {
    ["operator", "step", "step-cuda"]
        .iter()
        .map(|name| {
            let path = repo().join(format!("images/{name}.Dockerfile"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            // Continuation lines joined, comments dropped: one instruction per line.
            let text = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
                .replace("\\\n", " ");
            (name.to_string(), text)
        })
        .collect()
}

/// The words after each `flag` (`--features a,b` gives a and b).
fn flag_values<'a>(text: &'a str, flag: &str) -> Vec<&'a str> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == flag)
        .flat_map(|pair| pair[1].split(','))
        .collect()
}

fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    });
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn every_feature_binary_and_path_the_dockerfiles_name_exists() {
    let package = package();
    let features: BTreeSet<&str> = package["features"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let bins: BTreeSet<&str> = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"][0] == "bin")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let rust_version = major_minor(package["rust_version"].as_str().unwrap());
    let rustc = Command::new("rustc").arg("--version").output().unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap();
    let toolchain = major_minor(rustc.split_whitespace().nth(1).unwrap());

    for (name, text) in dockerfiles() {
        let built = flag_values(&text, "--bin");
        assert!(!built.is_empty(), "{name}: builds no --bin");
        for bin in &built {
            assert!(
                bins.contains(bin),
                "{name}: --bin {bin} is not a binary of the crate"
            );
        }
        for feature in flag_values(&text, "--features") {
            assert!(
                features.contains(feature),
                "{name}: --features {feature} is not a feature in Cargo.toml ({features:?})"
            );
        }
        assert!(text.contains("cargo build --locked --release"), "{name}");
        // The entrypoint is the binary it builds, where the chart's `command:` finds it on PATH.
        let entrypoint = format!(r#"ENTRYPOINT ["/usr/local/bin/{}"]"#, built[0]);
        assert!(text.contains(&entrypoint), "{name}: no {entrypoint}");
        assert!(
            text.contains(&format!(
                "install -D target/release/{0} /out/bin/{0}",
                built[0]
            )),
            "{name}: the binary is installed where the last stage copies /out from"
        );
        assert!(
            text.contains("COPY --from=") && text.contains(" /out/ /usr/local/"),
            "{name}"
        );
        // Build-context paths: the repository (`.`), or the prebuilt binaries' out/ that
        // scripts/build-images stages.
        for line in text.lines().filter(|l| l.starts_with("COPY ")) {
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            if words.iter().any(|w| w.starts_with("--from=")) {
                continue;
            }
            let sources = &words[..words.len() - 1];
            for source in sources.iter().filter(|s| !s.starts_with("--")) {
                assert!(
                    *source == "out/" || repo().join(source).exists(),
                    "{name}: COPY {source} names no path of the repository"
                );
            }
        }
        // OCI labels, the version passed from Cargo.toml.
        for label in ["title", "description", "version", "licenses"] {
            assert!(
                text.contains(&format!("org.opencontainers.image.{label}=")),
                "{name}: {label}"
            );
        }
        assert!(
            text.contains(r#"org.opencontainers.image.version="${VERSION}""#),
            "{name}"
        );
        assert!(
            text.contains(&format!(r#"org.opencontainers.image.title="{}""#, built[0])),
            "{name}"
        );
        // The compiler: the toolchain this repository is tested with, never below rust-version.
        let compiler = text
            .split_whitespace()
            .find_map(|w| {
                w.strip_prefix("RUST_IMAGE=docker.io/library/rust:")
                    .or_else(|| w.strip_prefix("RUST_VERSION="))
            })
            .unwrap_or_else(|| panic!("{name}: names no Rust version"));
        let compiler = major_minor(compiler);
        assert!(
            compiler >= rust_version,
            "{name}: Rust {compiler:?} < rust-version"
        );
        assert_eq!(
            compiler, toolchain,
            "{name}: Rust {compiler:?}, but tested with {rustc}"
        );
    }

    // What each build is for.
    let all = dockerfiles();
    let text = |name: &str| all.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert!(text("operator").contains("--no-default-features --bin damocles-operator"));
    assert!(
        text("operator").contains("USER 65532:65532"),
        "the operator runs as non-root"
    );
    assert_eq!(flag_values(&text("step"), "--features"), ["multicore-sdr"]);
    assert_eq!(
        flag_values(&text("step-cuda"), "--features"),
        ["cuda", "multicore-sdr"]
    );
    let enables = |feature: &str| -> Vec<String> {
        package["features"][feature]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(enables("cuda").contains(&"filecoin-proofs-api/cuda".to_string()));
    assert!(enables("multicore-sdr").contains(&"filecoin-proofs-api/multicore-sdr".to_string()));
    // Kernels for Hopper (H100/H200) and Ada as well as ec-gpu-gen's default generations.
    for arch in ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90"] {
        assert!(
            text("step-cuda").contains(&format!("code={arch}"))
                || text("step-cuda").contains(&format!("code=[{arch}")),
            "{arch}"
        );
    }

    // The chart runs them by these names.
    let deployment =
        std::fs::read_to_string(repo().join("charts/damocles-operator/templates/deployment.yaml"))
            .unwrap();
    assert!(deployment.contains("command: [damocles-operator]"));
    let values =
        std::fs::read_to_string(repo().join("charts/damocles-operator/values.yaml")).unwrap();
    assert!(values.contains("command: [damocles-step]"));
    // scripts/build-images tags and labels with Cargo.toml's version.
    let script = std::fs::read_to_string(repo().join("scripts/build-images")).unwrap();
    assert!(script.contains(r#"version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml"#));
    assert!(script.contains(r#"--build-arg VERSION="$version""#));
}

fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(["--storage-driver", "vfs"])
        .args(args)
        .output()
        .expect("podman runs (apt-get install podman)");
    assert!(
        output.status.success(),
        "podman {args:?}: {}\nbuild the images first: scripts/build-images",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// An image's root filesystem, mounted read-only by podman until dropped.
struct Mounted {
    image: String,
    root: PathBuf,
}

impl Mounted {
    fn new(image: &str) -> Mounted {
        let root = PathBuf::from(podman(&["image", "mount", image]).trim());
        Mounted {
            image: image.into(),
            root,
        }
    }

    fn run(&self, user: &str, argv: &[&str], env: &[(String, String)]) -> std::process::Output {
        run_in(&self.root, user, argv, env)
    }
}

/// Runs a command of an image inside its root filesystem (chroot: the image's own loader and
/// libraries, nothing of this machine's), as `user`, with only `env`.
fn run_in(
    root: &Path,
    user: &str,
    argv: &[&str],
    env: &[(String, String)],
) -> std::process::Output {
    Command::new("/usr/sbin/chroot")
        .arg(format!("--userspec={user}"))
        .arg(root)
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("chroot runs")
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["--storage-driver", "vfs", "image", "unmount", &self.image])
            .output();
    }
}

/// A writable copy of an image's root filesystem with what a container runtime gives a container
/// (/proc, /sys, /dev) and the proof parameters mounted; unmounted, then removed, when dropped.
struct Sandbox {
    root: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Sandbox {
    fn new(image: &Mounted, params: &Path) -> Sandbox {
        let root = std::env::temp_dir().join(format!("damocles-image-{}", std::process::id()));
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&image.root)
            .arg(&root)
            .status()
            .unwrap();
        assert!(copied.success());
        let mut sandbox = Sandbox {
            root,
            mounts: vec![],
        };
        sandbox.mount(&["-t", "proc", "proc"], "proc");
        sandbox.mount(&["--rbind", "/sys"], "sys");
        sandbox.mount(&["--rbind", "/dev"], "dev");
        sandbox.mount(&["--bind", params.to_str().unwrap()], "params");
        std::fs::create_dir_all(sandbox.root.join("scratch")).unwrap();
        sandbox
    }

    fn mount(&mut self, args: &[&str], at: &str) {
        let target = self.root.join(at);
        std::fs::create_dir_all(&target).unwrap();
        let mounted = Command::new("mount")
            .args(args)
            .arg(&target)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount {args:?} {}", target.display());
        self.mounts.push(target);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for target in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-R").arg(target).status();
        }
        // Never remove a tree that still has /dev, /sys or the parameters mounted in it.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        if mounts.contains(self.root.to_str().unwrap()) {
            eprintln!("{} still has mounts: left in place", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn config(image: &str) -> Value {
    let inspected: Value = serde_json::from_str(&podman(&["image", "inspect", image])).unwrap();
    inspected[0]["Config"].clone()
}

/// The image's environment (its ENV lines and its base's), as a container gets it.
fn image_env(config: &Value) -> Vec<(String, String)> {
    let env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap_or_default();
    env.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
#[ignore = "long run (scripts/build-images --test): needs podman and the images it builds"]
fn the_built_images_run_their_binaries_from_their_own_root_filesystem() {
    let version = package()["version"].as_str().unwrap().to_string();

    let operator = format!("localhost/damocles-operator:{version}");
    let settings = config(&operator);
    assert_eq!(settings["User"], "65532:65532", "{settings}");
    assert_eq!(
        settings["Entrypoint"][0],
        "/usr/local/bin/damocles-operator"
    );
    assert_eq!(
        settings["Labels"]["org.opencontainers.image.version"],
        version.as_str()
    );
    assert_eq!(
        settings["Labels"]["org.opencontainers.image.title"],
        "damocles-operator"
    );
    let root = Mounted::new(&operator);
    for absent in ["bin/sh", "usr/bin/sh", "usr/local/bin/damocles-step"] {
        assert!(
            !root.root.join(absent).exists(),
            "the operator image has no {absent}"
        );
    }
    assert!(
        root.root
            .join("etc/ssl/certs/ca-certificates.crt")
            .is_file()
    );
    let env = image_env(&settings);
    let ran = root.run("65532:65532", &["damocles-operator", "--version"], &env);
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        format!("damocles-operator {version}")
    );
    // Built without the dev stand-ins.
    let help = root.run("65532:65532", &["damocles-operator", "--help"], &env);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("run") && !help.contains("dev-node") && !help.contains("dev-manager"),
        "{help}"
    );
    drop(root);

    let step = format!("localhost/damocles-step:{version}");
    let settings = config(&step);
    assert_eq!(settings["Entrypoint"][0], "/usr/local/bin/damocles-step");
    assert_eq!(
        settings["Labels"]["org.opencontainers.image.version"],
        version.as_str()
    );
    assert_eq!(
        settings["Labels"]["org.opencontainers.image.title"],
        "damocles-step"
    );
    let env = image_env(&settings);
    let root = Mounted::new(&step);
    assert!(!root.root.join("bin/sh").exists() && !root.root.join("usr/bin/sh").exists());
    // hwloc (multicore SDR) came with it: the binary loads with the image's libraries only.
    let ran = root.run("0:0", &["damocles-step", "--version"], &env);
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        format!("damocles-step {version} (cpu, multicore-sdr)")
    );

    // The image does the work: the whole 2KiB sealer chain (`damocles-step bench`, each step in
    // one process and in its own) in its own root filesystem, PC1 with multicore SDR, which
    // reads the CPU topology through hwloc.
    let params = std::env::var("FIL_PROOFS_PARAMETER_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/damocles-operator/params",
            std::env::var("HOME").unwrap()
        )
    });
    let sandbox = Sandbox::new(&root, Path::new(&params));
    let mut env = env;
    env.extend(
        [
            ("FIL_PROOFS_PARAMETER_CACHE", "/params"),
            ("FIL_PROOFS_USE_MULTICORE_SDR", "1"),
            ("RUST_LOG", "info"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let sealed = run_in(
        &sandbox.root,
        "0:0",
        &[
            "damocles-step",
            "bench",
            "--rounds",
            "1",
            "--dir",
            "/scratch",
        ],
        &env,
    );
    let report = String::from_utf8_lossy(&sealed.stdout);
    let log = String::from_utf8_lossy(&sealed.stderr);
    assert!(sealed.status.success(), "{report}\n{log}");
    assert!(report.contains("| c2 |"), "{report}");
    assert!(log.contains("multi core replication"), "{log}");
    eprintln!("{report}");
}
