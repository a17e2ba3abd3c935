//! DUNDi state as text for people: the peers with their reachability, the answer cache, and a
//! lookup's result — what `pasarela dundi peers|cache|lookup` print (the same text whether a
//! running `serve` answers through its control socket or the command runs a node of its own).

use std::fmt::Write;
use std::time::Instant;

use super::engine::{CacheEntry, LookupResult, PeerView, Reachability, Stats};
use super::wire::hint_flags;

/// The peers, one line each.
pub fn peers(list: &[PeerView]) -> String {
    if list.is_empty() {
        return "no DUNDi peers configured\n".to_owned();
    }
    let mut out = format!(
        "{:<17} {:<21} {:<9} {:<9} {}\n",
        "EID", "address", "model", "crypto", "status"
    );
    for p in list {
        let status = match p.reachability {
            Reachability::Unknown => "unknown (not qualified yet)".to_owned(),
            Reachability::Reachable(d) => format!("OK ({} ms)", d.as_millis()),
            Reachability::Lagged(d) => format!("LAGGED ({} ms)", d.as_millis()),
            Reachability::Unreachable => "UNREACHABLE".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<17} {:<21} {:<9} {:<9} {status}",
            p.eid.to_string(),
            p.address.to_string(),
            format!("{:?}", p.model).to_ascii_lowercase(),
            if p.encrypted { "encrypted" } else { "plain" },
        );
    }
    out
}

/// The counters of what peers were refused (spoofed or unpermitted precache pushes, answers
/// over the cap), one line.
pub fn refusals(stats: &Stats) -> String {
    format!(
        "refused: {} precache push(es), {} answer(s) over the cap of {}, {} undecryptable\n",
        stats.precache_refused,
        stats.answers_dropped,
        super::engine::MAX_PEER_ANSWERS,
        stats.decrypt_failures
    )
}

/// The cache, one entry and its answers per block.
pub fn cache(entries: &[CacheEntry], now: Instant) -> String {
    if entries.is_empty() {
        return "the DUNDi cache is empty\n".to_owned();
    }
    let mut out = String::new();
    for e in entries {
        let left = e.expires.saturating_duration_since(now).as_secs();
        let _ = writeln!(
            out,
            "{}@{}: {} answer(s), expires in {left} s{}",
            e.number,
            e.context,
            e.answers.len(),
            if e.dont_ask_prefix.is_empty() {
                String::new()
            } else {
                format!(", don't ask for {}*", e.dont_ask_prefix)
            }
        );
        for a in &e.answers {
            let _ = writeln!(
                out,
                "  {} {} weight {} from {}",
                a.tech(),
                a.destination,
                a.weight,
                a.eid
            );
        }
    }
    out
}

/// A lookup's result.
pub fn lookup(r: &LookupResult, took_ms: u128) -> String {
    let mut out = format!(
        "{}@{}: {} answer(s) in {took_ms} ms{}\n",
        r.number,
        r.context,
        r.answers.len(),
        if r.from_cache {
            " (from the cache)".to_owned()
        } else {
            format!(", {} peer(s) asked", r.asked)
        }
    );
    for (i, a) in r.answers.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}. {}/{} (weight {}, from {}, expires in {} s){}",
            i + 1,
            a.tech(),
            a.destination,
            a.weight,
            a.eid,
            a.expiration,
            a.sip_uri().map(|u| format!(" -> {u}")).unwrap_or_default()
        );
    }
    if r.hint_flags & hint_flags::DONT_ASK != 0 {
        let _ = writeln!(
            out,
            "hint: don't ask about numbers starting {}",
            r.dont_ask_prefix
        );
    }
    for (eid, code, text) in &r.causes {
        let _ = writeln!(out, "peer {eid}: cause {code} {text}");
    }
    out
}
