//! damocles-step end to end: real 2KiB proofs through the binary, as a step pod runs it.
//! Needs the 2KiB TEST PoRep parameters (`damocles-step params generate --sector-size 2KiB`;
//! scripts/test makes them once per machine); the ignored snap-up test also needs the
//! empty-sector-update set, which scripts/test-long makes before it runs the ignored tests.
#![cfg(feature = "proofs")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use damocles_operator::api::{FailureLevel, SectorRef, SectorSize};
use damocles_operator::step::bench::{Chain, sealer_steps};
use damocles_operator::step::workspace::{FAULT_ENV, SectorFiles, partial_path};
use damocles_operator::step::{
    FileDigest, PieceInput, SealedFiles, StepKind, StepRequest, StepResult, UnsealRange,
};

const STEP: &str = env!("CARGO_BIN_EXE_damocles-step");

fn sector(number: u64) -> SectorRef {
    SectorRef {
        miner: 1000,
        number,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("damocles-step-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary on a request; returns its exit status code (None when killed) and parsed result.
fn run_with(request: &StepRequest, env: &[(&str, &str)]) -> (Option<i32>, Option<StepResult>) {
    let dir = request.workspace.join("requests");
    fs::create_dir_all(&dir).unwrap();
    let mut request = request.clone();
    let message = dir.join(format!("{}.result.json", request.step));
    let _ = fs::remove_file(&message);
    request.termination_message_path = Some(message.clone());
    let path = dir.join(format!("{}.request.json", request.step));
    fs::write(&path, serde_json::to_vec_pretty(&request).unwrap()).unwrap();
    let output = Command::new(STEP)
        .args(["run", "--request"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .expect("damocles-step runs");
    let result = fs::read(&message).ok().map(|bytes| {
        let from_file: StepResult = serde_json::from_slice(&bytes).unwrap();
        let line = String::from_utf8_lossy(output.stdout.trim_ascii()).into_owned();
        let stdout: StepResult = serde_json::from_str(&line).unwrap();
        match &from_file.in_log {
            // Too big for the message: it names the output line by its digest.
            Some(logged) => assert_eq!(logged.find_in(&line).unwrap(), stdout),
            None => assert_eq!(
                from_file, stdout,
                "stdout and the termination message agree"
            ),
        }
        stdout
    });
    (output.status.code(), result)
}

fn run(request: &StepRequest) -> StepResult {
    let (code, result) = run_with(request, &[]);
    let result = result.expect("a result");
    assert_eq!(
        code,
        Some(0),
        "{} failed: {:?}",
        request.step,
        result.failure
    );
    result
}

fn run_chain(chain: &mut Chain, steps: &[StepKind]) -> Vec<StepResult> {
    steps
        .iter()
        .map(|step| {
            let result = run(&chain.request(*step));
            chain.absorb(&result);
            result
        })
        .collect()
}

fn failure(code: Option<i32>, result: &Option<StepResult>) -> (i32, FailureLevel, String) {
    let failure = result
        .as_ref()
        .and_then(|r| r.failure.clone())
        .expect("a failure");
    (code.expect("an exit code"), failure.level, failure.message)
}

#[test]
fn sealer_chain_ends_in_a_verified_proof_and_a_tampered_one_fails() {
    let ws = temp_dir("sealer");
    let mut chain = Chain::new(&ws, sector(1), SectorSize::Size2KiB, false);
    let results = run_chain(&mut chain, &sealer_steps());
    assert!(results.iter().all(|r| !r.reused));
    let c2 = results.last().unwrap();
    assert_eq!(c2.outputs.verified, Some(true));
    let proof = c2.outputs.file("proof").unwrap();
    assert_eq!(
        proof.size, 192,
        "a 2KiB PoRep proof is one 192-byte Groth16 proof"
    );

    let verify = run(&chain.request(StepKind::VerifySeal));
    assert_eq!(verify.outputs.verified, Some(true));

    // Rerunning a completed step with the same inputs returns its record without recomputing.
    let again = run(&chain.request(StepKind::C1));
    assert!(again.reused);
    assert_eq!(again.outputs, results[4].outputs);

    // One flipped bit: the verifier says no, with the permanent exit code.
    let mut bytes = fs::read(&proof.path).unwrap();
    bytes[10] ^= 0x01;
    let tampered = ws.join("tampered.bin");
    fs::write(&tampered, &bytes).unwrap();
    let mut request = chain.request(StepKind::VerifySeal);
    request.inputs.proof = Some(digest(&tampered));
    let (code, result) = run_with(&request, &[]);
    assert_eq!(code, Some(20));
    assert_eq!(result.unwrap().outputs.verified, Some(false));

    // A different seed is a different statement: the genuine proof does not prove it.
    let mut request = chain.request(StepKind::VerifySeal);
    request.inputs.seed = Some(damocles_operator::step::run::randomness(9));
    let (code, result) = run_with(&request, &[]);
    assert_eq!(
        (code, result.unwrap().outputs.verified),
        (Some(20), Some(false))
    );
    fs::remove_dir_all(ws).unwrap();
}

fn digest(path: &Path) -> FileDigest {
    damocles_operator::step::workspace::digest_file(path).unwrap()
}

#[test]
fn synthetic_porep_chain_verifies() {
    let ws = temp_dir("synthetic");
    let mut chain = Chain::new(&ws, sector(2), SectorSize::Size2KiB, true);
    use StepKind::*;
    let results = run_chain(
        &mut chain,
        &[
            AddPiece,
            TreeD,
            Pc1,
            Pc2,
            SyntheticProofs,
            C1,
            C2,
            VerifySeal,
        ],
    );
    assert!(results[4].outputs.file("synthetic-proofs").is_some());
    assert_eq!(results.last().unwrap().outputs.verified, Some(true));

    // An interactive-PoRep request cannot use this sector's synthetic PC1 output: permanent, named.
    let mut request = chain.request(Pc2);
    request.synthetic_po_rep = false;
    let (code, result) = run_with(&request, &[]);
    let (code, level, message) = failure(code, &result);
    assert_eq!((code, level), (20, FailureLevel::Permanent));
    assert!(
        message.contains("SyntheticPoRep") && message.contains("StackedDrg2KiBV1_1"),
        "{message}"
    );
    fs::remove_dir_all(ws).unwrap();
}

/// Seals a sector to PC2 and persists it; returns the chain and the persisted files.
fn sealed_and_persisted(
    ws: &Path,
    persist: &Path,
    number: u64,
    pieces: Vec<PieceInput>,
) -> (Chain, SealedFiles) {
    let mut chain = Chain::new(ws, sector(number), SectorSize::Size2KiB, false);
    chain.base.persist = Some(persist.to_path_buf());
    chain.gathered.pieces = pieces;
    use StepKind::*;
    let results = run_chain(&mut chain, &[AddPiece, TreeD, Pc1, Pc2, Persist]);
    let persisted = &results[4].outputs.files;
    assert!(
        persisted.iter().any(|f| f.file.path.ends_with("p_aux")),
        "{persisted:?}"
    );
    let store = SectorFiles::new(persist, sector(number));
    let sealed = SealedFiles {
        sealed: store.sealed(),
        cache: store.cache(),
        comm_r: chain.gathered.comm_r,
        comm_d: chain.gathered.comm_d,
        ticket: chain.gathered.ticket,
    };
    assert_eq!(
        fs::read(&sealed.sealed).unwrap(),
        fs::read(SectorFiles::new(ws, sector(number)).sealed()).unwrap()
    );
    (chain, sealed)
}

fn deal_piece(dir: &Path, seed: u8) -> (PathBuf, Vec<u8>) {
    // 2032 unpadded bytes fill a 2KiB sector; the top bits of each 32-byte word need no care: add-piece pads.
    let bytes: Vec<u8> = (0..2032u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let path = dir.join(format!("piece-{seed}.bin"));
    fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
#[ignore = "long run (scripts/test-long): needs the empty-sector-update parameters"]
fn snapup_encodes_proves_and_verifies_on_a_cc_sector() {
    let root = temp_dir("snapup");
    let persist = root.join("persist");
    let (_, cc) = sealed_and_persisted(&root.join("cc"), &persist, 3, vec![]);

    let (piece, _) = deal_piece(&root, 5);
    let mut chain = Chain::new(&root.join("snap"), sector(3), SectorSize::Size2KiB, false);
    chain.base.persist = Some(persist.clone());
    chain.gathered.pieces = vec![PieceInput {
        cid: None,
        size: 2048,
        source: Some(format!("file://{}", piece.display())),
        payload_size: None,
    }];
    chain.gathered.cc_sector = Some(cc.clone());
    use StepKind::*;
    let results = run_chain(
        &mut chain,
        &[AddPiece, SnapEncode, SnapProve, VerifySnap, Persist],
    );
    let new_comm_r = results[1].outputs.comm_r.unwrap();
    assert_ne!(
        Some(new_comm_r),
        cc.comm_r,
        "the upgraded replica has a new CommR"
    );
    assert_eq!(
        results[1].outputs.comm_d.map(|c| c.to_string()).as_ref(),
        Some(&results[0].outputs.pieces[0].cid)
    );
    assert_eq!(results[2].outputs.verified, Some(true));
    assert_eq!(results[3].outputs.verified, Some(true));
    assert!(SectorFiles::new(&persist, sector(3)).update().is_file());

    // The same proof does not prove the upgrade of a different CC sector.
    let mut request = chain.request(VerifySnap);
    request.inputs.comm_r = cc.comm_r;
    let (code, result) = run_with(&request, &[]);
    assert_eq!(
        (code, result.unwrap().outputs.verified),
        (Some(20), Some(false))
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn rebuild_with_the_original_ticket_gives_the_same_comm_r_and_replica() {
    let root = temp_dir("rebuild");
    let (piece, _) = deal_piece(&root, 7);
    let pieces = vec![PieceInput {
        cid: None,
        size: 2048,
        source: Some(format!("file://{}", piece.display())),
        payload_size: None,
    }];
    let (original, sealed) = sealed_and_persisted(
        &root.join("original"),
        &root.join("persist"),
        4,
        pieces.clone(),
    );

    // A lost sector: a fresh workspace, the same ticket and pieces, and the CID checked this time.
    let mut rebuild = Chain::new(
        &root.join("rebuild"),
        sector(4),
        SectorSize::Size2KiB,
        false,
    );
    rebuild.gathered.ticket = original.gathered.ticket;
    let mut pieces = pieces;
    pieces[0].cid = Some(original.gathered.comm_d.unwrap().to_string());
    rebuild.gathered.pieces = pieces;
    use StepKind::*;
    run_chain(&mut rebuild, &[AddPiece, TreeD, Pc1, Pc2]);
    assert_eq!(rebuild.gathered.comm_r, sealed.comm_r);
    assert_eq!(
        fs::read(SectorFiles::new(root.join("rebuild"), sector(4)).sealed()).unwrap(),
        fs::read(&sealed.sealed).unwrap()
    );

    // A piece whose bytes do not match its CID is refused before anything is sealed.
    let (other, _) = deal_piece(&root, 8);
    let mut wrong = rebuild.clone();
    wrong.base.workspace = root.join("wrong");
    wrong.gathered.pieces[0].source = Some(format!("file://{}", other.display()));
    let (code, result) = run_with(&wrong.request(AddPiece), &[]);
    let (code, level, message) = failure(code, &result);
    assert_eq!((code, level), (20, FailureLevel::Permanent));
    assert!(message.contains("does not match its bytes"), "{message}");

    // A deal's payload is read to its length and zero-padded; a source that ends before it does
    // (a truncated download) is refused naming the piece.
    let mut short = rebuild.clone();
    short.base.workspace = root.join("short");
    let truncated = root.join("truncated.bin");
    fs::write(&truncated, &fs::read(&piece).unwrap()[..1000]).unwrap();
    short.gathered.pieces[0].source = Some(format!("file://{}", truncated.display()));
    short.gathered.pieces[0].payload_size = Some(2032);
    let (code, result) = run_with(&short.request(AddPiece), &[]);
    let (code, level, message) = failure(code, &result);
    assert_eq!((code, level), (20, FailureLevel::Permanent));
    assert!(
        message.contains("its source ended after")
            && message.contains(short.gathered.pieces[0].cid.as_deref().unwrap()),
        "{message}"
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn unseal_returns_the_original_piece_bytes_and_upload_delivers_them() {
    let root = temp_dir("unseal");
    let (piece, original) = deal_piece(&root, 11);
    let pieces = vec![PieceInput {
        cid: None,
        size: 2048,
        source: Some(format!("store://pieces/{}", "p.bin")),
        payload_size: None,
    }];
    let persist = root.join("persist");
    fs::create_dir_all(persist.join("pieces")).unwrap();
    fs::copy(&piece, persist.join("pieces/p.bin")).unwrap();
    let (_, sealed) = sealed_and_persisted(&root.join("seal"), &persist, 5, pieces);

    let mut chain = Chain::new(&root.join("unseal"), sector(5), SectorSize::Size2KiB, false);
    chain.gathered.sealed = Some(sealed);
    chain.gathered.unseal = Some(UnsealRange {
        offset: 0,
        size: 2032,
    });
    // Every scheme the manager may give, one destination each: a file on the node, a persist
    // store by name, the market (its token redacted, as the task records it, and taken from the
    // step's environment), a plain http PUT, and the manager's piece store.
    let cid = "baga6ea4seaqunsealedpiece";
    let (address, requests) = receiver(vec!["200 OK"; 3]);
    let file = root.join("delivered/piece.bin");
    let store = root.join("store-x");
    chain.gathered.destinations = vec![
        format!("file://{}", file.display()),
        "store://store-x/retrieved/piece".into(),
        format!("market://retrievals/{cid}?host={address}&scheme=http&token=redacted"),
        format!("http://{address}/put/piece"),
        format!("store:///{cid}"),
    ];
    chain.gathered.stores = [("store-x".to_string(), store.clone())].into();
    chain.gathered.piece_store = Some(format!("http://{address}/piecestore/"));
    chain.gathered.allowed_hosts = vec!["127.0.0.1".into()];
    chain.gathered.delivery_roots = vec![root.join("delivered")];
    let unsealed = run_chain(&mut chain, &[StepKind::Unseal]);
    let unsealed = unsealed[0].outputs.file("unsealed-piece").unwrap();
    assert_eq!(fs::read(&unsealed.path).unwrap(), original);
    let (code, result) = run_with(
        &chain.request(StepKind::Upload),
        &[("PIECE_FETCHER_TOKEN", "market-secret")],
    );
    assert_eq!(code, Some(0), "{result:?}");
    assert_eq!(
        result.unwrap().outputs.delivered,
        chain.gathered.destinations,
        "delivered to each, in the manager's order"
    );
    assert_eq!(fs::read(&file).unwrap(), original);
    assert_eq!(fs::read(store.join("retrieved/piece")).unwrap(), original);
    let seen = requests.join().unwrap();
    let lines: Vec<(&str, &str)> = seen
        .iter()
        .map(|(line, auth, body)| {
            assert_eq!(body, &original, "{line}: the whole piece");
            (line.as_str(), auth.as_str())
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                &*format!("PUT /resource?resource-id={cid}&store=retrievals HTTP/1.1"),
                "Bearer market-secret"
            ),
            ("PUT /put/piece HTTP/1.1", ""),
            (&*format!("PUT /piecestore/{cid} HTTP/1.1"), ""),
        ],
        "the market gets the token, nothing else does"
    );

    // A market that refuses is permanent (as in damocles-worker); a failed PUT elsewhere is
    // temporary; without the token the step says where to set it.
    let market = |address: &str| {
        vec![format!(
            "market://retrievals/{cid}?host={address}&scheme=http&token=redacted"
        )]
    };
    let (address, requests) = receiver(vec!["403 Forbidden"]);
    let mut request = chain.request(StepKind::Upload);
    request.inputs.destinations = market(&address);
    let outcome = run_with(&request, &[("PIECE_FETCHER_TOKEN", "wrong")]);
    let (_, level, message) = failure(outcome.0, &outcome.1);
    assert_eq!(level, FailureLevel::Permanent, "{message}");
    assert!(
        message.contains("403") && !message.contains("wrong"),
        "{message}"
    );
    requests.join().unwrap();
    let (address, requests) = receiver(vec!["500 Internal Server Error"]);
    request.inputs.destinations = vec![format!("http://{address}/put/piece")];
    let outcome = run_with(&request, &[]);
    let (_, level, message) = failure(outcome.0, &outcome.1);
    assert_eq!(level, FailureLevel::Temporary, "{message}");
    requests.join().unwrap();
    request.inputs.destinations = market("127.0.0.1:9");
    let outcome = run_with(&request, &[]);
    let (_, level, message) = failure(outcome.0, &outcome.1);
    assert_eq!(level, FailureLevel::Permanent, "{message}");
    assert!(message.contains("PIECE_FETCHER_TOKEN"), "{message}");

    // Nothing goes where the admin did not allow, even in a request the task did not check:
    // a host not listed, a file outside the delivery roots, a link out of a store or a root.
    let outside = root.join("outside");
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, store.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("delivered/link")).unwrap();
    for (destination, refusal) in [
        (
            "http://169.254.169.254/latest".to_string(),
            "host 169.254.169.254 is not in profiles.allowedHosts".to_string(),
        ),
        (
            format!("file://{}/x", outside.display()),
            "is not under profiles.deliveryRoots".into(),
        ),
        (
            "store://store-x/link/piece".into(),
            format!("{}/link is a symbolic link", store.display()),
        ),
        (
            format!("file://{}/delivered/link/piece", root.display()),
            "link is a symbolic link".into(),
        ),
    ] {
        request.inputs.destinations = vec![destination.clone()];
        let outcome = run_with(&request, &[]);
        let (_, level, message) = failure(outcome.0, &outcome.1);
        assert_eq!(level, FailureLevel::Permanent, "{destination}: {message}");
        assert!(message.contains(&refusal), "{destination}: {message}");
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was written through a link"
    );

    let mut request = chain.request(StepKind::Unseal);
    request.inputs.unseal = Some(UnsealRange {
        offset: 1000,
        size: 2000,
    });
    let (code, result) = run_with(&request, &[]);
    let (code, _, message) = failure(code, &result);
    assert_eq!(code, 20);
    assert!(
        message.contains("outside the 2032 unpadded bytes"),
        "{message}"
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_step_killed_mid_write_is_redone_correctly_on_rerun() {
    let root = temp_dir("crash");
    // The reference: an undisturbed run.
    let mut clean = Chain::new(&root.join("clean"), sector(6), SectorSize::Size2KiB, false);
    use StepKind::*;
    run_chain(&mut clean, &[AddPiece, TreeD, Pc1, Pc2, C1]);

    let ws = root.join("crashy");
    let mut chain = Chain::new(&ws, sector(6), SectorSize::Size2KiB, false);
    run_chain(&mut chain, &[AddPiece, TreeD, Pc1]);
    let files = SectorFiles::new(&ws, sector(6));
    for (step, point) in [(Pc2, "before-rename"), (Pc2, "before-marker")] {
        let (code, result) = run_with(
            &chain.request(step),
            &[(FAULT_ENV, &format!("{step}:{point}"))],
        );
        assert_eq!(
            code, None,
            "{step}:{point}: killed by a signal, no exit code"
        );
        assert!(result.is_none(), "a killed step reports nothing");
        assert!(
            !files.marker(step).exists(),
            "no completion marker after {point}"
        );
    }
    // Killed before the rename: the partial replica is left behind, the final name never appeared.
    let (_, _) = run_with(&chain.request(Pc2), &[(FAULT_ENV, "pc2:before-rename")]);
    assert!(partial_path(&files.sealed()).exists() && !files.sealed().exists());
    let pc2 = run(&chain.request(Pc2));
    chain.absorb(&pc2);
    assert!(!pc2.reused && !partial_path(&files.sealed()).exists());
    assert_eq!(chain.gathered.comm_r, clean.gathered.comm_r);

    // C1's output killed half-written: the rerun writes it whole and C1 gives the clean run's output.
    let (code, _) = run_with(&chain.request(C1), &[(FAULT_ENV, "c1:mid-write")]);
    assert_eq!(code, None);
    assert!(partial_path(&files.output("c1.json")).exists());
    let c1 = run(&chain.request(C1));
    assert_eq!(
        fs::read(&c1.outputs.file("c1-output").unwrap().path).unwrap(),
        fs::read(&clean.gathered.c1_output.as_ref().unwrap().path).unwrap()
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn corrupt_or_missing_inputs_are_critical_and_name_the_file() {
    let root = temp_dir("corrupt");
    let mut chain = Chain::new(&root, sector(7), SectorSize::Size2KiB, false);
    use StepKind::*;
    run_chain(&mut chain, &[AddPiece, TreeD, Pc1, Pc2, C1]);
    let c1_output = chain.gathered.c1_output.clone().unwrap();
    let bytes = fs::read(&c1_output.path).unwrap();
    fs::write(&c1_output.path, &bytes[..bytes.len() / 2]).unwrap();
    let (code, result) = run_with(&chain.request(C2), &[]);
    let (code, level, message) = failure(code, &result);
    assert_eq!((code, level), (30, FailureLevel::Critical));
    assert!(
        message.contains(&c1_output.path.display().to_string()),
        "{message}"
    );

    let files = SectorFiles::new(&root, sector(7));
    fs::remove_file(files.sealed()).unwrap();
    let (code, result) = run_with(&chain.request(C1), &[]);
    let (code, _, message) = failure(code, &result);
    assert_eq!(code, 30);
    assert!(
        message.contains(&files.sealed().display().to_string()),
        "{message}"
    );
    fs::remove_dir_all(root).unwrap();
}

/// A second damocles-step on a workspace another one holds exits at once with the lock error
/// and touches nothing; once the holder is gone the same request runs.
#[test]
fn a_second_step_on_the_same_workspace_exits_with_the_lock_error() {
    let root = temp_dir("lock");
    let mut chain = Chain::new(&root.join("ws"), sector(21), SectorSize::Size2KiB, false);
    chain.gathered.pieces = vec![];
    let request = chain.request(StepKind::AddPiece);
    fs::create_dir_all(&request.workspace).unwrap();
    let holder = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(
            request
                .workspace
                .join(damocles_operator::step::run::WORKSPACE_LOCK),
        )
        .unwrap();
    holder.lock().unwrap();
    let (code, result) = run_with(&request, &[]);
    let (_, level, message) = failure(code, &result);
    assert_eq!(level, FailureLevel::Temporary);
    assert!(
        message.contains("another damocles-step holds the lock on the workspace"),
        "{message}"
    );
    assert!(
        !SectorFiles::new(&request.workspace, request.sector)
            .staged()
            .exists(),
        "nothing written"
    );
    drop(holder);
    let (code, result) = run_with(&request, &[]);
    assert_eq!(code, Some(0), "{result:?}");
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn requests_from_a_newer_schema_are_refused_clearly() {
    let root = temp_dir("schema");
    let path = root.join("request.json");
    let message = root.join("result.json");
    fs::write(
        &path,
        serde_json::json!({
            "version": 99, "step": "teleport", "terminationMessagePath": message,
        })
        .to_string(),
    )
    .unwrap();
    let output = Command::new(STEP)
        .args(["run", "--request"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(20));
    let text = fs::read_to_string(&message).unwrap();
    assert!(text.contains("schema version 99"), "{text}");
    fs::remove_dir_all(root).unwrap();
}

/// A deal piece found in a local piece directory (as `<cid>.car`) is read from there, CID
/// checked, without asking its source, as damocles-worker's local piece store comes first.
#[test]
fn a_piece_in_a_local_piece_directory_is_read_from_there() {
    let root = temp_dir("piece-dirs");
    let (piece, bytes) = deal_piece(&root, 13);
    let mut chain = Chain::new(&root.join("probe"), sector(13), SectorSize::Size2KiB, false);
    chain.gathered.pieces = vec![PieceInput {
        cid: None,
        size: 2048,
        source: Some(format!("file://{}", piece.display())),
        payload_size: None,
    }];
    let cid = run_chain(&mut chain, &[StepKind::AddPiece])[0]
        .outputs
        .pieces[0]
        .cid
        .clone();
    let (empty, pieces) = (root.join("empty"), root.join("pieces"));
    fs::create_dir_all(&empty).unwrap();
    fs::create_dir_all(&pieces).unwrap();
    fs::copy(&piece, pieces.join(format!("{cid}.car"))).unwrap();
    let mut chain = Chain::new(&root.join("local"), sector(13), SectorSize::Size2KiB, false);
    chain.gathered.pieces = vec![PieceInput {
        cid: Some(cid.clone()),
        size: 2048,
        // Nothing listens there: the bytes must come from the directory.
        source: Some(format!("http://127.0.0.1:9/piecestore/{cid}")),
        payload_size: Some(bytes.len() as u64),
    }];
    chain.gathered.piece_dirs = vec![empty, pieces.clone()];
    let results = run_chain(&mut chain, &[StepKind::AddPiece]);
    assert_eq!(results[0].outputs.pieces[0].cid, cid);

    // Other bytes under that name are caught by the CID check, naming the piece.
    let mut other = bytes.clone();
    other[0] ^= 0xff;
    fs::write(pieces.join(format!("{cid}.car")), &other).unwrap();
    chain.base.workspace = root.join("corrupt");
    let (code, result) = run_with(&chain.request(StepKind::AddPiece), &[]);
    let (_, level, message) = failure(code, &result);
    assert_eq!(level, FailureLevel::Permanent);
    assert!(
        message.contains(&format!("piece {cid} does not match")),
        "{message}"
    );
    fs::remove_dir_all(root).unwrap();
}

/// A loopback HTTP server that takes one request per status in `statuses` and answers it with
/// that status; returns its address and, once done, each request's first line, Authorization
/// and body.
#[allow(clippy::type_complexity)]
fn receiver(
    statuses: Vec<&'static str>,
) -> (
    String,
    std::thread::JoinHandle<Vec<(String, String, Vec<u8>)>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let mut seen = vec![];
        for status in statuses {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let (mut authorization, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        authorization = value.trim().to_string();
                    } else if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .unwrap();
            seen.push((first.trim().to_string(), authorization, body));
        }
        seen
    });
    (address, server)
}

/// A piece store and a market on one loopback port, as damocles-manager and droplet answer: the
/// store redirects `/piecestore/<cid>` to the market's `/resource?resource-id=<cid>`, which
/// serves `bytes` only with the market token. Answers `requests` requests, then stops; returns
/// the store's URL prefix and what each request carried (its first line and Authorization).
fn store_redirecting_to_market(
    bytes: Vec<u8>,
    token: &'static str,
    requests: usize,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    store_redirecting_to(bytes, token, requests, None)
}

/// As [`store_redirecting_to_market`]; `market`: the origin the store redirects to (default
/// its own).
fn store_redirecting_to(
    bytes: Vec<u8>,
    token: &'static str,
    requests: usize,
    market: Option<&'static str>,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let origin = market.unwrap_or_default();
    let server = std::thread::spawn(move || {
        let mut seen = vec![];
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                // Header names are case-insensitive (ureq sends them in lower case).
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    authorization = format!("Authorization: {}", value.trim());
                }
            }
            let path = first
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let head = |status: &str, extra: &str, length: usize| {
                format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {length}\r\nConnection: close\r\n\r\n"
                )
            };
            if let Some(cid) = path.strip_prefix("/piecestore/") {
                let location = format!("Location: {origin}/resource?resource-id={cid}\r\n");
                stream
                    .write_all(head("302 Found", &location, 0).as_bytes())
                    .unwrap();
            } else if authorization == format!("Authorization: Bearer {token}") {
                stream
                    .write_all(head("200 OK", "", bytes.len()).as_bytes())
                    .unwrap();
                stream.write_all(&bytes).unwrap();
            } else {
                stream
                    .write_all(head("401 Unauthorized", "", 0).as_bytes())
                    .unwrap();
            }
            seen.push(format!("{} {authorization}", first.trim()));
        }
        seen
    });
    (format!("http://{address}/piecestore/"), server)
}

/// A piece source that sends part of the piece and then nothing, its connection left open,
/// ends the step within the stall limit as a temporary failure naming the source (ureq's own
/// timeouts bound only connecting and the answer's headers): without the watchdog the add-piece
/// pod would hang for good.
#[test]
fn a_piece_download_that_stalls_fails_the_step_as_temporary() {
    use std::io::{BufRead, BufReader, Write};
    let root = temp_dir("stall");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 2032\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        let part: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        stream.write_all(&part).unwrap();
        stream.flush().unwrap();
        // Held open, silent; dropped after 30 s so that without the watchdog the step ends with
        // another failure (a short body) rather than hanging the test.
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let mut chain = Chain::new(&root, sector(11), SectorSize::Size2KiB, false);
    chain.gathered.pieces = vec![PieceInput {
        cid: None,
        size: 2048,
        source: Some(format!("http://{address}/piecestore/baga6ea4seaqstalled")),
        payload_size: None,
    }];
    chain.gathered.allowed_hosts = vec!["127.0.0.1".into()];
    let (code, result) = run_with(
        &chain.request(StepKind::AddPiece),
        &[(damocles_operator::step::stall::STALL_ENV, "2")],
    );
    let (code, level, message) = failure(code, &result);
    assert_eq!((code, level), (10, FailureLevel::Temporary), "{message}");
    assert!(
        message.contains(&format!(
            "piece http://{address}/piecestore/baga6ea4seaqstalled"
        )) && message.contains("no byte moved for 2s"),
        "{message}"
    );
    drop(server);
}

/// A deal piece the manager's piece store does not hold is fetched where it redirects (the
/// market), with the market token from PIECE_FETCHER_TOKEN, as damocles-worker fetches it;
/// without the token the market's refusal is a permanent error naming the URL.
#[test]
fn a_piece_the_store_redirects_is_fetched_from_the_market_with_the_token() {
    let root = temp_dir("redirect");
    let (piece, bytes) = deal_piece(&root, 9);
    let cid = {
        let mut probe = Chain::new(&root.join("probe"), sector(9), SectorSize::Size2KiB, false);
        probe.gathered.pieces = vec![PieceInput {
            cid: None,
            size: 2048,
            source: Some(format!("file://{}", piece.display())),
            payload_size: None,
        }];
        let results = run_chain(&mut probe, &[StepKind::AddPiece]);
        results[0].outputs.pieces[0].cid.clone()
    };
    let (store, server) = store_redirecting_to_market(bytes.clone(), "market-secret", 4);
    let mut chain = Chain::new(&root.join("fetch"), sector(9), SectorSize::Size2KiB, false);
    chain.gathered.pieces = vec![PieceInput {
        cid: Some(cid.clone()),
        size: 2048,
        source: Some(format!("{store}{cid}")),
        payload_size: Some(bytes.len() as u64),
    }];
    chain.gathered.allowed_hosts = vec!["127.0.0.1".into()];
    let (code, result) = run_with(
        &chain.request(StepKind::AddPiece),
        &[("PIECE_FETCHER_TOKEN", "market-secret")],
    );
    assert_eq!(code, Some(0), "{result:?}");
    assert_eq!(result.unwrap().outputs.pieces[0].cid, cid);

    let mut untokened = chain.clone();
    untokened.base.workspace = root.join("untokened");
    let (code, result) = run_with(&untokened.request(StepKind::AddPiece), &[]);
    let (code, level, message) = failure(code, &result);
    assert_eq!((code, level), (20, FailureLevel::Permanent));
    assert!(
        message.contains("resource?resource-id=") && message.contains("401"),
        "{message}"
    );
    let seen = server.join().unwrap();
    assert_eq!(
        seen,
        [
            format!("GET /piecestore/{cid} HTTP/1.1 "),
            format!("GET /resource?resource-id={cid} HTTP/1.1 Authorization: Bearer market-secret"),
            format!("GET /piecestore/{cid} HTTP/1.1 "),
            format!("GET /resource?resource-id={cid} HTTP/1.1 "),
        ],
        "the store is asked without credentials, the market with the token"
    );

    // A redirect to a host the admin did not allow is not followed: the token stays home.
    let (store, server) = store_redirecting_to(
        bytes.clone(),
        "market-secret",
        1,
        Some("http://169.254.169.254"),
    );
    let mut elsewhere = chain.clone();
    elsewhere.base.workspace = root.join("elsewhere");
    elsewhere.gathered.pieces[0].source = Some(format!("{store}{cid}"));
    let (code, result) = run_with(
        &elsewhere.request(StepKind::AddPiece),
        &[("PIECE_FETCHER_TOKEN", "market-secret")],
    );
    let (_, level, message) = failure(code, &result);
    assert_eq!(level, FailureLevel::Permanent);
    assert!(
        message.contains("host 169.254.169.254 is not in the allowed hosts"),
        "{message}"
    );
    assert_eq!(server.join().unwrap().len(), 1, "only the store was asked");
    fs::remove_dir_all(root).unwrap();
}
