//! `[[modem]]` and `[[fxo]]`: PSTN lines. Their keys are the line modules' own `Raw*` types
//! (`pstn::gsm::config::RawModem`, `pstn::dahdi::config::RawFxo`), defined once there; here
//! they are checked against the trunks and ring groups.

use super::*;

/// The `[[fxo]]` tables (analog lines on a DAHDI card).
pub(crate) fn validate_fxo(
    raw: Vec<crate::pstn::dahdi::config::RawFxo>,
) -> Checked<Vec<crate::pstn::dahdi::config::FxoConfig>> {
    raw.iter()
        .enumerate()
        .map(|(i, f)| {
            f.validate()
                .map_err(|e| invalid(&KeyPath::new("fxo").index(i).key(e.key), e.why))
        })
        .collect()
}

/// The `[[modem]]` tables; their names are unique among modems and trunks (a line is a trunk
/// for the router and in the records).
pub(crate) fn validate_modems(
    raw: Vec<crate::pstn::gsm::config::RawModem>,
    trunks: &[TrunkConfig],
    groups: &[RingGroupConfig],
) -> Checked<Vec<crate::pstn::gsm::config::ModemConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let at = KeyPath::new("modem").index(i);
        if !seen.insert(m.name.clone()) {
            return Err(invalid(
                &at.key("name"),
                format!("modem `{}` is defined twice", m.name),
            ));
        }
        if trunks.iter().any(|t| t.name == m.name) {
            return Err(invalid(
                &at.key("name"),
                format!("`{}` is already the name of a trunk", m.name),
            ));
        }
        let checked = m
            .validate()
            .map_err(|e| invalid(&at.key(e.key), e.message))?;
        if let [name] = checked.incoming.as_slice() {
            if !digits(name) && !groups.iter().any(|g| &g.name == name) {
                return Err(invalid(
                    &at.key("incoming").index(0),
                    format!("`{name}` is neither an extension number nor a [[ring_group]]"),
                ));
            }
        }
        out.push(checked);
    }
    Ok(out)
}
