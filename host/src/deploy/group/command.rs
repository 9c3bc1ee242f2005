//! The command line of group-wide deploys: `ferry deploy --group ...`,
//! `ferry versions --group ...` and `ferry keys ...`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::catalog::Judge;
use super::publish::{self, Publisher, catalog};
use super::record::{Action, Scope, is_name};
use super::signing::{PublicKey, SecretKey, TrustedKeys, write_new_pair};
use super::topic::TopicAccess;
use super::{members, prune};
use crate::config::Config;
use crate::deploy::MAX_COMPONENT_BYTES;

/// Where the components topic is: `--brokers` or the brokers and client
/// properties (SASL, TLS) of `--config`, and the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicArgs {
    /// Bootstrap servers (or take them from --config).
    #[arg(long)]
    pub brokers: Option<String>,
    /// A ferry config to take brokers, client properties and `[fleet]` from.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The components topic (default: the config's `[fleet] components_topic`, or
    /// `_ferry.components`).
    #[arg(long)]
    pub components_topic: Option<String>,
    /// The environment whose versions to publish or list (default: the config's
    /// `[fleet] environment`).
    #[arg(long)]
    pub environment: Option<String>,
}

/// What [`TopicArgs`] resolve to.
#[derive(Debug)]
pub struct Target {
    /// The topic and how to reach it.
    pub access: TopicAccess,
    /// The environment.
    pub environment: String,
    /// The config's trusted keys (none without a config).
    pub trusted: TrustedKeys,
    /// The config, if one was given.
    pub config: Option<Config>,
}

impl TopicArgs {
    /// The topic, the environment and the config if one was given.
    pub fn resolve(&self) -> anyhow::Result<Target> {
        let config = self.config.as_deref().map(Config::load).transpose()?;
        let brokers = match (&self.brokers, &config) {
            (Some(b), _) => b.clone(),
            (None, Some(c)) => c.brokers.clone(),
            (None, None) => bail!("give --brokers or --config"),
        };
        let kafka = config.as_ref().map(|c| c.kafka.clone()).unwrap_or_default();
        let topic = self
            .components_topic
            .clone()
            .or_else(|| config.as_ref().map(|c| c.fleet.components_topic.clone()))
            .unwrap_or_else(|| super::DEFAULT_TOPIC.to_owned());
        let environment = self
            .environment
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.fleet.environment.clone()))
            .context("give --environment (or a --config with [fleet] environment)")?;
        if !is_name(&environment) {
            bail!("`{environment}` is not an environment name (letters, digits, `-`, `_`, `.`)");
        }
        let trusted = config.as_ref().map(|c| c.fleet.trusted()).transpose()?.unwrap_or_default();
        Ok(Target { access: TopicAccess { brokers, kafka, topic }, environment, trusted, config })
    }
}

