//! Any SIP message as a SUBSCRIBE or a 3xx: the Event header, the package check and the
//! Contacts of a redirect in q order are read or refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::sip::message::Message;
use pasarela::sip::parse::{parse_message, Framing, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pasarela::sip::event::Event::parse(text);
    }
    match parse_message(
        bytes::Bytes::copy_from_slice(data),
        Framing::Datagram,
        &Limits::default(),
    ) {
        Ok(Message::Request(r)) => {
            let _ = pasarela::subscriptions::Subscriptions::package_of(&r);
            let _ = pasarela::sip::event::accepts(&r.headers, "application/dialog-info+xml");
        }
        Ok(Message::Response(r)) => {
            let _ = pasarela::b2bua::contacts_by_q(&r);
        }
        Err(_) => {}
    }
});
