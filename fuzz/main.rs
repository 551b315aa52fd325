//! `keywire-fuzz`: mutational fuzzing of the parsers and the decision path at volume, on the
//! stable toolchain. Each target starts from a seed corpus (`fuzz/corpus/<target>/`), mutates
//! inputs (bytes, and JSON trees for JSON targets) with a seeded PRNG, and runs them through the
//! public entry points. A panic, or one input taking longer than `--max-exec-ms`, stops the run
//! and saves the input under `fuzz/crashes/`. Run it with `fuzz/run.sh`.
//!
//!   keywire-fuzz <admission|annotations|policy|manifests> [--execs N] [--seed S] [--max-exec-ms MS]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keywire::core::annotations;
use keywire::core::lookup::ClusterState;
use keywire::core::plan::Settings;
use keywire::core::policy::Policy;
use keywire::webhook::admission::{self, Endpoint};
use serde_json::Value;

/// Inputs never grow past this: the webhook's own body limit is far above, but the point is
/// variety, not size (the load tests cover size).
const MAX_INPUT: usize = 64 * 1024;

const STRINGS: &[&str] = &[
    "",
    "\n",
    "\r\n::error::x",
    "\u{1b}[2J",
    "\u{0}",
    "\u{202e}",
    "-1",
    "0",
    "86400",
    "999999999999999999999",
    "true",
    "null",
    "a,b,,c",
    "secret/",
    "secret/a;key/b;cert/c",
    "secret/a:ver:alias",
    "cert/x@pem",
    "workload",
    "service-principal",
    "pod-identity",
    "*",
    "kv-*",
    "/mnt/secrets-store",
    "../../etc",
    "keywire.dev/inject",
    "keywire.dev/keyvault",
    "keywire.dev/objects",
    "keywire.dev/identity",
    "keywire.dev/env",
    "keywire.dev/containers",
    "keywire.dev/token-expiration",
    "azure.workload.identity/use",
    "azure.workload.identity/skip-containers",
    "azure.workload.identity/proxy-sidecar-port",
    "Pod",
    "Deployment",
    "CronJob",
    "KeywirePolicy",
    "List",
    "CREATE",
    "UPDATE",
    "admission.k8s.io/v1",
    "apps/v1",
    "v1",
    "5e1b8c3a-2f4d-4c6e-9a7b-0d1e2f3a4b5c",
];

const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "1e999",
    "-0",
    "null",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!str ",
    "? ",
    "- ",
    "|\n",
    ">-\n",
    "#",
    "\t",
    "\n  ",
    "'",
    "~",
    "0x1F",
    "=",
    ";",
    "@",
    "/",
];

struct Rng(fastrand::Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.0.usize(..n) }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(6) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = *rng.pick(b"\0\xff\"{}[]:,-\n\\ #&*!|>'0a\x1b\x7f");
            }
            2 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                input.drain(start..end);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                let copy = input[start..end].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, copy);
            }
            4 => {
                let token = if rng.0.bool() {
                    rng.pick(TOKENS).as_bytes()
                } else {
                    rng.pick(STRINGS).as_bytes()
                };
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            5 if !corpus.is_empty() => {
                let other = rng.pick(corpus);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let to = (from + 1 + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[from..to].iter().copied());
                }
            }
            6 if len > 0 => input.truncate(rng.below(len)),
            _ => {
                let at = rng.below(len + 1);
                let byte = rng.0.u8(..);
                input.insert(at, byte);
            }
        }
    }
    input.truncate(MAX_INPUT);
}

fn random_leaf(rng: &mut Rng, corpus_value: &Value) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Bool(rng.0.bool()),
        2 => serde_json::json!(*rng.pick(&[-1i64, 0, 1, 3600, 86400, i64::MAX, i64::MIN])),
        3 => serde_json::json!(*rng.pick(&[0.5f64, -0.0, 1e308, 7200.0])),
        4 => Value::Object(Default::default()),
        5 => Value::Array(vec![]),
        6 => corpus_value.clone(),
        7 => {
            let mut v = Value::String(rng.pick(STRINGS).to_string());
            for _ in 0..rng.below(40) {
                v = if rng.0.bool() {
                    Value::Array(vec![v])
                } else {
                    serde_json::json!({ *rng.pick(STRINGS): v })
                };
            }
            v
        }
        _ => Value::String(rng.pick(STRINGS).repeat(1 + rng.below(3))),
    }
}