/// What `ferry deploy --group` is asked to do.
#[derive(Debug)]
pub enum GroupRequest<'a> {
    /// Publish this component.
    Publish(&'a Path, usize),
    /// Publish this earlier version again.
    Rollback(&'a str),
    /// Publish this component as the shadow of the live version.
    Shadow(&'a Path, usize),
    /// Promote (`Action::Promote`) or discard (`Action::Discard`) the shadow.
    DecideShadow(Action),
    /// List what the topic holds.
    Versions,
}

/// Runs `ferry deploy --group`, signing with the secret key in `sign_with`.
pub fn deploy(
    target: &TopicArgs,
    pipeline: &str,
    request: GroupRequest<'_>,
    sign_with: Option<&Path>,
) -> anyhow::Result<()> {
    if !is_name(pipeline) {
        bail!("`{pipeline}` is not a pipeline name (letters, digits, `-`, `_`, `.`)");
    }
    let Target { access, environment, trusted, config } = target.resolve()?;
    if let Some(config) = &config {
        match config.pipelines.iter().find(|p| p.name == pipeline) {
            Some(p) if !p.group_deploy => eprintln!(
                "warning: pipeline {pipeline} does not have group_deploy = true in this config: hosts running it \
                 ignore the components topic"
            ),
            Some(_) => {}
            None => eprintln!("warning: this config has no pipeline {pipeline}"),
        }
    }
    let key = sign_with.map(SecretKey::read).transpose()?;
    let scope = Scope::new(&environment, pipeline);
    if !matches!(request, GroupRequest::Versions) {
        match &key {
            None => eprintln!(
                "warning: publishing UNSIGNED: hosts with [fleet] trusted_keys refuse it; sign with --sign-with KEY"
            ),
            Some(key) if !trusted.is_empty() && !trusted.ids().contains(&key.public().id().to_owned()) => eprintln!(
                "warning: key {} is not among this config's [fleet] trusted_keys: hosts with that config refuse \
                 what it signs",
                key.public().id()
            ),
            Some(_) => {}
        }
    }
    let publisher = Publisher { access: &access, scope: scope.clone(), key: key.as_ref(), trusted: &trusted };
    let signed = |m: &super::record::Manifest| {
        m.signature.as_ref().map_or_else(|| "unsigned".to_owned(), |s| format!("signed by key {}", s.key_id))
    };
    match request {
        GroupRequest::Publish(path, chunk_bytes) => {
            let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
            let manifest = publish::publish(&publisher, &bytes, chunk_bytes)
                .with_context(|| format!("failed to publish {} for {scope}", path.display()))?;
            println!(
                "published {} for pipeline {pipeline} in environment {environment} to {} as sequence {} ({} bytes in \
                 {} chunks, {}); every host of the pipeline checks it and switches at its next batch boundary \
                 (`ferry versions --group` shows who runs what)",
                manifest.digest,
                access.topic,
                manifest.sequence,
                manifest.size,
                manifest.chunks,
                signed(&manifest)
            );
        }
        GroupRequest::Rollback(digest) => {
            let manifest =
                publish::rollback(&publisher, digest).with_context(|| format!("failed to roll {scope} back"))?;
            println!(
                "pipeline {pipeline} in environment {environment} rolled back to {} through {} as sequence {} ({})",
                manifest.digest,
                access.topic,
                manifest.sequence,
                signed(&manifest)
            );
        }
        GroupRequest::Shadow(path, chunk_bytes) => {
            let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
            let manifest = publish::publish_shadow(&publisher, &bytes, chunk_bytes)
                .with_context(|| format!("failed to publish {} as the shadow for {scope}", path.display()))?;
            println!(
                "published {} as the shadow of pipeline {pipeline} in environment {environment} to {} as sequence {} \
                 ({}); every host of the pipeline checks it and runs it beside its live version, compared and never \
                 published (`ferry shadow report` on each host)",
                manifest.digest,
                access.topic,
                manifest.sequence,
                signed(&manifest)
            );
        }
        GroupRequest::DecideShadow(decision) => {
            let manifest = publish::decide_shadow(&publisher, decision)?;
            let done = if decision == Action::Promote {
                "promoted: every host makes it live at its next batch boundary"
            } else {
                "discarded: every host drops it"
            };
            println!(
                "shadow {} of pipeline {pipeline} in environment {environment} {done} (through {} as sequence {}, {})",
                manifest.digest,
                access.topic,
                manifest.sequence,
                signed(&manifest)
            );
        }
        GroupRequest::Versions => {
            let judge = Judge { scope, trusted, limit: MAX_COMPONENT_BYTES };
            print!("{}", publish::listing(&catalog(&access, judge, true)?));
        }
    }
    Ok(())
}

/// Options of `ferry versions`.
#[derive(Debug, clap::Args)]
pub struct VersionsArgs {
    #[allow(missing_docs)]
    #[command(flatten)]
    pub target: TopicArgs,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
    /// The pipeline (with --config: every `group_deploy` pipeline of the group).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// Write tombstones for the versions beyond the newest --keep (never one a
    /// member runs or keeps for rollback), and say what was removed.
    #[arg(long, requires = "keep")]
    pub prune: bool,
    /// With --prune: how many of the newest versions to keep.
    #[arg(long, requires = "prune", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// With --prune: say what would be removed, and remove nothing.
    #[arg(long, requires = "prune")]
    pub dry_run: bool,
}

/// Runs `ferry versions --group`.
pub fn versions(args: &VersionsArgs) -> anyhow::Result<()> {
    let Target { access, environment, trusted, config } = args.target.resolve()?;
    let pipelines: Vec<String> = match (&args.pipeline, &config) {
        (Some(p), _) => vec![p.clone()],
        (None, Some(c)) => {
            c.pipelines.iter().filter(|p| p.group == args.group && p.group_deploy).map(|p| p.name.clone()).collect()
        }
        (None, None) => bail!("give --pipeline (or a --config with group_deploy pipelines in group {})", args.group),
    };
    if pipelines.is_empty() {
        bail!("the config has no group_deploy pipeline in group {}", args.group);
    }
    for pipeline in pipelines {
        let judge =
            Judge { scope: Scope::new(&environment, &pipeline), trusted: trusted.clone(), limit: MAX_COMPONENT_BYTES };
        if let Some(keep) = args.keep.filter(|_| args.prune) {
            let catalog = catalog(&access, judge, true)?;
            if catalog.judge().trusted.is_empty() {
                eprintln!(
                    "warning: no [fleet] trusted_keys (--config): manifests are ranked without checking signatures"
                );
            }
            let plan = prune::plan(&catalog, keep as usize);
            if !args.dry_run {
                prune::prune(&access, &catalog, &plan)?;
            }
            println!("{}:", catalog.scope());
            print!("{}", prune::describe(&plan, args.dry_run));
            if !args.dry_run && !plan.removed.is_empty() {
                println!(
                    "the brokers drop the removed records at their next compaction of the topic's closed segments"
                );
            }
        } else {
            let listing = members::list(&access, judge, &args.group)?;
            print!("{}", members::table(&pipeline, &args.group, &listing));
        }
    }
    Ok(())
}

/// `ferry keys ...`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Make a publisher key pair: NAME.key (secret, mode 0600) and NAME.pub.
    New {
        /// The files' name.
        name: String,
        /// Where to write them.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print the id and public key of a key file (.key or .pub).
    Show {
        /// The file.
        file: PathBuf,
    },
}

/// Runs `ferry keys`.
pub fn keys(command: &KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New { name, dir } => {
            let public = write_new_pair(dir, name)?;
            println!("wrote {0}/{name}.key (secret: keep it to the publisher) and {0}/{name}.pub", dir.display());
            println!("key id: {}", public.id());
            println!("hosts that trust it list it in their config:\n");
            println!("[fleet]\ntrusted_keys = [\n  \"{}\",  # {name}\n]", public.line());
        }
        KeysCommand::Show { file } => {
            let text = std::fs::read_to_string(file).with_context(|| format!("failed to read {}", file.display()))?;
            let public = match PublicKey::parse(&text) {
                Ok(public) => public,
                Err(_) => SecretKey::read(file)?.public().clone(),
            };
            println!("key id: {}\npublic key: {}", public.id(), public.line());
        }
    }
    Ok(())
}
