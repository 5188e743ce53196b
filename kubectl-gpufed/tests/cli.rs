//! The built `kubectl-gpufed` binary against a real kube-apiserver (the e2e harness' hub,
//! Kubernetes 1.20, or `GPUFED_E2E_KUBECONFIG`): submit, jobs, providers, why, bill,
//! `bill --verify`, `--wait`, `provider token|cordon|uncordon|drain`, `rollout status|restart|pause|resume|history|undo`, the context's
//! namespace, and its errors.
//! No operator runs: the test writes the status (and the settlement journal) the operator
//! would write, and a fake Solana RPC node answers for the chain.
#![allow(clippy::unwrap_used)]

mod clisupport;

use std::process::Stdio;
use std::time::Duration;

use clisupport::chain::bill_verified_on_chain;
use clisupport::drain::provider_cordon_uncordon_drain;
use clisupport::history::rollout_history_and_undo;
use clisupport::rollout::rollout_status_and_restart;
use clisupport::token::provider_tokens;
use clisupport::{
    Hub, SIG, command, cond, fails, now_text, ok, ok_json, placement, run, set_job_status, strs, text,
};
use gpufed_api::ComputeJob;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_against_a_real_api_server() {
    let hub = Hub::start().await;
    submit_and_list(&hub).await;
    providers_and_why(&hub).await;
    bill_after_a_failover(&hub).await;
    bill_verified_on_chain(&hub).await;
    namespace_from_the_context(&hub).await;
    errors_name_their_cause(&hub).await;
    a_tenant_without_provider_access(&hub).await;
    wait_shows_progress(&hub).await;
    provider_tokens(&hub).await;
    rollout_status_and_restart(&hub).await;
    rollout_history_and_undo(&hub).await;
    provider_cordon_uncordon_drain(&hub).await;
}

async fn submit_and_list(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    // --dry-run prints the manifest and sends nothing.
    let dry = hub.submit("train", &["--dry-run", "-o", "json"]);
    let manifest = ok_json(k, &strs(&dry)).await;
    assert_eq!(manifest["spec"]["gpu"]["interconnect"], "NVLink");
    assert_eq!(manifest["metadata"]["namespace"], ns);
    let args = &manifest["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args, &json!(["python", "train.py"]));
    let jobs = Api::<ComputeJob>::namespaced(hub.client.clone(), ns);
    assert!(
        jobs.get_opt("train").await.unwrap().is_none(),
        "dry run created it"
    );

    // submit: server-side apply (retried while discovery catches up with the new CRDs).
    let submit = hub.submit("train", &[]);
    let mut tries = 0;
    let out = loop {
        let out = run(k, &strs(&submit)).await;
        if out.status.success() || tries == 50 || !text(&out.stderr).contains("does not serve") {
            break out;
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.status.success(), "submit: {}", text(&out.stderr));
    let expected = format!("computejob.gpufed.io/train submitted in namespace {ns}");
    assert!(text(&out.stdout).contains(&expected), "{}", text(&out.stdout));
    let stored = jobs.get("train").await.unwrap();
    let managers: Vec<String> = (stored.metadata.managed_fields.clone().unwrap_or_default())
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["kubectl-gpufed"]);
    assert_eq!(
        stored.spec.template.spec.containers[0].0["args"],
        json!(["python", "train.py"])
    );

    // jobs -o json: a List of the objects; -A -o yaml: every namespace.
    let list = ok_json(k, &["jobs", "-n", ns, "-o", "json"]).await;
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "train");
    assert_eq!(items[0]["spec"]["workers"], 2);
    assert_eq!(items[0]["spec"]["maxPricePerGpuHour"], "3");
    let all = ok(k, &["jobs", "-A", "-o", "yaml"]).await;
    assert!(all.contains(&format!("namespace: {ns}")), "{all}");
}

async fn providers_and_why(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    let table = ok(k, &["providers"]).await;
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {table}"))
            .to_owned()
    };
    let good = row(&hub.good);
    for cell in [
        "eu-west",
        "True",
        "NVIDIA-H100-80GB-HBM3 8/8",
        "NVIDIA-H100-80GB-HBM3=2.5",
        "90",
    ] {
        assert!(good.contains(cell), "{cell:?} missing in {good:?}");
    }
    assert!(row(&hub.lost).contains("False (HeartbeatLost)"), "{table}");
    let json = ok_json(k, &["providers", "-o", "json"]).await;
    let names: Vec<&Value> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["metadata"]["name"])
        .collect();
    assert!(names.contains(&&json!(hub.good)), "{names:?}");

    // why: the placement engine re-run on the providers' inventory.
    let why = ok_json(k, &["why", "train", "-n", ns, "-o", "json"]).await;
    assert_eq!(why["waiting"], true);
    let fit = |name: &str| {
        why["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {why}"))
    };
    let (good, lost) = (fit(&hub.good), fit(&hub.lost));
    assert_eq!(
        (&good["fits"], &good["pricePerGpuHour"]),
        (&json!(true), &json!("2.25"))
    );
    assert_eq!(lost["fits"], false);
    assert!(
        lost["reason"].as_str().unwrap().contains("HeartbeatLost"),
        "{lost}"
    );
    let why_text = ok(k, &["why", "train", "-n", ns]).await;
    let fits = "fits now: 2 × 4 NVIDIA-H100-80GB-HBM3 at 2.25 per GPU-hour";
    assert!(why_text.contains(fits), "{why_text}");
}

