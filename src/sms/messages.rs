//! The messages that pass between the SIP core's messaging and the message service: plain data,
//! so that neither imports the other ([`Deliver`] goes to phones, [`FromPhone`] comes from them).

use crate::routing::Permissions;

/// A stored message to deliver to phones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// Its id in the store.
    pub id: i64,
    /// The extensions whose phones get it.
    pub to: Vec<String>,
    /// The sender as From's user part (`+4917…`, or an extension).
    pub from: String,
    /// The text.
    pub text: String,
}

/// A MESSAGE a phone sent, accepted with 202.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromPhone {
    /// The authenticated extension.
    pub from: String,
    /// The Request-URI's user part (an extension or a number).
    pub to: String,
    /// Whether `to` is an extension of this office.
    pub to_extension: bool,
    /// The sender's permissions (for SMS to numbers outside).
    pub permissions: Permissions,
    /// The text.
    pub text: String,
}
