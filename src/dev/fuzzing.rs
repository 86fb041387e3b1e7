//! The bodies of the fuzz targets (fuzz/, run with cargo-fuzz by scripts/fuzz): everything the
//! operator and damocles-step parse from outside, given arbitrary bytes. Each must answer with a
//! value or an error, never panic, and keep its round trip. `cargo test` runs every body over the
//! seed corpus (fuzz/corpus/) and a few thousand random and mutated inputs: the short fuzz run of
//! CI; libFuzzer's longer runs are scripts/fuzz.

use crate::manager::client::{parse_answer, pieces_of};
use crate::manager::wire;
use crate::step::{LoggedResult, StepResult, parse_request};

/// A fuzz target's body: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as fuzz/fuzz_targets/ names them.
pub const TARGETS: [(&str, Target); 4] = [
    ("step_request", step_request),
    ("step_result", step_result),
    ("manager_answer", manager_answer),
    ("manifest", manifest),
];

/// damocles-step's request (the DAMOCLES_STEP_REQUEST variable): a request it accepts survives
/// being written and read again unchanged.
pub fn step_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = parse_request(text) {
        let again = serde_json::to_string(&request).expect("a request serializes");
        let reread = parse_request(&again).expect("a written request reads back");
        assert_eq!(reread, request);
    }
}

/// A step's result as the operator reads it: from a pod's termination message (with any exit
/// code) and from the line of its log that a digest names.
pub fn step_result(data: &[u8]) {
    let (code, rest) = match data.split_first() {
        Some((code, rest)) => (i32::from(*code % 64), rest),
        None => (0, data),
    };
    let text = String::from_utf8_lossy(rest);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "status": {"phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{
                "name": crate::controller::pods::CONTAINER, "image": "step", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": text}},
            }]},
    }))
    .expect("a pod");
    let _ = crate::controller::pods::report(&pod);
    if let Ok(result) = serde_json::from_str::<StepResult>(&text) {
        let line = result.output_line();
        let log = format!("{text}\nsomething else\n{line}\n");
        assert_eq!(LoggedResult::of(&line).find_in(&log).as_ref(), Ok(&result));
    }
}

/// The manager's JSON-RPC answers, as every result type the operator reads.
pub fn manager_answer(data: &[u8]) {
    let (status, rest) = match data.split_first() {
        Some((0, rest)) => (500, rest),
        Some((_, rest)) => (200, rest),
        None => (200, data),
    };
    let body = String::from_utf8_lossy(rest);
    let method = || "Venus.Fuzz".to_string();
    let _ = parse_answer::<Option<wire::AllocatedSector>>(method(), status, &body);
    let _ = parse_answer::<wire::Ticket>(method(), status, &body);
    let _ = parse_answer::<wire::SubmitResp>(method(), status, &body);
    let _ = parse_answer::<wire::PollResp>(method(), status, &body);
    let _ = parse_answer::<wire::WaitSeedResp>(method(), status, &body);
    let _ = parse_answer::<Option<wire::SectorStateResp>>(method(), status, &body);
    let _ = parse_answer::<Option<wire::StoreBasicInfo>>(method(), status, &body);
    let _ = parse_answer::<Option<wire::AllocatedSnapUpSector>>(method(), status, &body);
    let _ = parse_answer::<Option<wire::SectorRebuildInfo>>(method(), status, &body);
    let _ = parse_answer::<Option<wire::SectorUnsealInfo>>(method(), status, &body);
    let _ = parse_answer::<Vec<String>>(method(), status, &body);
    if let Ok(value) = parse_answer::<serde_json::Value>(method(), status, &body) {
        let _ = pieces_of("Venus.AcquireDeals", value);
    }
}

/// A manifest as `damocles-operator validate` reads it: YAML documents, SealingTasks checked.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tasks) = crate::api::validate::parse_manifest(text) {
        for task in tasks.into_iter().flatten() {
            let _ = crate::api::validate::spec_errors(&task.task.spec);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The seed corpus of a target, as committed under fuzz/corpus/.
    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    #[test]
    fn every_target_takes_its_seed_corpus() {
        for (name, target) in TARGETS {
            for seed in corpus(name) {
                target(&seed);
            }
        }
    }

    /// The seeds are what their parsers accept, so mutations start from deep inside them.
    #[test]
    fn the_seeds_are_valid_inputs() {
        for seed in corpus("step_request") {
            let text = String::from_utf8(seed).unwrap();
            parse_request(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        }
        let results = corpus("step_result");
        let parsed = results
            .iter()
            .filter(|seed| serde_json::from_slice::<StepResult>(&seed[1..]).is_ok())
            .count();
        assert_eq!(parsed, results.len() - 1, "all but the bare exit code");
        for seed in corpus("manager_answer") {
            let status = if seed[0] == 0 { 500 } else { 200 };
            let body = String::from_utf8(seed[1..].to_vec()).unwrap();
            let answer = parse_answer::<serde_json::Value>("m".into(), status, &body);
            assert_eq!(answer.is_ok(), status == 200, "{body}");
        }
        for seed in corpus("manifest") {
            let text = String::from_utf8(seed).unwrap();
            let tasks = crate::api::validate::parse_manifest(&text).unwrap();
            assert!(tasks.iter().all(Result::is_ok), "{text}");
        }
    }

    /// A seed with a few bytes changed, cut or repeated, as libFuzzer mutates.
    fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(seeds),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        )
            .prop_map(|(mut seed, edits)| {
                for (at, byte, kind) in edits {
                    if seed.is_empty() {
                        seed.push(byte);
                        continue;
                    }
                    let i = at.index(seed.len());
                    match kind {
                        0 => seed[i] = byte,
                        1 => seed.insert(i, byte),
                        2 => {
                            seed.remove(i);
                        }
                        _ => seed.truncate(i),
                    }
                }
                seed
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn step_requests_mutated(data in mutated(corpus("step_request"))) {
            step_request(&data);
        }

        #[test]
        fn step_results_mutated(data in mutated(corpus("step_result"))) {
            step_result(&data);
        }

        #[test]
        fn manager_answers_mutated(data in mutated(corpus("manager_answer"))) {
            manager_answer(&data);
        }

        #[test]
        fn manifests_mutated(data in mutated(corpus("manifest"))) {
            manifest(&data);
        }

        #[test]
        fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
            for (_, target) in TARGETS {
                target(&data);
            }
        }
    }
}
