//! The Replaces header (RFC 3891): which dialog a new INVITE (or the INVITE a REFER asks for)
//! takes the place of — its Call-ID and the two tags, with `early-only`. It arrives as a
//! header of its own or URI-escaped in a Refer-To's `?Replaces=` (RFC 3891 §5). Outside
//! data: a clear error, never a panic.

use super::header::{parse_params, split_list, trim_ws, HeaderError};
use super::uri::unescape;

/// A parsed Replaces value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    /// The tag the sender of the Replaces sees as the remote one (the To tag of the dialog
    /// from its side).
    pub to_tag: String,
    /// The sender's own tag.
    pub from_tag: String,
    /// Only an early dialog may be replaced (`early-only`).
    pub early_only: bool,
}

/// Why a Replaces value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplacesError {
    #[error("empty Replaces")]
    Empty,
    #[error("more than one dialog in Replaces")]
    Several,
    #[error("Replaces without to-tag and from-tag")]
    MissingTag,
    #[error("malformed Replaces: {0}")]
    Malformed(String),
}

impl From<HeaderError> for ReplacesError {
    fn from(e: HeaderError) -> Self {
        ReplacesError::Malformed(e.0)
    }
}

impl Replaces {
    /// Parses a Replaces header value: `call-id;to-tag=x;from-tag=y[;early-only]`.
    pub fn parse(value: &str) -> Result<Replaces, ReplacesError> {
        if trim_ws(value).is_empty() {
            return Err(ReplacesError::Empty);
        }
        let items = split_list(value)?;
        let item = match items.as_slice() {
            [] => return Err(ReplacesError::Empty),
            [one] => trim_ws(one),
            _ => return Err(ReplacesError::Several),
        };
        let (call_id, params) = match super::header::find_byte(item, b';') {
            Some(i) => (
                trim_ws(crate::checked::head(item, i)),
                crate::checked::tail(item, i),
            ),
            None => (item, ""),
        };
        if call_id.is_empty() || call_id.chars().any(|c| c.is_whitespace() || c == '"') {
            return Err(ReplacesError::Malformed(format!("Call-ID {call_id:?}")));
        }
        let params = parse_params(params)?;
        let tag = |name: &str| {
            params
                .value(name)
                .map(str::to_owned)
                .filter(|t| !t.is_empty())
        };
        let (Some(to_tag), Some(from_tag)) = (tag("to-tag"), tag("from-tag")) else {
            return Err(ReplacesError::MissingTag);
        };
        Ok(Replaces {
            call_id: call_id.to_owned(),
            to_tag,
            from_tag,
            early_only: params.contains("early-only"),
        })
    }

    /// The Replaces among the `?headers` of a URI (a Refer-To's), unescaped; `None` when the
    /// URI carries none.
    pub fn from_uri_headers(headers: &str) -> Option<Result<Replaces, ReplacesError>> {
        headers.split('&').find_map(|h| {
            let (name, value) = h.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("Replaces")
                .then(|| Replaces::parse(&unescape(value)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_escaped_forms() {
        // As a Polycom/Yealink BLF pickup sends it, and as baresip/Linphone put it in Refer-To.
        let r =
            Replaces::parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff;early-only")
                .unwrap();
        assert_eq!(r.call_id, "98732@sip.example.com");
        assert_eq!(r.to_tag, "ff87ff");
        assert_eq!(r.from_tag, "r33th4x0r");
        assert!(r.early_only);
        let r = Replaces::from_uri_headers(
            "Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.call_id, "12345@192.168.118.3");
        assert_eq!(r.from_tag, "5FFE-3994");
        assert!(!r.early_only);
        assert!(Replaces::from_uri_headers("Require=replaces").is_none());
    }

    #[test]
    fn refusals() {
        assert_eq!(Replaces::parse(""), Err(ReplacesError::Empty));
        assert_eq!(Replaces::parse("abc"), Err(ReplacesError::MissingTag));
        assert_eq!(
            Replaces::parse("abc;to-tag=1"),
            Err(ReplacesError::MissingTag)
        );
        assert_eq!(
            Replaces::parse("a;to-tag=1;from-tag=2, b;to-tag=1;from-tag=2"),
            Err(ReplacesError::Several)
        );
        // Multi-byte characters around the separators: an answer either way, no panic.
        let _ = Replaces::parse("\u{e9}\u{301};to-tag=\u{e9};from-tag=\u{0}");
        let _ = Replaces::from_uri_headers("Replaces=%E9%3B%3B;&=&Replaces");
    }
}
