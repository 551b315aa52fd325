//! Controller measurements on the real control plane (ignored by `e2e/run.sh`; run by
//! `benches/run-controller.sh`): pod-create -> Secret-ready latency over distinct configs,
//! Deployment-create -> Secret-ready, Key Vault reads per interval for 1,000 pods sharing 10
//! configs, and the controller's memory with 1,000 managed pods. It prints numbers; the
//! assertions only check that each measurement measured what it says.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::controller::{
    ROTATION_SECONDS, eventually, fresh, secret_value, setup, synced_secret_of, wi_pod,
    workload_identity_namespace,
};
use crate::harness::*;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
#[ignore = "a measurement: run by benches/run-controller.sh"]
async fn bench_controller() {
    let (guard, client, azure) = setup().await;
    let shared = guard.as_ref().unwrap();
    let pid = shared.controller.as_ref().unwrap().child.id();
    let vault = shared.vaults["kv-deploy"].clone();
    let fanin_vault = shared.vaults["kv-fanin"].clone();

    // 1. pod-create -> Secret-ready, each pod a new config (so each is a real first sync:
    // TokenRequest, Entra exchange, Key Vault read, Secret apply).
    let ns = &fresh("bench-latency");
    workload_identity_namespace(&client, &azure, ns, "0b0b0b0b-1111-4222-8333-000000000001").await;
    let mut samples = Vec::new();
    for i in 0..25 {
        let object = format!("latency-{i}");
        azure.set_secret(&vault, &object, "bench").await;
        let pod = wi_pod(
            &format!("p-{i}"),
            "kv-deploy",
            &format!("{object} as v"),
            "V=v",
        );
        let started = Instant::now();
        let stored = create_pod(&client, ns, &pod, false).await.unwrap();
        let name = synced_secret_of(&stored);
        eventually(Duration::from_secs(30), "the Secret", || async {
            let s = Api::<Secret>::namespaced(client.clone(), ns)
                .get_opt(&name)
                .await
                .ok()??;
            s.data.is_some().then_some(())
        })
        .await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH pod_create_to_secret_ready n={} p50_ms={:.0} p95_ms={:.0} max_ms={:.0}",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 95.0),
        samples.last().unwrap()
    );

    // 2. Deployment-create -> Secret-ready.
    let mut deploy = Vec::new();
    for i in 0..5 {
        let object = format!("deploy-{i}");
        azure.set_secret(&vault, &object, "bench").await;
        let template = wi_pod("unused", "kv-deploy", &format!("{object} as v"), "V=v");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("d-{i}")},
            "spec": {"selector": {"matchLabels": {"app": format!("d-{i}")}},
                "template": {"metadata": {"labels": {"app": format!("d-{i}"), "keywire.dev/inject": "true"},
                    "annotations": template["metadata"]["annotations"]}, "spec": template["spec"]}}
        }))
        .unwrap();
        let before = Api::<Secret>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keywire"))
            .await
            .unwrap()
            .items
            .len();
        let started = Instant::now();
        Api::<Deployment>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        eventually(
            Duration::from_secs(30),
            "the Deployment's Secret",
            || async {
                let n = Api::<Secret>::namespaced(client.clone(), ns)
                    .list(&ListParams::default().labels("app.kubernetes.io/managed-by=keywire"))
                    .await
                    .ok()?
                    .items
                    .len();
                (n > before).then_some(())
            },
        )
        .await;
        deploy.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    deploy.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "BENCH deployment_create_to_secret_ready n={} p50_ms={:.0} max_ms={:.0}",
        deploy.len(),
        percentile(&deploy, 50.0),
        deploy.last().unwrap()
    );

    // 3. 1,000 pods sharing 10 configs: Key Vault reads per interval, and memory.
    let rss_before = status_kib(pid, "VmRSS:");
    let ns = &fresh("bench-fanin");
    workload_identity_namespace(&client, &azure, ns, "0b0b0b0b-1111-4222-8333-000000000002").await;
    let objects: Vec<String> = (0..10).map(|i| fresh(&format!("fanin-{i}"))).collect();
    for o in &objects {
        azure.set_secret(&fanin_vault, o, "bench").await;
    }
    let created = Instant::now();
    let mut names = std::collections::BTreeSet::new();
    for i in 0..1000 {
        let o = &objects[i % 10];
        let pod = wi_pod(&format!("web-{i}"), "kv-fanin", &format!("{o} as v"), "V=v");
        names.insert(synced_secret_of(
            &create_pod(&client, ns, &pod, false).await.unwrap(),
        ));
    }
    let create_secs = created.elapsed().as_secs_f64();
    let rss_created = status_kib(pid, "VmRSS:");
    assert_eq!(names.len(), 10);
    for n in &names {
        eventually(Duration::from_secs(60), "each Secret", || {
            secret_value(&client, ns, n, "v")
        })
        .await;
    }
    let reads_at = |objs: Vec<String>| {
        let azure = &azure;
        async move {
            let mut total = 0;
            for o in &objs {
                total += azure.secret_reads("kv-fanin", o).await;
            }
            total
        }
    };
    let start_reads = reads_at(objects.clone()).await;
    let window = Instant::now();
    let intervals = 5;
    tokio::time::sleep(Duration::from_secs(ROTATION_SECONDS * intervals)).await;
    let reads = reads_at(objects.clone()).await - start_reads;
    let seconds = window.elapsed().as_secs_f64();
    println!(
        "BENCH fanin pods=1000 configs=10 creates_s={create_secs:.1} reads={reads} window_s={seconds:.1} interval_s={ROTATION_SECONDS} reads_per_interval={:.1}",
        reads as f64 / (seconds / ROTATION_SECONDS as f64)
    );
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    println!(
        "BENCH controller_memory managed_pods=1000 rss_before_mib={:.1} rss_after_creates_mib={:.1} rss_after_window_mib={:.1} hwm_mib={:.1}",
        rss_before as f64 / 1024.0,
        rss_created as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    assert!(reads >= 10, "the window saw no rotation reads");
}
