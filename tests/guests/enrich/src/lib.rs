//! Fetches the URL each record's value names and emits what came back to `out`,
//! keyed by the URL: `<status> <body>` for a response, `error <kind>` for a request
//! that got none (the record still ends processed, so the test sees every outcome).
//! A value `burst <n> <url>` sends `n` requests to `url` at once and emits how many
//! got a response and how many each kind of error. A value `retry <url>` retries
//! the record (`.transient()`) until `url` answers.

use std::collections::BTreeMap;

use ferry_sdk::http::{self, HttpErrorKind, Request};
use ferry_sdk::{Context, Error, Processor, Record, ResultExt};

/// See the crate docs.
#[derive(Debug, Default)]
pub struct Enrich;

impl Processor for Enrich {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let value = std::str::from_utf8(record.value().unwrap_or_default()).map_err(|_| Error::reject("not UTF-8"))?;
        let answer = if let Some(burst) = value.strip_prefix("burst ") {
            burst_of(burst)?
        } else if let Some(url) = value.strip_prefix("retry ") {
            // No answer: the record is tried again with the pipeline's backoff.
            let response = http::get(url).transient()?;
            format!("{} {}", response.status(), String::from_utf8_lossy(response.body()))
        } else {
            match http::get(value) {
                Ok(response) => format!("{} {}", response.status(), String::from_utf8_lossy(response.body())),
                Err(e) => format!("error {:?}", e.kind()),
            }
        };
        ctx.emit_kv("out", value, answer)?;
        Ok(())
    }
}

/// `<n> <url>`: sends `n` GETs of `url` at once.
fn burst_of(burst: &str) -> Result<String, Error> {
    let (n, url) = burst.split_once(' ').ok_or_else(|| Error::reject("burst <n> <url>"))?;
    let n: usize = n.parse().map_err(|_| Error::reject("burst <n> <url>"))?;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for answer in http::send_all((0..n).map(|i| Request::get(format!("{url}/{i}"))).collect()) {
        let kind = match answer {
            Ok(response) => format!("{}", response.status()),
            Err(e) if e.kind() == HttpErrorKind::Budget => "budget".to_owned(),
            Err(e) => format!("{:?}", e.kind()),
        };
        *tally.entry(kind).or_default() += 1;
    }
    Ok(tally.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" "))
}

ferry_sdk::export_processor!(Enrich);
