//! The generated CRD: drift against `crds/`, schema shape, and the committed schema checked with a real
//! JSON-schema validator and a real CEL evaluator (kube-cel) against the examples and bad manifests.

use std::path::Path;

use damocles_operator::api::SealingTask;
use damocles_operator::api::validate::{parse_manifest, spec_errors};
use damocles_operator::plan::{Plan, render};
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn committed_crd() -> Value {
    serde_saphyr::from_str(&repo_file("crds/sealingtask.yaml"))
        .expect("crds/sealingtask.yaml is YAML")
}

fn schema() -> Value {
    committed_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn committed_crd_matches_the_generated_one() {
    assert!(
        repo_file("crds/sealingtask.yaml") == damocles_operator::crd_yaml(),
        "crds/sealingtask.yaml is stale: run `cargo run -- crd --kind sealingtask > crds/sealingtask.yaml`"
    );
}

#[test]
fn the_helm_chart_ships_the_same_crd() {
    assert!(
        repo_file("charts/damocles-operator/crds/sealingtask.yaml")
            == damocles_operator::crd_yaml(),
        "charts/damocles-operator/crds/sealingtask.yaml is stale: run \
         `cargo run -- crd --kind sealingtask > charts/damocles-operator/crds/sealingtask.yaml`"
    );
}

#[test]
fn committed_pool_crd_matches_the_generated_one() {
    for file in [
        "crds/sealingpool.yaml",
        "charts/damocles-operator/crds/sealingpool.yaml",
    ] {
        assert!(
            repo_file(file) == damocles_operator::pool_crd_yaml(),
            "{file} is stale: see docs/development.md (regenerating the CRDs)"
        );
    }
    let crd: Value = serde_saphyr::from_str(&repo_file("crds/sealingpool.yaml")).unwrap();
    assert_eq!(crd["metadata"]["name"], "sealingpools.damocles.io");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sp"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["damocles"]));
}

/// The pool example is accepted; a pool the operator could not run is refused naming the field.
#[test]
fn the_pool_schema_accepts_the_example_and_refuses_what_cannot_run() {
    let schema = pool_schema();
    let pool = example("pool-sealer-2kib.yaml");
    assert_eq!(errors_against(&schema, &pool, None), Vec::<String>::new());
    let mut bad = pool.clone();
    bad["spec"]["template"]["plan"] = json!("snapup");
    bad["spec"]["template"]["syntheticPoRep"] = json!(true);
    let errors = errors_against(&schema, &bad, None).join("\n");
    assert!(errors.contains("syntheticPoRep is only for"), "{errors}");
    let mut bad = pool;
    bad["spec"]["inFlight"] = json!(10_001);
    let errors = errors_against(&schema, &bad, None).join("\n");
    assert!(errors.contains("inFlight"), "{errors}");
}

#[test]
fn committed_state_machine_doc_matches_the_plans() {
    assert!(
        repo_file("docs/state-machines.md") == render::markdown(Plan::all()),
        "docs/state-machines.md is stale: run `cargo run -- plans --output markdown > docs/state-machines.md`"
    );
}

#[test]
fn crd_names_printer_columns_and_status() {
    let crd = committed_crd();
    assert_eq!(crd["metadata"]["name"], "sealingtasks.damocles.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["st"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Plan", "Sector", "State", "Phase", "Node", "Age", "Error"]
    );
    // `kubectl get damocles` lists every kind of the operator.
    assert_eq!(crd["spec"]["names"]["categories"], json!(["damocles"]));
    // The long error message only with `-o wide`.
    assert_eq!(version["additionalPrinterColumns"][6]["priority"], 1);
    // `kubectl get st --field-selector status.sector.number=42` (the apiserver evaluates these
    // against each task's status: the operator writes no labels for them).
    let selectable: Vec<&str> = version["selectableFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["jsonPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        selectable,
        [
            ".spec.plan",
            ".status.sectorName",
            ".status.sector.miner",
            ".status.sector.number",
            ".status.state",
            ".status.phase",
            ".status.node"
        ]
    );
}

fn rules_at(schema: &Value) -> Vec<String> {
    schema["x-kubernetes-validations"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| r["rule"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cel_rules_are_present() {
    let spec = &schema()["properties"]["spec"];
    assert_eq!(rules_at(&spec["properties"]["plan"]), ["self == oldSelf"]);
    assert_eq!(
        rules_at(&spec["properties"]["sectorSize"]),
        ["self == oldSelf"]
    );
    let rules = rules_at(spec).join("\n");
    for needle in [
        "oldSelf.sector",
        "self.resumeState in",
        "!has(self.unseal) || self.plan == 'unseal'",
    ] {
        assert!(rules.contains(needle), "no rule with {needle}:\n{rules}");
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(properties) = schema["properties"].as_object() {
            for (name, field) in properties {
                let field_path = format!("{path}.{name}");
                if field["description"].as_str().is_none_or(str::is_empty)
                    && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    missing.push(field_path.clone());
                }
                walk(&field_path, field, missing);
                walk(&format!("{field_path}[]"), &field["items"], missing);
            }
        }
    }
    let mut missing = Vec::new();
    walk("", &schema(), &mut missing);
    walk("SealingPool", &pool_schema(), &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain shows nothing): {missing:?}"
    );
}

/// Validates an object the way the apiserver does, minus defaulting and pruning: the structural schema
/// with a JSON-schema validator, then the CEL rules with kube-cel. Returns every message.
fn apiserver_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    errors_against(&schema(), object, old)
}

