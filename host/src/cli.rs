//! The `ferry` command line.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::host::Host;
use crate::kafka::offsets::{self, ResetTo};
use crate::sandbox::{Sandbox, SandboxSettings, inspect};

/// Run untrusted stream processors, compiled to WebAssembly components, next to Kafka.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FERRY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[allow(missing_docs)] // a doc comment here would become clap's help text
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line (the program's name first) without running it: how the
    /// docs' commands are checked.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args).map_err(|e| e.to_string())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipelines of a config file until SIGINT or SIGTERM.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the order-commission example on an embedded broker (no Kafka needed).
    Demo(crate::demo::DemoArgs),
    /// Create a processor project (Rust, Python or JavaScript) that builds anywhere.
    New(crate::tenant::new::NewArgs),
    /// Build a processor project into a component, and check it.
    Build(crate::tenant::build::BuildArgs),
    /// Run a component on sample records in the real sandbox, with a pipeline's
    /// grants, limits and settings; compare the report with a golden file.
    Test(crate::tenant::trial::TestArgs),
    /// Run a project's pipelines on a local host with an embedded broker, send them
    /// sample records and print what they write.
    Dev(crate::tenant::dev::DevArgs),
    /// Check that a component implements the processor world; list its capabilities.
    Check {
        /// The component.
        component: PathBuf,
    },
    /// Deploy a component to a running host through its admin API (or roll back,
    /// or list versions).
    Deploy(crate::deploy::client::DeployArgs),
    /// List every live member of a pipeline's consumer group and the component
    /// version it runs, and who lags behind the topic (for `group_deploy`
    /// pipelines); or prune the components topic (--prune --keep N).
    Versions(crate::deploy::group::command::VersionsArgs),
    /// Make or show the Ed25519 keys that sign group-wide deploys.
    Keys {
        #[allow(missing_docs)]
        #[command(subcommand)]
        command: crate::deploy::group::command::KeysCommand,
    },
    /// Report on, promote or discard the shadow version of a pipeline (deployed
    /// with `ferry deploy --shadow`).
    Shadow {
        #[allow(missing_docs)]
        #[command(subcommand)]
        command: crate::deploy::client::ShadowCommand,
    },
    /// Show or reset a consumer group's committed offsets.
    Offsets {
        #[allow(missing_docs)]
        #[command(subcommand)]
        command: OffsetsCommand,
    },
}

/// `ferry offsets ...`
#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Committed offset, log end and lag per partition.
    Show {
        #[allow(missing_docs)]
        #[command(flatten)]
        target: GroupTarget,
    },
    /// Move the group's bookmark (for a replay after a fix). Refused while the group
    /// has active members.
    Reset {
        #[allow(missing_docs)]
        #[command(flatten)]
        target: GroupTarget,
        /// earliest, latest, an offset, or ts:<milliseconds since the epoch>.
        #[arg(long)]
        to: ResetTo,
    },
}

/// Which group and topics.
#[derive(Debug, clap::Args)]
pub struct GroupTarget {
    /// Bootstrap servers (or take them from --config).
    #[arg(long)]
    brokers: Option<String>,
    /// Config file to take brokers and client properties from.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Topics (repeatable). With --config, defaults to the inputs of the group's pipelines.
    #[arg(long = "topic")]
    topics: Vec<String>,
}

impl GroupTarget {
    fn resolve(&self) -> anyhow::Result<(String, BTreeMap<String, String>, Vec<String>)> {
        let config = self.config.as_deref().map(Config::load).transpose()?;
        let brokers = match (&self.brokers, &config) {
            (Some(b), _) => b.clone(),
            (None, Some(c)) => c.brokers.clone(),
            (None, None) => anyhow::bail!("give --brokers or --config"),
        };
        let kafka = config.as_ref().map(|c| c.kafka.clone()).unwrap_or_default();
        let mut topics = self.topics.clone();
        if topics.is_empty()
            && let Some(c) = &config
        {
            for p in c.pipelines.iter().filter(|p| p.group == self.group) {
                topics.extend(p.inputs.iter().cloned());
            }
        }
        if topics.is_empty() {
            anyhow::bail!("give at least one --topic (or a --config with a pipeline in group {})", self.group);
        }
        Ok((brokers, kafka, topics))
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the tenant's tools print their own progress; keep the logs to
    // errors unless asked.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::New(_) | Command::Build(_) | Command::Test(_) => "error",
        Command::Dev(_) => {
            "warn,ferry::guest=trace,ferry_host::deploy=info,ferry_host::registry=info,librdkafka=error,rdkafka=error"
        }
        _ => "info,librdkafka=warn,rdkafka=warn",
    };
    init_tracing(cli.log_format, default_filter);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: text (coloured only on a terminal, and never with `NO_COLOR`
/// set) or JSON. `RUST_LOG` holds `target=level` directives; without it,
/// `default_filter` applies.
fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => directives.parse().unwrap_or_else(|error| {
            eprintln!("warning: RUST_LOG={directives:?} is not a list of target=level directives ({error}); using {default_filter:?}");
            log_filter(default_filter)
        }),
        _ => log_filter(default_filter),
    };
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(colour);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
}

/// A filter from `target=level` directives ferry itself wrote.
fn log_filter(directives: &str) -> tracing_subscriber::filter::Targets {
    directives.parse().expect("ferry's own log directives parse")
}

