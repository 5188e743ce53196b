use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};

fn args(extra: &[&str]) -> SubmitArgs {
    let mut base = vec!["kubectl-gpufed", "submit", "train", "--image", "reg.example/t:1"];
    if !extra.contains(&"--max-price") {
        base.extend(["--max-price", "2.5"]);
    }
    let cli = Cli::try_parse_from(base.iter().chain(extra)).unwrap();
    match cli.command {
        Command::Submit(s) => *s,
        other => panic!("not submit: {other:?}"),
    }
}

fn flag_error(extra: &[&str]) -> (String, String) {
    match build(&args(extra), "team") {
        Err(Error::Flag { flag, message }) => (flag, message),
        other => panic!("expected a flag error for {extra:?}, got {other:?}"),
    }
}

#[test]
fn flags_become_the_spec_of_the_examples() {
    let job = build(
        &args(&[
            "--workers",
            "2",
            "--gpus-per-worker",
            "4",
            "--model",
            "NVIDIA-H100-80GB-HBM3",
            "--tier",
            "Datacenter",
            "--min-memory",
            "80G",
            "--min-compute-capability",
            "9.0",
            "--interconnect",
            "NVLinkDomain",
            "--max-duration",
            "36h",
            "--start-timeout",
            "30m",
            "--priority",
            "500",
            "--region",
            "eu-west,us-east",
            "--min-reputation",
            "80",
            "--max-attempts",
            "3",
            "--on-provider-loss",
            "Failover",
            "--checkpoint",
            "s3://b/run/",
            "--checkpoint-secret",
            "s3",
            "--env",
            "A=1",
            "--cpu",
            "16",
            "--memory",
            "128Gi",
            "--label",
            "app=llama",
            "--command",
            "--",
            "torchrun",
            "train.py",
        ]),
        "team",
    )
    .unwrap();
    assert_eq!(job.metadata.name.as_deref(), Some("train"));
    assert_eq!(job.metadata.namespace.as_deref(), Some("team"));
    let v = serde_json::to_value(&job).unwrap();
    assert_eq!(v["apiVersion"], "gpufed.io/v1alpha1");
    assert_eq!(v["kind"], "ComputeJob");
    let s = &v["spec"];
    assert_eq!(s["workers"], 2);
    assert_eq!(s["gpusPerWorker"], 4);
    assert_eq!(s["gpu"]["models"][0], "NVIDIA-H100-80GB-HBM3");
    assert_eq!(s["gpu"]["tier"], "Datacenter");
    assert_eq!(s["gpu"]["minMemory"], "80G");
    assert_eq!(s["gpu"]["interconnect"], "NVLinkDomain");
    assert_eq!(s["maxPricePerGpuHour"], "2.5");
    assert_eq!(s["maxDuration"], "36h");
    assert_eq!(s["startTimeout"], "30m");
    assert_eq!(s["priority"], 500);
    assert_eq!(s["placement"]["regions"][1], "us-east");
    assert_eq!(s["placement"]["minReputation"], 80);
    assert_eq!(s["placement"]["verifiedOnly"], true);
    assert_eq!(s["checkpoint"]["credentialsSecret"], "s3");
    assert_eq!(s["template"]["metadata"]["labels"]["app"], "llama");
    let c = &s["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "reg.example/t:1");
    assert_eq!(c["command"][0], "torchrun");
    assert!(c.get("args").is_none());
    assert_eq!(c["env"][0], serde_json::json!({"name": "A", "value": "1"}));
    assert_eq!(c["resources"]["requests"]["memory"], "128Gi");
}

#[test]
fn defaults_are_the_apis() {
    let job = build(&args(&["--", "--batch", "x"]), "default").unwrap();
    let s = &job.spec;
    assert_eq!((s.workers, s.gpus_per_worker, s.priority), (1, 1, 100));
    assert!(s.placement.verified_only);
    assert_eq!(s.failure_policy.max_attempts, 3);
    assert!(s.template.metadata.is_none());
    assert_eq!(s.start_timeout, None); // the operator applies DEFAULT_START_TIMEOUT_SECS
    let c = &s.template.spec.containers[0].0;
    assert_eq!(c["args"], serde_json::json!(["--batch", "x"]));
    assert!(!s.placement.preempt_lower_priority);
    let unverified = build(&args(&["--allow-unverified"]), "d").unwrap();
    assert!(!unverified.spec.placement.verified_only);
    assert_eq!(s.egress, gpufed_api::job::Egress::Namespace);
    let open = build(&args(&["--internet"]), "d").unwrap();
    assert_eq!(open.spec.egress, gpufed_api::job::Egress::Internet);
    let urgent = build(&args(&["--priority", "900", "--preempt"]), "d").unwrap();
    assert!(urgent.spec.placement.preempt_lower_priority);
    assert_eq!(urgent.spec.priority, 900);
    assert_eq!(s.ttl_seconds_after_finished, None);
    let ttl = build(&args(&["--ttl-after-finished", "1h30m"]), "d").unwrap();
    assert_eq!(ttl.spec.ttl_seconds_after_finished, Some(5400));
}

#[test]
fn bad_values_name_their_flag() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--min-memory", "80GB"], "--min-memory", "80GB"),
        (&["--max-price", "0"], "--max-price", "greater than 0"),
        (&["--max-price", "cheap"], "--max-price", "cheap"),
        (&["--max-duration", "1d"], "--max-duration", "1d"),
        (&["--max-duration", "0s"], "--max-duration", "longer than 0s"),
        (&["--start-timeout", "0m"], "--start-timeout", "longer than 0s"),
        (&["--start-timeout", "soon"], "--start-timeout", "soon"),
        (&["--ttl-after-finished", "1d"], "--ttl-after-finished", "1d"),
        (
            &["--ttl-after-finished", "2000000h"],
            "--ttl-after-finished",
            "too long",
        ),
        (
            &["--gpus-per-worker", "0"],
            "--gpus-per-worker",
            "greater than or equal to 1",
        ),
        (
            &["--gpus-per-worker", "17"],
            "--gpus-per-worker",
            "less than or equal to 16",
        ),
        (
            &["--workers", "100", "--gpus-per-worker", "8"],
            "--workers",
            "at most 512",
        ),
        (&["--interconnect", "NVLink"], "--interconnect", "at least 2"),
        (
            &["--min-compute-capability", "nine"],
            "--min-compute-capability",
            "nine",
        ),
        (&["--model", "NVIDIA H100"], "--model", "NVIDIA H100"),
        (&["--region", "EU_West"], "--region", "EU_West"),
        (&["--min-reputation", "101"], "--min-reputation", "100"),
        (&["--priority", "5000"], "--priority", "1000"),
        (&["--max-attempts", "0"], "--max-attempts", "1"),
        (&["--checkpoint", "ftp://x/y"], "--checkpoint", "ftp://x/y"),
        (&["--env", "NOEQUALS"], "--env", "KEY=VALUE"),
        (&["--label", "=v"], "--label", "KEY=VALUE"),
        (
            &["--label", "gpufed.io/rank=1"],
            "--label",
            "gpufed sets it on every worker",
        ),
        // The container's fields name their own flags, not --image.
        (
            &["--env", "NVIDIA_VISIBLE_DEVICES=0"],
            "--env",
            "NVIDIA_VISIBLE_DEVICES is set by the device plugin",
        ),
        (&["--cpu", "lots"], "--cpu", "lots"),
        (&["--cpu=-1"], "--cpu", "non-negative"),
        (&["--memory", "12GB"], "--memory", "12GB"),
        (&["--label", "app=has space"], "--label", "\"has space\""),
        (&["--label", "app=-x"], "--label", "value \"-x\""),
        (
            &["--label", "Team.Example/app=x"],
            "--label",
            "prefix \"Team.Example\"",
        ),
        (&["--label", "/app=x"], "--label", "prefix \"\""),
        (&["--label", "a/b/c=x"], "--label", "name \"b/c\""),
        (&["--label", "app_=x"], "--label", "name \"app_\""),
    ];
    for (extra, flag, needle) in cases {
        let (f, message) = flag_error(extra);
        assert_eq!(f, *flag, "{extra:?}: {message}");
        assert!(
            message.contains(needle),
            "{extra:?}: {message:?} lacks {needle:?}"
        );
    }
}

