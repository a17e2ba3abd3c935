//! SRTP per leg: the policy of each party (`srtp = "never" | "optional" | "required"`), and
//! the SDES offer/answer decisions taken with it — which key a received offer gives, whether
//! an offer we send carries our key, and what an answer to it must contain. Each leg decides
//! on its own, so an SRTP phone can call a plain RTP one: the relay decrypts on one side and
//! encrypts on the other.

use std::collections::HashMap;
use std::fmt;

use crate::media::srtp::{MasterKey, Suite};
use crate::sdp::{MediaDescription, SdesKey};

/// Whether a party's media is encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SrtpPolicy {
    /// Plain RTP only: an offer that insists on SRTP (`RTP/SAVP`) is refused with 488, keys
    /// offered on `RTP/AVP` are ignored, and our offers carry none.
    Never,
    /// SRTP if offered: a key the party offers is taken, and what we offer it follows the other
    /// leg (our key when the other party offered one; a plain answer is then accepted).
    #[default]
    Optional,
    /// SRTP only: a plain offer is refused with 488; our offers carry a key and a plain
    /// answer fails the call attempt.
    Required,
}

impl SrtpPolicy {
    /// The configuration value: `never`, `optional` or `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpPolicy::Never => "never",
            SrtpPolicy::Optional => "optional",
            SrtpPolicy::Required => "required",
        }
    }

    /// Parses a configuration value (`if-offered` is taken for `optional`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "never" | "off" => Some(SrtpPolicy::Never),
            "optional" | "if-offered" => Some(SrtpPolicy::Optional),
            "required" | "mandatory" => Some(SrtpPolicy::Required),
            _ => None,
        }
    }
}

impl fmt::Display for SrtpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policies of the configuration: `[media] srtp` for everyone without one of their own,
/// then `[[extension]] srtp`, `[[trunk]] srtp` and `[[dundi.peer]] srtp`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SrtpPolicies {
    pub default: SrtpPolicy,
    /// By extension number.
    pub extensions: HashMap<String, SrtpPolicy>,
    /// By trunk name.
    pub trunks: HashMap<String, SrtpPolicy>,
    /// By DUNDi peer EID (as written in `[[dundi.peer]] eid`).
    pub peers: HashMap<String, SrtpPolicy>,
}

impl SrtpPolicies {
    pub fn extension(&self, number: &str) -> SrtpPolicy {
        self.extensions.get(number).copied().unwrap_or(self.default)
    }

    pub fn trunk(&self, name: &str) -> SrtpPolicy {
        self.trunks.get(name).copied().unwrap_or(self.default)
    }

    pub fn peer(&self, eid: &str) -> SrtpPolicy {
        self.peers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(eid))
            .map_or(self.default, |(_, p)| *p)
    }
}

/// What an offer received from a party means for its leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedSrtp {
    /// The party's key, when its leg will be SRTP.
    pub key: Option<SdesKey>,
    /// Whether the offer insisted on SRTP (`RTP/SAVP`), so offers we forward should too.
    pub mandatory: bool,
}

/// Checks a received offer against the offerer's policy: the key its leg will use, or the
/// status and reason to refuse it with (488).
pub fn accept_offer(
    m: &MediaDescription,
    policy: SrtpPolicy,
) -> Result<OfferedSrtp, (u16, String)> {
    let keys = m.srtp_offers();
    let mandatory = m.is_savp();
    let key = match policy {
        SrtpPolicy::Never if mandatory => {
            return Err((488, "SRTP is not allowed for this party".into()))
        }
        SrtpPolicy::Never => None,
        SrtpPolicy::Optional | SrtpPolicy::Required => keys.into_iter().next(),
    };
    if key.is_none() && mandatory {
        return Err((
            488,
            "No usable SRTP key offered (SDES AES_CM_128_HMAC_SHA1_80/_32)".into(),
        ));
    }
    if key.is_none() && policy == SrtpPolicy::Required {
        return Err((488, "SRTP required".into()));
    }
    Ok(OfferedSrtp { key, mandatory })
}

/// How an offer we send a party is secured: `None` for plain RTP, or with our key, as
/// `RTP/SAVP` when `mandatory` (else best-effort SDES on `RTP/AVP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OurOffer {
    pub secure: bool,
    pub mandatory: bool,
}

/// What we offer a party with `policy`, given what the other party did (`other`: its offer's
/// decision, or `None` when we make the offer ourselves).
pub fn our_offer(policy: SrtpPolicy, other: Option<&OfferedSrtp>) -> OurOffer {
    match policy {
        SrtpPolicy::Never => OurOffer {
            secure: false,
            mandatory: false,
        },
        SrtpPolicy::Required => OurOffer {
            secure: true,
            mandatory: true,
        },
        SrtpPolicy::Optional => OurOffer {
            secure: other.is_some_and(|o| o.key.is_some()),
            mandatory: other.is_some_and(|o| o.key.is_some() && o.mandatory),
        },
    }
}

/// Secures (or strips) the audio stream of an offer we send with our key for that leg.
pub fn apply_offer(m: &mut MediaDescription, how: OurOffer, ours: &SdesKey) {
    if how.secure {
        m.set_srtp(Some(ours));
        if !how.mandatory {
            m.proto = plain_proto(&m.proto);
        }
    } else {
        m.set_srtp(None);
    }
}

