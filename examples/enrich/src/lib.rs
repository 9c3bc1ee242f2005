//! Orders enriched with their customer, looked up over HTTP.
//!
//! Input values are JSON orders naming a customer:
//!
//! ```json
//! {"id":"o-1","customer":"c-7","amount_cents":12345}
//! ```
//!
//! For each order the processor GETs `<customers_url>/customers/<customer>` (the
//! setting `customers_url`; the pipeline's `[pipeline.http]` must allow it) and
//! emits the order with the customer's JSON attached to `enriched-orders` (the
//! setting `output_topic`), keyed by customer:
//!
//! ```json
//! {"customer":{"id":"c-7","name":"Ada","tier":"gold"},"order":{"amount_cents":12345,"customer":"c-7","id":"o-1"}}
//! ```
//!
//! A batch's lookups go out at once ([`http::send_all`]), within the pipeline's
//! `concurrent_requests`. Each record ends on its own answer:
//!
//! | answer | outcome |
//! | --- | --- |
//! | 200 with a JSON body | processed, one record emitted |
//! | 404 | reject: there is no such customer |
//! | 429 or 5xx, a timeout, a failed connection, over the batch's budget | retry, with the pipeline's backoff |
//! | a refused URL, any other status, a body that is not JSON | reject |
//! | an order that is not JSON or names no customer | reject, no request |

use ferry_sdk::http::{self, HttpError, HttpErrorKind, Request, Response};
use ferry_sdk::{Batch, Context, Error, Outcome, Processor, Record, Settings};
use serde::Deserialize;
use serde_json::Value;

/// Where enriched orders go unless the setting `output_topic` says otherwise.
pub const OUTPUT_TOPIC: &str = "enriched-orders";

/// The customers service unless the setting `customers_url` says otherwise.
pub const CUSTOMERS_URL: &str = "http://127.0.0.1:8089";

/// The part of an order the lookup needs; the rest is kept as it came.
#[derive(Debug, Deserialize)]
struct OrderRef {
    customer: String,
}

/// Attaches each order's customer.
#[derive(Debug)]
pub struct Enrich {
    customers_url: String,
    output_topic: String,
}

impl Default for Enrich {
    fn default() -> Self {
        Enrich { customers_url: CUSTOMERS_URL.to_owned(), output_topic: OUTPUT_TOPIC.to_owned() }
    }
}

/// The order as JSON, and the lookup of its customer.
fn lookup(customers_url: &str, value: Option<&[u8]>) -> Result<(Value, String, Request), Error> {
    let value = value.ok_or_else(|| Error::reject("the record has no value"))?;
    let order: Value = serde_json::from_slice(value).map_err(|e| Error::reject(format!("malformed order: {e}")))?;
    let OrderRef { customer } =
        OrderRef::deserialize(&order).map_err(|e| Error::reject(format!("the order names no customer: {e}")))?;
    if customer.is_empty() || !customer.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Error::reject(format!("`{customer}` is not a customer id")));
    }
    let request = Request::get(format!("{customers_url}/customers/{customer}")).header("accept", "application/json");
    Ok((order, customer, request))
}

/// What the answer to a lookup means for its record: the customer, or why not.
pub fn customer_of(customer: &str, answer: Result<Response, HttpError>) -> Result<Value, Error> {
    let response = answer.map_err(|e| match e.kind() {
        HttpErrorKind::Timeout | HttpErrorKind::Failed | HttpErrorKind::Budget => Error::retry(e.to_string()),
        HttpErrorKind::Refused | HttpErrorKind::Invalid => Error::reject(e.to_string()),
    })?;
    match response.status() {
        200 => serde_json::from_slice(response.body())
            .map_err(|e| Error::reject(format!("customer {customer}: the service's answer is not JSON: {e}"))),
        404 => Err(Error::reject(format!("no customer {customer}"))),
        status @ (429 | 500..=599) => Err(Error::retry(format!("customer {customer}: the service answered {status}"))),
        status => Err(Error::reject(format!("customer {customer}: the service answered {status}"))),
    }
}

impl Processor for Enrich {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        if let Some(url) = settings.get("customers_url") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("customers_url `{url}` is not an http:// or https:// URL"));
            }
            self.customers_url = url.trim_end_matches('/').to_owned();
        }
        if let Some(topic) = settings.get("output_topic") {
            self.output_topic = topic.to_owned();
        }
        Ok(())
    }

    /// One record alone: the same lookup, sent by itself.
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let (order, customer, request) = lookup(&self.customers_url, record.value())?;
        let found = customer_of(&customer, request.send())?;
        self.emit(ctx, order, &customer, found)
    }

    /// The batch's lookups at once; each record ends on its own answer.
    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<Outcome> {
        let prepared: Vec<Result<(Value, String, Request), Error>> =
            batch.iter().map(|record| lookup(&self.customers_url, record.value())).collect();
        let requests: Vec<Request> = prepared.iter().filter_map(|p| p.as_ref().ok()).map(|p| p.2.clone()).collect();
        let mut answers = http::send_all(requests).into_iter();
        batch
            .iter()
            .zip(prepared)
            .map(|(record, prepared)| {
                ctx.for_record(&record, |ctx| {
                    let (order, customer, _) = prepared?;
                    let answer = answers.next().expect("one answer per request");
                    let found = customer_of(&customer, answer)?;
                    self.emit(ctx, order, &customer, found)
                })
                .into()
            })
            .collect()
    }
}

impl Enrich {
    fn emit(&self, ctx: &mut Context, order: Value, customer: &str, found: Value) -> Result<(), Error> {
        let value = serde_json::to_vec(&serde_json::json!({ "order": order, "customer": found }))?;
        // A refused emit will be refused again: reject.
        ctx.emit_kv(&self.output_topic, customer, value)?;
        Ok(())
    }
}

