//! The seed scenario: turn orders into sales-agent commissions.
//!
//! Input values are JSON orders:
//!
//! ```json
//! {"id":"o-1","agent":"alice","amount_cents":12345}
//! ```
//!
//! For each order the processor emits a commission of 5 % (rounded half up, in cents)
//! to the topic [`OUTPUT_TOPIC`], keyed by agent:
//!
//! ```json
//! {"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}
//! ```
//!
//! A record that can never become a commission (no value, malformed JSON, a missing
//! field, a negative amount) is rejected, and so is one whose commission the host
//! refused to take (a topic the pipeline does not grant will not be granted on the
//! next attempt either). The output topic can be changed with the pipeline setting
//! `output_topic`.

use ferry_sdk::{Context, Error, Processor, Record, Settings};
use serde::{Deserialize, Serialize};

/// Where commissions go.
pub const OUTPUT_TOPIC: &str = "commissions";

/// Commission rate in percent.
pub const COMMISSION_PERCENT: i64 = 5;

/// An order as read from the input topic. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: String,
    /// The sales agent the commission is for.
    pub agent: String,
    /// Order amount in cents.
    pub amount_cents: i64,
}

/// A commission as written to [`OUTPUT_TOPIC`].
#[derive(Debug, Serialize)]
pub struct Commission<'a> {
    /// The order's id.
    pub order_id: &'a str,
    /// The sales agent.
    pub agent: &'a str,
    /// The order amount in cents.
    pub amount_cents: i64,
    /// The commission in cents.
    pub commission_cents: i64,
}

/// `amount_cents` × 5 %, rounded half up, for a non-negative amount.
pub fn commission_cents(amount_cents: i64) -> i64 {
    debug_assert!(amount_cents >= 0);
    let cents = (i128::from(amount_cents) * i128::from(COMMISSION_PERCENT) + 50) / 100;
    // 5 % of an i64 always fits an i64.
    i64::try_from(cents).expect("commission fits i64")
}

/// Parses and checks an order.
pub fn parse_order(value: Option<&[u8]>) -> Result<Order, String> {
    let value = value.ok_or("record has no value")?;
    let order: Order = serde_json::from_slice(value).map_err(|e| format!("malformed order: {e}"))?;
    if order.amount_cents < 0 {
        return Err(format!("order {} has a negative amount_cents ({})", order.id, order.amount_cents));
    }
    Ok(order)
}

/// Turns orders into commissions.
#[derive(Debug)]
pub struct Orders {
    output_topic: String,
}

impl Default for Orders {
    fn default() -> Self {
        Orders { output_topic: OUTPUT_TOPIC.to_owned() }
    }
}

impl Processor for Orders {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        if let Some(topic) = settings.get("output_topic") {
            self.output_topic = topic.to_owned();
        }
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let order = parse_order(record.value()).map_err(Error::reject)?;
        let commission = Commission {
            order_id: &order.id,
            agent: &order.agent,
            amount_cents: order.amount_cents,
            commission_cents: commission_cents(order.amount_cents),
        };
        let value = serde_json::to_vec(&commission)?;
        ctx.emit_kv(&self.output_topic, &order.agent, value)?;
        Ok(())
    }
}

