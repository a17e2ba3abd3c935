//! The call detail record: one row per call attempt, answered or not, and how it is made from
//! what call control and the router leave behind.
//!
//! Conventions:
//!
//! - Times are UTC unix milliseconds. Call control measures time with [`Instant`]s; the
//!   constructors convert them through an anchor (`now`, `now_unix_ms`) read once by the caller,
//!   so this module reads no clock.
//! - `duration_s` is the whole call (INVITE to end) and `billable_s` the talk time (answer to
//!   end), both in whole seconds rounded up from milliseconds: a started second counts.
//! - Money (`cost_minor`, `reference_cost_minor`, `savings_minor`) is in integer minor units of
//!   `currency`; it is filled in by [`crate::cdr::rating`], `None` until then or when no rate
//!   applies.
//! - The Q.850 cause follows RFC 3398 §8.2.6.1 (see [`q850_cause`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use crate::b2bua::CallSummary;
use crate::routing::router::{AttemptKind, Decision, Route};
use crate::routing::{Category, Dialled, NumberingPlan};
use crate::store::ExtensionRow;

/// Defines a field-less enum stored as lower-case text (its SQL mapping is
/// `crate::store::records::columns`).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and displayed) text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("not a ", stringify!($name), ": {:?}"),
                        other
                    )),
                }
            }
        }
    };
}

text_enum! {
    /// Which way a call went, seen from the office.
    Direction {
        /// An extension called outside the office.
        Outgoing => "outgoing",
        /// Somebody outside called the office.
        Incoming => "incoming",
        /// An extension called another.
        Internal => "internal",
    }
}

text_enum! {
    /// What kind of destination the call was routed to.
    RouteKind {
        /// An extension of the office.
        Extension => "extension",
        /// A SIP destination outside the office (found through ENUM or DUNDi): PSTN bypassed.
        Sip => "sip",
        /// A PSTN trunk or line.
        Pstn => "pstn",
        /// Nowhere: refused before any destination was tried.
        NoRoute => "none",
    }
}

text_enum! {
    /// How a call ended.
    Disposition {
        /// Somebody answered.
        Answered => "answered",
        /// The callee was busy (486, 600).
        Busy => "busy",
        /// Nobody answered in time, or the callee was unreachable (480, 408).
        NoAnswer => "no_answer",
        /// Refused or failed for any other reason.
        Failed => "failed",
        /// The caller hung up before an answer (487).
        Cancelled => "cancelled",
    }
}

impl Disposition {
    /// The disposition of a call that ended with final status `status`.
    pub fn from_status(status: u16) -> Disposition {
        match status {
            200..=299 => Disposition::Answered,
            486 | 600 => Disposition::Busy,
            480 | 408 => Disposition::NoAnswer,
            487 => Disposition::Cancelled,
            _ => Disposition::Failed,
        }
    }

    /// Reads call control's disposition word (`"no answer"`), falling back on the status.
    fn from_summary(word: &str, status: u16) -> Disposition {
        match word {
            "answered" => Disposition::Answered,
            "busy" => Disposition::Busy,
            "no answer" | "no_answer" => Disposition::NoAnswer,
            "cancelled" => Disposition::Cancelled,
            "failed" => Disposition::Failed,
            _ => Disposition::from_status(status),
        }
    }
}

/// The Q.850 cause for a call that ended with SIP status `status`.
///
/// 2xx is normal clearing (16). Error responses follow the table of RFC 3398 §8.2.6.1. Where
/// that table has no value, 487 (the caller hung up) is normal clearing (16), and 488/606
/// ("by Warning header") are interworking, unspecified (127). Other codes are treated as the
/// x00 code of their class, as RFC 3261 §21 asks of unknown responses; anything else is 127.
pub fn q850_cause(status: u16) -> u8 {
    match status {
        200..=299 => 16,
        400 => 41,
        401 | 402 | 403 | 407 => 21,
        404 | 485 | 604 => 1,
        405 => 63,
        406 | 415 => 79,
        408 | 504 => 102,
        410 => 22,
        413 | 414 | 416 | 420 | 421 | 423 | 505 | 513 => 127,
        480 => 18,
        481 => 41,
        482 | 483 => 25,
        484 => 28,
        486 | 600 => 17,
        487 => 16,
        488 | 606 => 127,
        500 | 503 => 41,
        501 => 79,
        502 => 38,
        603 => 21,
        // Unknown codes as the x00 code of their class: 400 and 500 → 41, 600 → 17.
        _ => match status / 100 {
            4 | 5 => 41,
            6 => 17,
            _ => 127,
        },
    }
}

