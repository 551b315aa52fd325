//! `keywire certs`: a CA and a serving certificate for the webhook, and the caBundle on stdout.

use std::path::PathBuf;

use clap::Args;

use crate::cli::{EXIT_BAD_INPUT, EXIT_OK, one_line};
use crate::webhook::certs;

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[arg(long)]
    pub out_dir: PathBuf,
    /// DNS name or IP address for the serving certificate. Repeatable.
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

pub fn run(args: &CertsArgs) -> i32 {
    let result = certs::generate(&args.hosts, args.days)
        .and_then(|bundle| certs::write_bundle(&args.out_dir, &bundle).map(|_| bundle));
    match result {
        Ok(bundle) => {
            eprintln!(
                "wrote {0}/ca.crt, {0}/tls.crt and {0}/tls.key for {1}; caBundle follows",
                args.out_dir.display(),
                args.hosts.join(", ")
            );
            println!("{}", bundle.ca_bundle());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("keywire certs: {}", one_line(e));
            EXIT_BAD_INPUT
        }
    }
}
