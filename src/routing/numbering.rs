//! The numbering plan: from dialled digits to an extension, an emergency or short number, or an
//! E.164 number; categories of E.164 numbers; per-extension call permissions.
//!
//! People dial the way they always have in their country. [`NumberingPlan::classify`] accepts:
//!
//! - visual separators, which are ignored: spaces, `-`, `.`, `(`, `)`, `/`, and the `(0)` that
//!   some people write after the country code (`+49 (0)30 1234567`);
//! - `tel:` URIs (`tel:+4930123456;phone-context=…`: parameters are dropped);
//! - `+CC…` and the international prefix (`00CC…`, `011CC…`): an E.164 number;
//! - the national (trunk) prefix (`0AC…`, `1AC…`): a national number of this country;
//! - in plans without a national prefix (Spain, Italy: "closed" plans), any other number is the
//!   national significant number;
//! - a full national significant number without the prefix when the plan knows its length
//!   ([`NumberingPlan::nsn_length`], 10 in the NANP);
//! - a local number, to which the configured area code is prepended.
//!
//! Emergency and short numbers are matched exactly, before anything else, and are always allowed.
//! Extensions are recognised through a callback so that this module needs no store.
//!
//! Errors map onto SIP responses ([`NumberError::sip_status`]): 484 Address Incomplete for
//! numbers that are too short or malformed, 404 for an unknown extension, 403 for a barred call.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::str::FromStr;

/// `[numbering]`: the local numbering plan.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberingConfig {
    /// Country calling code without `+` (`country_code`, default `49`).
    pub country_code: String,
    /// Trunk prefix for national numbers (`national_prefix`, default `0`).
    pub national_prefix: String,
    /// Prefix for international numbers (`international_prefix`, default `00`).
    pub international_prefix: String,
    /// Local area code, so that local numbers can be dialled without it (`area_code`).
    pub area_code: Option<String>,
    /// Length of extension numbers, when fixed (`extension_length`).
    pub extension_length: Option<usize>,
    /// Emergency numbers, always allowed and always to the PSTN (`emergency`; default: the
    /// country's, e.g. 112 and 110 for 49).
    pub emergency: Option<Vec<String>>,
    /// Short service numbers (`short_numbers`; `x` matches any digit, e.g. `118xx`).
    pub short_numbers: Option<Vec<String>>,
    /// Mobile prefixes of the national significant number (`mobile_prefixes`, e.g. `15`).
    pub mobile_prefixes: Option<Vec<String>>,
    /// Premium-rate prefixes of the national significant number (`premium_prefixes`).
    pub premium_prefixes: Option<Vec<String>>,
    /// Call permissions of extensions that do not list their own (`default_permissions`,
    /// default `["internal", "national", "mobile"]`: international and premium-rate calls are
    /// barred unless granted).
    pub default_permissions: crate::routing::Permissions,
}

impl Default for NumberingConfig {
    fn default() -> Self {
        NumberingConfig {
            country_code: "49".to_owned(),
            national_prefix: "0".to_owned(),
            international_prefix: "00".to_owned(),
            area_code: None,
            extension_length: None,
            emergency: None,
            short_numbers: None,
            mobile_prefixes: None,
            premium_prefixes: None,
            default_permissions: crate::routing::Permissions::default(),
        }
    }
}

/// An E.164 number: `+` followed by 7 to 15 digits, the first of which is not `0`.
///
/// ITU-T E.164 allows at most 15 digits. Real numbers are seldom shorter than 8 digits, but a few
/// small countries have 4-digit national numbers behind a 3-digit country code (Niue, +683 4xxx;
/// Tokelau), hence the minimum of 7.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// The fewest digits an E.164 number can have (country code included).
    pub const MIN_DIGITS: usize = 7;
    /// The most digits an E.164 number can have (country code included).
    pub const MAX_DIGITS: usize = 15;

    /// Builds a number from its digits (country code first, no `+`).
    ///
    /// Too few digits give [`NumberError::Incomplete`]; too many, a non-digit or a leading `0`
    /// give [`NumberError::Invalid`].
    pub fn from_digits(digits: &str) -> Result<Self, NumberError> {
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(NumberError::Invalid(format!(
                "unexpected character {c:?} in an E.164 number"
            )));
        }
        if digits.starts_with('0') {
            return Err(NumberError::Invalid(
                "no country code begins with 0".to_owned(),
            ));
        }
        if digits.len() < Self::MIN_DIGITS {
            return Err(NumberError::Incomplete);
        }
        if digits.len() > Self::MAX_DIGITS {
            return Err(NumberError::Invalid(format!(
                "{} digits; an E.164 number has at most {}",
                digits.len(),
                Self::MAX_DIGITS
            )));
        }
        Ok(E164(format!("+{digits}")))
    }

    /// The number as written: `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the `+` (country code first).
    pub fn digits(&self) -> &str {
        self.0.get(1..).unwrap_or_default()
    }

    /// Whether the number belongs to country code `cc` (digits, no `+`).
    ///
    /// Country codes are prefix-free, so a prefix test is exact.
    pub fn country_code_matches(&self, cc: &str) -> bool {
        !cc.is_empty() && self.digits().starts_with(cc)
    }

    /// The national significant number when the number belongs to country code `cc`.
    pub fn national_significant(&self, cc: &str) -> Option<&str> {
        if self.country_code_matches(cc) {
            self.digits().get(cc.len()..)
        } else {
            None
        }
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for E164 {
    type Err = NumberError;

    /// Parses the strict form, `+` and digits (no separators).
    fn from_str(s: &str) -> Result<Self, NumberError> {
        match s.strip_prefix('+') {
            Some(digits) => E164::from_digits(digits),
            None => Err(NumberError::Invalid(format!(
                "{s:?} is not in E.164 form (+ and digits)"
            ))),
        }
    }
}

/// What a dialled string turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialled {
    /// An extension of this office (its number as dialled).
    Extension(String),
    /// An emergency number (`112`, `110`, `911`, `999`), always allowed, always to the PSTN.
    Emergency(String),
    /// A short number (`116117`, `118xx`), always to the PSTN; allowed without permission unless
    /// it begins with a premium prefix (see [`NumberingPlan::short_category`]).
    Short(String),
    /// Any other number, normalised to E.164.
    E164(E164),
}

