//! Criterion benchmarks of the pure decision path: `engine::decide` and `admission::review`.
//!
//! Run with `cargo bench --bench engine`; results land in `target/criterion/`.
//! Numbers are recorded in docs/benchmarks.md.

// The allocator the keywire binary uses (src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

use keywire::core::engine::{self, Outcome};
use keywire::core::lookup::ClusterState;
use keywire::core::patch;
use keywire::core::plan::Settings;
use keywire::fixtures::{
    self, NAMESPACE, plain_replica_pod as plain_pod, replica_pod as opted_in_pod,
};
use keywire::webhook::admission::{self, Endpoint};

/// The opted-in pod after the webhook's patch was applied (what a reinvocation sees).
fn injected_pod(state: &ClusterState, settings: &Settings) -> Value {
    let mut p = opted_in_pod(1);
    let decision = engine::decide(&p, NAMESPACE, state, settings);
    patch::apply(&mut p, decision.patch()).expect("patch applies");
    p
}

fn review_bytes(pod: &Value) -> Vec<u8> {
    fixtures::pod_review_bytes("705ab4f5-6393-11e8-b7cc-42010a800002", NAMESPACE, pod)
}

fn bench_engine(c: &mut Criterion) {
    let state = fixtures::cluster(NAMESPACE);
    let settings = Settings::default();

    let cases = [
        ("decide/opted_in_1_container", opted_in_pod(1), true),
        ("decide/opted_in_20_containers", opted_in_pod(20), true),
        (
            "decide/already_injected",
            injected_pod(&state, &settings),
            false,
        ),
        ("decide/not_opted_in", plain_pod(), false),
    ];
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    for (name, pod, patched) in &cases {
        // The benchmark is only meaningful if each case takes the path it claims to.
        let d = engine::decide(pod, NAMESPACE, &state, &settings);
        match (&d.outcome, patched) {
            (Outcome::Patch(ops), true) => assert!(!ops.is_empty(), "{name}"),
            (Outcome::Unchanged, false) => {}
            (other, _) => panic!("{name}: unexpected outcome {other:?}"),
        }
        assert!(d.warnings.is_empty(), "{name}: {:?}", d.warnings);
        group.bench_function(*name, |b| {
            b.iter(|| engine::decide(black_box(pod), NAMESPACE, &state, &settings))
        });
    }

    for (name, pod) in [
        ("review/opted_in_1_container", opted_in_pod(1)),
        ("review/opted_in_20_containers", opted_in_pod(20)),
    ] {
        let body = review_bytes(&pod);
        let out =
            admission::review(&body, Endpoint::Mutate, &state, &settings).expect("valid review");
        let v: Value = serde_json::from_slice(&out.body).expect("json response");
        assert_eq!(v["response"]["allowed"], true, "{name}");
        assert_eq!(v["response"]["patchType"], "JSONPatch", "{name}");
        eprintln!("{name}: AdmissionReview is {} bytes", body.len());
        group.bench_function(name, |b| {
            b.iter(|| admission::review(black_box(&body), Endpoint::Mutate, &state, &settings))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench_engine
}
criterion_main!(benches);
