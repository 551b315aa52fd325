//! A few seconds of `keywire-fuzz` per target (the 10-million-execution runs are `fuzz/run.sh`):
//! the driver, its corpus and every entry point it reaches still work.

use std::process::Command;

#[test]
fn every_fuzz_target_runs_its_corpus_and_mutations_without_a_panic() {
    for target in ["admission", "annotations", "policy", "manifests"] {
        let out = Command::new(env!("CARGO_BIN_EXE_keywire-fuzz"))
            .args([
                target,
                "--execs",
                "3000",
                "--seed",
                "7",
                "--max-exec-ms",
                "5000",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{target}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("keywire-fuzz {target}: 3000 executions")),
            "{stdout}"
        );
    }
}