/// A call detail record. See the module documentation for units and conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Assigned by the database when the record is stored (`None` before).
    pub id: Option<i64>,
    /// Call control's number for the call (unique within one run of the process).
    pub call_ref: Option<u64>,
    /// When the INVITE arrived, UTC unix milliseconds.
    pub start_ms: i64,
    /// When the callee answered.
    pub answer_ms: Option<i64>,
    /// When the call ended.
    pub end_ms: i64,
    /// `end - start` in whole seconds, rounded up.
    pub duration_s: i64,
    /// `end - answer` in whole seconds, rounded up; 0 when unanswered.
    pub billable_s: i64,
    /// The caller as presented: the extension number, or the caller id of an incoming call.
    pub caller: String,
    /// The caller in E.164 (`+…`): an extension's DID, an incoming caller id in E.164.
    pub caller_e164: Option<String>,
    /// The callee as dialled.
    pub callee: String,
    /// The callee in E.164 (`+…`): the number dialled, or the DID of the extension called.
    pub callee_e164: Option<String>,
    /// The office extension the call belongs to (the caller, or the callee of an incoming call).
    pub extension: Option<String>,
    pub direction: Direction,
    /// The numbering category of the callee (`internal`, `national`, `mobile`, `emergency` …).
    pub category: Option<String>,
    pub route_kind: RouteKind,
    /// The extension number, the SIP URI, or the trunk/line name.
    pub route_target: Option<String>,
    /// Where the target came from: `ENUM e164.arpa`, `DUNDi …`, or `trunk`.
    pub route_source: Option<String>,
    pub disposition: Disposition,
    /// The call's final SIP status (200 for answered calls).
    pub sip_status: u16,
    /// The Q.850 cause, from the SIP status ([`q850_cause`]).
    pub q850_cause: u8,
    pub codec: Option<String>,
    /// Whether the media was encrypted (SRTP) on the caller's leg and on the callee's leg.
    pub media_srtp: [bool; 2],
    /// RTP packets relayed.
    pub packets: u64,
    /// RTP packets lost.
    pub packets_lost: u64,
    /// Interarrival jitter (RFC 3550), milliseconds.
    pub jitter_ms: f64,
    /// What the call cost, minor units of `currency`; `None`: not rated.
    pub cost_minor: Option<i64>,
    /// ISO 4217 code of the money fields.
    pub currency: Option<String>,
    /// The rate table used.
    pub rate_table: Option<String>,
    /// The prefix of the rate used (`""`: the table's catch-all rate).
    pub rate_prefix: Option<String>,
    /// What the PSTN reference rate would have charged.
    pub reference_cost_minor: Option<i64>,
    /// What bypassing the PSTN saved (reference cost of a SIP call; 0 for other calls).
    pub savings_minor: Option<i64>,
    /// The routing decision and the destinations tried, one step a line.
    pub explanation: String,
    /// Shared by the parts of a transferred call (`None`: never transferred).
    pub linked_id: Option<String>,
    /// The extension that transferred the call, on the parts after a transfer.
    pub transferred_by: Option<String>,
}

/// What the records need to know about the office's numbers: which numbers are extensions,
/// their DIDs, and the numbering plan that puts outside numbers in E.164.
#[derive(Debug, Clone, Default)]
pub struct OfficeNumbers {
    /// Extension → its DID (`+…`).
    extensions: HashMap<String, Option<String>>,
    plan: Option<NumberingPlan>,
}

impl OfficeNumbers {
    /// No extensions yet; `plan` (when given) normalises outside numbers to E.164.
    pub fn new(plan: Option<NumberingPlan>) -> OfficeNumbers {
        OfficeNumbers {
            extensions: HashMap::new(),
            plan,
        }
    }

    /// The office's extensions from their stored rows.
    pub fn from_rows(rows: &[ExtensionRow], plan: Option<NumberingPlan>) -> OfficeNumbers {
        let mut n = OfficeNumbers::new(plan);
        for r in rows {
            n.add_extension(&r.number, r.did.as_deref());
        }
        n
    }

    /// Adds (or replaces) an extension.
    pub fn add_extension(&mut self, number: &str, did: Option<&str>) {
        self.extensions
            .insert(number.to_owned(), did.map(str::to_owned));
    }

    /// Whether `number` is an extension of the office.
    pub fn is_extension(&self, number: &str) -> bool {
        self.extensions.contains_key(number)
    }

    /// The DID of an extension.
    pub fn did(&self, extension: &str) -> Option<&str> {
        self.extensions.get(extension)?.as_deref()
    }

    /// An outside number in E.164, when the plan can tell.
    fn e164(&self, number: &str) -> Option<String> {
        if let Some(digits) = number.strip_prefix('+') {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return Some(number.to_owned());
            }
        }
        let plan = self.plan.as_ref()?;
        match plan.classify(number, |_| false) {
            Ok(Dialled::E164(n)) => Some(n.as_str().to_owned()),
            _ => None,
        }
    }
}

/// `t` on the wall clock, given that `now` is `now_unix_ms`.
fn wall_ms(t: Instant, now: Instant, now_unix_ms: i64) -> i64 {
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if t <= now {
        now_unix_ms.saturating_sub(millis(now - t))
    } else {
        now_unix_ms.saturating_add(millis(t - now))
    }
}

/// Whole seconds from `from_ms` to `to_ms`, rounded up (0 when not after).
pub fn seconds_between(from_ms: i64, to_ms: i64) -> i64 {
    let ms = to_ms.saturating_sub(from_ms).max(0);
    ms / 1000 + i64::from(ms % 1000 != 0)
}

/// Where a call went: kind, target and source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteOf {
    kind: RouteKind,
    target: Option<String>,
    source: Option<String>,
}

impl RouteOf {
    fn none() -> RouteOf {
        RouteOf {
            kind: RouteKind::NoRoute,
            target: None,
            source: None,
        }
    }