ferry_sdk::export_processor!(Orders);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::Outcome;
    use ferry_sdk::testing::{Harness, TestBatch};

    /// The host's limits and this example's grant, as in `examples/ferry.toml`.
    fn host() -> Harness {
        Harness::new().allow_topic(OUTPUT_TOPIC)
    }

    fn reason(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Reject(reason) => reason,
            other => panic!("expected a reject, got {other:?}"),
        }
    }

    #[test]
    fn commission_rounds_half_up() {
        assert_eq!(commission_cents(0), 0);
        assert_eq!(commission_cents(9), 0); // 0.45
        assert_eq!(commission_cents(10), 1); // 0.5
        assert_eq!(commission_cents(29), 1); // 1.45
        assert_eq!(commission_cents(30), 2); // 1.5
        assert_eq!(commission_cents(12345), 617); // 617.25
        assert_eq!(commission_cents(12350), 618); // 617.5
        assert_eq!(commission_cents(i64::MAX), 461_168_601_842_738_790);
    }

    #[test]
    fn seed_order_becomes_a_commission() {
        let batch = TestBatch::new("orders", 0).record("o-1", r#"{"id":"o-1","agent":"alice","amount_cents":12345}"#);
        let run = host().run(&mut Orders::default(), &batch);
        assert_eq!(run.outcomes, [Outcome::Processed]);
        assert_eq!(run.emitted.len(), 1);
        let out = &run.emitted[0];
        assert_eq!(out.topic, "commissions");
        assert_eq!(out.key_str(), Some("alice"));
        assert_eq!(
            out.value_str(),
            Some(r#"{"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}"#)
        );
        assert!(out.headers.is_empty());
        assert!(run.logs.is_empty());
    }

    #[test]
    fn extra_fields_are_ignored() {
        let batch =
            TestBatch::new("orders", 0).value_only(r#"{"amount_cents":100,"agent":"bob","id":"o-2","currency":"EUR"}"#);
        let run = host().run(&mut Orders::default(), &batch);
        assert!(run.all_processed());
        assert_eq!(
            run.emitted[0].value_str(),
            Some(r#"{"order_id":"o-2","agent":"bob","amount_cents":100,"commission_cents":5}"#)
        );
    }

    #[test]
    fn bad_orders_are_rejected_and_the_rest_go_through() {
        let batch = TestBatch::new("orders", 3)
            .at_offset(40)
            .value_only("not json")
            .value_only(r#"{"id":"o-3","amount_cents":1}"#)
            .value_only(r#"{"id":"o-4","agent":"carol","amount_cents":-5}"#)
            .value_only(r#"{"id":"o-5","agent":"dave","amount_cents":"12"}"#)
            .tombstone("o-6")
            .value_only(r#"{"id":"o-7","agent":"erin","amount_cents":200}"#);
        let run = host().run(&mut Orders::default(), &batch);
        assert_eq!(run.outcomes.len(), 6);
        assert!(reason(&run.outcomes[0]).starts_with("malformed order"));
        assert!(reason(&run.outcomes[1]).contains("missing field `agent`"));
        assert!(reason(&run.outcomes[2]).contains("negative amount_cents (-5)"));
        assert!(reason(&run.outcomes[3]).starts_with("malformed order"));
        assert_eq!(reason(&run.outcomes[4]), "record has no value");
        assert_eq!(run.outcomes[5], Outcome::Processed);
        assert_eq!(run.emitted.len(), 1);
        assert_eq!(run.emitted[0].key_str(), Some("erin"));
    }

    #[test]
    fn refused_emit_is_rejected() {
        let batch = TestBatch::new("orders", 0).value_only(r#"{"id":"o-1","agent":"alice","amount_cents":12345}"#);
        let run = Harness::new().deny_all_topics().run(&mut Orders::default(), &batch);
        assert!(reason(&run.outcomes[0]).contains("\"commissions\" is not allowed"), "{:?}", run.outcomes);
        assert!(run.emitted.is_empty());

        let run = host().max_emits(1).run(
            &mut Orders::default(),
            &TestBatch::new("orders", 0)
                .value_only(r#"{"id":"a","agent":"x","amount_cents":1}"#)
                .value_only(r#"{"id":"b","agent":"y","amount_cents":1}"#),
        );
        assert_eq!(run.outcomes[0], Outcome::Processed);
        assert!(reason(&run.outcomes[1]).contains("more records than allowed"));
    }

    #[test]
    fn the_output_topic_is_a_setting() {
        let harness = Harness::new().allow_topic("payouts").setting("output_topic", "payouts");
        let mut orders = harness.processor::<Orders>().unwrap();
        let batch = TestBatch::new("orders", 0).value_only(r#"{"id":"o-1","agent":"alice","amount_cents":100}"#);
        let run = harness.run(&mut orders, &batch);
        assert!(run.all_processed(), "{:?}", run.outcomes);
        assert_eq!(run.emitted[0].topic, "payouts");
    }
}