ferry_sdk::export_processor!(Enrich);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::testing::{Harness, TestBatch};
    use std::cell::Cell;
    use std::rc::Rc;

    /// The customers service of these tests: `c-7` exists, `c-busy` is overloaded,
    /// `c-slow` never answers in time, anything else is unknown.
    fn customers(request: &Request) -> Result<Response, HttpError> {
        match request.path() {
            Some("/customers/c-7") => Ok(Response::new(200, r#"{"id":"c-7","name":"Ada","tier":"gold"}"#)),
            Some("/customers/c-busy") => Ok(Response::new(503, "busy")),
            Some("/customers/c-slow") => Err(HttpError::new(HttpErrorKind::Timeout, "HttpResponseTimeout")),
            _ => Ok(Response::new(404, "")),
        }
    }

    fn host() -> Harness {
        Harness::new().allow_topic(OUTPUT_TOPIC).allow_http(CUSTOMERS_URL).http_service(customers)
    }

    fn order(id: &str, customer: &str) -> String {
        format!(r#"{{"id":"{id}","customer":"{customer}","amount_cents":100}}"#)
    }

    #[test]
    fn an_order_gets_its_customer_attached() {
        let run = host().run(&mut Enrich::default(), &TestBatch::new("orders", 0).record("o-1", order("o-1", "c-7")));
        run.assert_all_processed();
        assert_eq!(run.emitted.len(), 1);
        assert_eq!(run.emitted[0].key_str(), Some("c-7"));
        assert_eq!(
            run.emitted[0].value_str(),
            Some(
                r#"{"customer":{"id":"c-7","name":"Ada","tier":"gold"},"order":{"amount_cents":100,"customer":"c-7","id":"o-1"}}"#
            )
        );
    }

    #[test]
    fn each_record_ends_on_its_own_answer() {
        let batch = TestBatch::new("orders", 0)
            .value_only(order("o-1", "c-7"))
            .value_only(order("o-2", "c-busy"))
            .value_only(order("o-3", "c-slow"))
            .value_only(order("o-4", "c-unknown"))
            .value_only("not json")
            .value_only(r#"{"id":"o-6","customer":"../admin"}"#)
            .value_only(order("o-7", "c-7"));
        let kinds = |run: &ferry_sdk::testing::Run| -> Vec<&'static str> {
            run.outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Processed => "processed",
                    Outcome::Retry(_) => "retry",
                    Outcome::Reject(_) => "reject",
                })
                .collect()
        };
        let expected = ["processed", "retry", "retry", "reject", "reject", "reject", "processed"];
        let batched = host().run(&mut Enrich::default(), &batch);
        assert_eq!(kinds(&batched), expected);
        let sources: Vec<Option<i64>> = batched.emitted.iter().map(|e| e.source).collect();
        assert_eq!(sources, [Some(0), Some(6)]);
        // One record at a time ends the same way.
        let each = host().run_each(&mut Enrich::default(), &batch);
        assert_eq!(kinds(&each), expected);
        assert_eq!(each.emitted, batched.emitted);
    }

    #[test]
    fn a_transient_failure_is_retried_until_the_service_answers() {
        // The service fails its first two answers, then recovers: the record is
        // retried (as the host would, with its backoff) and then processed.
        let calls = Rc::new(Cell::new(0));
        let seen = calls.clone();
        let harness = Harness::new().allow_topic(OUTPUT_TOPIC).allow_http(CUSTOMERS_URL).http_service(move |request| {
            seen.set(seen.get() + 1);
            match seen.get() {
                1 => Err(HttpError::new(HttpErrorKind::Failed, "connection refused")),
                2 => Ok(Response::new(500, "")),
                _ => customers(request),
            }
        });
        let batch = TestBatch::new("orders", 0).value_only(order("o-1", "c-7"));
        let mut enrich = harness.processor::<Enrich>().unwrap();
        let outcomes: Vec<Outcome> = (0..3).map(|_| harness.run(&mut enrich, &batch).outcomes[0].clone()).collect();
        assert!(matches!(&outcomes[0], Outcome::Retry(r) if r.contains("connection refused")), "{outcomes:?}");
        assert!(matches!(&outcomes[1], Outcome::Retry(r) if r.contains("answered 500")), "{outcomes:?}");
        assert_eq!(outcomes[2], Outcome::Processed);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn a_service_the_pipeline_does_not_grant_is_refused() {
        let harness = Harness::new()
            .allow_topic(OUTPUT_TOPIC)
            .allow_http("http://127.0.0.1:9999")
            .http_service(customers)
            .setting("customers_url", "http://127.0.0.1:8089/");
        let run = harness.run(
            &mut harness.processor::<Enrich>().unwrap(),
            &TestBatch::new("orders", 0).value_only(order("o-1", "c-7")),
        );
        assert!(matches!(&run.outcomes[0], Outcome::Reject(r) if r.contains("refused")), "{:?}", run.outcomes);
        assert!(run.emitted.is_empty());
        assert!(Harness::new().setting("customers_url", "ftp://x").processor::<Enrich>().is_err());
    }

    #[test]
    fn the_example_config_grants_what_it_calls() {
        let harness = Harness::from_config("../ferry.toml", "enrich").unwrap().http_service(customers);
        let mut enrich = harness.processor::<Enrich>().unwrap();
        harness.run(&mut enrich, &TestBatch::new("orders", 0).value_only(order("o-1", "c-7"))).assert_all_processed();
    }
}