    fn extension(ext: &str) -> RouteOf {
        RouteOf {
            kind: RouteKind::Extension,
            target: Some(ext.to_owned()),
            source: None,
        }
    }

    fn trunk(name: &str) -> RouteOf {
        RouteOf {
            kind: RouteKind::Pstn,
            target: Some(name.to_owned()),
            source: Some("trunk".to_owned()),
        }
    }

    fn sip(uri: &str, source: &str) -> RouteOf {
        RouteOf {
            kind: RouteKind::Sip,
            target: Some(uri.to_owned()),
            source: Some(source.to_owned()),
        }
    }
}

/// The destination behind a stage label and URI of call control: matched against the route's
/// attempts when there is a route, else read from the label (`extension 101`, `trunk x`).
fn destination(label: &str, uri: &str, route: Option<&Route>) -> RouteOf {
    if let Some(Decision::Attempts(list)) = route.map(|r| &r.decision) {
        let matching = list
            .iter()
            .find(|a| a.label() == label && a.uri.to_string() == uri)
            .or_else(|| list.iter().find(|a| a.label() == label));
        if let Some(a) = matching {
            return match &a.kind {
                AttemptKind::Trunk { name } => RouteOf::trunk(name),
                AttemptKind::Sip { source } => RouteOf::sip(uri, source),
            };
        }
    }
    if let Some(ext) = label.strip_prefix("extension ") {
        RouteOf::extension(ext)
    } else if let Some(rest) = label.strip_prefix("transfer ") {
        // The part after a blind transfer (`transfer 102 (by 101)`): the extension that
        // answered it, and who transferred as the source.
        let (ext, by) = rest.split_once(' ').unwrap_or((rest, ""));
        let by = by.trim().trim_start_matches('(').trim_end_matches(')');
        RouteOf {
            source: Some(if by.is_empty() {
                "transfer".to_owned()
            } else {
                format!("transfer {by}")
            }),
            ..RouteOf::extension(ext)
        }
    } else if let Some(rest) = label.strip_prefix("pickup ") {
        // A call picked up by another phone (`pickup 102 (**101)`): the picker answered it.
        let (ext, how) = rest.split_once(' ').unwrap_or((rest, ""));
        let how = how.trim().trim_start_matches('(').trim_end_matches(')');
        RouteOf {
            source: Some(if how.is_empty() {
                "pickup".to_owned()
            } else {
                format!("pickup {how}")
            }),
            ..RouteOf::extension(ext)
        }
    } else if let Some(group) = label.strip_prefix("group ") {
        // A ring group (calls into the office): its name as the target.
        RouteOf::extension(group)
    } else if let Some(name) = label.strip_prefix("trunk ") {
        RouteOf::trunk(name)
    } else {
        RouteOf::sip(uri, label)
    }
}

/// The destination a route decided on, for calls that tried nothing.
fn decided(route: Option<&Route>) -> Option<RouteOf> {
    match &route?.decision {
        Decision::Extension(ext) => Some(RouteOf::extension(ext)),
        Decision::Attempts(list) => list.first().map(|a| match &a.kind {
            AttemptKind::Trunk { name } => RouteOf::trunk(name),
            AttemptKind::Sip { source } => RouteOf::sip(&a.uri.to_string(), source),
        }),
        Decision::Reject { .. } => Some(RouteOf::none()),
    }
}

/// The parts of a record that depend on who called whom and where it went.
struct Parties {
    caller_e164: Option<String>,
    callee_e164: Option<String>,
    extension: Option<String>,
    direction: Direction,
    category: Option<String>,
}

fn parties(
    caller: &str,
    callee: &str,
    dest: &RouteOf,
    route: Option<&Route>,
    office: &OfficeNumbers,
) -> Parties {
    let to_extension = match (dest.kind, &dest.target) {
        (RouteKind::Extension, Some(ext)) => Some(ext.as_str()),
        _ => None,
    };
    let (direction, extension, caller_e164) = if office.is_extension(caller) {
        let direction = if to_extension.is_some() {
            Direction::Internal
        } else {
            Direction::Outgoing
        };
        (
            direction,
            Some(caller.to_owned()),
            office.did(caller).map(str::to_owned),
        )
    } else {
        (
            Direction::Incoming,
            to_extension.map(str::to_owned),
            office.e164(caller),
        )
    };
    let callee_e164 = route
        .and_then(Route::e164)
        .map(|n| n.as_str().to_owned())
        .or_else(|| to_extension.and_then(|e| office.did(e)).map(str::to_owned))
        .or_else(|| {
            if office.is_extension(callee) {
                None
            } else {
                office.e164(callee)
            }
        });
    let category = route
        .and_then(|r| r.category)
        .or(
            match (&route.and_then(|r| r.number.as_ref()), to_extension) {
                (Some(Dialled::Emergency(_)), _) => Some(Category::Emergency),
                (Some(Dialled::Short(_)), _) => Some(Category::Short),
                (_, Some(_)) => Some(Category::Internal),
                _ => None,
            },
        )
        .map(|c| c.name().to_owned());
    Parties {
        caller_e164,
        callee_e164,
        extension,
        direction,
        category,
    }
}

