//! What a processor can import, one module per capability (in the manner of Spin's
//! factors): each owns its WIT import name, its host implementation and state, its
//! grant check and its piece of configuration. Adding a capability means adding a
//! module here and a line to [`link`], [`Capability`] and [`classify`].
//!
//! | import | module | granted by |
//! |---|---|---|
//! | `ferry:processor/log` | [`log`] | `allow_log` (stdout and stderr always reach the logs, rate-limited alike) |
//! | `ferry:processor/output` | [`output`] | `output_topics` |
//! | `ferry:processor/settings` | [`settings`] | always (read-only) |
//! | `ferry:processor/headers` | [`headers`] | always (it only asks for data) |
//! | `ferry:processor/state` | [`state`] | a `[pipeline.state]` section (its changelog and limits) |
//! | `wasi:http/outgoing-handler` | [`http`] | a `[pipeline.http]` section (the hosts it may call, its budgets) |
//! | `wasi:*` | [`wasi`] | linked with nothing behind it: see [`wasi::disposition`] |

pub mod headers;
pub mod http;
pub mod log;
pub mod output;
pub mod settings;
pub mod state;
pub mod wasi;

use std::fmt;

use wasmtime::component::Linker;

use super::guest_state::GuestState;

/// The package every ferry import and export belongs to.
pub const PACKAGE: &str = "ferry:processor";
/// The version of the contract this host implements.
pub const VERSION: &str = "0.2.0";
/// The export a processor must provide.
pub const HANDLER_EXPORT: &str = "ferry:processor/handler@0.2.0";
/// The type-only interface every processor imports.
const TYPES_IMPORT: &str = "ferry:processor/types@0.2.0";

/// Something a component imports from the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// `ferry:processor/log`: write to the host's logs.
    Log,
    /// `ferry:processor/output`: produce records to granted topics.
    Output,
    /// `ferry:processor/settings`: read the pipeline's settings.
    Settings,
    /// `ferry:processor/headers`: receive record headers.
    Headers,
    /// `ferry:processor/state`: keyed state of the batch's input partition.
    State,
    /// `wasi:http/outgoing-handler` (and its types): requests to granted hosts.
    Http,
    /// A WASI interface, linked with nothing behind it.
    Wasi(String),
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Log => f.write_str(log::IMPORT),
            Capability::Output => f.write_str(output::IMPORT),
            Capability::Settings => f.write_str(settings::IMPORT),
            Capability::Headers => f.write_str(headers::IMPORT),
            Capability::State => f.write_str(state::IMPORT),
            Capability::Http => f.write_str(http::IMPORT),
            Capability::Wasi(name) => f.write_str(name),
        }
    }
}

impl Capability {
    /// What this host gives the import, for `ferry check`.
    pub fn disposition(&self) -> Disposition {
        match self {
            Capability::Log => Disposition::Linked("to the host's logs, rate-limited (needs allow_log)"),
            Capability::Output => Disposition::Linked("produces to the pipeline's output_topics (needs a grant)"),
            Capability::Settings => Disposition::Linked("the pipeline's [pipeline.settings], read-only"),
            Capability::Headers => Disposition::Linked("batches carry record headers"),
            Capability::State => Disposition::Linked(
                "keyed state of the batch's input partition, kept in the pipeline's changelog topic (needs [pipeline.state])",
            ),
            Capability::Http => Disposition::Linked(
                "requests to the hosts the pipeline's [pipeline.http] allows, within its budgets (needs [pipeline.http])",
            ),
            Capability::Wasi(name) => wasi::disposition(name).expect("only known WASI imports are capabilities"),
        }
    }
}

/// What an import gets on this host. (Imports ferry does not provide at all are
/// refused when the component is loaded.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Linked for real.
    Linked(&'static str),
    /// Linked with nothing behind it: calls return without effect or fail cleanly,
    /// and waits end at the batch deadline.
    Inert {
        /// What a call does here.
        what: &'static str,
        /// Whether every meaningful use fails here (worth a warning: a processor
        /// that depends on it cannot work).
        only_fails: bool,
    },
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disposition::Linked(what) => write!(f, "linked: {what}"),
            Disposition::Inert { what, .. } => write!(f, "inert: {what}"),
        }
    }
}

