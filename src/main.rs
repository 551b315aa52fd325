//! The `keywire` binary: parse the command line and run the command (see `cli`).

use clap::Parser;

fn main() {
    std::process::exit(keywire::cli::run(keywire::cli::Cli::parse()));
}
