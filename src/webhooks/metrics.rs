//! Metrics of the webhook queue. Labels are account and team names from config, and fixed
//! reasons: never a scanRef, a clientId or anything of a body.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct WebhookMetrics {
    /// `idenfy_gateway_webhooks_received_total{account}`: acknowledged, duplicates included.
    pub received: IntCounterVec,
    /// `idenfy_gateway_webhooks_duplicates_total{account}`
    pub duplicates: IntCounterVec,
    /// `idenfy_gateway_webhooks_refused_total{reason}`
    pub refused: IntCounterVec,
    /// `idenfy_gateway_webhooks_delivered_total{team}`
    pub delivered: IntCounterVec,
    /// `idenfy_gateway_webhooks_retries_total{team}`: failed attempts that will be tried again.
    pub retries: IntCounterVec,
    /// `idenfy_gateway_webhooks_dead_total{team,reason}`
    pub dead: IntCounterVec,
    /// `idenfy_gateway_webhooks_queue_depth`
    pub depth: IntGauge,
    /// `idenfy_gateway_webhooks_oldest_undelivered_seconds`
    pub oldest: IntGauge,
    /// `idenfy_gateway_webhooks_ack_seconds`: receipt to acknowledgement (body read, signature
    /// checked, stored durably).
    pub ack: Histogram,
}

/// Acknowledgement buckets: an fsync is a millisecond or a few; iDenfy gives up at 10 s.
const ACK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

impl WebhookMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let m = WebhookMetrics {
            received: counter(
                "idenfy_gateway_webhooks_received_total",
                "Webhooks from iDenfy acknowledged (signature good, stored or a duplicate)",
                &["account"],
            )?,
            duplicates: counter(
                "idenfy_gateway_webhooks_duplicates_total",
                "Redeliveries of a webhook already received: acknowledged, not queued again",
                &["account"],
            )?,
            refused: counter(
                "idenfy_gateway_webhooks_refused_total",
                "Webhook requests refused and stored nowhere, by reason",
                &["reason"],
            )?,
            delivered: counter(
                "idenfy_gateway_webhooks_delivered_total",
                "Webhooks delivered to a team's endpoint (answered 2xx)",
                &["team"],
            )?,
            retries: counter(
                "idenfy_gateway_webhooks_retries_total",
                "Failed delivery attempts that will be tried again",
                &["team"],
            )?,
            dead: counter(
                "idenfy_gateway_webhooks_dead_total",
                "Deliveries given up and put in dead letters, by reason",
                &["team", "reason"],
            )?,
            depth: IntGauge::new(
                "idenfy_gateway_webhooks_queue_depth",
                "Webhooks waiting for delivery",
            )?,
            oldest: IntGauge::new(
                "idenfy_gateway_webhooks_oldest_undelivered_seconds",
                "Age of the oldest webhook waiting for delivery (0: none)",
            )?,
            ack: Histogram::with_opts(
                HistogramOpts::new(
                    "idenfy_gateway_webhooks_ack_seconds",
                    "Time from a webhook's arrival to its acknowledgement",
                )
                .buckets(ACK_BUCKETS.to_vec()),
            )?,
        };
        registry.register(Box::new(m.received.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.dead.clone()))?;
        registry.register(Box::new(m.depth.clone()))?;
        registry.register(Box::new(m.oldest.clone()))?;
        registry.register(Box::new(m.ack.clone()))?;
        Ok(m)
    }
}