impl CallRecord {
    /// The record of a finished call. `now` and `now_unix_ms` are the same moment on the
    /// monotonic and the wall clock: every [`Instant`] of the summary is converted through them.
    pub fn from_summary(
        s: &CallSummary,
        now: Instant,
        now_unix_ms: i64,
        office: &OfficeNumbers,
    ) -> CallRecord {
        let route = s.route.as_deref();
        let start_ms = wall_ms(s.started, now, now_unix_ms);
        let answer_ms = s.answered.map(|t| wall_ms(t, now, now_unix_ms));
        let end_ms = wall_ms(s.ended, now, now_unix_ms).max(start_ms);
        // The destination that answered; else the last one tried; else what the route decided.
        let answered = s.answered_by.as_ref().and_then(|(stage, uri)| {
            s.attempts
                .iter()
                .find(|a| a.stage == *stage && a.uri == *uri)
        });
        let dest = match answered.or_else(|| s.attempts.iter().max_by_key(|a| a.stage)) {
            Some(a) => destination(&a.label, &a.uri, route),
            None => decided(route).unwrap_or_else(|| {
                if office.is_extension(&s.callee) {
                    RouteOf::extension(&s.callee)
                } else {
                    RouteOf::none()
                }
            }),
        };
        let p = parties(&s.caller, &s.callee, &dest, route, office);
        let status = if s.answered.is_some() && s.status >= 300 {
            200
        } else {
            s.status
        };
        let disposition = if s.answered.is_some() {
            Disposition::Answered
        } else {
            Disposition::from_summary(s.disposition, status)
        };
        let mut explanation = route.map(|r| r.to_string()).unwrap_or_default();
        for (i, a) in s.attempts.iter().enumerate() {
            if !explanation.is_empty() {
                explanation.push('\n');
            }
            let outcome = match (a.status, a.reason.as_deref()) {
                (0, _) => "cancelled".to_owned(),
                (st, Some(why)) if st >= 300 && !why.is_empty() => format!("{st} {why}"),
                (st, _) => st.to_string(),
            };
            explanation.push_str(&format!(
                "attempt {} (stage {}, {}): {} -> {outcome}",
                i + 1,
                a.stage + 1,
                a.label,
                a.uri
            ));
        }
        CallRecord {
            id: None,
            call_ref: Some(s.id),
            start_ms,
            answer_ms,
            end_ms,
            duration_s: seconds_between(start_ms, end_ms),
            billable_s: answer_ms.map_or(0, |a| seconds_between(a, end_ms)),
            caller: s.caller.clone(),
            caller_e164: p.caller_e164,
            callee: s.callee.clone(),
            callee_e164: p.callee_e164,
            extension: p.extension,
            direction: p.direction,
            category: p.category,
            route_kind: dest.kind,
            route_target: dest.target,
            route_source: dest.source,
            disposition,
            sip_status: status,
            q850_cause: s
                .q850
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or_else(|| q850_cause(status)),
            codec: s.codec.clone(),
            media_srtp: s.media_srtp,
            packets: s.packets,
            packets_lost: s.lost,
            jitter_ms: if s.jitter_ms.is_finite() {
                s.jitter_ms
            } else {
                0.0
            },
            cost_minor: None,
            currency: None,
            rate_table: None,
            rate_prefix: None,
            reference_cost_minor: None,
            savings_minor: None,
            explanation,
            linked_id: None,
            transferred_by: None,
        }
    }

    /// The records of a finished call: one, or for a transferred call one per part, linked
    /// by a shared `linked_id` (the call's reference and start). The part before a transfer is
    /// the far party with the transferor, up to the moment the target answered; the part
    /// after is the far party with the target, `transferred_by` the transferor, and billed on
    /// it when it leaves the office ([`CallRecord::bill_transferor`]). The media counters go
    /// with the last part.
    pub fn parts_from_summary(
        s: &CallSummary,
        now: Instant,
        now_unix_ms: i64,
        office: &OfficeNumbers,
    ) -> Vec<CallRecord> {
        if s.transfers.is_empty() {
            return vec![CallRecord::from_summary(s, now, now_unix_ms, office)];
        }
        let link = format!("{}-{}", s.id, wall_ms(s.started, now, now_unix_ms));
        let mut parts = Vec::with_capacity(s.transfers.len() + 1);
        let mut part = s.clone();
        part.transfers = Vec::new();
        let mut from = 0;
        let mut by: Option<String> = None;
        // The fork that answered the part being cut (for a transfer by the caller, the
        // target's; else the call's winner, which `before` gives for each cut).
        let mut answered_by: Option<Option<(usize, String)>> = None;
        for t in &s.transfers {
            let upto = t.first_attempt.clamp(from, s.attempts.len());
            let mut p = part.clone();
            p.ended = t.at;
            p.attempts = s.attempts.get(from..upto).unwrap_or_default().to_vec();
            p.answered_by = answered_by.take().unwrap_or_else(|| t.before.clone());
            p.status = 200;
            p.disposition = "answered";
            (p.packets, p.lost, p.jitter_ms) = (0, 0, 0.0);
            parts.push((p, by.clone()));
            part.started = t.at;
            part.answered = Some(t.at);
            part.callee = t.target.clone();
            part.route = t.route.clone();
            if let Some((far, target_fork)) = &t.by_caller {
                // The callee stays: it is the caller of the part after, with the target.
                part.caller = far.clone();
                answered_by = Some(target_fork.clone());
            }
            from = upto;
            by = Some(t.by.clone());
        }
        part.attempts = s.attempts.get(from..).unwrap_or_default().to_vec();
        if let Some(a) = answered_by {
            part.answered_by = a;
        }
        parts.push((part, by));
        parts
            .into_iter()
            .map(|(p, by)| {
                let mut r = CallRecord::from_summary(&p, now, now_unix_ms, office);
                r.linked_id = Some(link.clone());
                r.transferred_by = by;
                r.bill_transferor();
                r
            })
            .collect()
    }