/// Replaces, removes or adds one node somewhere in the tree.
fn mutate_tree(rng: &mut Rng, value: &mut Value, donor: &Value) {
    // Walk down by reading, then take the one mutable reference the pointer names.
    let mut pointer = String::new();
    let mut at: &Value = value;
    for _ in 0..rng.below(12) {
        let next = match at {
            Value::Object(map) if !map.is_empty() => {
                let Some((k, v)) = map.iter().nth(rng.below(map.len())) else {
                    break;
                };
                pointer.push('/');
                pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                v
            }
            Value::Array(items) if !items.is_empty() => {
                let i = rng.below(items.len());
                pointer.push_str(&format!("/{i}"));
                &items[i]
            }
            _ => break,
        };
        at = next;
    }
    let Some(node) = value.pointer_mut(&pointer) else {
        return;
    };
    match (rng.below(4), &mut *node) {
        (0, Value::Object(map)) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            map.remove(&key);
        }
        (1, Value::Object(map)) => {
            map.insert(rng.pick(STRINGS).to_string(), random_leaf(rng, donor));
        }
        (1, Value::Array(items)) => {
            let leaf = if items.is_empty() || rng.0.bool() {
                random_leaf(rng, donor)
            } else {
                items[rng.below(items.len())].clone()
            };
            items.push(leaf);
        }
        _ => *node = random_leaf(rng, donor),
    }
}

fn sub_value(rng: &mut Rng, corpus: &[Value]) -> Value {
    let mut v = rng.pick(corpus);
    for _ in 0..rng.below(6) {
        let next = match v {
            Value::Object(m) if !m.is_empty() => m.values().nth(rng.below(m.len())),
            Value::Array(a) if !a.is_empty() => a.get(rng.below(a.len())),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => break,
        }
    }
    v.clone()
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Admission,
    Annotations,
    Policy,
    Manifests,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Admission => "admission",
            Target::Annotations => "annotations",
            Target::Policy => "policy",
            Target::Manifests => "manifests",
        }
    }

    fn json(self) -> bool {
        matches!(self, Target::Admission | Target::Policy)
    }
}

struct World {
    state: ClusterState,
    settings: Settings,
}

