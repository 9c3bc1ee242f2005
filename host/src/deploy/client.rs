//! `ferry deploy`: uploads a component to a running host's admin API (or lists its
//! versions, or rolls it back) and prints the host's answer.
//!
//! The host does all the checking; this is a thin blocking HTTP client, so what an
//! operator sees is exactly what the API said. Anything but a 2xx is an error and a
//! non-zero exit.
//!
//! The bearer token comes from `--token-file PATH` or, without it, the
//! `FERRY_ADMIN_TOKEN` environment variable; never from an argument, where it would
//! show in `ps` and shell history.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ureq::Agent;

use crate::config::{ADMIN_TOKEN_ENV, read_token_file};

/// A compile plus self-test of a large component can take a while on a busy host.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `ferry deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Base URL of the host's admin server.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub admin: String,
    /// The pipeline to deploy to.
    #[arg(long)]
    pub pipeline: String,
    /// A file holding the admin bearer token. Without it the token is read from
    /// the FERRY_ADMIN_TOKEN environment variable. (There is no `--token`: a token on
    /// the command line leaks into `ps` and shell history.)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Go back to the previous version instead of deploying.
    #[arg(long, conflicts_with_all = ["versions", "component", "group"])]
    pub rollback: bool,
    /// Start the version with empty keyed state: the state the running version wrote
    /// is deleted (tombstoned in the changelog) for the partitions this host owns.
    /// Without it a new version sees its predecessor's state.
    #[arg(long, conflicts_with_all = ["versions", "rollback", "group"])]
    pub empty_state: bool,
    /// Run the component as a shadow of the current version: it gets every batch
    /// after the live version, and what it would write is compared, never published
    /// (`ferry shadow report`, `promote`, `discard`).
    /// With --group: every host of the group runs it as its shadow.
    #[arg(long, conflicts_with_all = ["versions", "rollback", "digest", "empty_state"])]
    pub shadow: bool,
    /// Show the current and previous versions instead of deploying (with --group:
    /// the versions the components topic holds).
    #[arg(long, conflicts_with = "component")]
    pub versions: bool,
    /// Deploy to every host of the pipeline's group at once, through the components
    /// topic, instead of one host's admin API (hosts with trusted keys take only
    /// versions signed with --sign-with).
    #[arg(long, conflicts_with_all = ["token_file"])]
    pub group: bool,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub topic: crate::deploy::group::command::TopicArgs,
    /// With --group: roll the group back to this earlier version (its digest, or
    /// its first 8 or more characters), whose chunks are still in the topic.
    #[arg(long, requires = "group", conflicts_with_all = ["versions", "component"])]
    pub digest: Option<String>,
    /// With --group: sign the manifest with this secret key (`ferry keys new`).
    /// Hosts with `[fleet] trusted_keys` take only versions signed by one of them.
    #[arg(long, requires = "group", value_name = "KEY")]
    pub sign_with: Option<PathBuf>,
    /// With --group: the size of the records a component is cut into. It must stay
    /// below the brokers' and the topic's message.max.bytes.
    #[arg(long, requires = "group", default_value_t = crate::deploy::group::publish::default_chunk_bytes())]
    pub chunk_bytes: usize,
    /// The component (.wasm) to deploy.
    #[arg(required_unless_present_any = ["rollback", "versions", "digest"])]
    pub component: Option<PathBuf>,
}

/// The admin server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body, as text.
    pub body: String,
}

impl Answer {
    /// The answer, or an error carrying it when the status is not 2xx.
    pub fn success(self) -> anyhow::Result<Self> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            bail!("the admin server answered {}: {}", self.status, self.body.trim_end())
        }
    }
}

