//! `[numbering]`: the numbering plan and default permissions, mapped onto
//! [`crate::routing::numbering::NumberingConfig`] with the file:line:key checks.

use super::*;

pub use crate::routing::numbering::NumberingConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNumbering {
    pub(crate) country_code: Option<String>,
    pub(crate) national_prefix: Option<String>,
    pub(crate) international_prefix: Option<String>,
    pub(crate) area_code: Option<String>,
    pub(crate) extension_length: Option<usize>,
    pub(crate) emergency: Option<Vec<String>>,
    pub(crate) short_numbers: Option<Vec<String>>,
    pub(crate) mobile_prefixes: Option<Vec<String>>,
    pub(crate) premium_prefixes: Option<Vec<String>>,
    pub(crate) default_permissions: Option<Vec<String>>,
}

/// Parses a list of call permission names, naming the bad entry.
pub(crate) fn permission_list(
    list: Option<Vec<String>>,
    at: &KeyPath,
) -> Checked<Option<crate::routing::Permissions>> {
    let Some(list) = list else { return Ok(None) };
    for (i, item) in list.iter().enumerate() {
        crate::routing::Permissions::parse([item])
            .map_err(|e| invalid(&at.index(i), e.to_string()))?;
    }
    crate::routing::Permissions::parse(&list)
        .map(Some)
        .map_err(|e| invalid(at, e.to_string()))
}

/// Checks a list of digit strings (`x` wildcards allowed where `wild`), naming the bad entry.
pub(crate) fn digit_list(
    list: Option<Vec<String>>,
    at: &KeyPath,
    wild: bool,
) -> Checked<Option<Vec<String>>> {
    let Some(list) = list else { return Ok(None) };
    for (i, item) in list.iter().enumerate() {
        let ok = !item.is_empty()
            && item.len() <= 15
            && item
                .bytes()
                .all(|b| b.is_ascii_digit() || (wild && (b == b'x' || b == b'X')));
        if !ok {
            return Err(invalid(
                &at.index(i),
                format!(
                    "`{item}` must be 1 to 15 digits{}",
                    if wild { " (x for any digit)" } else { "" }
                ),
            ));
        }
    }
    Ok(Some(list))
}

impl RawNumbering {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<NumberingConfig> {
        let d = NumberingConfig::default();
        let country_code = self.country_code.unwrap_or(d.country_code);
        if country_code.is_empty() || country_code.len() > 3 || !digits(&country_code) {
            return Err(invalid(
                &at.key("country_code"),
                format!("`{country_code}` is not a country calling code (1 to 3 digits, no `+`)"),
            ));
        }
        let national_prefix = self.national_prefix.unwrap_or(d.national_prefix);
        if !digits(&national_prefix) {
            return Err(invalid(
                &at.key("national_prefix"),
                format!("`{national_prefix}` must be digits only (or empty)"),
            ));
        }
        let international_prefix = self.international_prefix.unwrap_or(d.international_prefix);
        if international_prefix.is_empty() || !digits(&international_prefix) {
            return Err(invalid(
                &at.key("international_prefix"),
                format!("`{international_prefix}` must be one or more digits"),
            ));
        }
        let area_code = match self.area_code {
            Some(a) if a.is_empty() || a.len() > 6 || !digits(&a) => {
                return Err(invalid(
                    &at.key("area_code"),
                    format!("`{a}` must be 1 to 6 digits, without the national prefix"),
                ));
            }
            other => other,
        };
        let extension_length = match self.extension_length {
            Some(n) if !(1..=15).contains(&n) => {
                return Err(invalid(
                    &at.key("extension_length"),
                    "must be between 1 and 15",
                ));
            }
            other => other,
        };
        Ok(NumberingConfig {
            country_code,
            national_prefix,
            international_prefix,
            area_code,
            extension_length,
            emergency: digit_list(self.emergency, &at.key("emergency"), false)?,
            short_numbers: digit_list(self.short_numbers, &at.key("short_numbers"), true)?,
            mobile_prefixes: digit_list(self.mobile_prefixes, &at.key("mobile_prefixes"), false)?,
            premium_prefixes: digit_list(
                self.premium_prefixes,
                &at.key("premium_prefixes"),
                false,
            )?,
            default_permissions: permission_list(
                self.default_permissions,
                &at.key("default_permissions"),
            )?
            .unwrap_or(d.default_permissions),
        })
    }
}