/// How a component import name is served, or `None` when ferry does not provide it.
pub fn classify(import: &str) -> Option<Imported> {
    Some(match import {
        log::IMPORT => Imported::Capability(Capability::Log),
        output::IMPORT => Imported::Capability(Capability::Output),
        settings::IMPORT => Imported::Capability(Capability::Settings),
        headers::IMPORT => Imported::Capability(Capability::Headers),
        state::IMPORT => Imported::Capability(Capability::State),
        TYPES_IMPORT => Imported::Types,
        http if http::is_import(http) => Imported::Capability(Capability::Http),
        wasi if wasi::disposition(wasi).is_some() => Imported::Capability(Capability::Wasi(wasi.to_owned())),
        _ => return None,
    })
}

/// A recognised import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// A capability.
    Capability(Capability),
    /// The shared type definitions (nothing to grant).
    Types,
}

/// What a pipeline allows its processor to do beyond pure computation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Topics the processor may emit output records to. Empty: no `output` capability.
    pub output_topics: std::collections::BTreeSet<String>,
    /// Whether the processor may log through the `log` capability.
    pub log: bool,
    /// Whether the pipeline keeps state for its processor (the `state` capability).
    pub state: bool,
    /// Where the processor may send HTTP requests, and its budgets (the `http`
    /// capability). `None`: no network at all.
    pub http: Option<std::sync::Arc<http::HttpGrant>>,
}

/// Why a capability is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotGranted {
    /// The capability.
    pub capability: Capability,
    /// How to grant it.
    pub hint: &'static str,
}

/// Refuses capabilities the pipeline did not grant, naming the config field.
pub fn check_grants(capabilities: &[Capability], grants: &Grants) -> Result<(), NotGranted> {
    for capability in capabilities {
        let refused = match capability {
            Capability::Output => output::check_grant(grants),
            Capability::Log => log::check_grant(grants),
            Capability::State => state::check_grant(grants),
            Capability::Http => http::check_grant(grants),
            _ => None,
        };
        if let Some(hint) = refused {
            return Err(NotGranted { capability: capability.clone(), hint });
        }
    }
    Ok(())
}

/// Links every capability (and WASI) into `linker`.
pub(crate) fn link(linker: &mut Linker<GuestState>) -> anyhow::Result<()> {
    wasi::link(linker)?;
    use super::bindings::ferry::processor as wit;
    use wasmtime::component::HasSelf;
    wit::types::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    wit::log::add_to_linker::<GuestState, HasSelf<log::LogState>>(linker, |s| &mut s.log)?;
    output::link(linker)?;
    wit::settings::add_to_linker::<GuestState, HasSelf<settings::SettingsState>>(linker, |s| &mut s.settings)?;
    wit::headers::add_to_linker::<GuestState, HasSelf<headers::HeadersState>>(linker, |s| &mut s.headers)?;
    wit::state::add_to_linker::<GuestState, HasSelf<state::StateState>>(linker, |s| &mut s.state)?;
    http::link(linker)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::LoadError;

    /// A component that imports wasi:http is refused without the section, which the
    /// refusal names; with it, it is granted.
    #[test]
    fn http_needs_its_section() {
        for import in ["wasi:http/outgoing-handler@0.2.12", "wasi:http/types@0.2.0"] {
            assert_eq!(classify(import), Some(Imported::Capability(Capability::Http)), "{import}");
        }
        assert_eq!(classify("wasi:http/incoming-handler@0.2.0"), None, "serving HTTP is not a capability");
        let refused = check_grants(&[Capability::Http], &Grants::default()).unwrap_err();
        let words = LoadError::NotGranted(refused).to_string();
        assert!(words.contains("`wasi:http/outgoing-handler`") && words.contains("`[pipeline.http]`"), "{words}");
        let grant = http::HttpGrant { allow: Vec::new(), limits: Default::default(), ca_file: None };
        let granted = Grants { http: Some(std::sync::Arc::new(grant)), ..Grants::default() };
        assert_eq!(check_grants(&[Capability::Http], &granted), Ok(()));
    }

    /// `ferry_sdk::testing` refuses a processor that uses an ungranted capability
    /// with the host's own words: these are they.
    #[test]
    fn the_sdk_harness_refuses_with_the_hosts_words() {
        let no_output = Grants { output_topics: Default::default(), log: true, state: true, http: None };
        let no_log = Grants { output_topics: ["out".to_owned()].into(), log: false, state: true, http: None };
        let no_state = Grants { output_topics: ["out".to_owned()].into(), log: true, state: false, http: None };
        for (capability, grants, name) in [
            (Capability::Output, no_output, "output"),
            (Capability::Log, no_log, "log"),
            (Capability::State, no_state, "state"),
        ] {
            let refused = check_grants(&[capability], &grants).unwrap_err();
            assert_eq!(LoadError::NotGranted(refused).to_string(), ferry_sdk::testing::host_refusal(name));
        }
    }
}