/// The answer to our offer: the answerer's key (matching the tag we offered), or refusal when
/// the party must use SRTP and answered without it.
pub fn accept_answer(
    m: &MediaDescription,
    offered: OurOffer,
    policy: SrtpPolicy,
    our_tag: u32,
) -> Result<Option<SdesKey>, (u16, String)> {
    if !offered.secure {
        return Ok(None);
    }
    let key = m.srtp_offers().into_iter().find(|k| k.tag == our_tag);
    if key.is_none() && policy == SrtpPolicy::Required {
        return Err((
            488,
            "The callee answered without SRTP, which is required".into(),
        ));
    }
    Ok(key)
}

/// Secures (or strips) the audio stream of an answer to a party's offer: our key under the
/// tag and suite it chose, in the profile it offered.
pub fn apply_answer(m: &mut MediaDescription, offer_proto: &str, ours: Option<&SdesKey>) {
    m.set_srtp(ours);
    m.proto = offer_proto.to_string();
}

/// Our key for a leg, answering `theirs` (same tag and suite) or for our own offer (tag 1,
/// the 80-bit suite).
pub fn our_key(local: &MasterKey, theirs: Option<&SdesKey>) -> SdesKey {
    SdesKey {
        tag: theirs.map_or(1, |k| k.tag),
        suite: theirs.map_or(Suite::AesCm128HmacSha1_80, |k| k.suite),
        key: local.clone(),
    }
}

/// `RTP/AVP` for `RTP/SAVP`, `RTP/AVPF` for `RTP/SAVPF`.
fn plain_proto(proto: &str) -> String {
    if proto.to_ascii_uppercase().ends_with('F') {
        "RTP/AVPF".into()
    } else {
        "RTP/AVP".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::SessionDescription;

    fn audio(proto: &str, crypto: bool) -> MediaDescription {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 {proto} 0\r\n"
        );
        if crypto {
            text.push_str(
                "a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n",
            );
        }
        SessionDescription::parse(&text).unwrap().media.remove(0)
    }

    #[test]
    fn offers_against_each_policy() {
        use SrtpPolicy::*;
        let savp = audio("RTP/SAVP", true);
        let avp_key = audio("RTP/AVP", true);
        let plain = audio("RTP/AVP", false);
        assert_eq!(accept_offer(&savp, Never).unwrap_err().0, 488);
        assert_eq!(accept_offer(&avp_key, Never).unwrap().key, None);
        assert_eq!(accept_offer(&plain, Required).unwrap_err().0, 488);
        assert_eq!(accept_offer(&plain, Optional).unwrap().key, None);
        let k = accept_offer(&savp, Optional).unwrap();
        assert!(k.mandatory);
        assert_eq!(
            k.key.as_ref().map(|k| (k.tag, k.suite)),
            Some((7, Suite::AesCm128HmacSha1_32))
        );
        assert!(accept_offer(&avp_key, Required).unwrap().key.is_some());
        assert_eq!(
            accept_offer(&audio("RTP/SAVP", false), Optional)
                .unwrap_err()
                .0,
            488
        );
    }

    #[test]
    fn outgoing_offers_follow_the_other_leg_when_optional() {
        use SrtpPolicy::*;
        let secure = accept_offer(&audio("RTP/SAVP", true), Optional).unwrap();
        let plain = accept_offer(&audio("RTP/AVP", false), Optional).unwrap();
        assert_eq!(
            our_offer(Optional, Some(&secure)),
            OurOffer {
                secure: true,
                mandatory: true
            }
        );
        assert_eq!(
            our_offer(Optional, Some(&plain)),
            OurOffer {
                secure: false,
                mandatory: false
            }
        );
        assert!(!our_offer(Never, Some(&secure)).secure);
        assert_eq!(
            our_offer(Required, Some(&plain)),
            OurOffer {
                secure: true,
                mandatory: true
            }
        );
        let mut m = audio("RTP/SAVP", true);
        apply_offer(
            &mut m,
            our_offer(Never, Some(&secure)),
            &our_key(&MasterKey::random(), None),
        );
        assert_eq!(
            (m.proto.as_str(), m.crypto_attributes().len()),
            ("RTP/AVP", 0)
        );
        let ours = our_key(&MasterKey::random(), None);
        let mut m = audio("RTP/AVP", false);
        apply_offer(&mut m, our_offer(Required, None), &ours);
        assert_eq!(m.proto, "RTP/SAVP");
        assert_eq!(m.srtp_offers(), vec![ours.clone()]);
        // A plain answer: refused under "required", plain under "optional".
        let plain_answer = audio("RTP/AVP", false);
        let how = OurOffer {
            secure: true,
            mandatory: true,
        };
        assert_eq!(
            accept_answer(&plain_answer, how, Required, 1)
                .unwrap_err()
                .0,
            488
        );
        assert_eq!(
            accept_answer(&plain_answer, how, Optional, 1).unwrap(),
            None
        );
    }

    #[test]
    fn policy_values() {
        for p in [
            SrtpPolicy::Never,
            SrtpPolicy::Optional,
            SrtpPolicy::Required,
        ] {
            assert_eq!(SrtpPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(SrtpPolicy::parse("sometimes"), None);
        let mut pol = SrtpPolicies::default();
        pol.extensions.insert("100".into(), SrtpPolicy::Required);
        assert_eq!(pol.extension("100"), SrtpPolicy::Required);
        assert_eq!(pol.extension("101"), SrtpPolicy::Optional);
    }
}
