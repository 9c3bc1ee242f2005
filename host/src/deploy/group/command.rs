//! The command line of group-wide deploys: `ferry deploy --group ...` and
//! `ferry versions --group ...`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::members;
use super::publish::{self, catalog};
use super::topic::TopicAccess;
use crate::config::Config;

/// Where the components topic is: `--brokers` or the brokers and client
/// properties (SASL, TLS) of `--config`.
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
}

impl TopicArgs {
    /// The topic and how to reach it, and the config if one was given.
    pub fn resolve(&self) -> anyhow::Result<(TopicAccess, Option<Config>)> {
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
        Ok((TopicAccess { brokers, kafka, topic }, config))
    }
}

/// What `ferry deploy --group` is asked to do.
#[derive(Debug)]
pub enum GroupRequest<'a> {
    /// Publish this component.
    Publish(&'a std::path::Path, usize),
    /// Write the manifest of this earlier version again.
    Rollback(&'a str),
    /// List what the topic holds.
    Versions,
}

/// Runs `ferry deploy --group`.
pub fn deploy(target: &TopicArgs, pipeline: &str, request: GroupRequest<'_>) -> anyhow::Result<()> {
    if pipeline.is_empty() || !pipeline.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("`{pipeline}` is not a pipeline name (letters, digits, `-`, `_`, `.`)");
    }
    let (access, config) = target.resolve()?;
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
    match request {
        GroupRequest::Publish(path, chunk_bytes) => {
            let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
            let manifest = publish::publish(&access, pipeline, &bytes, chunk_bytes)
                .with_context(|| format!("failed to publish {} for pipeline {pipeline}", path.display()))?;
            println!(
                "published {} for pipeline {pipeline} to {} ({} bytes in {} chunks); every host of the pipeline \
                 checks it and switches at its next batch boundary (`ferry versions --group` shows who runs what)",
                manifest.digest, access.topic, manifest.size, manifest.chunks
            );
        }
        GroupRequest::Rollback(digest) => {
            let manifest = publish::rollback(&access, pipeline, digest)
                .with_context(|| format!("failed to roll pipeline {pipeline} back"))?;
            println!("pipeline {pipeline} rolled back to {} through {}", manifest.digest, access.topic);
        }
        GroupRequest::Versions => print!("{}", publish::listing(&catalog(&access, pipeline)?)),
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
}

/// Runs `ferry versions --group`.
pub fn versions(args: &VersionsArgs) -> anyhow::Result<()> {
    let (access, config) = args.target.resolve()?;
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
        let listing = members::list(&access, &args.group, &pipeline)?;
        print!("{}", members::table(&pipeline, &args.group, &listing));
    }
    Ok(())
}
