//! `ferry versions --group`: every live member of a pipeline's consumer group, the
//! version it runs, and how long it has lagged behind the topic's version (and why,
//! as it reports).
//!
//! The group coordinator lists the live members with their `client.id`s; each
//! ferry member writes a report keyed by its consumer's `client.id` when its
//! version changes and withdraws it when it stops cleanly. Joining the two shows
//! only live members: one killed with SIGKILL leaves a stale report behind, but
//! drops out of the group within its session timeout, and with it out of the list.
//! Brokers that do not describe the group (librdkafka's mock does not serve
//! DescribeGroups; the Tansu build the tests use answers without the group) get the
//! reports alone, marked as such.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::catalog::Judge;
use super::publish::catalog;
use super::record::{Manifest, MemberReport, now_unix_ms};
use super::topic::TopicAccess;

/// One row of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The member's `client.id`.
    pub client_id: String,
    /// Its host as the coordinator saw it (`/10.0.0.5`), or from its report.
    pub client_host: String,
    /// How many of the group's members have this client id (workers of one process).
    pub consumers: usize,
    /// What it reported, if it did.
    pub report: Option<MemberReport>,
}

/// What `ferry versions --group` found.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The topic's newest acceptable manifest.
    pub published: Option<Manifest>,
    /// One row per member process.
    pub rows: Vec<Row>,
    /// False when the brokers could not list the group's members: rows are then the
    /// reports alone (which include members killed without a clean stop).
    pub live: bool,
}

/// Joins the group's live members (client id, host) with the reports.
pub fn join(members: &[(String, String)], reports: &BTreeMap<String, MemberReport>) -> Vec<Row> {
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for (client_id, host) in members {
        let row = rows.entry(client_id).or_insert_with(|| Row {
            client_id: client_id.clone(),
            client_host: host.clone(),
            consumers: 0,
            report: reports.get(client_id).cloned(),
        });
        row.consumers += 1;
    }
    rows.into_values().collect()
}

/// Lists `group`'s members running the pipeline of `judge`'s scope, with their versions.
pub fn list(access: &TopicAccess, judge: Judge, group: &str) -> anyhow::Result<Listing> {
    let catalog = catalog(access, judge, false)?;
    let published = catalog.newest().cloned();
    let mut config = ClientConfig::new();
    for (key, value) in &access.kafka {
        config.set(key, value);
    }
    let client: BaseConsumer =
        config.set("bootstrap.servers", &access.brokers).set("group.id", group).create().context("Kafka client")?;
    let described = match client.fetch_group_list(Some(group), Duration::from_secs(10)) {
        Ok(groups) => groups.groups().iter().find(|g| g.name() == group).map(|g| {
            g.members().iter().map(|m| (m.client_id().to_owned(), m.client_host().to_owned())).collect::<Vec<_>>()
        }),
        // librdkafka's mock cluster does not serve DescribeGroups.
        Err(KafkaError::GroupListFetch(RDKafkaErrorCode::UnsupportedFeature)) => None,
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!("failed to list the members of group {group}")));
        }
    };
    Ok(match described {
        Some(members) => Listing { published, rows: join(&members, catalog.members()), live: true },
        // Not described at all (Kafka describes even an empty group): the reports alone.
        None => {
            let rows = catalog
                .members()
                .iter()
                .map(|(client_id, report)| Row {
                    client_id: client_id.clone(),
                    client_host: report.host.clone(),
                    consumers: 1,
                    report: Some(report.clone()),
                })
                .collect();
            Listing { published, rows, live: false }
        }
    })
}

/// The listing as a table.
pub fn table(pipeline: &str, group: &str, listing: &Listing) -> String {
    table_at(pipeline, group, listing, now_unix_ms())
}

