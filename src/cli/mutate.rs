//! `keywire mutate`: the CI dry run. Manifests in, the objects the API server would store out,
//! every object judged by the same engine and policies as the webhooks, with CI reports.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use std::ops::ControlFlow;

use crate::cli::ordered;
use crate::cli::spool::Spool;
use crate::cli::{
    DefaultsArgs, EXIT_BAD_INPUT, EXIT_DENIED, EXIT_OK, cluster_state, manifests, one_line,
    open_input, read_input, report,
};
use std::collections::HashMap;

use serde_json::Value;

use crate::core::annotations;
use crate::core::echo;
use crate::core::lookup::Lookups;
use crate::core::policy::{self, Policy};
use crate::core::workload;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Manifests (multi-document YAML, JSON or List); `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long)]
    pub cluster_state: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: OutputFormat,
    /// Print a unified diff of each changed object instead of the manifests.
    #[arg(long)]
    pub diff: bool,
    /// Namespace for objects that do not name one.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// KeywirePolicy manifests to judge the objects by. Repeatable; policies in
    /// `--cluster-state` and in the input count too.
    #[arg(long = "policy")]
    pub policies: Vec<PathBuf>,
    /// Extra reports: `junit=FILE` (JUnit XML), `sarif=FILE` (SARIF 2.1.0, GitHub code scanning)
    /// or `github` (Actions annotations on stderr). Repeatable.
    #[arg(long = "report")]
    pub reports: Vec<String>,
    /// Exit 1 on Warn and Audit violations too.
    #[arg(long)]
    pub strict: bool,
    /// Threads that parse and mutate objects (default: the CPUs available, at most 16). The
    /// output is the same for any number.
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u16).range(1..=256), value_name = "N")]
    pub jobs: Option<u16>,
    #[command(flatten)]
    pub defaults: DefaultsArgs,
}

/// Where a `--report` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Junit(PathBuf),
    Sarif(PathBuf),
    Github,
}

impl std::str::FromStr for Report {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some(("junit", file)) if !file.is_empty() => Ok(Report::Junit(PathBuf::from(file))),
            Some(("sarif", file)) if !file.is_empty() => Ok(Report::Sarif(PathBuf::from(file))),
            None if s == "github" => Ok(Report::Github),
            _ => Err(format!(
                "--report {s:?}: expected junit=FILE, sarif=FILE or github"
            )),
        }
    }
}

pub fn run(args: &MutateArgs) -> i32 {
    let bad = |e: String| {
        eprintln!("keywire mutate: {}", one_line(e));
        EXIT_BAD_INPUT
    };
    let reports: Vec<Report> = match args.reports.iter().map(|r| r.parse()).collect() {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    let mut state = match cluster_state::load_or_empty(args.cluster_state.as_deref()) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    // Which flag defined each Namespace and KeywirePolicy: the platform's, which the input
    // cannot replace.
    let mut platform: HashMap<(&'static str, String), String> = HashMap::new();
    if let Some(path) = &args.cluster_state {
        for name in state.namespace_names() {
            platform.insert(
                ("Namespace", name),
                format!("--cluster-state {}", path.display()),
            );
        }
        for p in state.policies().iter() {
            platform.insert(
                (policy::KIND, p.name.clone()),
                format!("--cluster-state {}", path.display()),
            );
        }
    }
    for file in &args.policies {
        let loaded = read_input(Some(file))
            .and_then(|text| manifests::parse_documents(&text))
            .and_then(|docs| {
                let mut n = 0;
                for doc in docs.iter().filter(|d| Policy::is_policy(d)) {
                    state.insert_object(doc)?;
                    n += 1;
                }
                if n == 0 {
                    Err("no KeywirePolicy in the file".to_string())
                } else {
                    Ok(())
                }
            });
        if let Err(e) = loaded {
            return bad(format!("--policy {}: {e}", file.display()));
        }
        for p in state.policies().iter() {
            platform
                .entry((policy::KIND, p.name.clone()))
                .or_insert_with(|| format!("--policy {}", file.display()));
        }
    }
    // The input is read once, one document at a time: this first pass checks every document (a
    // bad one fails the run before anything is written), keeps what pods look up, and spools
    // each object; the second mutates and writes the spooled objects. Memory holds one object
    // and the spool's budget, never the input or every object (issue 14 #9).
    //
    // ServiceAccounts and SecretProviderClasses shipped with the manifests are what the cluster
    // will hold once they are applied, so they answer lookups (a note says when one replaces the
    // cluster state's). Namespaces and KeywirePolicies are the platform's: one in the input that
    // differs from --cluster-state's or --policy's fails the run, and the platform's is used.
    let names: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let mut redefined: Vec<report::ObjectResult> = Vec::new();
    let mut spool = Spool::default();
    let workers = args.jobs.map_or_else(ordered::default_workers, usize::from);
    for (index, (path, file)) in args.files.iter().zip(&names).enumerate() {
        let input = match open_input(path) {
            Ok(input) => input,
            Err(e) => return bad(e),
        };
        // Documents are cut here and parsed on the workers; what they hold is learnt and
        // spooled here, in order.
        let failed = ordered::in_order(
            manifests::documents(input),
            workers,
            |document| document.and_then(manifests::document_objects),
            |objects| {
                let objects = match objects {
                    Ok(objects) => objects,
                    Err(e) => return ControlFlow::Break(format!("{file}: {e}")),
                };
                for o in objects {
                    match learn(&o, file, &platform, &mut state, &args.namespace) {
                        Ok(Some(refused)) => redefined.push(refused),
                        Ok(None) => {}
                        Err(e) => return ControlFlow::Break(format!("{file}: {e}")),
                    }
                    // The file index fits: there are fewer files than arguments.
                    if let Err(e) = spool.push(index as u32, &o) {
                        return ControlFlow::Break(format!(
                            "cannot keep the objects between passes: {e}"
                        ));
                    }
                }
                ControlFlow::Continue(())
            },
        );
        if let Some(e) = failed {
            return bad(e);
        }
    }
    let settings = match args.defaults.settings() {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    if spool.is_empty() {
        return bad("no objects in the input (kubectl: no objects passed to apply)".to_string());
    }
    // Report files are opened before anything is written, so a path that cannot be written
    // fails the run with nothing on stdout.
    let mut report_files = Vec::new();
    for r in &reports {
        if let Report::Junit(file) | Report::Sarif(file) = r {
            match std::fs::File::create(file) {
                Ok(f) => report_files.push((r, file, f)),
                Err(e) => return bad(format!("cannot write {}: {e}", file.display())),
            }
        }
    }

    let format = match (args.diff, args.output) {
        (true, _) => manifests::Format::Diff,
        (false, OutputFormat::Yaml) => manifests::Format::Yaml,
        (false, OutputFormat::Json) => manifests::Format::Json,
    };
    let mut output = Some(manifests::Output::new(
        std::io::BufWriter::new(std::io::stdout().lock()),
        format,
    ));
    let objects = match spool.into_reader() {
        Ok(objects) => objects,
        Err(e) => return bad(format!("cannot read back the spooled objects: {e}")),
    };
    // Objects are mutated and rendered on the workers, and written here in order.
    let mut results = Vec::new();
    let diff = format == manifests::Format::Diff;
    let failed = ordered::in_order(
        objects,
        workers,
        |object| {
            let (index, o) =
                object.map_err(|e| format!("cannot read back the spooled objects: {e}"))?;
            let file = &names[index as usize];
            let original = diff.then(|| o.clone());
            let m = workload::mutate(o, &args.namespace, &state, &settings);
            let text = manifests::render(format, original.as_ref(), &m.mutated)
                .map_err(|e| format!("{file}: cannot write {}: {e}", m.reference()))?;
            Ok((report::result(file, &m), text))
        },
        |rendered: Result<_, String>| {
            let (result, text) = match rendered {
                Ok(r) => r,
                Err(e) => return ControlFlow::Break(e),
            };
            results.extend(result);
            // A closed stdout (`| head`) stops the output, not the verdicts.
            if output.as_mut().is_some_and(|out| out.push(&text).is_err()) {
                output = None;
            }
            ControlFlow::Continue(())
        },
    );
    if let Some(e) = failed {
        return bad(e);
    }
    results.extend(redefined);
    if let Some(out) = output {
        let _ = out.finish(&results);
    }

    for r in &results {
        for w in &r.warnings {
            eprintln!("warning: {}: {w}", r.object);
        }
        if let Some(reason) = &r.denial {
            eprintln!("denied: {}: {reason}", r.object);
        }
    }
    eprint!("{}", report::table(&results));
    if reports.contains(&Report::Github) {
        eprint!("{}", report::github(&results));
    }
    for (r, file, mut f) in report_files {
        let text = match r {
            Report::Junit(_) => report::junit(&results, args.strict),
            _ => report::sarif(&results),
        };
        if let Err(e) = f.write_all(text.as_bytes()) {
            return bad(format!("cannot write {}: {e}", file.display()));
        }
    }
    if results.iter().any(|r| !r.allowed) || (args.strict && report::has_soft_violations(&results))
    {
        EXIT_DENIED
    } else {
        EXIT_OK
    }
}

/// Takes what pods may look up from one input object into `state`. A Namespace or
/// KeywirePolicy that differs from the platform's (`--cluster-state`, `--policy`) is refused.
fn learn(
    o: &Value,
    file: &str,
    platform: &HashMap<(&'static str, String), String>,
    state: &mut crate::core::lookup::ClusterState,
    default_namespace: &str,
) -> Result<Option<report::ObjectResult>, String> {
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !matches!(kind, "Namespace" | "ServiceAccount" | "SecretProviderClass")
        && !Policy::is_policy(o)
    {
        return Ok(None);
    }
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let source = match kind {
        "Namespace" => platform.get(&("Namespace", name.clone())),
        policy::KIND if Policy::is_policy(o) => platform.get(&(policy::KIND, name.clone())),
        _ => None,
    };
    if let Some(source) = source {
        let same = match kind {
            "Namespace" => {
                state.namespace(&name).map(|n| n.labels)
                    == Some(annotations::string_map(o.get("metadata"), "labels"))
            }
            _ => Policy::from_object(o).ok().is_some_and(|p| {
                state
                    .policies()
                    .iter()
                    .any(|q| q.name == p.name && q.spec == p.spec)
            }),
        };
        if same {
            return Ok(None);
        }
        return Ok(Some(report::ObjectResult::refused(
            format!("{kind}/{name}"),
            file.to_string(),
            format!("redefines {kind} {name} from {source}; the platform's definition is used"),
        )));
    }
    if matches!(kind, "ServiceAccount" | "SecretProviderClass") {
        let namespace = o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_namespace);
        let known = match kind {
            "ServiceAccount" => state.service_account(namespace, &name).is_some(),
            _ => state.secret_provider_class(namespace, &name).is_some(),
        };
        if known {
            eprintln!(
                "note: {} replaces the one in the cluster state",
                echo::escape(&format!("{kind} {namespace}/{name} from {file}"))
            );
        }
    }
    state.insert_object_in(o, default_namespace)?;
    Ok(None)
}
