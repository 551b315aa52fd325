//! The instruction-count benchmark: runs one front door's work `ITERATIONS` times in one
//! process, for `benches/run-instructions.sh` to measure under `valgrind --tool=callgrind`
//! (instructions are stable on a shared machine where wall-clock time is not).
//!
//!   instructions review <containers> <iterations>   # admission::review of an opted-in pod
//!   instructions plain <iterations>                 # admission::review of a pod that did not opt in
//!
//! The script runs each case at 0 and at N iterations and divides the difference by N, so
//! start-up and fixture building cancel out.

// The allocator the keywire binary uses (src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;

use keywire::core::plan::Settings;
use keywire::fixtures::{self, NAMESPACE, plain_replica_pod, replica_pod};
use keywire::webhook::admission::{self, Endpoint};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: instructions review <containers> <iterations> | plain <iterations>";
    let number = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{usage}"))
    };
    let (pod, iterations) = match args.first().map(String::as_str) {
        Some("review") => (replica_pod(number(1)), number(2)),
        Some("plain") => (plain_replica_pod(), number(1)),
        _ => panic!("{usage}"),
    };
    let state = fixtures::cluster(NAMESPACE);
    let settings = Settings::default();
    let body = fixtures::pod_review_bytes("705ab4f5-6393-11e8-b7cc-42010a800002", NAMESPACE, &pod);
    // The case must take the path it claims: one review, checked, outside the counted loop.
    let out = admission::review(&body, Endpoint::Mutate, &state, &settings).expect("valid review");
    let patched = out.decision.patch().len();
    assert_eq!(patched > 0, args[0] == "review", "unexpected outcome");
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        black_box(admission::review(black_box(&body), Endpoint::Mutate, &state, &settings).ok());
    }
    let each = started.elapsed().as_secs_f64() * 1e6 / iterations.max(1) as f64;
    // The wall-clock time is only indicative (the machine is shared); the instruction count
    // that run-instructions.sh takes from callgrind is the stable figure.
    eprintln!(
        "{} bytes, {patched} patch operations, {iterations} reviews, {each:.1} us per review",
        body.len()
    );
}