/// [`table`] as seen at `now_ms`.
fn table_at(pipeline: &str, group: &str, listing: &Listing, now_ms: u64) -> String {
    let published = listing.published.as_ref();
    let named = published.map_or_else(
        || "none (members run their config's component)".to_owned(),
        |m| format!("{} (sequence {}, published {} ago)", m.digest, m.sequence, ago(now_ms, m.published_at_unix_ms)),
    );
    let mut out = format!("pipeline {pipeline}, group {group}: the components topic names {named}\n");
    if !listing.live {
        out.push_str(
            "note: the brokers did not describe the group's members (DescribeGroups); these are the members' \
             reports, which include members that died without a clean stop\n",
        );
    }
    out.push_str(&format!("{:<56} {:<24} {:>8} {:<16} {}\n", "member (client.id)", "host", "pid", "running", "state"));
    let mut behind = 0;
    for row in &listing.rows {
        let (host, pid, running, state) = match &row.report {
            Some(r) => {
                let state = match published.filter(|p| p.digest != r.digest) {
                    Some(p) => {
                        behind += 1;
                        let why = r.behind.as_deref().map_or_else(
                            || {
                                if r.deployed != r.digest {
                                    format!("switching to {}", short(&r.deployed))
                                } else {
                                    "no reason reported".to_owned()
                                }
                            },
                            str::to_owned,
                        );
                        format!("BEHIND for {}: {why}", ago(now_ms, p.published_at_unix_ms))
                    }
                    None if r.deployed != r.digest && !r.deployed.is_empty() => {
                        format!("switching to {}", short(&r.deployed))
                    }
                    None => "ok".to_owned(),
                };
                let state = if r.shadow.is_empty() { state } else { format!("{state}; shadow {}", short(&r.shadow)) };
                (r.host.clone(), r.pid.to_string(), short(&r.digest).to_owned(), state)
            }
            None => (row.client_host.clone(), "-".to_owned(), "-".to_owned(), "no report".to_owned()),
        };
        let id =
            if row.consumers > 1 { format!("{} (x{})", row.client_id, row.consumers) } else { row.client_id.clone() };
        out.push_str(&format!("{id:<56} {host:<24} {pid:>8} {running:<16} {state}\n"));
    }
    if listing.rows.is_empty() {
        out.push_str("(no members)\n");
    }
    if behind > 0 {
        out.push_str(&format!("{behind} member(s) behind the topic's version\n"));
    }
    out
}

/// `then` as a duration before `now`, for people: `42 s`, `3 min 20 s`, `2 h 5 min`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(16)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_members_are_listed_and_workers_of_a_process_share_a_row() {
        let report = |d: &str| MemberReport {
            digest: d.into(),
            deployed: d.into(),
            host: "h".into(),
            pid: 1,
            since_unix_ms: 0,
            previous: String::new(),
            behind: None,
            shadow: String::new(),
        };
        let reports = BTreeMap::from([("a".to_owned(), report("v1")), ("dead".to_owned(), report("v0"))]);
        let members = [("a", "/1"), ("a", "/1"), ("b", "/2")].map(|(c, h)| (c.to_owned(), h.to_owned()));
        let rows = join(&members, &reports);
        assert_eq!(rows.len(), 2, "the dead member's report is not a member");
        assert_eq!(
            (rows[0].client_id.as_str(), rows[0].consumers, rows[0].report.clone()),
            ("a", 2, Some(report("v1")))
        );
        assert_eq!((rows[1].client_id.as_str(), rows[1].report.clone()), ("b", None));
    }

    #[test]
    fn members_behind_the_topic_show_for_how_long_and_why() {
        use crate::deploy::group::record::Scope;
        let published = Manifest::describe(&Scope::new("e", "p"), 3, b"v2", 1024, "me", "deploy");
        let now = published.published_at_unix_ms + 200_000;
        let report = |d: &str, behind: Option<&str>| MemberReport {
            digest: d.into(),
            deployed: d.into(),
            host: "h".into(),
            pid: 1,
            since_unix_ms: 0,
            previous: String::new(),
            behind: behind.map(str::to_owned),
            shadow: String::new(),
        };
        let rows = vec![
            Row {
                client_id: "a".into(),
                client_host: "/1".into(),
                consumers: 1,
                report: Some(report(&published.digest, None)),
            },
            Row {
                client_id: "b".into(),
                client_host: "/2".into(),
                consumers: 1,
                report: Some(report("0123456789abcdef0123", Some("retrying (attempt 3): the instance pool is full"))),
            },
            Row { client_id: "c".into(), client_host: "/3".into(), consumers: 1, report: None },
        ];
        let listing = Listing { published: Some(published.clone()), rows, live: true };
        let text = table_at("p", "g", &listing, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("sequence 3, published 3 min 20 s ago"), "{text}");
        assert!(lines.iter().any(|l| l.starts_with("a ") && l.ends_with(" ok")), "{text}");
        let b = lines.iter().find(|l| l.starts_with("b ")).unwrap();
        assert!(b.contains("BEHIND for 3 min 20 s: retrying (attempt 3): the instance pool is full"), "{text}");
        assert!(text.contains("no report") && text.contains("1 member(s) behind"), "{text}");
    }
}
