//! `[[extension]]`: the office's phones, mapped onto
//! [`crate::store::config::ExtensionConfig`] with the file:line:key checks.

use super::*;

pub use crate::store::config::ExtensionConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExtension {
    pub(crate) number: String,
    pub(crate) password: String,
    pub(crate) name: Option<String>,
    pub(crate) did: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) permissions: Option<Vec<String>>,
    pub(crate) allow: Option<Vec<String>>,
    pub(crate) legacy_digest: Option<bool>,
    pub(crate) srtp: Option<String>,
    pub(crate) forward_always: Option<String>,
    pub(crate) forward_busy: Option<String>,
    pub(crate) forward_no_answer: Option<String>,
    pub(crate) forward_no_answer_secs: Option<u32>,
    pub(crate) forward_unreachable: Option<String>,
    pub(crate) ring_order: Option<String>,
    pub(crate) ring_secs: Option<u32>,
    pub(crate) call_group: Option<Vec<String>>,
    pub(crate) pickup_group: Option<Vec<String>>,
}

pub(crate) fn validate_extensions(raw: Vec<RawExtension>) -> Checked<Vec<ExtensionConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let at = KeyPath::new("extension").index(i);
        if e.number.is_empty() || e.number.len() > 15 || !digits(&e.number) {
            return Err(invalid(
                &at.key("number"),
                format!("`{}` is not an extension number (1 to 15 digits)", e.number),
            ));
        }
        if !seen.insert(e.number.clone()) {
            return Err(invalid(
                &at.key("number"),
                format!("extension `{}` is defined twice", e.number),
            ));
        }
        if e.password.is_empty() {
            return Err(invalid(&at.key("password"), "must not be empty"));
        }
        if let Err(weak) = crate::security::password::check(&e.password, &e.number) {
            return Err(invalid(
                &at.key("password"),
                format!(
                    "the password of extension {} is too weak: it {weak}",
                    e.number
                ),
            ));
        }
        let mut allow = Vec::new();
        for (j, net) in e.allow.unwrap_or_default().iter().enumerate() {
            allow.push(
                net.parse()
                    .map_err(|err| invalid(&at.key("allow").index(j), format!("{err}")))?,
            );
        }
        if let Some(did) = &e.did {
            let ok = did
                .strip_prefix('+')
                .is_some_and(|d| !d.is_empty() && d.len() <= 15 && digits(d));
            if !ok {
                return Err(invalid(
                    &at.key("did"),
                    format!("`{did}` is not an E.164 number (`+` and 1 to 15 digits)"),
                ));
            }
        }
        out.push(ExtensionConfig {
            number: e.number,
            password: e.password,
            name: e.name,
            did: e.did,
            enabled: e.enabled.unwrap_or(true),
            permissions: permission_list(e.permissions, &at.key("permissions"))?,
            allow,
            legacy_digest: e.legacy_digest.unwrap_or(false),
        });
    }
    Ok(out)
}

/// The `forward_*` and `ring_*` keys of each `[[extension]]`.
pub(crate) fn validate_call_handling(
    raw: &[RawExtension],
) -> Checked<Vec<(String, crate::routing::forwarding::CallHandling)>> {
    use crate::routing::forwarding::{valid_destination, CallHandling};
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let at = KeyPath::new("extension").index(i);
        let dest = |key: &str, v: &Option<String>| -> Checked<Option<String>> {
            match v {
                Some(d) if !valid_destination(d) => Err(invalid(
                    &at.key(key),
                    format!("`{d}` is not an extension or a number (`+` and digits)"),
                )),
                Some(d) if *d == e.number => Err(invalid(
                    &at.key(key),
                    "an extension cannot forward to itself",
                )),
                v => Ok(v.clone()),
            }
        };
        let secs = |key: &str, v: Option<u32>, d: u32| -> Checked<u32> {
            match v {
                Some(s) if !(1..=600).contains(&s) => {
                    Err(invalid(&at.key(key), "must be 1 to 600 seconds"))
                }
                v => Ok(v.unwrap_or(d)),
            }
        };
        let d = CallHandling::default();
        out.push((
            e.number.clone(),
            CallHandling {
                always: dest("forward_always", &e.forward_always)?,
                busy: dest("forward_busy", &e.forward_busy)?,
                no_answer: dest("forward_no_answer", &e.forward_no_answer)?,
                no_answer_secs: secs(
                    "forward_no_answer_secs",
                    e.forward_no_answer_secs,
                    d.no_answer_secs,
                )?,
                unreachable: dest("forward_unreachable", &e.forward_unreachable)?,
                sequential: match e.ring_order.as_deref() {
                    None | Some("parallel") => false,
                    Some("sequential") => true,
                    Some(o) => {
                        return Err(invalid(
                            &at.key("ring_order"),
                            format!("`{o}`: must be \"parallel\" or \"sequential\""),
                        ))
                    }
                },
                ring_secs: secs("ring_secs", e.ring_secs, d.ring_secs)?,
            },
        ));
    }
    Ok(out)
}

/// The `call_group` and `pickup_group` keys of each `[[extension]]` (call pickup).
pub(crate) fn validate_pickup_groups(
    raw: &[RawExtension],
) -> Checked<Vec<(String, crate::routing::pickup::PickupGroups)>> {
    use crate::routing::pickup::{valid_group, PickupGroups};
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let at = KeyPath::new("extension").index(i);
        let list = |key: &str, v: &Option<Vec<String>>| -> Checked<Vec<String>> {
            let mut groups: Vec<String> = Vec::new();
            for (j, g) in v.iter().flatten().enumerate() {
                if !valid_group(g) {
                    return Err(invalid(
                        &at.key(key).index(j),
                        format!("`{g}` is not a group name (1 to 32 letters, digits, - or _)"),
                    ));
                }
                if !groups.contains(g) {
                    groups.push(g.clone());
                }
            }
            Ok(groups)
        };
        out.push((
            e.number.clone(),
            PickupGroups {
                call: list("call_group", &e.call_group)?,
                pickup: list("pickup_group", &e.pickup_group)?,
            },
        ));
    }
    Ok(out)
}
