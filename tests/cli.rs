//! The `damocles-operator` binary as a user runs it.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn crd_prints_the_committed_file() {
    let output = run(&["crd"]);
    assert!(output.status.success());
    let committed = |file: &str| {
        std::fs::read_to_string(format!("{}/crds/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    assert!(
        stdout(&output) == committed("sealingtask.yaml") + &committed("sealingpool.yaml"),
        "`crd` output differs from crds/sealingtask.yaml and crds/sealingpool.yaml"
    );
}

#[test]
fn plans_json_for_one_plan() {
    let output = run(&["plans", "--output", "json", "--plan", "unseal"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"plans": [{
            "name": "unseal",
            "initial": "Empty",
            "terminal": ["Finished", "Aborted"],
            "states": ["Empty", "Allocated", "Unsealed", "Finished", "Aborted"],
            "transitions": [
                {"from": "Empty", "event": "AllocatedUnsealSector", "to": "Allocated"},
                {"from": "Allocated", "event": "UnsealDone", "to": "Unsealed"},
                {"from": "Unsealed", "event": "UploadPieceDone", "to": "Finished"}
            ]
        }]})
    );
}

#[test]
fn plans_dot_is_a_digraph() {
    let output = run(&["plans", "-o", "dot"]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.starts_with("digraph plans {"));
    assert!(text.contains("sealer_ProofSubmitted -> sealer_C2Done [label=\"ReSubmitProof\"]"));
}

#[test]
fn unknown_plan_and_format_list_the_valid_values() {
    let output = run(&["plans", "--plan", "sealing"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output)
            .contains("unknown plan \"sealing\"; valid values: sealer, snapup, rebuild, unseal")
    );
    let output = run(&["plans", "--output", "yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("[possible values: json, markdown, dot]"));
}

#[test]
fn validate_accepts_the_examples() {
    let output = run(&[
        "validate",
        "-f",
        "examples/sealer-2kib.yaml",
        "examples/snapup-2kib.yaml",
        "examples/rebuild-2kib.yaml",
        "examples/unseal-2kib.yaml",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).matches("is valid").count(), 4);
}

#[test]
fn validate_reports_every_bad_document_with_the_valid_values() {
    let dir = std::env::temp_dir().join(format!("damocles-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "apiVersion: damocles.io/v1alpha1\nkind: SealingTask\nmetadata: {name: a}\nspec: {plan: sealing, sectorSize: 2KiB}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n\
         ---\napiVersion: damocles.io/v1alpha1\nkind: SealingTask\nmetadata: {name: b}\nspec: {plan: sealer, sectorSize: 3KiB}\n\
         ---\napiVersion: damocles.io/v1alpha1\nkind: SealingTask\nmetadata: {name: c}\nspec: {plan: unseal, sectorSize: 2KiB, resumeState: PC1Done}\n\
         ---\napiVersion: damocles.io/v1alpha1\nkind: SealingTask\nmetadata: {name: d}\nspec: {plan: sealer, sectorSize: 2KiB, unseal: {pieceCid: baga6ea4seaqa}}\n",
    )
    .unwrap();
    let output = run(&["validate", "-f", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("document 1: spec.plan: unknown variant `sealing`, expected one of `sealer`, `snapup`, `rebuild`, `unseal`"), "{err}");
    assert!(
        err.contains("document 3: spec.sectorSize: unknown variant `3KiB`, expected one of `2KiB`"),
        "{err}"
    );
    assert!(err.contains("SealingTask c: spec.resumeState: \"PC1Done\" is not a state of plan unseal; valid values: Empty, Allocated, Unsealed, Finished, Aborted"), "{err}");
    assert!(
        err.contains("SealingTask d: spec.unseal: names the unseal request a task expects and is only allowed when plan is unseal"),
        "{err}"
    );
}

#[test]
fn validate_names_a_missing_file() {
    let output = run(&["validate", "-f", "no/such/file.yaml"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot read no/such/file.yaml"),
        "{}",
        stderr(&output)
    );
}

#[cfg(feature = "dev")]
#[test]
fn simulate_reports_json_a_plot_and_names_a_bad_farm() {
    let plot = std::env::temp_dir().join(format!("simulate-{}.svg", std::process::id()));
    let output = run(&[
        "simulate",
        "--farm",
        "a",
        "--warmup",
        "1h",
        "--measure",
        "4h",
        "--output",
        "json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["measuredHours"], 4.0);
    assert!(report["bound"]["sectorsPerDay"].as_f64().unwrap() > 0.0);
    assert!(report["oracle"]["gpu"].get("idle").is_some(), "{report}");
    assert!(
        report["baseline"]["sectorsPerDay"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    std::fs::remove_file(&plot).unwrap();

    let output = run(&["simulate", "--farm", "no-such-farm.yaml"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("no-such-farm.yaml") && err.contains("presets: a, b, c"),
        "{err}"
    );

    let output = run(&["simulate", "--operator-flags", "--no-such-flag"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--operator-flags"),
        "{}",
        stderr(&output)
    );
}