/// What to ask the admin server.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `PUT .../component` with these bytes.
    Deploy(&'a [u8]),
    /// `PUT .../component?state=empty` with these bytes.
    DeployWithEmptyState(&'a [u8]),
    /// `GET .../versions`.
    Versions,
    /// `POST .../rollback`.
    Rollback,
    /// `PUT .../shadow` with these bytes.
    DeployShadow(&'a [u8]),
    /// `GET .../shadow`.
    ShadowReport,
    /// `POST .../shadow/promote`.
    ShadowPromote,
    /// `POST .../shadow/discard`.
    ShadowDiscard,
}

/// Sends one request to the admin API of `admin` for `pipeline`.
pub fn call(admin: &str, pipeline: &str, token: &str, request: Request<'_>) -> anyhow::Result<Answer> {
    if pipeline.is_empty() || !pipeline.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("`{pipeline}` is not a pipeline name (letters, digits, `-`, `_`, `.`)");
    }
    let base = format!("{}/api/pipelines/{pipeline}", admin.trim_end_matches('/'));
    let config = Agent::config_builder().http_status_as_error(false).timeout_global(Some(REQUEST_TIMEOUT)).build();
    let agent = Agent::new_with_config(config);
    let bearer = format!("Bearer {token}");
    let sent = match request {
        Request::Deploy(bytes) => agent
            .put(format!("{base}/component"))
            .header("Authorization", &bearer)
            .header("Content-Type", "application/wasm")
            .send(bytes),
        Request::DeployWithEmptyState(bytes) => agent
            .put(format!("{base}/component?state=empty"))
            .header("Authorization", &bearer)
            .header("Content-Type", "application/wasm")
            .send(bytes),
        Request::Versions => agent.get(format!("{base}/versions")).header("Authorization", &bearer).call(),
        Request::Rollback => agent.post(format!("{base}/rollback")).header("Authorization", &bearer).send_empty(),
        Request::DeployShadow(bytes) => agent
            .put(format!("{base}/shadow"))
            .header("Authorization", &bearer)
            .header("Content-Type", "application/wasm")
            .send(bytes),
        Request::ShadowReport => agent.get(format!("{base}/shadow")).header("Authorization", &bearer).call(),
        Request::ShadowPromote => {
            agent.post(format!("{base}/shadow/promote")).header("Authorization", &bearer).send_empty()
        }
        Request::ShadowDiscard => {
            agent.post(format!("{base}/shadow/discard")).header("Authorization", &bearer).send_empty()
        }
    };
    let mut response = sent.with_context(|| format!("failed to reach the admin server at {admin}"))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().context("failed to read the admin server's answer")?;
    Ok(Answer { status, body })
}

/// Runs `ferry deploy`.
pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    if args.group {
        use crate::deploy::group::command::{GroupRequest, deploy};
        let request = match (&args.digest, args.versions, &args.component) {
            (Some(digest), _, _) => GroupRequest::Rollback(digest),
            (None, true, _) => GroupRequest::Versions,
            (None, false, Some(path)) if args.shadow => GroupRequest::Shadow(path, args.chunk_bytes),
            (None, false, Some(path)) => GroupRequest::Publish(path, args.chunk_bytes),
            (None, false, None) => bail!("give the component to publish, --digest to roll back, or --versions"),
        };
        return deploy(&args.topic, &args.pipeline, request, args.sign_with.as_deref());
    }
    let bytes;
    let request = if args.rollback {
        Request::Rollback
    } else if args.versions {
        Request::Versions
    } else {
        let path = args.component.as_deref().expect("clap requires a component");
        bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        if args.shadow {
            Request::DeployShadow(&bytes)
        } else if args.empty_state {
            Request::DeployWithEmptyState(&bytes)
        } else {
            Request::Deploy(&bytes)
        }
    };
    let token = token(args.token_file.as_deref(), std::env::var(ADMIN_TOKEN_ENV).ok())?;
    let answer = call(&args.admin, &args.pipeline, &token, request)?.success()?;
    println!("{}", pretty(&answer.body));
    Ok(())
}

/// `ferry shadow ...`
#[derive(Debug, clap::Subcommand)]
pub enum ShadowCommand {
    /// The shadow's comparison so far: counts, and the first differences with both
    /// sides and a diff.
    Report {
        #[allow(missing_docs)]
        #[command(flatten)]
        target: ShadowTarget,
        /// Print the admin API's JSON as it came.
        #[arg(long)]
        json: bool,
    },
    /// Make the shadow the running version (at the next batch boundary, on
    /// probation if the pipeline has auto_rollback).
    Promote {
        #[allow(missing_docs)]
        #[command(flatten)]
        target: ShadowTarget,
        #[allow(missing_docs)]
        #[command(flatten)]
        group: GroupDecision,
    },
    /// Drop the shadow.
    Discard {
        #[allow(missing_docs)]
        #[command(flatten)]
        target: ShadowTarget,
        #[allow(missing_docs)]
        #[command(flatten)]
        group: GroupDecision,
    },
}

/// `ferry shadow promote|discard --group`: the decision goes to every host of the
/// pipeline's group through the components topic (the shadow published with
/// `ferry deploy --shadow --group`).
#[derive(Debug, clap::Args)]
pub struct GroupDecision {
    /// Decide for every host of the group, through the components topic, instead
    /// of one host's admin API.
    #[arg(long, conflicts_with_all = ["token_file", "admin"])]
    pub group: bool,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub topic: crate::deploy::group::command::TopicArgs,
    /// With --group: sign the decision with this secret key (hosts with
    /// `[fleet] trusted_keys` take only signed ones).
    #[arg(long, requires = "group", value_name = "KEY")]
    pub sign_with: Option<PathBuf>,
}