    /// A part after a transfer that left the office (a trunk, a PSTN line, a SIP destination)
    /// is the transferor's outgoing call: it pays for it, whoever the far party is.
    pub fn bill_transferor(&mut self) {
        let Some(by) = &self.transferred_by else {
            return;
        };
        if matches!(self.route_kind, RouteKind::Pstn | RouteKind::Sip) {
            self.direction = Direction::Outgoing;
            self.extension = Some(by.clone());
        }
    }

    /// The record of a call refused before anything rang (403 barred, 404 unknown, 484
    /// incomplete, 480 nobody registered, 503 no route …), at `at_unix_ms`, with the routing
    /// decision when the call went through the router.
    pub fn rejected(
        caller: &str,
        dialled: &str,
        status: u16,
        route: Option<&Route>,
        at_unix_ms: i64,
        office: &OfficeNumbers,
    ) -> CallRecord {
        let dest = decided(route).unwrap_or_else(|| {
            if office.is_extension(dialled) {
                RouteOf::extension(dialled)
            } else {
                RouteOf::none()
            }
        });
        let p = parties(caller, dialled, &dest, route, office);
        let mut explanation = route.map(|r| r.to_string()).unwrap_or_default();
        if !explanation.is_empty() {
            explanation.push('\n');
        }
        explanation.push_str(&format!("refused with {status}"));
        CallRecord {
            id: None,
            call_ref: None,
            start_ms: at_unix_ms,
            answer_ms: None,
            end_ms: at_unix_ms,
            duration_s: 0,
            billable_s: 0,
            caller: caller.to_owned(),
            caller_e164: p.caller_e164,
            callee: dialled.to_owned(),
            callee_e164: p.callee_e164,
            extension: p.extension,
            direction: p.direction,
            category: p.category,
            route_kind: dest.kind,
            route_target: dest.target,
            route_source: dest.source,
            disposition: Disposition::from_status(status),
            sip_status: status,
            q850_cause: q850_cause(status),
            codec: None,
            media_srtp: [false; 2],
            packets: 0,
            packets_lost: 0,
            jitter_ms: 0.0,
            cost_minor: None,
            currency: None,
            rate_table: None,
            rate_prefix: None,
            reference_cost_minor: None,
            savings_minor: None,
            explanation,
            linked_id: None,
            transferred_by: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::b2bua::Attempt;
    use crate::routing::router::{Attempt as RouteAttempt, Hop, Step};
    use crate::routing::E164;
    use crate::sip::peer::Proto;
    use std::sync::Arc;
    use std::time::Duration;

    /// A plain record for tests elsewhere in the module tree.
    pub(crate) fn sample(start_ms: i64) -> CallRecord {
        CallRecord {
            id: None,
            call_ref: None,
            start_ms,
            answer_ms: Some(start_ms + 5_000),
            end_ms: start_ms + 65_000,
            duration_s: 65,
            billable_s: 60,
            caller: "100".into(),
            caller_e164: Some("+4930100".into()),
            callee: "030123456".into(),
            callee_e164: Some("+4930123456".into()),
            extension: Some("100".into()),
            direction: Direction::Outgoing,
            category: Some("local".into()),
            route_kind: RouteKind::Pstn,
            route_target: Some("carrier".into()),
            route_source: Some("trunk".into()),
            disposition: Disposition::Answered,
            sip_status: 200,
            q850_cause: 16,
            codec: Some("PCMA".into()),
            media_srtp: [false; 2],
            packets: 3000,
            packets_lost: 3,
            jitter_ms: 1.5,
            cost_minor: None,
            currency: None,
            rate_table: None,
            rate_prefix: None,
            reference_cost_minor: None,
            savings_minor: None,
            explanation: "decision 1: trunk carrier".into(),
            linked_id: None,
            transferred_by: None,
        }
    }

    fn office() -> OfficeNumbers {
        let plan = NumberingPlan::from_config(&crate::routing::numbering::NumberingConfig {
            country_code: "49".into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
            ..Default::default()
        });
        let mut o = OfficeNumbers::new(Some(plan));
        o.add_extension("100", Some("+4930100"));
        o.add_extension("101", None);
        o
    }

    fn route(decision: Decision) -> Route {
        Route {
            dialled: "03012345678".into(),
            number: Some(Dialled::E164("+493012345678".parse::<E164>().unwrap())),
            category: Some(Category::National),
            steps: vec![Step {
                at: Duration::from_millis(3),
                text: "numbering: \"03012345678\" is +493012345678".into(),
            }],
            decision,
            elapsed: Duration::from_millis(12),
        }
    }

    fn attempt(kind: AttemptKind, uri: &str) -> RouteAttempt {
        RouteAttempt {
            kind,
            uri: match crate::sip::uri::Uri::parse(uri).unwrap() {
                crate::sip::uri::Uri::Sip(u) => u,
                _ => panic!("not sip"),
            },
            hop: Hop {
                proto: Proto::Udp,
                addr: "192.0.2.1:5060".parse().unwrap(),
            },
            auth: None,
        }
    }

    fn summary(t0: Instant) -> CallSummary {
        CallSummary {
            id: 7,
            caller: "100".into(),
            callee: "03012345678".into(),
            started: t0,
            answered: None,
            ended: t0 + Duration::from_millis(4_200),
            status: 486,
            disposition: "busy",
            codec: None,
            media_srtp: [false; 2],
            packets: 0,
            lost: 0,
            jitter_ms: 0.0,
            attempts: Vec::new(),
            q850: None,
            answered_by: None,
            route: None,
            origin: None,
            signalling: (None, None),
            transfers: Vec::new(),
        }
    }

    #[test]
    fn q850_follows_rfc_3398() {
        for (status, cause) in [
            (200, 16),
            (404, 1),
            (403, 21),
            (480, 18),
            (484, 28),
            (486, 17),
            (408, 102),
            (503, 41),
            (502, 38),
            (603, 21),
            (600, 17),
            (410, 22),
            (487, 16),
            (499, 41),
            (599, 41),
            (699, 17),
            (0, 127),
        ] {
            assert_eq!(q850_cause(status), cause, "status {status}");
        }
    }

    #[test]
    fn text_enums_round_trip() {
        for d in Direction::ALL {
            assert_eq!(d.as_str().parse::<Direction>().unwrap(), *d);
        }
        for k in RouteKind::ALL {
            assert_eq!(k.as_str().parse::<RouteKind>().unwrap(), *k);
        }
        for d in Disposition::ALL {
            assert_eq!(d.as_str().parse::<Disposition>().unwrap(), *d);
        }
        assert!("sideways".parse::<Direction>().is_err());
        assert_eq!(
            Disposition::from_summary("no answer", 480),
            Disposition::NoAnswer
        );
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds_between(0, 0), 0);
        assert_eq!(seconds_between(0, 1), 1);
        assert_eq!(seconds_between(0, 1000), 1);
        assert_eq!(seconds_between(0, 1001), 2);
        assert_eq!(seconds_between(5000, 1000), 0);
    }

    #[test]
    fn answered_pstn_call_after_failed_enum_target() {
        let t0 = Instant::now();
        let r = route(Decision::Attempts(vec![
            attempt(
                AttemptKind::Sip {
                    source: "ENUM e164.arpa".into(),
                },
                "sip:bob@example.net",
            ),
            attempt(
                AttemptKind::Trunk {
                    name: "carrier".into(),
                },
                "sip:03012345678@192.0.2.1",
            ),
        ]));
        let mut s = summary(t0);
        s.route = Some(Arc::new(r));
        s.answered = Some(t0 + Duration::from_millis(2_500));
        s.ended = t0 + Duration::from_millis(62_500);
        s.status = 200;
        s.disposition = "answered";
        s.codec = Some("PCMU".into());
        s.packets = 6000;
        s.lost = 12;
        s.jitter_ms = 2.25;
        s.attempts = vec![
            Attempt {
                stage: 0,
                label: "ENUM e164.arpa".into(),
                uri: "sip:bob@example.net".into(),
                status: 503,
                reason: None,
            },
            Attempt {
                stage: 1,
                label: "trunk carrier".into(),
                uri: "sip:03012345678@192.0.2.1".into(),
                status: 200,
                reason: None,
            },
        ];
        s.answered_by = Some((1, "sip:03012345678@192.0.2.1".into()));
        // The call ended 1 s before the anchor: 2026-01-01T00:00:00Z.
        let now = s.ended + Duration::from_secs(1);
        let now_ms = 1_767_225_600_000;
        let rec = CallRecord::from_summary(&s, now, now_ms, &office());
        assert_eq!(rec.end_ms, now_ms - 1_000);
        assert_eq!(rec.start_ms, now_ms - 1_000 - 62_500);
        assert_eq!(rec.answer_ms, Some(rec.start_ms + 2_500));
        assert_eq!(rec.duration_s, 63);
        assert_eq!(rec.billable_s, 60);
        assert_eq!(rec.direction, Direction::Outgoing);
        assert_eq!(rec.extension.as_deref(), Some("100"));
        assert_eq!(rec.caller_e164.as_deref(), Some("+4930100"));
        assert_eq!(rec.callee_e164.as_deref(), Some("+493012345678"));
        assert_eq!(rec.category.as_deref(), Some("national"));
        assert_eq!(rec.route_kind, RouteKind::Pstn);
        assert_eq!(rec.route_target.as_deref(), Some("carrier"));
        assert_eq!(rec.route_source.as_deref(), Some("trunk"));
        assert_eq!(rec.disposition, Disposition::Answered);
        assert_eq!((rec.sip_status, rec.q850_cause), (200, 16));
        assert_eq!(rec.codec.as_deref(), Some("PCMU"));
        assert_eq!((rec.packets, rec.packets_lost), (6000, 12));
        assert!(
            rec.explanation.contains("numbering: "),
            "{}",
            rec.explanation
        );
        assert!(
            rec.explanation
                .contains("attempt 1 (stage 1, ENUM e164.arpa): sip:bob@example.net -> 503"),
            "{}",
            rec.explanation
        );
        assert_eq!(rec.call_ref, Some(7));
    }

    #[test]
    fn transferred_call_leaves_two_linked_parts_billed_on_the_transferor() {
        // +4940555 (outside) calls 101, 101 transfers to 03012345678 over trunk carrier.
        let t0 = Instant::now();
        let mut s = summary(t0);
        s.caller = "+4940555".into();
        s.callee = "101".into();
        s.answered = Some(t0 + Duration::from_secs(2));
        s.ended = t0 + Duration::from_secs(100);
        s.status = 200;
        s.disposition = "answered";
        s.packets = 5000;
        s.attempts = vec![
            Attempt {
                stage: 0,
                label: "extension 101".into(),
                uri: "sip:101@192.0.2.9".into(),
                status: 200,
                reason: None,
            },
            Attempt {
                stage: 1,
                label: "trunk carrier".into(),
                uri: "sip:03012345678@192.0.2.1".into(),
                status: 200,
                reason: None,
            },
        ];
        s.answered_by = Some((1, "sip:03012345678@192.0.2.1".into()));
        s.transfers = vec![crate::b2bua::TransferPart {
            at: t0 + Duration::from_secs(40),
            by: "101".into(),
            target: "03012345678".into(),
            first_attempt: 1,
            before: Some((0, "sip:101@192.0.2.9".into())),
            route: Some(Arc::new(route(Decision::Attempts(vec![attempt(
                AttemptKind::Trunk {
                    name: "carrier".into(),
                },
                "sip:03012345678@192.0.2.1",
            )])))),
            by_caller: None,
        }];
        let parts = CallRecord::parts_from_summary(&s, s.ended, 10_000_000, &office());
        assert_eq!(parts.len(), 2);
        let (a, b) = (&parts[0], &parts[1]);
        assert!(a.linked_id.is_some());
        assert_eq!(a.linked_id, b.linked_id, "one link for both parts");
        assert_eq!(a.transferred_by, None);
        assert_eq!(b.transferred_by.as_deref(), Some("101"));
        // The first part: the caller with 101 until the transfer.
        assert_eq!(
            (a.callee.as_str(), a.route_kind),
            ("101", RouteKind::Extension)
        );
        assert_eq!(a.end_ms, b.start_ms);
        assert_eq!((a.duration_s, a.billable_s), (40, 38));
        assert_eq!(a.disposition, Disposition::Answered);
        assert_eq!(a.packets, 0);
        // The second: the caller with the number, 60 s, the transferor's outgoing call.
        assert_eq!(b.callee, "03012345678");
        assert_eq!(b.callee_e164.as_deref(), Some("+493012345678"));
        assert_eq!(b.route_kind, RouteKind::Pstn);
        assert_eq!(b.route_target.as_deref(), Some("carrier"));
        assert_eq!((b.duration_s, b.billable_s), (60, 60));
        assert_eq!(b.direction, Direction::Outgoing);
        assert_eq!(
            b.extension.as_deref(),
            Some("101"),
            "billed on the transferor"
        );
        assert_eq!(b.packets, 5000);
        assert!(b.explanation.contains("trunk carrier"), "{}", b.explanation);
        assert!(
            !a.explanation.contains("trunk carrier"),
            "{}",
            a.explanation
        );
        // A call never transferred: one record, no link.
        s.transfers.clear();
        let one = CallRecord::parts_from_summary(&s, s.ended, 10_000_000, &office());
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].linked_id, None);
    }

    #[test]
    fn a_transfer_by_the_caller_shows_the_callee_with_the_target() {
        // 100 calls 101; 100 transfers 101 to 102 after 30 s; 102 talks until 90 s.
        let t0 = Instant::now();
        let mut s = summary(t0);
        s.callee = "101".into();
        s.answered = Some(t0 + Duration::from_secs(1));
        s.ended = t0 + Duration::from_secs(90);
        s.status = 200;
        s.disposition = "answered";
        s.attempts = vec![
            Attempt {
                stage: 0,
                label: "extension 101".into(),
                uri: "sip:101@192.0.2.9".into(),
                status: 200,
                reason: None,
            },
            Attempt {
                stage: 1,
                label: "transfer 102 (by 100)".into(),
                uri: "sip:102@192.0.2.8".into(),
                status: 200,
                reason: None,
            },
        ];
        // The callee (101) stays the call's winner.
        s.answered_by = Some((0, "sip:101@192.0.2.9".into()));
        s.transfers = vec![crate::b2bua::TransferPart {
            at: t0 + Duration::from_secs(30),
            by: "100".into(),
            target: "102".into(),
            first_attempt: 1,
            before: Some((0, "sip:101@192.0.2.9".into())),
            route: None,
            by_caller: Some(("101".into(), Some((1, "sip:102@192.0.2.8".into())))),
        }];
        let parts = CallRecord::parts_from_summary(&s, s.ended, 10_000_000, &office());
        assert_eq!(parts.len(), 2);
        let (a, b) = (&parts[0], &parts[1]);
        assert_eq!((a.caller.as_str(), a.callee.as_str()), ("100", "101"));
        assert_eq!(a.route_target.as_deref(), Some("101"));
        assert_eq!((b.caller.as_str(), b.callee.as_str()), ("101", "102"));
        assert_eq!(b.route_target.as_deref(), Some("102"));
        assert_eq!(b.route_source.as_deref(), Some("transfer by 100"));
        assert_eq!(b.transferred_by.as_deref(), Some("100"));
        assert_eq!(b.direction, Direction::Internal);
        assert_eq!((a.duration_s, b.duration_s), (30, 60));
    }

    #[test]
    fn unanswered_bypass_call_keeps_its_sip_target() {
        let t0 = Instant::now();
        let mut s = summary(t0);
        s.route = Some(Arc::new(route(Decision::Attempts(vec![attempt(
            AttemptKind::Sip {
                source: "ENUM e164.arpa".into(),
            },
            "sip:bob@example.net",
        )]))));
        s.attempts = vec![Attempt {
            stage: 0,
            label: "ENUM e164.arpa".into(),
            uri: "sip:bob@example.net".into(),
            status: 486,
            reason: None,
        }];
        let rec = CallRecord::from_summary(&s, s.ended, 10_000_000, &office());
        assert_eq!(rec.route_kind, RouteKind::Sip);
        assert_eq!(rec.route_target.as_deref(), Some("sip:bob@example.net"));
        assert_eq!(rec.route_source.as_deref(), Some("ENUM e164.arpa"));
        assert_eq!(rec.disposition, Disposition::Busy);
        assert_eq!((rec.sip_status, rec.q850_cause), (486, 17));
        assert_eq!((rec.duration_s, rec.billable_s), (5, 0));
        assert_eq!(rec.answer_ms, None);
    }

    #[test]
    fn extension_to_extension_is_internal() {
        let t0 = Instant::now();
        let mut s = summary(t0);
        s.callee = "101".into();
        s.status = 487;
        s.disposition = "cancelled";
        s.attempts = vec![Attempt {
            stage: 0,
            label: "extension 101".into(),
            uri: "sip:101@192.0.2.9:5062".into(),
            status: 0,
            reason: None,
        }];
        let rec = CallRecord::from_summary(&s, s.ended, 10_000_000, &office());
        assert_eq!(rec.direction, Direction::Internal);
        assert_eq!(rec.route_kind, RouteKind::Extension);
        assert_eq!(rec.route_target.as_deref(), Some("101"));
        assert_eq!(rec.category.as_deref(), Some("internal"));
        assert_eq!(rec.callee_e164, None);
        assert_eq!(rec.disposition, Disposition::Cancelled);
        assert_eq!(rec.q850_cause, 16);
        assert!(rec.explanation.contains("-> cancelled"));
    }

    #[test]
    fn call_from_outside_is_incoming() {
        let t0 = Instant::now();
        let mut s = summary(t0);
        s.caller = "03099999999".into();
        s.callee = "+4930100".into();
        s.status = 200;
        s.answered = Some(t0 + Duration::from_secs(1));
        s.route = Some(Arc::new(Route {
            dialled: "+4930100".into(),
            number: Some(Dialled::E164("+4930100".parse().unwrap())),
            category: Some(Category::Local),
            steps: Vec::new(),
            decision: Decision::Extension("100".into()),
            elapsed: Duration::ZERO,
        }));
        let rec = CallRecord::from_summary(&s, s.ended, 10_000_000, &office());
        assert_eq!(rec.direction, Direction::Incoming);
        assert_eq!(rec.extension.as_deref(), Some("100"));
        assert_eq!(rec.caller_e164.as_deref(), Some("+493099999999"));
        assert_eq!(rec.callee_e164.as_deref(), Some("+4930100"));
        assert_eq!(rec.route_kind, RouteKind::Extension);
        assert_eq!(rec.disposition, Disposition::Answered);
    }

    #[test]
    fn refused_calls() {
        let o = office();
        let r = route(Decision::Reject {
            status: 403,
            reason: "Calls to national numbers are barred".into(),
        });
        let rec = CallRecord::rejected("101", "03012345678", 403, Some(&r), 5_000, &o);
        assert_eq!(rec.route_kind, RouteKind::NoRoute);
        assert_eq!(rec.route_target, None);
        assert_eq!(rec.disposition, Disposition::Failed);
        assert_eq!((rec.sip_status, rec.q850_cause), (403, 21));
        assert_eq!(rec.direction, Direction::Outgoing);
        assert_eq!(rec.callee_e164.as_deref(), Some("+493012345678"));
        assert_eq!(
            (rec.start_ms, rec.end_ms, rec.duration_s),
            (5_000, 5_000, 0)
        );
        assert!(rec.explanation.ends_with("refused with 403"));

        // An extension nobody registered: 480, routed to the extension.
        let rec = CallRecord::rejected("100", "101", 480, None, 5_000, &o);
        assert_eq!(rec.direction, Direction::Internal);
        assert_eq!(rec.route_kind, RouteKind::Extension);
        assert_eq!(rec.disposition, Disposition::NoAnswer);
        assert_eq!(rec.q850_cause, 18);

        // Garbage dialled: nothing to put in E.164.
        let rec = CallRecord::rejected("100", "12#x", 484, None, 5_000, &o);
        assert_eq!(rec.callee_e164, None);
        assert_eq!(rec.q850_cause, 28);
        assert_eq!(rec.route_kind, RouteKind::NoRoute);
    }
}