fn pool_schema() -> Value {
    let crd: Value = serde_saphyr::from_str(&repo_file("crds/sealingpool.yaml")).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn errors_against(schema: &Value, object: &Value, old: Option<&Value>) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("the schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if let Err(cel) = kube_cel::Validator::new().validate(schema, object, old) {
        errors.extend(cel.iter().map(|e| e.to_string()));
    }
    errors
}

fn example(name: &str) -> Value {
    serde_saphyr::from_str(&repo_file(&format!("examples/{name}"))).unwrap()
}

const EXAMPLES: [&str; 4] = [
    "sealer-2kib.yaml",
    "snapup-2kib.yaml",
    "rebuild-2kib.yaml",
    "unseal-2kib.yaml",
];

#[test]
fn examples_are_accepted_by_schema_cel_and_the_offline_validator() {
    for name in EXAMPLES {
        let object = example(name);
        assert_eq!(
            apiserver_errors(&object, None),
            Vec::<String>::new(),
            "{name}"
        );
        let tasks = parse_manifest(&repo_file(&format!("examples/{name}"))).unwrap();
        assert_eq!(tasks.len(), 1, "{name}");
        let task = tasks.into_iter().next().unwrap().unwrap().task;
        assert_eq!(spec_errors(&task.spec), Vec::<String>::new(), "{name}");
        assert_eq!(
            task.spec.sector_size.bytes(),
            2048,
            "{name}: examples are 2KiB"
        );
    }
}

fn with_spec(name: &str, patch: Value) -> Value {
    let mut object = example(name);
    for (key, value) in patch.as_object().unwrap() {
        object["spec"][key] = value.clone();
    }
    object
}

fn assert_rejected(object: &Value, old: Option<&Value>, needle: &str) {
    let errors = apiserver_errors(object, old);
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "expected an error containing {needle:?}, got {errors:?}"
    );
}

/// Bad manifests must fail in the apiserver's checks and, with the same meaning, in the offline
/// validator (`damocles-operator validate`).
fn assert_offline_rejected(object: &Value, needle: &str) {
    let text = serde_json::to_string(object).unwrap();
    let message = match parse_manifest(&text).unwrap().remove(0) {
        Err(error) => error.to_string(),
        Ok(found) => spec_errors(&found.task.spec).join("\n"),
    };
    assert!(
        message.contains(needle),
        "offline: expected {needle:?} in {message:?}"
    );
}

#[test]
fn unknown_plan_is_rejected_listing_the_plans() {
    let object = with_spec("sealer-2kib.yaml", json!({"plan": "sealing"}));
    assert_rejected(&object, None, "/spec/plan");
    assert_offline_rejected(
        &object,
        "expected one of `sealer`, `snapup`, `rebuild`, `unseal`",
    );
}

#[test]
fn bad_sector_size_is_rejected_listing_the_sizes() {
    let object = with_spec("sealer-2kib.yaml", json!({"sectorSize": "2KB"}));
    assert_rejected(&object, None, "/spec/sectorSize");
    assert_offline_rejected(
        &object,
        "expected one of `2KiB`, `8MiB`, `512MiB`, `32GiB`, `64GiB`",
    );
}

#[test]
fn resume_state_of_another_plan_is_rejected() {
    let object = with_spec("sealer-2kib.yaml", json!({"resumeState": "SnapEncoded"}));
    assert_rejected(
        &object,
        None,
        "resumeState SnapEncoded is not a state of plan sealer; valid values: Empty,",
    );
    assert_offline_rejected(&object, "\"SnapEncoded\" is not a state of plan sealer");
    for good in ["TreeDBuilt", "Aborted", ""] {
        let object = with_spec("sealer-2kib.yaml", json!({"resumeState": good}));
        assert_eq!(
            apiserver_errors(&object, None),
            Vec::<String>::new(),
            "{good:?}"
        );
    }
    let object = with_spec("unseal-2kib.yaml", json!({"resumeState": "TreeDBuilt"}));
    assert_rejected(
        &object,
        None,
        "valid values: Empty, Allocated, Unsealed, Finished, Aborted",
    );
}

#[test]
fn an_unseal_selector_is_optional_and_only_for_unseal() {
    let mut object = example("unseal-2kib.yaml");
    object["spec"].as_object_mut().unwrap().remove("unseal");
    assert_eq!(apiserver_errors(&object, None), Vec::<String>::new());
    let unseal = example("unseal-2kib.yaml")["spec"]["unseal"].clone();
    let object = with_spec("sealer-2kib.yaml", json!({"unseal": unseal}));
    assert_rejected(&object, None, "only allowed when plan is unseal");
    assert_offline_rejected(&object, "only allowed when plan is unseal");
}

