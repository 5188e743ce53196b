use super::*;

fn verdict(uuid: &str, serial: Option<&str>) -> GpuVerdict {
    GpuVerdict {
        uuid: uuid.into(),
        model: "NVIDIA H100 80GB HBM3".into(),
        serial: serial.map(Into::into),
        failure: None,
    }
}

fn node(provider: &str, node: &str, gpus: &[(&str, Option<&str>)]) -> NodeVerdicts {
    NodeVerdicts {
        provider: provider.into(),
        node: node.into(),
        verdicts: gpus.iter().map(|(u, s)| verdict(u, *s)).collect(),
        sold: u32::try_from(gpus.len()).unwrap_or(u32::MAX),
        sold_model: "NVIDIA-H100-80GB-HBM3".into(),
        probation: BTreeSet::new(),
    }
}

#[test]
fn a_node_selling_more_gpus_than_its_report_verified_is_no_verified_node() {
    // Its kubelet sells 8; its report lists the one real card, which passes.
    let mut one_of_eight = node("p", "n1", &[("GPU-1", None)]);
    one_of_eight.sold = 8;
    let v = judge(&[one_of_eight, node("p", "n2", &[("GPU-2", None), ("GPU-3", None)])]);
    let p = &v["p"];
    assert_eq!(p.verified, 3, "the GPUs that passed still count");
    assert_eq!(
        p.verified_nodes,
        BTreeSet::from(["n2".to_owned()]),
        "n1 would sell 8 verified GPUs for one"
    );
    // Sold as another model than the one that passed.
    let mut relabelled = node("q", "n3", &[("GPU-4", None)]);
    relabelled.sold_model = "NVIDIA-B200".into();
    let v = judge(&[relabelled]);
    assert_eq!(v["q"].verified, 1);
    assert!(
        v["q"].verified_nodes.is_empty(),
        "an H100 does not vouch for a B200"
    );
    // Labels as the device plugin writes them still match their model.
    assert!(sold_as("NVIDIA-H100-80GB-HBM3", "NVIDIA H100 80GB HBM3"));
    assert!(sold_as("NVIDIA-A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"));
    assert!(sold_as(
        "NVIDIA-GeForce-RTX-4090-D--rev-2",
        "NVIDIA GeForce RTX 4090 D (rev 2)"
    ));
    assert!(
        !sold_as("NVIDIA", "NVIDIA H100 80GB HBM3"),
        "a short label is no prefix"
    );
    let long = format!("NVIDIA-{}", "X".repeat(60));
    assert!(
        sold_as(&long[..63], &format!("NVIDIA {}", "X".repeat(60))),
        "a cut label"
    );
    assert!(
        sold_as("mixed", "NVIDIA H100 80GB HBM3"),
        "several models: no one to compare"
    );
    assert!(sold_as("unknown", "NVIDIA H100 80GB HBM3"));
    assert!(!sold_as("NVIDIA-H200", "NVIDIA H100 80GB HBM3"));
}

#[test]
fn a_gpu_on_probation_counts_neither_way_and_still_meets_the_uniqueness_checks() {
    let mut joined = node("new", "n1", &[("GPU-1", None), ("GPU-2", None)]);
    joined.probation = BTreeSet::from(["GPU-2".to_owned()]);
    let mut copy = node("copy", "c1", &[("GPU-9", None)]);
    copy.probation = BTreeSet::from(["GPU-9".to_owned()]);
    let v = judge(&[joined, copy, node("old", "o1", &[("GPU-9", None)])]);
    let new = &v["new"];
    assert_eq!((new.verified, new.failed, new.on_probation), (1, 0, 1), "{new:?}");
    assert!(
        new.verified_nodes.is_empty(),
        "a node with a GPU on probation serves no verified-only job"
    );
    assert!(new.failures.is_empty());
    // A UUID claimed twice is a duplicate for both claimants, probation or not.
    assert_eq!((v["copy"].on_probation, v["copy"].failed), (0, 1));
    assert_eq!(v["old"].failed, 1);
}