async fn bill_after_a_failover(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    // What the operator writes after attempt 1 was lost and attempt 2 runs.
    let status = json!({
        "phase": "Running",
        "conditions": [cond("Ready", "True", "Running", "all workers run")],
        "placement": placement(&hub.good),
        "attempts": [{"attempt": 1, "provider": hub.lost, "outcome": "ProviderLost", "message": "lost",
                      "gpuSeconds": 7200, "pricePerGpuHour": "2.5", "endTime": now_text()}],
        "usage": {"gpuSeconds": 10800, "cost": "6.8"},
        "billing": {"records": 4, "settledRecords": 3, "settledAmount": "5", "signatures": [SIG]},
    });
    set_job_status(&hub.client, ns, "train", status).await;
    let jobs = ok(k, &["jobs", "-n", ns]).await;
    let cells: Vec<&str> = jobs.lines().nth(1).unwrap().split_whitespace().collect();
    let expected = ["train", "Running", &hub.good, "2", "8", "(2x4)", "10,800", "6.8"];
    assert_eq!(&cells[..8], expected, "{jobs}");

    let bill = ok(k, &["bill", "train", "-n", ns]).await;
    assert!(
        bill.contains("10,800 GPU-seconds (3.00 GPU-hours), cost 6.8"),
        "{bill}"
    );
    let settled = "3 of 4 usage records settled on chain, 5 settled, 1.8 not yet settled";
    assert!(bill.contains(settled), "{bill}");
    assert!(bill.contains(SIG), "{bill}");
    let bill = ok_json(k, &["bill", "train", "-n", ns, "-o", "json"]).await;
    assert_eq!(bill["attempts"][0]["cost"], "5");
    assert_eq!(bill["attempts"][1]["outcome"], "Live");
    assert_eq!(bill["attempts"][1]["gpuSeconds"], 3600);
    let why_text = ok(k, &["why", "train", "-n", ns]).await;
    assert!(why_text.contains("not waiting: runs on"), "{why_text}");
    // usage: the namespace's spend, then where its GPU-hours went.
    let usage = ok(k, &["usage", "-n", ns]).await;
    let cells: Vec<&str> = usage.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(cells, [ns, "1", "1", "2", "3.00", "6.8", "5", "1.8"], "{usage}");
    let by = ok_json(k, &["usage", "-n", ns, "--by", "provider", "-o", "json"]).await;
    let rows = by["rows"].as_array().unwrap();
    let lost = rows.iter().find(|r| r["name"] == hub.lost.as_str()).unwrap();
    assert_eq!(
        (lost["gpuSeconds"].as_u64(), lost["cost"].as_str()),
        (Some(7200), Some("5"))
    );
    assert_eq!(by["total"]["cost"], "6.8", "{by}");
}

async fn namespace_from_the_context(hub: &Hub) {
    let in_ns = hub.kubeconfig_variant("kubeconfig-ns", |config| {
        for c in config["contexts"].as_array_mut().unwrap() {
            c["context"]["namespace"] = json!(hub.ns);
        }
    });
    let list = ok_json(&in_ns, &["jobs", "-o", "json"]).await;
    assert_eq!(list["items"][0]["metadata"]["name"], "train");
    let bill = ok_json(&in_ns, &["bill", "train", "-o", "json"]).await;
    assert_eq!(bill["job"], format!("{}/train", hub.ns));
}

