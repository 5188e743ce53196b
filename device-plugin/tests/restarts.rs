//! kubelet restarted 20 times and the plugin restarted 20 times, with pods holding GPUs
//! throughout: every re-registration within 10 s, and no GPU ever in two allocations —
//! also right after a plugin restart, when its own ledger starts empty and only kubelet's
//! PodResources knows what is held.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn twenty_kubelet_and_twenty_plugin_restarts_never_double_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    let mut held: BTreeSet<String> = BTreeSet::new();
    let mut slowest = Duration::ZERO;
    for round in 0..20usize {
        // kubelet restarts (every other one wipes the plugin sockets, as kubelet does).
        let t = Instant::now();
        r.kubelet.restart(round % 2 == 1).await.unwrap();
        let reg = r.kubelet.next_registration(PATIENCE).await.unwrap();
        let took = t.elapsed();
        r.client = r.kubelet.plugin_client(&reg).await.unwrap();
        // The plugin restarts too.
        let took_plugin = restart_plugin(&mut r).await;
        slowest = slowest.max(took).max(took_plugin);
        assert!(
            took < LIMIT && took_plugin < LIMIT,
            "round {round}: {took:?} / {took_plugin:?}"
        );
        // Every GPU a running pod holds is refused to anyone else.
        for id in &held {
            let err = r
                .client
                .allocate("intruder", "main", std::slice::from_ref(id))
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::ResourceExhausted,
                "round {round}: {id} granted twice"
            );
        }
        // A pod ends now and then; a new one takes a free GPU.
        if round % 3 == 2
            && let Some(first) = held.iter().next().cloned()
        {
            let pod = format!("pod-{first}");
            r.client.remove_pod(&pod);
            held.remove(&first);
        }
        let free = (0..8).map(gpu).find(|g| !held.contains(g));
        if let Some(id) = free {
            r.client
                .allocate(&format!("pod-{id}"), "main", std::slice::from_ref(&id))
                .await
                .unwrap_or_else(|e| panic!("round {round}: free {id} refused: {e}"));
            held.insert(id);
        }
        assert_eq!(r.client.in_use(), held, "kubelet's view");
    }
    assert!(held.len() >= 5, "{held:?}");
    eprintln!("40 restarts; slowest re-registration {slowest:?}");
    shutdown(r).await;
}

/// A kubelet that dies while the plugin is registering and starts again: as every kubelet
/// does at start-up, it deletes the plugin's socket, and then dials the plugin back before
/// it answers a registration. The plugin must serve a new socket, not retry for good.
#[tokio::test]
async fn a_kubelet_down_while_registering_then_back_gets_a_new_socket_to_dial() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = start(dir.path(), Duration::from_secs(300)).await;
    let sock = dir.path().join(&r.cfg.socket_name);
    r.kubelet.down().await;
    // Past the plugin's watch interval and grace: it is re-serving and failing to register.
    tokio::time::sleep(Duration::from_secs(4)).await;
    r.kubelet.up(true).unwrap();
    let reg = r.kubelet.next_registration(PATIENCE).await.unwrap();
    assert!(sock.exists(), "the plugin serves a socket again");
    r.client = r.kubelet.plugin_client(&reg).await.unwrap();
    assert_eq!(
        watch(&mut r.client)
            .await
            .message()
            .await
            .unwrap()
            .unwrap()
            .devices
            .len(),
        8
    );
    shutdown(r).await;
}