#[test]
fn one_board_on_two_nodes_flags_both_but_a_multi_gpu_board_on_one_node_does_not() {
    let v = judge(&[
        // Virtual GPUs of one card, each with its own UUID, on two providers' nodes.
        node(
            "honest",
            "n1",
            &[("GPU-1", Some("1650123456789")), ("GPU-2", Some("1650000000002"))],
        ),
        node("slicer", "v1", &[("GPU-vA", Some("1650123456789 "))]),
        // A dual-GPU board: one serial, two GPUs, one node.
        node(
            "dual",
            "n1",
            &[("GPU-k1", Some("0324411")), ("GPU-k2", Some("0324411"))],
        ),
        // Placeholders are no serial.
        node(
            "consumer",
            "a",
            &[("GPU-c1", Some("N/A")), ("GPU-c2", Some("0000000000000"))],
        ),
        node("consumer", "b", &[("GPU-c3", Some("N/A")), ("GPU-c4", None)]),
    ]);
    let failures = |p: &str| -> Vec<(String, String)> {
        v[p].failures
            .iter()
            .map(|(n, g)| {
                (
                    format!("{n}/{}", g.uuid),
                    g.failure.as_ref().map(ToString::to_string).unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(
        failures("honest"),
        [(
            "n1/GPU-1".to_owned(),
            "board serial 1650123456789 also reported by slicer/v1".to_owned()
        )]
    );
    assert_eq!(v["honest"].verified, 1);
    assert_eq!(
        failures("slicer"),
        [(
            "v1/GPU-vA".to_owned(),
            "board serial 1650123456789 also reported by honest/n1".to_owned()
        )]
    );
    assert!(failures("dual").is_empty());
    assert_eq!(v["dual"].verified, 2);
    assert!(failures("consumer").is_empty(), "{:?}", failures("consumer"));
    assert_eq!(
        v["slicer"].evidence_kinds(),
        BTreeSet::from([crate::verify::EVIDENCE_DUPLICATE_GPU])
    );
}

#[test]
fn a_duplicate_uuid_is_named_before_a_duplicate_serial() {
    let v = judge(&[
        node("a", "n1", &[("GPU-x", Some("S1"))]),
        node("b", "n2", &[("GPU-x", Some("S1"))]),
    ]);
    let reason = |p: &str| v[p].failures[0].1.failure.as_ref().map(Failure::reason);
    assert_eq!(
        (reason("a"), reason("b")),
        (Some("DuplicateUuid"), Some("DuplicateUuid"))
    );
}

#[test]
fn placeholders_are_no_serial() {
    for s in [
        "",
        "  ",
        "N/A",
        "[N/A]",
        "not available",
        "Unknown",
        "0000",
        "00-00",
    ] {
        assert_eq!(board_serial(s), None, "{s:?}");
    }
    assert_eq!(board_serial(" 1650123456789 ").as_deref(), Some("1650123456789"));
    assert_eq!(board_serial("pcb-0324411").as_deref(), Some("PCB-0324411"));
}

fn failing(provider: &str, n: &str, gpus: &[(&str, Option<&str>, Failure)]) -> NodeVerdicts {
    let mut out = node(provider, n, &[]);
    out.verdicts = gpus
        .iter()
        .map(|(u, s, f)| GpuVerdict {
            failure: Some(f.clone()),
            ..verdict(u, *s)
        })
        .collect();
    out.sold = u32::try_from(gpus.len()).unwrap_or(u32::MAX);
    out
}

fn reasons(v: &ProviderVerdict) -> Vec<(String, &'static str)> {
    v.failures
        .iter()
        .map(|(n, g)| {
            (
                format!("{n}/{}", g.uuid),
                g.failure.as_ref().map_or("", Failure::reason),
            )
        })
        .collect()
}

#[test]
fn a_lie_stays_a_lie_when_its_serial_or_uuid_is_shared() {
    let v = judge(&[
        // Two nodes of one faker on one board, each lying in its own way.
        failing(
            "faker",
            "n1",
            &[("GPU-f1", Some("S-1"), Failure::WrongDigest { row: 3 })],
        ),
        failing(
            "faker",
            "n2",
            &[(
                "GPU-f2",
                Some("S-1"),
                Failure::ImpossiblyFast { micros: 1, min: 500 },
            )],
        ),
        // A cloner of an honest provider's UUID whose opening is malformed.
        failing(
            "cloner",
            "c1",
            &[(
                "GPU-h1",
                None,
                Failure::BadOpening {
                    detail: "empty".into(),
                },
            )],
        ),
        node("honest", "h1", &[("GPU-h1", None)]),
    ]);
    assert_eq!(
        reasons(&v["faker"]),
        [
            ("n1/GPU-f1".to_owned(), "WrongDigest"),
            ("n2/GPU-f2".to_owned(), "ImpossiblyFast")
        ]
    );
    assert_eq!(reasons(&v["cloner"]), [("c1/GPU-h1".to_owned(), "BadOpening")]);
    for liar in ["faker", "cloner"] {
        assert!(
            v[liar]
                .evidence_kinds()
                .contains(crate::verify::EVIDENCE_FAILED_CHALLENGE),
            "{liar}: evidence that slashes"
        );
    }
    // The UUID is still claimed twice: the other claimant is flagged as before.
    assert_eq!(
        v["honest"].failures[0].1.failure,
        Some(Failure::DuplicateUuid {
            others: "cloner/c1".into()
        })
    );
}

#[test]
fn a_providers_own_silent_node_makes_no_duplicate_but_another_providers_does() {
    let silent = || Failure::NotAnswered {
        detail: "no usable report before the timeout".into(),
    };
    let gpus = [("GPU-1", Some("S-1")), ("GPU-2", Some("S-2"))];
    let v = judge(&[
        // The same host under its new name, and its old Node object, never answering.
        failing(
            "p",
            "old-name",
            &[("GPU-1", Some("S-1"), silent()), ("GPU-2", Some("S-2"), silent())],
        ),
        node("p", "new-name", &gpus),
        // Another provider's silent node claiming a UUID still flags its claimant.
        failing("q", "q1", &[("GPU-9", None, silent())]),
        node("r", "r1", &[("GPU-9", None)]),
        // Two answering nodes of one provider sharing a UUID are still duplicates.
        node("s", "a", &[("GPU-7", None)]),
        node("s", "b", &[("GPU-7", None)]),
    ]);
    assert_eq!(v["p"].verified, 2, "{:?}", v["p"]);
    assert_eq!(v["p"].verified_nodes, BTreeSet::from(["new-name".to_owned()]));
    assert_eq!(
        reasons(&v["p"]),
        [
            ("old-name/GPU-1".to_owned(), "NotAnswered"),
            ("old-name/GPU-2".to_owned(), "NotAnswered")
        ]
    );
    assert_eq!(
        v["r"].failures[0].1.failure,
        Some(Failure::DuplicateUuid {
            others: "q/q1".into()
        })
    );
    // And the silent cloner is flagged as one too, not left with a mere NotAnswered
    // while the owner carries the duplicate alone.
    assert_eq!(
        v["q"].failures[0].1.failure,
        Some(Failure::DuplicateUuid {
            others: "r/r1".into()
        })
    );
    assert_eq!(
        reasons(&v["s"]),
        [
            ("a/GPU-7".to_owned(), "DuplicateUuid"),
            ("b/GPU-7".to_owned(), "DuplicateUuid")
        ]
    );
}

#[test]
fn more_gpus_on_one_board_than_a_board_carries_are_duplicates() {
    // One H100 sliced into 7 MIG devices, each reporting the parent's serial.
    let uuids: Vec<String> = (0..7).map(|i| format!("MIG-{i}")).collect();
    let sliced: Vec<(&str, Option<&str>)> = uuids
        .iter()
        .map(|u| (u.as_str(), Some("1650000000077")))
        .collect();
    let mut mig = node("mig", "n1", &sliced);
    // One of them also lied: it keeps its reason.
    mig.verdicts[6].failure = Some(Failure::WrongDigest { row: 0 });
    let four: Vec<(&str, Option<&str>)> = ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
        .iter()
        .map(|u| (*u, Some("A16-0001")))
        .collect();
    let v = judge(&[mig, node("a16", "n1", &four)]);
    let mig = &v["mig"];
    assert_eq!((mig.verified, mig.failed), (0, 7), "{mig:?}");
    assert_eq!(
        mig.failures[0]
            .1
            .failure
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("board serial 1650000000077 also reported by mig/n1 (7 GPUs on one board)")
    );
    assert!(
        mig.failures[..6]
            .iter()
            .all(|(_, g)| g.failure.as_ref().map(Failure::reason) == Some("DuplicateSerial"))
    );
    assert_eq!(mig.failures[6].1.failure, Some(Failure::WrongDigest { row: 0 }));
    // Four GPUs on one board (an A16) are one board's worth.
    assert_eq!((v["a16"].verified, v["a16"].failed), (4, 0));
    assert_eq!(MAX_GPUS_PER_BOARD, 4);
}
