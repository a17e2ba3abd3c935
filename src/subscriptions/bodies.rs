//! The bodies of the NOTIFYs pasarela sends: dialog-info (RFC 4235) for busy lamp fields,
//! PIDF (RFC 3863, with the RPID `on-the-phone` activity of RFC 4480) for presence, and the
//! message summary (RFC 3842) for the message-waiting lamp.
//!
//! The dialog-info documents have the shape that Asterisk sends and the BLF keys of Yealink,
//! Polycom, Grandstream and Snom phones read: full state with a version counter, one `dialog`
//! per call with its Call-ID and tags (for a pickup with Replaces), `direction`, `state`, and
//! the local and remote identities (the remote one is what the phone shows as the caller).

use std::fmt::Write;

use super::{DialogState, DialogView, Direction, ExtensionState};

/// Content-Type of the dialog package's bodies.
pub const DIALOG_INFO: &str = "application/dialog-info+xml";
/// Content-Type of presence bodies.
pub const PIDF: &str = "application/pidf+xml";
/// Content-Type of message-summary bodies.
pub const SIMPLE_MESSAGE_SUMMARY: &str = "application/simple-message-summary";

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn aor(user: &str, domain: &str) -> String {
    format!("sip:{user}@{domain}")
}

fn dialog_element(out: &mut String, entity: &str, domain: &str, d: &DialogView, ended: bool) {
    let _ = write!(
        out,
        "<dialog id=\"{}\" call-id=\"{}\"",
        escape(&d.id),
        escape(&d.call_id)
    );
    if let Some(t) = &d.local_tag {
        let _ = write!(out, " local-tag=\"{}\"", escape(t));
    }
    if let Some(t) = &d.remote_tag {
        let _ = write!(out, " remote-tag=\"{}\"", escape(t));
    }
    let direction = match d.direction {
        Direction::Initiator => "initiator",
        Direction::Recipient => "recipient",
    };
    let state = if ended {
        DialogState::Terminated
    } else {
        d.state
    };
    let _ = write!(
        out,
        " direction=\"{direction}\">\n<state>{}</state>\n",
        state.as_str()
    );
    let remote = escape(&aor(&d.remote, domain));
    let _ = write!(
        out,
        "<local>\n<identity>{entity}</identity>\n<target uri=\"{entity}\"/>\n</local>\n<remote>\n<identity"
    );
    if let Some(name) = &d.remote_name {
        let _ = write!(out, " display=\"{}\"", escape(name));
    }
    let _ = write!(
        out,
        ">{remote}</identity>\n<target uri=\"{remote}\"/>\n</remote>\n</dialog>\n"
    );
}

/// The full dialog state of extension `ext`: its dialogs now, and `ended` (dialogs the last
/// notification showed that are gone) once more as terminated.
pub fn dialog_info(
    ext: &str,
    domain: &str,
    version: u32,
    state: &ExtensionState,
    ended: &[DialogView],
) -> String {
    let entity = escape(&aor(ext, domain));
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{version}\" state=\"full\" entity=\"{entity}\">\n"
    );
    for d in &state.dialogs {
        dialog_element(&mut out, &entity, domain, d, false);
    }
    for d in ended {
        dialog_element(&mut out, &entity, domain, d, true);
    }
    out.push_str("</dialog-info>\n");
    out
}

/// The presence of extension `ext`: open while a phone of it is registered, closed otherwise;
/// `on-the-phone` while it has a call.
pub fn pidf(ext: &str, domain: &str, state: &ExtensionState) -> String {
    let entity = escape(&aor(ext, domain));
    let basic = if state.registered { "open" } else { "closed" };
    let busy = state.in_call();
    let note = match (state.registered, busy) {
        (_, true) => "On the phone",
        (true, false) => "Available",
        (false, false) => "Offline",
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{entity}\">\n<tuple id=\"pasarela-{}\">\n<status><basic>{basic}</basic></status>\n<contact>{entity}</contact>\n<note>{note}</note>\n</tuple>\n",
        escape(ext)
    );
    let _ = writeln!(out, "<dm:person id=\"p-{}\">", escape(ext));
    if busy {
        out.push_str("<rpid:activities><rpid:on-the-phone/></rpid:activities>\n");
    }
    let _ = write!(
        out,
        "<dm:note>{note}</dm:note>\n</dm:person>\n</presence>\n"
    );
    out
}

/// The message summary of extension `ext`'s mailbox. There is no voicemail yet: no messages.
pub fn message_summary(ext: &str, domain: &str, new: u32, old: u32) -> String {
    let waiting = if new > 0 { "yes" } else { "no" };
    format!(
        "Messages-Waiting: {waiting}\r\nMessage-Account: {}\r\nVoice-Message: {new}/{old} (0/0)\r\n",
        aor(ext, domain)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ringing() -> DialogView {
        DialogView {
            id: "call7-in".into(),
            call_id: "abc@pasarela".into(),
            local_tag: Some("phone1".into()),
            remote_tag: Some("b2b".into()),
            direction: Direction::Recipient,
            state: DialogState::Early,
            remote: "100".into(),
            remote_name: Some("Front <desk> & \"co\"".into()),
        }
    }

    #[test]
    fn dialog_info_full_state() {
        let st = ExtensionState {
            registered: true,
            dialogs: vec![ringing()],
        };
        let xml = dialog_info("101", "office.test", 3, &st, &[]);
        assert!(xml.contains(
            "<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"3\" state=\"full\" entity=\"sip:101@office.test\">"
        ));
        assert!(xml.contains("<dialog id=\"call7-in\" call-id=\"abc@pasarela\" local-tag=\"phone1\" remote-tag=\"b2b\" direction=\"recipient\">"), "{xml}");
        assert!(xml.contains("<state>early</state>"));
        assert!(xml.contains(
            "<identity display=\"Front &lt;desk&gt; &amp; &quot;co&quot;\">sip:100@office.test</identity>"
        ), "{xml}");
        let idle = ExtensionState {
            registered: true,
            dialogs: vec![],
        };
        let xml = dialog_info("101", "office.test", 4, &idle, &[ringing()]);
        assert!(xml.contains("<state>terminated</state>"), "{xml}");
        let xml = dialog_info("101", "office.test", 5, &idle, &[]);
        assert!(!xml.contains("<dialog "), "{xml}");
    }

    #[test]
    fn presence_and_summary() {
        let mut st = ExtensionState {
            registered: true,
            dialogs: vec![],
        };
        let xml = pidf("101", "office.test", &st);
        assert!(xml.contains("<basic>open</basic>"));
        assert!(!xml.contains("on-the-phone"));
        st.dialogs.push(DialogView {
            state: DialogState::Confirmed,
            ..ringing()
        });
        assert!(pidf("101", "office.test", &st).contains("<rpid:on-the-phone/>"));
        st.registered = false;
        st.dialogs.clear();
        assert!(pidf("101", "office.test", &st).contains("<basic>closed</basic>"));
        assert_eq!(
            message_summary("101", "office.test", 0, 0),
            "Messages-Waiting: no\r\nMessage-Account: sip:101@office.test\r\nVoice-Message: 0/0 (0/0)\r\n"
        );
    }
}