/// Deal data and unseal destinations come from the manager only: the fields that gave them in
/// the task are gone, and the offline validator says what replaces them.
#[test]
fn retired_fields_are_named_with_what_replaces_them() {
    let piece = json!({"cid": "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy", "size": 1024});
    let pieces = with_spec("sealer-2kib.yaml", json!({"pieces": [piece]}));
    assert_offline_rejected(
        &pieces,
        "spec.pieces: removed: deal data comes from the manager",
    );
    let mut unseal = example("unseal-2kib.yaml");
    unseal["spec"]["unseal"]["destination"] = json!("file:///out");
    assert_offline_rejected(
        &unseal,
        "the destinations the manager gives (AcquireUnsealDest)",
    );
    let schema = schema();
    let spec = &schema["properties"]["spec"]["properties"];
    assert!(spec["pieces"].is_null(), "{spec}");
    assert!(
        spec["unseal"]["properties"]["destination"].is_null(),
        "{spec}"
    );
}

/// Every integer the operator reads as u32 has the apiserver refuse what does not fit, so one
/// object can never be unreadable to it.
#[test]
fn integers_too_large_for_the_operator_are_refused() {
    let object = with_spec(
        "sealer-2kib.yaml",
        json!({"ttlSecondsAfterFinished": 4_294_967_296u64}),
    );
    assert_rejected(&object, None, "ttlSecondsAfterFinished");
    assert_offline_rejected(&object, "ttlSecondsAfterFinished");
    let fits = with_spec(
        "sealer-2kib.yaml",
        json!({"ttlSecondsAfterFinished": 4_294_967_295u64}),
    );
    assert_eq!(apiserver_errors(&fits, None), Vec::<String>::new());
    let status = &schema()["properties"]["status"]["properties"];
    for field in ["attempt", "actionIndex"] {
        assert_eq!(
            status[field]["maximum"].as_f64(),
            Some(f64::from(u32::MAX)),
            "{field}"
        );
    }
}

#[test]
fn synthetic_porep_and_deals_are_immutable() {
    let old = example("sealer-2kib.yaml");
    // Pinning the proof type either way is a change: unpinned, a task takes what the manager
    // hands out.
    for patch in [
        json!({"syntheticPoRep": true}),
        json!({"syntheticPoRep": false}),
        json!({"deals": {"enabled": true}}),
    ] {
        let changed = with_spec("sealer-2kib.yaml", patch.clone());
        assert_rejected(
            &changed,
            Some(&old),
            "syntheticPoRep and deals.enabled are immutable",
        );
        assert_eq!(
            apiserver_errors(&changed, None),
            Vec::<String>::new(),
            "{patch}"
        );
    }
    // Spelling out a default changes nothing.
    let same = with_spec("sealer-2kib.yaml", json!({"deals": {"enabled": false}}));
    assert_eq!(apiserver_errors(&same, Some(&old)), Vec::<String>::new());
    let pinned = with_spec("sealer-2kib.yaml", json!({"syntheticPoRep": false}));
    assert_eq!(
        apiserver_errors(&pinned, Some(&pinned)),
        Vec::<String>::new()
    );
}

#[test]
fn plan_size_and_sector_are_immutable() {
    let old = example("rebuild-2kib.yaml");
    let changed_plan = with_spec("rebuild-2kib.yaml", json!({"plan": "sealer"}));
    assert_rejected(&changed_plan, Some(&old), "plan is immutable");
    let changed_size = with_spec("rebuild-2kib.yaml", json!({"sectorSize": "8MiB"}));
    assert_rejected(&changed_size, Some(&old), "sectorSize is immutable");
    let changed_sector = with_spec(
        "rebuild-2kib.yaml",
        json!({"sector": {"miner": 1000, "number": 2}}),
    );
    assert_rejected(
        &changed_sector,
        Some(&old),
        "sector cannot be changed or removed once set",
    );
    let mut removed_sector = old.clone();
    removed_sector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("sector");
    assert_rejected(
        &removed_sector,
        Some(&old),
        "sector cannot be changed or removed once set",
    );
    // Setting the sector on a task that had none, and editing mutable fields, are fine.
    let sealer = example("sealer-2kib.yaml");
    let allocated = with_spec(
        "sealer-2kib.yaml",
        json!({"sector": {"miner": 1000, "number": 7}, "suspend": true}),
    );
    assert_eq!(
        apiserver_errors(&allocated, Some(&sealer)),
        Vec::<String>::new()
    );
}

#[test]
fn the_typed_resource_round_trips_through_the_schema() {
    for name in EXAMPLES {
        let task: SealingTask = serde_json::from_value(example(name)).unwrap();
        let back = serde_json::to_value(&task).unwrap();
        assert_eq!(
            apiserver_errors(&back, None),
            Vec::<String>::new(),
            "{name}"
        );
        assert_eq!(
            back["spec"],
            example(name)["spec"],
            "{name}: serialization adds or drops spec fields"
        );
    }
}
