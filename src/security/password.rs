//! The password-strength policy, one for every place a password is set: SIP passwords of
//! extensions in the configuration file and in the dashboard's extension form, and dashboard
//! accounts. Crackers (svcrack and friends) try numbers, the extension number itself, keyboard
//! runs and a short list of favourites first; those are refused here.

/// The shortest accepted password.
pub const MIN_LEN: usize = 8;
/// Fewest different characters a password must use.
const MIN_DISTINCT: usize = 5;

/// Passwords found first in every cracking dictionary (compared case-insensitively).
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "password1",
    "password123",
    "p@ssw0rd",
    "qwertyui",
    "qwertzui",
    "qwertyuiop",
    "qwertzuiop",
    "asdfghjk",
    "yxcvbnm,",
    "letmein1",
    "iloveyou",
    "admin123",
    "administrator",
    "changeme",
    "welcome1",
    "sunshine",
    "football",
    "baseball",
    "trustno1",
    "secret12",
    "secret123",
    "voip1234",
    "sip12345",
    "asterisk",
    "pasarela",
];

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Weakness {
    #[error("must have at least {MIN_LEN} characters")]
    TooShort,
    #[error("must not be only digits")]
    OnlyDigits,
    #[error("must not be the user name or extension number")]
    SameAsUser,
    #[error("must use at least {MIN_DISTINCT} different characters")]
    TooRepetitive,
    #[error("must not be a run of consecutive characters")]
    Sequence,
    #[error("is one of the most common passwords")]
    Common,
}

/// Checks `password` for the account `user` (an extension number or a dashboard user name).
pub fn check(password: &str, user: &str) -> Result<(), Weakness> {
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < MIN_LEN {
        return Err(Weakness::TooShort);
    }
    if chars.iter().all(char::is_ascii_digit) {
        return Err(Weakness::OnlyDigits);
    }
    let lower = password.to_lowercase();
    let user = user.to_lowercase();
    if !user.is_empty() && (lower == user || lower.replace(&user, "").is_empty()) {
        return Err(Weakness::SameAsUser);
    }
    let mut distinct = chars.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT {
        return Err(Weakness::TooRepetitive);
    }
    let steps: Vec<i64> = chars
        .windows(2)
        .map(|w| match w {
            [a, b] => i64::from(u32::from(*b)) - i64::from(u32::from(*a)),
            _ => 0,
        })
        .collect();
    if steps.iter().all(|s| *s == 1) || steps.iter().all(|s| *s == -1) {
        return Err(Weakness::Sequence);
    }
    if COMMON.iter().any(|c| *c == lower) {
        return Err(Weakness::Common);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        assert_eq!(check("1234", "100"), Err(Weakness::TooShort));
        assert_eq!(check("12345678", "100"), Err(Weakness::OnlyDigits));
        assert_eq!(check("100100100", "100"), Err(Weakness::OnlyDigits));
        assert_eq!(check("alicealice", "Alice"), Err(Weakness::SameAsUser));
        assert_eq!(check("aaaabbbb", "100"), Err(Weakness::TooRepetitive));
        assert_eq!(check("abcdefgh", "100"), Err(Weakness::Sequence));
        assert_eq!(check("hgfedcba", "100"), Err(Weakness::Sequence));
        assert_eq!(check("Password", "100"), Err(Weakness::Common));
        assert_eq!(check("ääääää", "100"), Err(Weakness::TooShort));
    }

    #[test]
    fn reasonable_passwords_pass() {
        for ok in [
            "secret100",
            "sip-secret-300",
            "correct horse",
            "a-long-random-secret",
            "Tr0ub4dor&3",
        ] {
            assert_eq!(check(ok, "100"), Ok(()), "{ok}");
        }
    }
}