/// Which host and pipeline `ferry shadow` asks.
#[derive(Debug, clap::Args)]
pub struct ShadowTarget {
    /// Base URL of the host's admin server.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    pub admin: String,
    /// The pipeline.
    #[arg(long)]
    pub pipeline: String,
    /// A file holding the admin bearer token (else FERRY_ADMIN_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// Runs `ferry shadow`.
pub fn shadow(command: ShadowCommand) -> anyhow::Result<()> {
    use crate::deploy::group::command::{GroupRequest, deploy};
    use crate::deploy::group::record::Action;
    let (target, request, json) = match command {
        ShadowCommand::Report { target, json } => (target, Request::ShadowReport, json),
        ShadowCommand::Promote { target, group } if group.group => {
            let request = GroupRequest::DecideShadow(Action::Promote);
            return deploy(&group.topic, &target.pipeline, request, group.sign_with.as_deref());
        }
        ShadowCommand::Discard { target, group } if group.group => {
            let request = GroupRequest::DecideShadow(Action::Discard);
            return deploy(&group.topic, &target.pipeline, request, group.sign_with.as_deref());
        }
        ShadowCommand::Promote { target, .. } => (target, Request::ShadowPromote, true),
        ShadowCommand::Discard { target, .. } => (target, Request::ShadowDiscard, true),
    };
    let token = token(target.token_file.as_deref(), std::env::var(ADMIN_TOKEN_ENV).ok())?;
    let answer = call(&target.admin, &target.pipeline, &token, request)?.success()?;
    if json {
        println!("{}", pretty(&answer.body));
    } else {
        let value: serde_json::Value =
            serde_json::from_str(&answer.body).context("the admin server's report is not JSON")?;
        print!("{}", report_text(&value));
    }
    Ok(())
}

/// A shadow report for people.
pub fn report_text(report: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let n = |field: &str| report[field].as_u64().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {}: shadow {} against {}",
        report["pipeline"].as_str().unwrap_or("?"),
        report["shadow"]["digest"].as_str().unwrap_or("?"),
        report["against"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "records: {} compared, {} equal, {} different, {} skipped ({} batches skipped)",
        n("compared"),
        n("equal"),
        n("different"),
        n("skipped"),
        n("skipped_batches")
    );
    let _ = writeln!(out, "state: {} batches compared, {} different", n("state_batches"), n("state_different"));
    if n("shadow_timeouts") > 0 {
        let _ = writeln!(out, "the shadow ran out of time in {} batches", n("shadow_timeouts"));
    }
    let differences = report["differences"].as_array().cloned().unwrap_or_default();
    if !differences.is_empty() {
        let _ = writeln!(out, "first {} differences:", differences.len());
    }
    for d in differences {
        let (first, last) = (d["offset"].as_i64().unwrap_or(0), d["last_offset"].as_i64().unwrap_or(0));
        let offsets = if first == last { format!("offset {first}") } else { format!("offsets {first}..={last}") };
        let _ = writeln!(
            out,
            "\n{} [{}] {offsets}: {}",
            d["topic"].as_str().unwrap_or("?"),
            d["partition"],
            d["aspects"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        );
        for line in d["diff"].as_str().unwrap_or("").lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// The token from `file` when given, else from the environment variable's value
/// `from_env`.
fn token(file: Option<&std::path::Path>, from_env: Option<String>) -> anyhow::Result<String> {
    if let Some(file) = file {
        return read_token_file(file).context("--token-file");
    }
    match from_env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        Some(token) => Ok(token),
        None => bail!("no admin token: set {ADMIN_TOKEN_ENV} or pass --token-file PATH"),
    }
}

/// JSON answers indented for people; anything else as it came.
fn pretty(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(token(Some(&file), Some("from-env".into())).unwrap(), "from-file");
        assert_eq!(token(None, Some(" from-env\n".into())).unwrap(), "from-env");
    }

    #[test]
    fn without_a_token_the_error_says_where_to_put_one() {
        for from_env in [None, Some(String::new())] {
            let error = token(None, from_env).unwrap_err().to_string();
            assert!(error.contains("FERRY_ADMIN_TOKEN") && error.contains("--token-file"), "{error}");
        }
        let error = format!("{:#}", token(Some(std::path::Path::new("/nonexistent/t")), None).unwrap_err());
        assert!(error.contains("--token-file") && error.contains("/nonexistent/t"), "{error}");
    }
}