/// Colour codes only for a person at a terminal, and not when they asked for none
/// (`NO_COLOR` set and not empty, <https://no-color.org>): a log file or a pipe gets
/// plain text.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            // A SIGTERM or SIGINT while the host starts (compiling components, joining
            // groups: seconds) is kept, not left to the default action that ends the
            // process at once: the host stops, cleanly, as soon as it has started.
            let signalled = Arc::new(AtomicBool::new(false));
            for signal in crate::host::STOP_SIGNALS {
                signal_hook::flag::register(signal, signalled.clone()).context("failed to install a signal handler")?;
            }
            let config = Config::load(&config)?;
            let host = Host::start(&config)?;
            host.stop_on_signals()?;
            if signalled.load(Ordering::Relaxed) {
                host.shutdown_flag().store(true, Ordering::Relaxed);
            }
            host.wait();
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(args),
        Command::New(args) => crate::tenant::new::run(args),
        Command::Build(args) => crate::tenant::build::run(args),
        Command::Test(args) => crate::tenant::trial::run(args),
        Command::Dev(args) => crate::tenant::dev::run(args),
        Command::Check { component } => check(&component),
        Command::Deploy(args) => crate::deploy::client::run(args),
        Command::Versions(args) => crate::deploy::group::command::versions(&args),
        Command::Keys { command } => crate::deploy::group::command::keys(&command),
        Command::Shadow { command } => crate::deploy::client::shadow(command),
        Command::Offsets { command } => match command {
            OffsetsCommand::Show { target } => {
                let (brokers, kafka, topics) = target.resolve()?;
                let rows = offsets::show(&brokers, &kafka, &target.group, &topics)?;
                print!("{}", offsets::table(&rows));
                Ok(())
            }
            OffsetsCommand::Reset { target, to } => {
                let (brokers, kafka, topics) = target.resolve()?;
                for (topic, partition, offset) in offsets::reset(&brokers, &kafka, &target.group, &topics, to)? {
                    println!("{topic}[{partition}] -> {offset}");
                }
                Ok(())
            }
        },
    }
}

/// `ferry check`: what a component is and what it imports (also printed by `ferry build`).
/// It compiles through the same artifact cache as `ferry test`, `ferry dev` and a host
/// with the default `[sandbox]`, so a component is compiled once, when it is built.
pub(crate) fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    let sandbox = Sandbox::new(SandboxSettings {
        max_instances: 4,
        cache_dir: crate::sandbox::default_cache_dir(),
        ..SandboxSettings::default()
    })?;
    let inspection =
        inspect(&sandbox, &bytes).with_context(|| format!("{} is not a usable processor", path.display()))?;
    println!(
        "{}: implements {}/processor@{}",
        path.display(),
        crate::sandbox::capability::PACKAGE,
        crate::sandbox::capability::VERSION
    );
    println!("  digest: sha256:{}", inspection.digest);
    println!("  size: {} bytes", inspection.size);
    println!(
        "  initial linear memory: {:.1} MiB (a pipeline's limits.memory_mib must be at least {}, and at least {} \
         to keep its instances from being replaced after most batches)",
        inspection.initial_memory as f64 / f64::from(1 << 20),
        crate::sandbox::minimum_memory_mib(inspection.initial_memory),
        crate::sandbox::minimum_memory_mib(inspection.initial_memory) + 8
    );
    println!("  imports (what each gets on this host):");
    for capability in &inspection.capabilities {
        println!("    {capability}");
        println!("      {}", capability.disposition());
    }
    if inspection.capabilities.is_empty() {
        println!("    (none)");
    }
    let only_fail: Vec<String> = inspection
        .capabilities
        .iter()
        .filter(|c| matches!(c.disposition(), crate::sandbox::Disposition::Inert { only_fails: true, .. }))
        .map(ToString::to_string)
        .collect();
    for import in &only_fail {
        println!("warning: it imports {import}, which can only fail here; a processor that depends on it cannot work");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))), "an empty NO_COLOR does not count");
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn shadow_commands_parse_and_a_shadow_deploy_excludes_the_other_kinds() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["ferry"], args].concat());
        let cli = parse(&["shadow", "report", "--pipeline", "orders", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Shadow { command: crate::deploy::client::ShadowCommand::Report { json: true, .. } }
        ));
        for action in ["promote", "discard"] {
            assert!(parse(&["shadow", action, "--pipeline", "orders"]).is_ok(), "{action}");
        }
        let cli = parse(&["deploy", "--pipeline", "orders", "--shadow", "new.wasm"]).unwrap();
        assert!(matches!(cli.command, Command::Deploy(ref args) if args.shadow));
        for other in ["--rollback", "--empty-state", "--versions"] {
            assert!(parse(&["deploy", "--pipeline", "orders", "--shadow", other, "new.wasm"]).is_err(), "{other}");
        }
        let group = ["--group", "--brokers", "b:9092", "--environment", "prod"];
        let cli = parse(&[&["deploy", "--pipeline", "orders", "--shadow", "new.wasm"][..], &group].concat()).unwrap();
        assert!(matches!(cli.command, Command::Deploy(ref args) if args.shadow && args.group));
        for action in ["promote", "discard"] {
            let cli = parse(&[&["shadow", action, "--pipeline", "orders"][..], &group].concat()).unwrap();
            let Command::Shadow { command } = cli.command else { panic!("{action}") };
            let (crate::deploy::client::ShadowCommand::Promote { group, .. }
            | crate::deploy::client::ShadowCommand::Discard { group, .. }) = command
            else {
                panic!("{action}")
            };
            assert!(group.group && group.topic.brokers.as_deref() == Some("b:9092"), "{action}");
        }
        for action in ["promote", "discard"] {
            let with_token = [&["shadow", action, "--pipeline", "orders", "--token-file", "t"][..], &group].concat();
            assert!(parse(&with_token).is_err(), "{action}: --group goes through the topic, not a host's token");
        }
    }

    #[test]
    fn default_filters_parse() {
        for directives in ["error", "info,librdkafka=warn,rdkafka=warn"] {
            log_filter(directives);
        }
    }
}
