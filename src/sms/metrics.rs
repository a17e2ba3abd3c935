//! Counters of the message service for `/metrics` (Prometheus text format): process-wide
//! atomics, bumped by [`super::service`], rendered by the dashboard's metrics handler.

use std::sync::atomic::{AtomicU64, Ordering};

/// SMS stored (after reassembly).
pub static RECEIVED: AtomicU64 = AtomicU64::new(0);
/// SMS parts the network accepted.
pub static PARTS_SENT: AtomicU64 = AtomicU64::new(0);
/// Send attempts that failed.
pub static SEND_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Status reports that said delivered.
pub static DELIVERY_REPORTS: AtomicU64 = AtomicU64::new(0);
/// Messages a phone took (MESSAGE answered 2xx).
pub static DELIVERED_TO_PHONES: AtomicU64 = AtomicU64::new(0);
/// MESSAGEs phones sent.
pub static FROM_PHONES: AtomicU64 = AtomicU64::new(0);
/// USSD requests.
pub static USSD: AtomicU64 = AtomicU64::new(0);
/// USSD messages the network sent on its own.
pub static USSD_NETWORK: AtomicU64 = AtomicU64::new(0);
/// Received SMS mailed.
pub static MAILED: AtomicU64 = AtomicU64::new(0);
/// Attempts to mail an SMS that failed.
pub static MAIL_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Adds one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The counters in Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    for (name, help, c) in [
        (
            "pasarela_sms_received_total",
            "SMS received and stored",
            &RECEIVED,
        ),
        (
            "pasarela_sms_parts_sent_total",
            "SMS parts accepted by the network",
            &PARTS_SENT,
        ),
        (
            "pasarela_sms_send_failures_total",
            "SMS send attempts that failed",
            &SEND_FAILURES,
        ),
        (
            "pasarela_sms_delivery_reports_total",
            "status reports saying delivered",
            &DELIVERY_REPORTS,
        ),
        (
            "pasarela_messages_delivered_to_phones_total",
            "messages phones took",
            &DELIVERED_TO_PHONES,
        ),
        (
            "pasarela_messages_from_phones_total",
            "MESSAGE requests phones sent",
            &FROM_PHONES,
        ),
        ("pasarela_ussd_requests_total", "USSD requests", &USSD),
        (
            "pasarela_ussd_network_total",
            "USSD messages sent by the network on its own",
            &USSD_NETWORK,
        ),
        ("pasarela_sms_mailed_total", "received SMS mailed", &MAILED),
        (
            "pasarela_sms_mail_failures_total",
            "attempts to mail an SMS that failed",
            &MAIL_FAILURES,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            c.load(Ordering::Relaxed)
        ));
    }
    out
}
