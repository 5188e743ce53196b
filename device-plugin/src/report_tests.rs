use super::*;
use crate::inventory::Inventory;

const SIM: &str = r#"
driverVersion: "580.159.04"
cudaVersion: "13.0"
gpus:
  - {uuid: GPU-a, name: NVIDIA H100 80GB HBM3, memoryMib: 81559, computeCapability: "9.0"}
  - {uuid: GPU-b, name: NVIDIA H100 80GB HBM3, memoryMib: 81559, computeCapability: "9.0", serial: "1650123456789"}
"#;

fn real_inventory() -> Inventory {
    let mut inv = Inventory::from_simulate_str(SIM).unwrap();
    inv.simulated = false; // as if NVML had discovered it
    inv
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

#[test]
fn sign_then_verify_roundtrips_through_json() {
    let signed = sign(
        of_inventory("node-1", "nonce-42", 1_700_000_000, &real_inventory()),
        &key(1),
    )
    .unwrap();
    let wire = serde_json::to_string(&signed).unwrap();
    let back: SignedReport = serde_json::from_str(&wire).unwrap();
    let v = verify(&back, "nonce-42", Some(&signed.public_key)).unwrap();
    assert!(v.counts_as_verified());
    assert_eq!(v.report.gpus.len(), 2);
    // The board serial travels where the board has one; a GPU without one has no key
    // in the signed JSON (reports of such nodes keep the bytes they had before serials).
    let serials: Vec<_> = v.report.gpus.iter().map(|g| g.serial.as_deref()).collect();
    assert_eq!(serials, [None, Some("1650123456789")]);
    assert_eq!(wire.matches("\"serial\"").count(), 1, "{wire}");
}

#[test]
fn every_tampered_field_is_detected() {
    let signed = sign(of_inventory("node-1", "n", 1, &real_inventory()), &key(1)).unwrap();
    let tampers: [fn(&mut InventoryReport); 10] = [
        |r| r.gpus[0].uuid = "GPU-stolen".into(),
        |r| r.gpus[1].serial = Some("1650000000000".into()),
        |r| r.gpus[1].serial = None,
        |r| r.gpus[0].serial = Some("1650123456789".into()),
        |r| r.gpus[1].memory_mib *= 2,
        |r| r.gpus[0].model = "NVIDIA B200".into(),
        |r| r.gpus.push(r.gpus[0].clone()),
        |r| r.simulated = true,
        |r| r.node = "node-2".into(),
        |r| r.driver_version = "999".into(),
    ];
    for (i, t) in tampers.iter().enumerate() {
        let mut s = signed.clone();
        t(&mut s.report);
        assert_eq!(
            verify(&s, "n", None),
            Err(ReportError::BadSignature),
            "tamper #{i} not detected"
        );
    }
}

#[test]
fn wrong_key_nonce_and_garbage_are_refused() {
    let signed = sign(of_inventory("node-1", "n1", 1, &real_inventory()), &key(1)).unwrap();
    let other = B64.encode(key(2).verifying_key().to_bytes());
    assert!(matches!(
        verify(&signed, "n1", Some(&other)),
        Err(ReportError::WrongKey { .. })
    ));
    assert!(matches!(
        verify(&signed, "n2", None),
        Err(ReportError::WrongNonce { .. })
    ));
    // Re-signed by an attacker's key: authentic for that key, refused against the pin.
    let forged = sign(signed.report.clone(), &key(3)).unwrap();
    assert!(matches!(
        verify(&forged, "n1", Some(&signed.public_key)),
        Err(ReportError::WrongKey { .. })
    ));
    let mut garbage = signed.clone();
    garbage.signature = "!!".into();
    assert_eq!(
        verify(&garbage, "n1", None),
        Err(ReportError::Malformed("signature"))
    );
}

#[test]
fn simulated_report_is_authentic_but_never_verified() {
    let sim = Inventory::from_simulate_str(SIM).unwrap();
    let signed = sign(of_inventory("sim-node", "n", 1, &sim), &key(1)).unwrap();
    let v = verify(&signed, "n", None).unwrap();
    assert!(v.report.simulated);
    assert!(!v.counts_as_verified());
}

#[test]
fn node_key_is_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/node.key");
    let k1 = load_or_create_key(&path).unwrap();
    let k2 = load_or_create_key(&path).unwrap();
    assert_eq!(k1.to_bytes(), k2.to_bytes());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(&path, "not a key").unwrap();
    assert!(matches!(
        load_or_create_key(&path),
        Err(KeyFileError::Malformed(_))
    ));
}

#[test]
fn an_interrupted_creation_never_leaves_a_key_that_stops_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    // What a crash between create and write left before: an empty file.
    std::fs::write(&path, "").unwrap();
    let k = load_or_create_key(&path).unwrap();
    assert_eq!(load_or_create_key(&path).unwrap().to_bytes(), k.to_bytes());
    // No temporary name is left behind; only the key is there.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
}