#[test]
fn labels_and_requests_follow_kubernetes_syntax() {
    let ok = build(
        &args(&[
            "--label",
            "app.kubernetes.io/name=llama_70B.v2",
            "--label",
            "empty=",
            "--label",
            &format!("{}={}", "k".repeat(63), "v".repeat(63)),
            "--cpu",
            "500m",
            "--memory",
            "1.5Gi",
        ]),
        "team",
    )
    .unwrap();
    let labels = &ok.spec.template.metadata.as_ref().unwrap().labels;
    assert_eq!(labels["app.kubernetes.io/name"], "llama_70B.v2");
    assert_eq!(labels["empty"], "");
    let c = &ok.spec.template.spec.containers[0].0;
    assert_eq!(c["resources"]["requests"]["cpu"], "500m");
    assert_eq!(c["resources"]["requests"]["memory"], "1.5Gi");

    let long_name = format!("{}=v", "k".repeat(64));
    let long_value = format!("k={}", "v".repeat(64));
    let long_prefix = format!("{}.io/k=v", "p".repeat(251));
    for label in [&long_name, &long_value, &long_prefix] {
        let (flag, message) = flag_error(&["--label", label]);
        assert_eq!(flag, "--label", "{label}: {message}");
        assert!(message.contains("at most"), "{label}: {message}");
    }
}

#[test]
fn bad_names_are_refused() {
    let mut a = args(&[]);
    a.name = "Train_Job".into();
    let e = build(&a, "team").unwrap_err();
    assert!(e.to_string().starts_with("invalid NAME:"), "{e}");
    a.name = "x".repeat(64);
    assert!(build(&a, "team").is_err());
}

#[test]
fn paths_map_to_flags() {
    assert_eq!(flag_for("spec.gpu.models[3]"), Some("--model"));
    assert_eq!(
        flag_for("spec.template.spec.containers[0].image"),
        Some("--image")
    );
    assert_eq!(
        flag_for("spec.template.spec.containers[0].env[2].name"),
        Some("--env")
    );
    assert_eq!(
        flag_for("spec.template.spec.containers[0].resources.requests.cpu"),
        Some("--cpu")
    );
    assert_eq!(
        flag_for("spec.template.spec.containers[0].resources.requests.memory"),
        Some("--memory")
    );
    assert_eq!(
        flag_for("spec.template.spec.containers[0].resources.limits"),
        Some("--image")
    );
    assert_eq!(flag_for("spec.workers"), Some("--workers"));
    assert_eq!(flag_for("spec.workersX"), None);
    assert_eq!(flag_for("spec.suspend"), None);
}

#[test]
fn every_example_job_passes_the_same_checks() {
    // The checks `submit` runs accept what the examples (accepted by the CRD) contain.
    // The package's directory as cargo gives it at run time: a test binary built in a shared
    // target dir from another checkout still finds this checkout's files.
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.contains("kind: ComputeJob") {
            continue;
        }
        let job: ComputeJob = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            problems(&job),
            Vec::<(String, String)>::new(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 2);
}
