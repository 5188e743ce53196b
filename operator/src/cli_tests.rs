use clap::Parser;

#[test]
fn a_lease_duration_out_of_bounds_is_refused() {
    let parse = |d: &str| super::Args::try_parse_from(["gpufed-operator", "--lease-duration", d]);
    for bad in ["0s", "2s", "25h"] {
        let err = parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("--lease-duration") && err.contains("between 3s and 24h"),
            "{bad}: {err}"
        );
    }
    assert!(parse("3s").is_ok() && parse("15s").is_ok());
}

#[test]
fn periods_of_zero_are_refused_naming_the_flag() {
    for flag in [
        "--heartbeat-interval",
        "--challenge-poll",
        "--member-timeout",
        "--placement-interval",
        "--settlement-interval",
    ] {
        let parse = |d: &str| super::Args::try_parse_from(["gpufed-operator", flag, d]);
        let err = parse("0s").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(flag) && err.contains("at least 1s"), "{flag}: {err}");
        assert!(parse("1s").is_ok() && parse("1m").is_ok(), "{flag}");
    }
}

#[test]
fn an_empty_identity_is_refused_naming_the_flag() {
    for bad in ["", " "] {
        let parsed = super::Args::try_parse_from(["gpufed-operator", "--identity", bad]);
        let err = parsed.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("--identity") && err.contains("must not be empty"),
            "{bad:?}: {err}"
        );
    }
    let given = super::Args::try_parse_from(["gpufed-operator", "--identity", "op-1"]);
    assert_eq!(given.ok().and_then(|a| a.identity).as_deref(), Some("op-1"));
}

#[test]
#[allow(clippy::unwrap_used)]
fn an_evidence_cooldown_shorter_than_the_abandoned_job_window_is_refused() {
    let verification = |d: &str| {
        super::Args::try_parse_from(["gpufed-operator", "--evidence-cooldown", d])
            .map_err(|e| e.to_string())
            .and_then(|a| a.verification().map(|_| ()))
    };
    let err = verification("10m").unwrap_err();
    assert!(
        err.contains("--evidence-cooldown") && err.contains("15 minutes"),
        "{err}"
    );
    assert_eq!(verification("15m"), Ok(()));
    assert_eq!(verification("24h"), Ok(()));
}
