//! `keywire review`: one AdmissionReview in, the webhook's exact response out.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::cli::{DefaultsArgs, EXIT_BAD_INPUT, EXIT_OK, cluster_state, one_line, read_input};
use crate::webhook::admission;

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// AdmissionReview JSON; `-` or nothing for stdin.
    pub file: Option<PathBuf>,
    /// Answer as the validating webhook (`/validate`) instead of the mutating one.
    #[arg(long)]
    pub validate: bool,
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

pub fn run(args: &ReviewArgs) -> i32 {
    let result = (|| {
        let state = cluster_state::load_or_empty(args.cluster_state.as_deref())?;
        let body = read_input(args.file.as_deref())?;
        let endpoint = if args.validate {
            admission::Endpoint::Validate
        } else {
            admission::Endpoint::Mutate
        };
        let settings = args.defaults.settings()?;
        admission::review(body.as_bytes(), endpoint, &state, &settings).map_err(|e| e.to_string())
    })();
    match result {
        Ok(reviewed) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&reviewed.body);
            let _ = out.write_all(b"\n");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("keywire review: {}", one_line(e));
            EXIT_BAD_INPUT
        }
    }
}