fn annotation_map(input: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(input)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_one(target: Target, input: &[u8], world: &World) {
    match target {
        Target::Admission => {
            for endpoint in [Endpoint::Mutate, Endpoint::Validate] {
                if let Ok(reviewed) =
                    admission::review(input, endpoint, &world.state, &world.settings)
                {
                    std::hint::black_box(reviewed.body.len());
                }
            }
        }
        Target::Annotations => {
            let map = annotation_map(input);
            let _ = std::hint::black_box(annotations::parse(&map));
            let _ = std::hint::black_box(annotations::parse_azure(&map));
            std::hint::black_box(annotations::unknown_keys(&map).len());
            for (k, v) in &map {
                let _ = std::hint::black_box(annotations::token_expiration(k, v));
            }
        }
        Target::Policy => {
            if let Ok(value) = serde_json::from_slice::<Value>(input)
                && let Ok(policy) = Policy::from_object(&value)
            {
                let labels = annotation_map(input);
                let policies = [policy];
                let selecting = keywire::core::policy::selecting(&policies, &labels);
                std::hint::black_box(keywire::core::policy::defaults(&selecting));
            }
        }
        Target::Manifests => {
            let text = String::from_utf8_lossy(input);
            if let Ok(docs) = keywire::cli::manifests::parse_documents(&text) {
                for doc in docs {
                    let m = keywire::core::workload::mutate(
                        doc,
                        "default",
                        &world.state,
                        &world.settings,
                    );
                    std::hint::black_box(m.reference());
                }
            }
        }
    }
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn save_crash(root: &Path, target: Target, input: &[u8]) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(input);
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = root.join("crashes");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{}-{name}", target.name()));
    let _ = std::fs::write(&path, input);
    path
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target = match args.next().as_deref() {
        Some("admission") => Target::Admission,
        Some("annotations") => Target::Annotations,
        Some("policy") => Target::Policy,
        Some("manifests") => Target::Manifests,
        other => {
            eprintln!(
                "usage: keywire-fuzz <admission|annotations|policy|manifests> [--execs N] [--seed S] [--max-exec-ms MS]; got {other:?}"
            );
            std::process::exit(2);
        }
    };
    let (mut execs, mut seed, mut max_exec_ms) = (1_000_000u64, 1u64, 1000u64);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--execs", Some(v)) => execs = v,
            ("--seed", Some(v)) => seed = v,
            ("--max-exec-ms", Some(v)) => max_exec_ms = v,
            _ => {
                eprintln!("keywire-fuzz: bad argument {flag}");
                std::process::exit(2);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = load_corpus(&root.join("corpus").join(target.name()));
    if corpus.is_empty() {
        eprintln!("keywire-fuzz: no seeds in fuzz/corpus/{}", target.name());
        std::process::exit(2);
    }
    let trees: Vec<Value> = if target.json() {
        corpus
            .iter()
            .filter_map(|c| serde_json::from_slice(c).ok())
            .collect()
    } else {
        Vec::new()
    };
    let state_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cluster-state.yaml");
    let state = keywire::cli::cluster_state::load(&state_file).unwrap_or_else(|e| {
        eprintln!("keywire-fuzz: {e}");
        std::process::exit(2)
    });
    let world = World {
        state,
        settings: Settings::default(),
    };
    // A panic is reported by the loop below, once, with the input saved.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(fastrand::Rng::with_seed(seed));
    let limit = Duration::from_millis(max_exec_ms);
    let (start, mut slowest) = (Instant::now(), Duration::ZERO);
    let mut input = Vec::with_capacity(MAX_INPUT);
    for n in 0..execs {
        input.clear();
        if !trees.is_empty() && rng.0.bool() {
            let mut tree = rng.pick(&trees).clone();
            let donor = sub_value(&mut rng, &trees);
            for _ in 0..1 + rng.below(4) {
                mutate_tree(&mut rng, &mut tree, &donor);
            }
            input.extend(serde_json::to_vec(&tree).unwrap_or_default());
            input.truncate(MAX_INPUT);
            if rng.below(4) == 0 {
                mutate_bytes(&mut rng, &mut input, &corpus);
            }
        } else {
            let seed_input: &Vec<u8> = rng.pick(&corpus);
            input.extend_from_slice(seed_input);
            // Some seeds run unmutated, so the happy paths stay covered.
            if rng.below(50) != 0 {
                mutate_bytes(&mut rng, &mut input, &corpus);
            }
        }
        let t = Instant::now();
        let result = std::panic::catch_unwind(|| run_one(target, &input, &world));
        let took = t.elapsed();
        slowest = slowest.max(took);
        if result.is_err() || took > limit {
            let path = save_crash(&root, target, &input);
            eprintln!(
                "keywire-fuzz {}: {} after {n} executions (input took {took:?}); saved {}",
                target.name(),
                if result.is_err() {
                    "PANIC"
                } else {
                    "TIME LIMIT"
                },
                path.display()
            );
            std::process::exit(1);
        }
        if n > 0 && n % 1_000_000 == 0 {
            eprintln!(
                "keywire-fuzz {}: {n} executions, {:.0}/s, slowest {slowest:?}, peak RSS {} KiB",
                target.name(),
                n as f64 / start.elapsed().as_secs_f64(),
                vm_hwm_kib()
            );
        }
    }
    let elapsed = start.elapsed();
    println!(
        "keywire-fuzz {}: {execs} executions in {:.1} s ({:.0}/s), seed {seed}, no panic, slowest input {:.1} ms (limit {max_exec_ms} ms), peak RSS {} KiB",
        target.name(),
        elapsed.as_secs_f64(),
        execs as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        vm_hwm_kib()
    );
}