impl fmt::Display for Dialled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dialled::Extension(n) => write!(f, "extension {n}"),
            Dialled::Emergency(n) => write!(f, "emergency number {n}"),
            Dialled::Short(n) => write!(f, "short number {n}"),
            Dialled::E164(n) => write!(f, "{n}"),
        }
    }
}

/// The kind of a call's destination, for permissions, billing and the explainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// An extension of this office.
    Internal,
    /// An emergency number.
    Emergency,
    /// A short number (service and directory numbers).
    Short,
    /// A number in the configured area code.
    Local,
    /// A fixed-line number elsewhere in the country.
    National,
    /// A mobile number in the country.
    Mobile,
    /// A number in another country.
    International,
    /// A premium-rate (or mass-call) number in the country.
    Premium,
}

impl Category {
    /// The lower-case name used in logs and the explainer.
    pub fn name(self) -> &'static str {
        match self {
            Category::Internal => "internal",
            Category::Emergency => "emergency",
            Category::Short => "short",
            Category::Local => "local",
            Category::National => "national",
            Category::Mobile => "mobile",
            Category::International => "international",
            Category::Premium => "premium",
        }
    }

    /// The permission a caller needs for this category; `None` for emergency and short numbers,
    /// which are always allowed. Local calls need the national permission.
    pub fn required_permission(self) -> Option<Permission> {
        match self {
            Category::Internal => Some(Permission::Internal),
            Category::Emergency | Category::Short => None,
            Category::Local | Category::National => Some(Permission::National),
            Category::Mobile => Some(Permission::Mobile),
            Category::International => Some(Permission::International),
            Category::Premium => Some(Permission::Premium),
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing an extension may be allowed to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Other extensions.
    Internal,
    /// Local and national fixed-line numbers.
    National,
    /// National mobile numbers.
    Mobile,
    /// Numbers in other countries.
    International,
    /// Premium-rate numbers.
    Premium,
}

impl Permission {
    /// Every permission, in a fixed order.
    pub const ALL: [Permission; 5] = [
        Permission::Internal,
        Permission::National,
        Permission::Mobile,
        Permission::International,
        Permission::Premium,
    ];

    /// The name used in configuration (`"internal"`, `"national"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Permission::Internal => "internal",
            Permission::National => "national",
            Permission::Mobile => "mobile",
            Permission::International => "international",
            Permission::Premium => "premium",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Permission::Internal => 1,
            Permission::National => 2,
            Permission::Mobile => 4,
            Permission::International => 8,
            Permission::Premium => 16,
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Permission {
    type Err = PermissionError;

    /// Parses a permission name, case-insensitively, surrounding spaces ignored.
    fn from_str(s: &str) -> Result<Self, PermissionError> {
        let t = s.trim();
        Permission::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| PermissionError(s.to_owned()))
    }
}

/// A permission name that is not one of `internal`, `national`, `mobile`, `international`,
/// `premium`, `all` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown call permission {0:?}: expected internal, national, mobile, international, premium, \
     all or none"
)]
pub struct PermissionError(pub String);

/// The set of [`Permission`]s of an extension.
///
/// The default allows internal, national (with local) and mobile calls and bars international and
/// premium-rate calls. Emergency and short numbers need no permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permissions {
    bits: u8,
}

impl Permissions {
    /// No permission: only emergency and short numbers.
    pub const NONE: Permissions = Permissions { bits: 0 };

    /// Every permission.
    pub fn all() -> Self {
        Permission::ALL.into_iter().collect()
    }

    /// Parses a list of names as found in configuration: `["internal", "national", "mobile"]`.
    /// `"all"` adds every permission and `"none"` adds nothing, so `["none"]` (or an empty list)
    /// bars everything but emergency and short numbers. Names are case-insensitive.
    pub fn parse<I, S>(items: I) -> Result<Self, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = Permissions::NONE;
        for item in items {
            let item = item.as_ref();
            let t = item.trim();
            if t.eq_ignore_ascii_case("all") {
                set = Permissions::all();
            } else if t.eq_ignore_ascii_case("none") {
                continue;
            } else {
                set.insert(item.parse()?);
            }
        }
        Ok(set)
    }

    /// Whether `p` is in the set.
    pub fn allows(&self, p: Permission) -> bool {
        self.bits & p.bit() != 0
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: Permission) {
        self.bits |= p.bit();
    }

    /// Removes `p`.
    pub fn remove(&mut self, p: Permission) {
        self.bits &= !p.bit();
    }

    /// The permissions in the set, in the order of [`Permission::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        Permission::ALL.into_iter().filter(|p| self.allows(*p))
    }
}