async fn errors_name_their_cause(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    let e = fails(k, &["bill", "nope", "-n", ns]).await;
    assert_eq!(e.trim(), format!("error: computejob {ns}/nope not found"));
    let e = fails(k, &["why", "nope", "-n", ns]).await;
    assert!(e.contains(&format!("computejob {ns}/nope not found")), "{e}");
    let bad = |flags: &[&'static str]| {
        let mut args = vec!["submit", "bad", "-n", ns, "--image", "x"];
        args.extend(flags);
        args
    };
    let e = fails(k, &bad(&["--max-price", "0"])).await;
    assert!(e.contains("invalid --max-price: must be greater than 0"), "{e}");
    let e = fails(k, &bad(&["--max-price", "1", "--min-memory", "lots"])).await;
    assert!(e.contains("invalid --min-memory"), "{e}");
    let e = fails(
        k,
        &[
            "submit",
            "bad",
            "-n",
            "no-such-ns",
            "--image",
            "x",
            "--max-price",
            "1",
        ],
    )
    .await;
    assert!(
        e.contains("applying computejob no-such-ns/bad") && e.contains("not found"),
        "{e}"
    );
    let down = hub.kubeconfig_variant("kubeconfig-down", |config| {
        for c in config["clusters"].as_array_mut().unwrap() {
            c["cluster"]["server"] = json!("https://127.0.0.1:1");
        }
    });
    let e = fails(&down, &["jobs"]).await;
    assert!(
        e.contains("cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{e}"
    );
    let e = fails(&hub.dir.join("missing"), &["providers"]).await;
    assert!(e.starts_with("error: kubeconfig:"), "{e}");
    let e = fails(k, &["--context", "nope", "jobs"]).await;
    assert!(e.contains("nope"), "{e}");
}

async fn a_tenant_without_provider_access(hub: &Hub) {
    // A team may read and write its jobs but not list the cluster-scoped providers.
    let ns = hub.ns.as_str();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "jobs", "namespace": ns},
        "rules": [{"apiGroups": ["gpufed.io"], "resources": ["computejobs"],
                   "verbs": ["get", "list", "watch", "create", "patch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(hub.client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "jobs", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "jobs"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "tenant"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(hub.client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let tenant = hub.kubeconfig_variant("kubeconfig-tenant", |config| {
        for u in config["users"].as_array_mut().unwrap() {
            u["user"]["as"] = json!("tenant");
        }
    });
    let submit = hub.submit("tenant-job", &[]);
    for _ in 0..50 {
        // RBAC takes effect once the authorizer's cache has the binding.
        if run(&tenant, &strs(&submit)).await.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = ok(&tenant, &["why", "tenant-job", "-n", ns]).await;
    assert!(why.contains("not run: listing gpuproviders.gpufed.io:"), "{why}");
    assert!(why.contains("forbidden"), "{why}");
    assert!(why.contains("waiting for a provider"), "{why}");
    let list = ok_json(&tenant, &["jobs", "-n", ns, "-o", "json"]).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let e = fails(&tenant, &["providers"]).await;
    assert!(
        e.starts_with("error: listing gpuproviders.gpufed.io:") && e.contains("forbidden"),
        "{e}"
    );
}

async fn wait_shows_progress(hub: &Hub) {
    let (k, ns) = (hub.k(), hub.ns.as_str());
    // --wait: one progress line per change on stderr until the job ends; Succeeded exits 0.
    let args = hub.submit("waiter", &["--wait", "--timeout", "2m"]);
    let child = command(k, &strs(&args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let jobs = Api::<ComputeJob>::namespaced(hub.client.clone(), ns);
    for _ in 0..100 {
        if jobs.get_opt("waiter").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = json!({"phase": "Running", "placement": placement(&hub.good),
                         "usage": {"gpuSeconds": 80, "cost": "0.04"}});
    set_job_status(&hub.client, ns, "waiter", running).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let done = json!({"phase": "Succeeded", "usage": {"gpuSeconds": 160, "cost": "0.08"}});
    set_job_status(&hub.client, ns, "waiter", done).await;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let progress = format!(
        "{ns}/waiter  Running  on {} (attempt 2, 8 GPUs at 1.8/GPU-h)  80 GPU-s",
        hub.good
    );
    assert!(stderr.contains(&progress), "{stderr}");
    let result = format!("computejob {ns}/waiter Succeeded: 160 GPU-seconds, cost 0.08");
    assert!(stdout.contains(&result), "{stdout}");

    // --wait --timeout gives up with an error naming the phase; a failed job exits 1.
    let slow = hub.submit("slow", &["--wait", "--timeout", "1s"]);
    let e = fails(k, &strs(&slow)).await;
    assert!(
        e.contains(&format!("gave up waiting for computejob {ns}/slow after 1s")),
        "{e}"
    );
    let failed = json!({"phase": "Failed", "conditions": [
        cond("Failed", "True", "AttemptsExhausted", "attempt 3 Failed: worker 0 failed")]});
    set_job_status(&hub.client, ns, "slow", failed).await;
    let e = fails(k, &strs(&hub.submit("slow", &["--wait"]))).await;
    assert!(
        e.contains(&format!(
            "computejob {ns}/slow failed: attempt 3 Failed: worker 0 failed"
        )),
        "{e}"
    );
}
