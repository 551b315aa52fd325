use clap::Parser;

fn main() {
    std::process::exit(keywire::cli::run(keywire::cli::Cli::parse()));
}