impl Default for Permissions {
    fn default() -> Self {
        [
            Permission::Internal,
            Permission::National,
            Permission::Mobile,
        ]
        .into_iter()
        .collect()
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<T: IntoIterator<Item = Permission>>(iter: T) -> Self {
        let mut set = Permissions::NONE;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl fmt::Display for Permissions {
    /// The names joined with commas; `none` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for p in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(p.name())?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Why a dialled number cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Too few digits to be a number (SIP 484 Address Incomplete).
    #[error("number incomplete")]
    Incomplete,
    /// Not a number: bad characters, too long, a prefix in the wrong place (SIP 484).
    #[error("invalid number: {0}")]
    Invalid(String),
    /// Has the length of an extension but no such extension exists (SIP 404 Not Found).
    #[error("no extension {0}")]
    UnknownExtension(String),
    /// The caller may not call numbers of this category (SIP 403 Forbidden).
    #[error("calls to {0} numbers are barred")]
    Barred(Category),
}

impl NumberError {
    /// The SIP status code to reject the call with.
    pub fn sip_status(&self) -> u16 {
        match self {
            NumberError::Incomplete | NumberError::Invalid(_) => 484,
            NumberError::UnknownExtension(_) => 404,
            NumberError::Barred(_) => 403,
        }
    }
}

/// A country's numbering plan as this office uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberingPlan {
    /// Country calling code, digits without `+` (`"49"`).
    pub country_code: String,
    /// National (trunk) prefix (`"0"`; `"1"` in the NANP; empty in closed plans such as Spain's).
    pub national_prefix: String,
    /// International prefix (`"00"`; `"011"` in the NANP).
    pub international_prefix: String,
    /// Area code without the national prefix (`"30"` for Berlin); when set, numbers dialled
    /// without any prefix are local numbers in this area.
    pub area_code: Option<String>,
    /// Length of a national significant number that may be dialled without the national prefix
    /// (10 in the NANP, where `212 555 0100` is as good as `1 212 555 0100`).
    pub nsn_length: Option<usize>,
    /// Length of extension numbers: a number of this length (or shorter) without a prefix that
    /// is not a known extension is rejected (404, or 484 when shorter) instead of being taken for
    /// a local number. `None`: extensions are only recognised by look-up.
    pub extension_length: Option<usize>,
    /// Emergency numbers, matched exactly (`"112"`, `"110"`).
    pub emergency: Vec<String>,
    /// Short numbers, matched exactly; `x` stands for any digit (`"116xxx"`, `"118xx"`).
    pub short_numbers: Vec<String>,
    /// National significant number prefixes of mobile numbers (`"15"`, `"16"`, `"17"` in Germany).
    pub mobile_prefixes: Vec<String>,
    /// National significant number prefixes of premium-rate numbers (`"900"`, `"137"`).
    pub premium_prefixes: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether `digits` matches `pattern`, where `x`/`X` stands for any one digit.
fn pattern_matches(pattern: &str, digits: &str) -> bool {
    pattern.len() == digits.len()
        && pattern
            .bytes()
            .zip(digits.bytes())
            .all(|(p, d)| p == d || (p.eq_ignore_ascii_case(&b'x') && d.is_ascii_digit()))
}

impl NumberingPlan {
    /// Builds the plan from `[numbering]`, with defaults for what the file cannot say yet:
    /// emergency, short, mobile and premium numbers of the country where known (Germany, Austria,
    /// Switzerland, France, Italy, Spain, the UK, the NANP), `112` and `911` elsewhere; no area
    /// code and no extension length; a 10-digit national number length in the NANP.
    pub fn from_config(cfg: &NumberingConfig) -> Self {
        let cc = cfg.country_code.trim().trim_start_matches('+').to_owned();
        let (emergency, short, mobile, premium): (&[&str], &[&str], &[&str], &[&str]) =
            match cc.as_str() {
                "49" => (
                    &["112", "110"],
                    &["115", "116xxx", "118xx"],
                    &["15", "16", "17"],
                    // Premium-rate and special-rate services: 0900 premium, 0137 mass calls,
                    // 118xx directory enquiries, 0700 personal numbers, 0180 shared-cost,
                    // 0181 international VPN, 012 "innovative services". 032 (national
                    // subscriber numbers) stays national.
                    &["900", "137", "118", "700", "180", "181", "12"],
                ),
                "43" => (
                    &["112", "122", "133", "144"],
                    &["116xxx", "118xxx"],
                    &[
                        "650", "660", "664", "676", "677", "678", "680", "681", "688", "699",
                    ],
                    &["900", "901", "930", "931", "939", "118"],
                ),
                "41" => (
                    &["112", "117", "118", "144"],
                    &["116xxx", "18xx"],
                    &["75", "76", "77", "78", "79"],
                    &["900", "901", "906"],
                ),
                "33" => (
                    &["112", "15", "17", "18", "114", "115", "119"],
                    &["116xxx", "118xxx"],
                    &["6", "7"],
                    &["89", "118"],
                ),
                "39" => (
                    &["112", "113", "115", "118"],
                    &["116xxx"],
                    &["3"],
                    &["89", "4"],
                ),
                "34" => (
                    &["112", "091", "092", "061", "080", "085", "062"],
                    &["116xxx", "118xx", "010", "012", "060"],
                    &["6", "71", "72", "73", "74"],
                    &["803", "806", "807", "905", "118"],
                ),
                "44" => (
                    &["999", "112"],
                    &["101", "111", "116xxx", "118xxx"],
                    &["71", "72", "73", "74", "75", "77", "78", "79"],
                    &["9", "871", "872", "873", "118"],
                ),
                "1" => (
                    &["911", "112"],
                    &["211", "311", "411", "511", "611", "711", "811"],
                    &[],
                    &["900", "976"],
                ),
                _ => (&["112", "911"], &[], &[], &[]),
            };
        NumberingPlan {
            nsn_length: if cc == "1" { Some(10) } else { None },
            country_code: cc,
            national_prefix: cfg.national_prefix.trim().to_owned(),
            international_prefix: cfg.international_prefix.trim().to_owned(),
            area_code: cfg.area_code.clone(),
            extension_length: cfg.extension_length,
            emergency: cfg.emergency.clone().unwrap_or_else(|| strings(emergency)),
            short_numbers: cfg.short_numbers.clone().unwrap_or_else(|| strings(short)),
            mobile_prefixes: cfg
                .mobile_prefixes
                .clone()
                .unwrap_or_else(|| strings(mobile)),
            premium_prefixes: cfg
                .premium_prefixes
                .clone()
                .unwrap_or_else(|| strings(premium)),
        }
    }

    /// Removes visual separators and a `tel:` scheme; drops `(0)` after a country code.
    fn clean(&self, dialled: &str) -> String {
        let mut s = dialled.trim();
        if s.len() >= 4 && s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("tel:")) {
            s = s.get(4..).unwrap_or_default();
            if let Some(i) = s.find(';') {
                s = s.get(..i).unwrap_or_default();
            }
        }
        let chars: Vec<char> = s.chars().collect();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            if c == '('
                && chars.get(i + 1) == Some(&'0')
                && chars.get(i + 2) == Some(&')')
                && (out.starts_with('+')
                    || (!self.international_prefix.is_empty()
                        && out.len() > self.international_prefix.len()
                        && out.starts_with(&self.international_prefix)))
            {
                i += 3;
                continue;
            }
            if !matches!(c, ' ' | '\t' | '-' | '.' | '(' | ')' | '/') {
                out.push(c);
            }
            i += 1;
        }
        out
    }

    /// An E.164 number of this country from its national significant number.
    fn national(&self, nsn: &str) -> Result<E164, NumberError> {
        if nsn.is_empty() {
            return Err(NumberError::Incomplete);
        }
        if !self.national_prefix.is_empty() && nsn.starts_with(&self.national_prefix) {
            return Err(NumberError::Invalid(format!(
                "a national number does not begin with the national prefix {}",
                self.national_prefix
            )));
        }
        E164::from_digits(&format!("{}{nsn}", self.country_code))
    }

    /// An E.164 number from digits dialled after `+` or the international prefix. A number of
    /// this country must not repeat the national prefix after the country code.
    fn international(&self, digits: &str) -> Result<E164, NumberError> {
        let n = E164::from_digits(digits)?;
        if let Some(nsn) = n.national_significant(&self.country_code) {
            if !self.national_prefix.is_empty() && nsn.starts_with(&self.national_prefix) {
                return Err(NumberError::Invalid(format!(
                    "the national prefix {} after the country code {}",
                    self.national_prefix, self.country_code
                )));
            }
        }
        Ok(n)
    }

    /// Classifies what was dialled. `is_extension` says whether a digit string is an extension
    /// of this office.
    ///
    /// Order of the checks: `+` numbers (E.164 as they are); emergency numbers; short numbers;
    /// extensions; the international prefix; the national prefix; then, without any prefix, a
    /// national number (closed plans, or [`Self::nsn_length`] digits) or a local number (with
    /// [`Self::area_code`]).
    pub fn classify(
        &self,
        dialled: &str,
        is_extension: impl Fn(&str) -> bool,
    ) -> Result<Dialled, NumberError> {
        let cleaned = self.clean(dialled);
        let (plus, digits) = match cleaned.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, cleaned.as_str()),
        };
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(NumberError::Invalid(format!(
                "unexpected character {c:?} in {dialled:?}"
            )));
        }
        if digits.is_empty() {
            return Err(NumberError::Incomplete);
        }
        if plus {
            return self.international(digits).map(Dialled::E164);
        }
        if self.emergency.iter().any(|e| e == digits) {
            return Ok(Dialled::Emergency(digits.to_owned()));
        }
        if self
            .short_numbers
            .iter()
            .any(|p| pattern_matches(p, digits))
        {
            return Ok(Dialled::Short(digits.to_owned()));
        }
        if is_extension(digits) {
            return Ok(Dialled::Extension(digits.to_owned()));
        }
        let intl = self.international_prefix.as_str();
        if !intl.is_empty() && digits.starts_with(intl) {
            let rest = digits.get(intl.len()..).unwrap_or_default();
            if rest.is_empty() {
                return Err(NumberError::Incomplete);
            }
            return self.international(rest).map(Dialled::E164);
        }
        let nat = self.national_prefix.as_str();
        if !nat.is_empty() && digits.starts_with(nat) {
            let rest = digits.get(nat.len()..).unwrap_or_default();
            return self.national(rest).map(Dialled::E164);
        }
        if let Some(len) = self.extension_length {
            if digits.len() < len {
                return Err(NumberError::Incomplete);
            }
            if digits.len() == len {
                return Err(NumberError::UnknownExtension(digits.to_owned()));
            }
        }
        if nat.is_empty() || self.nsn_length == Some(digits.len()) {
            return self.national(digits).map(Dialled::E164);
        }
        match &self.area_code {
            Some(area) if !area.is_empty() => {
                self.national(&format!("{area}{digits}")).map(Dialled::E164)
            }
            // Without an area code a number needs a prefix: more digits are wanted.
            _ => Err(NumberError::Incomplete),
        }
    }

    /// The category of an E.164 number: international when the country code differs, else
    /// premium, mobile, local (in the area code) or national, in this order.
    pub fn category(&self, n: &E164) -> Category {
        let Some(nsn) = n.national_significant(&self.country_code) else {
            return Category::International;
        };
        let has = |prefixes: &[String]| {
            prefixes
                .iter()
                .any(|p| !p.is_empty() && nsn.starts_with(p.as_str()))
        };
        if has(&self.premium_prefixes) {
            Category::Premium
        } else if has(&self.mobile_prefixes) {
            Category::Mobile
        } else if self
            .area_code
            .as_deref()
            .is_some_and(|a| !a.is_empty() && nsn.starts_with(a))
        {
            Category::Local
        } else {
            Category::National
        }
    }

    /// The category of a short number: premium when its digits begin with a premium prefix
    /// (`118xx` directory enquiries in Germany), else short.
    pub fn short_category(&self, digits: &str) -> Category {
        if self
            .premium_prefixes
            .iter()
            .any(|p| !p.is_empty() && digits.starts_with(p.as_str()))
        {
            Category::Premium
        } else {
            Category::Short
        }
    }

    /// The category of a classified number.
    pub fn category_of(&self, d: &Dialled) -> Category {
        match d {
            Dialled::Extension(_) => Category::Internal,
            Dialled::Emergency(_) => Category::Emergency,
            Dialled::Short(digits) => self.short_category(digits),
            Dialled::E164(n) => self.category(n),
        }
    }

    /// Checks a classified number against a caller's permissions and returns its category.
    /// Emergency numbers are always allowed, and so are short numbers unless they begin with a
    /// premium prefix (then they need the premium permission).
    pub fn check(&self, d: &Dialled, perms: &Permissions) -> Result<Category, NumberError> {
        let category = self.category_of(d);
        match category.required_permission() {
            Some(p) if !perms.allows(p) => Err(NumberError::Barred(category)),
            _ => Ok(category),
        }
    }

    /// The number as dialled on a PSTN line of this country: national prefix and national
    /// significant number for numbers of this country, else international prefix and digits.
    pub fn to_national(&self, n: &E164) -> String {
        match n.national_significant(&self.country_code) {
            Some(nsn) => format!("{}{nsn}", self.national_prefix),
            None => format!("{}{}", self.international_prefix, n.digits()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NumberingConfig;
    use super::*;

    fn plan(cc: &str, nat: &str, intl: &str) -> NumberingPlan {
        NumberingPlan::from_config(&NumberingConfig {
            country_code: cc.to_owned(),
            national_prefix: nat.to_owned(),
            international_prefix: intl.to_owned(),
            ..NumberingConfig::default()
        })
    }

    #[test]
    fn configured_lists_override_the_country_defaults() {
        let text = "[numbering]\ncountry_code = \"49\"\narea_code = \"30\"\nemergency = [\"112\", \"19222\"]\nshort_numbers = [\"118xx\"]\n";
        let cfg =
            crate::config::Config::from_toml_str(text, std::path::Path::new("t.toml")).unwrap();
        let p = NumberingPlan::from_config(&cfg.numbering);
        assert_eq!(p.area_code.as_deref(), Some("30"));
        assert_eq!(p.emergency, vec!["112".to_string(), "19222".to_string()]);
        assert!(matches!(
            p.classify("19222", |_| false),
            Ok(Dialled::Emergency(_))
        ));
        assert!(matches!(
            p.classify("1234567", |_| false),
            Ok(Dialled::E164(_))
        ));
        let bad = "[numbering]\nemergency = [\"112\", \"1a2\"]\n";
        let err =
            crate::config::Config::from_toml_str(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("numbering.emergency[1]"), "{err}");
        assert!(err.to_string().contains("t.toml:2"), "{err}");
    }

    fn de() -> NumberingPlan {
        plan("49", "0", "00")
    }

    fn no_ext(_: &str) -> bool {
        false
    }

    fn e164(p: &NumberingPlan, dialled: &str) -> String {
        match p.classify(dialled, no_ext) {
            Ok(Dialled::E164(n)) => n.to_string(),
            other => panic!("{dialled:?}: expected an E.164 number, got {other:?}"),
        }
    }

    fn cat(p: &NumberingPlan, dialled: &str) -> Category {
        match p.classify(dialled, no_ext) {
            Ok(Dialled::E164(n)) => p.category(&n),
            other => panic!("{dialled:?}: expected an E.164 number, got {other:?}"),
        }
    }

    #[test]
    fn e164_type() {
        let n: E164 = "+4930123456".parse().unwrap();
        assert_eq!(n.to_string(), "+4930123456");
        assert_eq!(n.as_str(), "+4930123456");
        assert_eq!(n.digits(), "4930123456");
        assert!(n.country_code_matches("49"));
        assert!(!n.country_code_matches("1"));
        assert!(!n.country_code_matches(""));
        assert_eq!(n.national_significant("49"), Some("30123456"));
        assert_eq!(n.national_significant("1"), None);
        assert!("4930123456".parse::<E164>().is_err());
        assert_eq!("+4930".parse::<E164>(), Err(NumberError::Incomplete));
        assert!(matches!(
            "+1234567890123456".parse::<E164>(),
            Err(NumberError::Invalid(_))
        ));
        assert!(matches!(
            "+0301234567".parse::<E164>(),
            Err(NumberError::Invalid(_))
        ));
        assert!(matches!(
            "+49 30".parse::<E164>(),
            Err(NumberError::Invalid(_))
        ));
        assert!("+123456789012345".parse::<E164>().is_ok());
        assert!("+6834002".parse::<E164>().is_ok());
        assert!(matches!("+".parse::<E164>(), Err(NumberError::Incomplete)));
    }

    #[test]
    fn german_habits() {
        let p = de();
        assert_eq!(e164(&p, "030 1234567"), "+49301234567");
        assert_eq!(e164(&p, "0049 30 1234567"), "+49301234567");
        assert_eq!(e164(&p, "+49 (30) 123-4567"), "+49301234567");
        assert_eq!(e164(&p, "+49 (0)30 1234567"), "+49301234567");
        assert_eq!(e164(&p, "0049 (0)30 1234567"), "+49301234567");
        assert_eq!(e164(&p, "030/123 45 67"), "+49301234567");
        assert_eq!(e164(&p, "(030) 123.45.67"), "+49301234567");
        assert_eq!(e164(&p, "tel:+49-30-1234567"), "+49301234567");
        assert_eq!(e164(&p, "TEL:+4930123456;phone-context=x"), "+4930123456");
        assert_eq!(e164(&p, "  0301234567\t"), "+49301234567");
        // Without an area code, a bare local number needs more digits.
        assert_eq!(p.classify("1234567", no_ext), Err(NumberError::Incomplete));
        let mut berlin = de();
        berlin.area_code = Some("30".to_owned());
        assert_eq!(e164(&berlin, "1234567"), "+49301234567");
        assert_eq!(cat(&berlin, "1234567"), Category::Local);
        assert_eq!(cat(&berlin, "089 123456"), Category::National);
        assert_eq!(cat(&p, "030 1234567"), Category::National);
    }

    #[test]
    fn german_special_numbers() {
        let p = de();
        assert_eq!(
            p.classify("112", no_ext),
            Ok(Dialled::Emergency("112".into()))
        );
        assert_eq!(
            p.classify("110", no_ext),
            Ok(Dialled::Emergency("110".into()))
        );
        assert_eq!(
            p.classify("116 117", no_ext),
            Ok(Dialled::Short("116117".into()))
        );
        assert_eq!(
            p.classify("11833", no_ext),
            Ok(Dialled::Short("11833".into()))
        );
        assert_eq!(p.classify("115", no_ext), Ok(Dialled::Short("115".into())));
        assert_eq!(cat(&p, "0151 12345678"), Category::Mobile);
        assert_eq!(e164(&p, "0151 12345678"), "+4915112345678");
        assert_eq!(cat(&p, "0176-1234567"), Category::Mobile);
        assert_eq!(cat(&p, "0900 1234567"), Category::Premium);
        assert_eq!(cat(&p, "0137 1234567"), Category::Premium);
        assert_eq!(cat(&p, "00 1 212 555 0100"), Category::International);
        assert_eq!(e164(&p, "00 1 212 555 0100"), "+12125550100");
        assert_eq!(cat(&p, "+43 1 1234567"), Category::International);
        // Emergency numbers come before extensions.
        assert_eq!(
            p.classify("112", |n| n == "112"),
            Ok(Dialled::Emergency("112".into()))
        );
    }

    #[test]
    fn extensions() {
        let p = de();
        let ext = |n: &str| n == "100" || n == "101";
        assert_eq!(p.classify("100", ext), Ok(Dialled::Extension("100".into())));
        assert_eq!(
            p.classify("1 01", ext),
            Ok(Dialled::Extension("101".into()))
        );
        assert_eq!(p.classify("102", ext), Err(NumberError::Incomplete));
        let mut p = de();
        p.extension_length = Some(3);
        p.area_code = Some("30".into());
        assert_eq!(
            p.classify("102", ext),
            Err(NumberError::UnknownExtension("102".into()))
        );
        assert_eq!(p.classify("102", ext).unwrap_err().sip_status(), 404);
        assert_eq!(p.classify("10", ext), Err(NumberError::Incomplete));
        assert_eq!(e164(&p, "1234567"), "+49301234567");
        assert_eq!(
            p.check(&Dialled::Extension("100".into()), &Permissions::default()),
            Ok(Category::Internal)
        );
        assert_eq!(
            p.check(&Dialled::Extension("100".into()), &Permissions::NONE),
            Err(NumberError::Barred(Category::Internal))
        );
    }

    #[test]
    fn spanish_closed_plan() {
        let p = plan("34", "", "00");
        assert_eq!(e164(&p, "912345678"), "+34912345678");
        assert_eq!(e164(&p, "91 234 56 78"), "+34912345678");
        assert_eq!(e164(&p, "0049 30 1234567"), "+49301234567");
        assert_eq!(cat(&p, "0049 30 1234567"), Category::International);
        assert_eq!(
            p.classify("112", no_ext),
            Ok(Dialled::Emergency("112".into()))
        );
        assert_eq!(cat(&p, "612 345 678"), Category::Mobile);
        assert_eq!(cat(&p, "912345678"), Category::National);
        assert_eq!(cat(&p, "806 123 456"), Category::Premium);
        assert_eq!(p.to_national(&"+34912345678".parse().unwrap()), "912345678");
        assert_eq!(
            p.to_national(&"+49301234567".parse().unwrap()),
            "0049301234567"
        );
        assert_eq!(p.classify("91", no_ext), Err(NumberError::Incomplete));
    }

    #[test]
    fn italian_numbers_keep_their_zero() {
        let p = plan("39", "", "00");
        assert_eq!(e164(&p, "06 1234 5678"), "+390612345678");
        assert_eq!(cat(&p, "333 1234567"), Category::Mobile);
    }

    #[test]
    fn nanp() {
        let mut p = plan("1", "1", "011");
        assert_eq!(e164(&p, "1 212 555 0100"), "+12125550100");
        assert_eq!(e164(&p, "(212) 555-0100"), "+12125550100");
        assert_eq!(e164(&p, "011 49 30 1234567"), "+49301234567");
        assert_eq!(e164(&p, "+1 212 555 0100"), "+12125550100");
        assert_eq!(
            p.classify("911", no_ext),
            Ok(Dialled::Emergency("911".into()))
        );
        assert_eq!(p.classify("411", no_ext), Ok(Dialled::Short("411".into())));
        assert_eq!(p.classify("555 0100", no_ext), Err(NumberError::Incomplete));
        p.area_code = Some("212".into());
        assert_eq!(e164(&p, "555 0100"), "+12125550100");
        assert_eq!(e164(&p, "212 555 0100"), "+12125550100");
        assert_eq!(cat(&p, "555 0100"), Category::Local);
        assert_eq!(cat(&p, "1 900 555 0100"), Category::Premium);
        assert_eq!(cat(&p, "1 415 555 0100"), Category::National);
        assert!(matches!(
            p.classify("1 1 212 555 0100", no_ext),
            Err(NumberError::Invalid(_))
        ));
        assert_eq!(p.classify("1", no_ext), Err(NumberError::Incomplete));
        assert_eq!(
            p.to_national(&"+12125550100".parse().unwrap()),
            "12125550100"
        );
        assert_eq!(
            p.to_national(&"+442079460018".parse().unwrap()),
            "011442079460018"
        );
    }

    #[test]
    fn united_kingdom() {
        let p = plan("44", "0", "00");
        assert_eq!(e164(&p, "020 7946 0018"), "+442079460018");
        assert_eq!(e164(&p, "+44 (0)20 7946 0018"), "+442079460018");
        assert_eq!(
            p.classify("999", no_ext),
            Ok(Dialled::Emergency("999".into()))
        );
        assert_eq!(
            p.classify("112", no_ext),
            Ok(Dialled::Emergency("112".into()))
        );
        assert_eq!(cat(&p, "07700 900123"), Category::Mobile);
        assert_eq!(cat(&p, "0909 8790000"), Category::Premium);
        assert_eq!(cat(&p, "00 49 30 1234567"), Category::International);
        assert_eq!(
            p.to_national(&"+442079460018".parse().unwrap()),
            "02079460018"
        );
    }

    #[test]
    fn incomplete_and_invalid() {
        let p = de();
        for s in [
            "", "   ", "0", "00", "+", "0049", "030", "+49 30", "001", "-()/.",
        ] {
            assert_eq!(p.classify(s, no_ext), Err(NumberError::Incomplete), "{s:?}");
        }
        for s in [
            "030 12345a",
            "*21#",
            "sip:100@example.com",
            "++4930123456",
            "+49+30123456",
            "0049 0 30 1234567",
            "0000 30 1234567",
            "0049 1234567890123456",
            "030 1234567 ext 5",
            "0३0 1234567",
            "#",
        ] {
            let e = p.classify(s, no_ext).unwrap_err();
            assert!(matches!(e, NumberError::Invalid(_)), "{s:?}: {e:?}");
            assert_eq!(e.sip_status(), 484);
        }
        assert_eq!(NumberError::Incomplete.sip_status(), 484);
    }

    #[test]
    fn classify_never_panics() {
        let p = de();
        let alphabet = [
            '0', '1', '9', '+', '(', ')', ' ', '-', 'x', 'é', ';', ':', 't',
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut s = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            if let Ok(Dialled::E164(n)) = p.classify(&s, |n| n == "100") {
                assert!(n.digits().len() >= E164::MIN_DIGITS);
                assert!(n.digits().len() <= E164::MAX_DIGITS);
                let _ = p.category(&n);
                let _ = p.to_national(&n);
            }
        }
    }

    #[test]
    fn permissions() {
        let p = de();
        let d = Permissions::default();
        assert!(d.allows(Permission::Internal));
        assert!(d.allows(Permission::National));
        assert!(d.allows(Permission::Mobile));
        assert!(!d.allows(Permission::International));
        assert!(!d.allows(Permission::Premium));
        assert_eq!(d.to_string(), "internal,national,mobile");
        assert_eq!(Permissions::NONE.to_string(), "none");

        let intl = p.classify("00 1 212 555 0100", no_ext).unwrap();
        assert_eq!(
            p.check(&intl, &d),
            Err(NumberError::Barred(Category::International))
        );
        assert_eq!(p.check(&intl, &d).unwrap_err().sip_status(), 403);
        let premium = p.classify("0900 1234567", no_ext).unwrap();
        assert_eq!(
            p.check(&premium, &d),
            Err(NumberError::Barred(Category::Premium))
        );
        let mobile = p.classify("0151 12345678", no_ext).unwrap();
        assert_eq!(p.check(&mobile, &d), Ok(Category::Mobile));
        let national = p.classify("030 1234567", no_ext).unwrap();
        assert_eq!(p.check(&national, &d), Ok(Category::National));

        // Emergency and short numbers are always allowed, even with no permission at all.
        let emergency = p.classify("112", no_ext).unwrap();
        assert_eq!(
            p.check(&emergency, &Permissions::NONE),
            Ok(Category::Emergency)
        );
        let short = p.classify("116117", no_ext).unwrap();
        assert_eq!(p.check(&short, &Permissions::NONE), Ok(Category::Short));
        assert_eq!(
            p.check(&national, &Permissions::NONE),
            Err(NumberError::Barred(Category::National))
        );

        let all = Permissions::parse(["all"]).unwrap();
        assert_eq!(p.check(&intl, &all), Ok(Category::International));
        assert_eq!(p.check(&premium, &all), Ok(Category::Premium));
        assert_eq!(all, Permissions::all());

        let parsed = Permissions::parse(["Internal", " international "]).unwrap();
        assert!(parsed.allows(Permission::International));
        assert!(!parsed.allows(Permission::National));
        assert_eq!(
            p.check(&mobile, &parsed),
            Err(NumberError::Barred(Category::Mobile))
        );
        assert_eq!(p.check(&intl, &parsed), Ok(Category::International));
        assert_eq!(
            Permissions::parse(Vec::<String>::new()).unwrap(),
            Permissions::NONE
        );
        assert_eq!(Permissions::parse(["none"]).unwrap(), Permissions::NONE);
        assert_eq!(
            Permissions::parse(["national", "worldwide"]),
            Err(PermissionError("worldwide".into()))
        );
        let mut m = Permissions::default();
        m.remove(Permission::Mobile);
        m.insert(Permission::Premium);
        assert_eq!(m.to_string(), "internal,national,premium");
        assert_eq!("MOBILE".parse::<Permission>().unwrap(), Permission::Mobile);
    }

    #[test]
    fn from_config_defaults() {
        let p = NumberingPlan::from_config(&NumberingConfig::default());
        assert_eq!(p.country_code, "49");
        assert_eq!(p.emergency, vec!["112", "110"]);
        assert_eq!(p.area_code, None);
        assert_eq!(p.nsn_length, None);
        let other = plan("+351", "", "00");
        assert_eq!(other.country_code, "351");
        assert_eq!(other.emergency, vec!["112", "911"]);
        assert_eq!(plan("1", "1", "011").nsn_length, Some(10));
    }

    #[test]
    fn short_number_patterns() {
        assert!(pattern_matches("118xx", "11833"));
        assert!(pattern_matches("118xx", "11880"));
        assert!(pattern_matches("118XX", "11899"));
        assert!(!pattern_matches("118xx", "1183"));
        assert!(!pattern_matches("118xx", "118333"));
        assert!(!pattern_matches("118xx", "11933"));
        assert!(pattern_matches("115", "115"));
    }

    #[test]
    fn german_expensive_ranges_are_premium() {
        let p = de();
        for dialled in [
            "0900 1234567",
            "0137 1234567",
            "0700 12345678",
            "0180 5123456",
            "0181 1234567",
            "012 3456789",
            "011833",
        ] {
            assert_eq!(cat(&p, dialled), Category::Premium, "{dialled}");
        }
        // 032 numbers are ordinary national numbers.
        assert_eq!(cat(&p, "032 12345678"), Category::National);
        // 118xx dialled as a short number is premium and barred by default …
        let d = Permissions::default();
        let directory = p.classify("11833", no_ext).unwrap();
        assert_eq!(directory, Dialled::Short("11833".into()));
        assert_eq!(
            p.check(&directory, &d),
            Err(NumberError::Barred(Category::Premium))
        );
        assert_eq!(
            p.check(&directory, &Permissions::all()),
            Ok(Category::Premium)
        );
        // … while the free short numbers stay allowed to everyone.
        let free = p.classify("116117", no_ext).unwrap();
        assert_eq!(p.check(&free, &Permissions::NONE), Ok(Category::Short));
        // The configured list replaces the built-in one.
        let own = NumberingPlan::from_config(&NumberingConfig {
            premium_prefixes: Some(vec!["900".into()]),
            ..NumberingConfig::default()
        });
        assert_eq!(cat(&own, "0180 5123456"), Category::National);
        assert_eq!(cat(&own, "0900 1234567"), Category::Premium);
        let short = own.classify("11833", no_ext).unwrap();
        assert_eq!(own.check(&short, &d), Ok(Category::Short));
    }
}
