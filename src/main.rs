//! The `keywire` binary: parse the command line and run the command (see `cli`).

use clap::Parser;

// The webhook allocates a few hundred small objects per review and the controller churns
// through pod lists: mimalloc does both in a fraction of glibc malloc's instructions
// (docs/benchmarks.md) and returns freed pages to the OS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(keywire::cli::run(keywire::cli::Cli::parse()));
}
