//! Tests of the SDP model and the offer/answer helpers against real-world descriptions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

/// Joins lines with CRLF, with a final CRLF.
fn crlf(lines: &[&str]) -> String {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s
}

fn parse(lines: &[&str]) -> SessionDescription {
    match SessionDescription::parse(&crlf(lines)) {
        Ok(s) => s,
        Err(e) => panic!("fixture does not parse: {e}"),
    }
}

const BARESIP: &[&str] = &[
    "v=0",
    "o=- 1804289383 1804289384 IN IP4 192.168.1.10",
    "s=-",
    "c=IN IP4 192.168.1.10",
    "t=0 0",
    "a=tool:baresip 3.10.1",
    "m=audio 10000 RTP/AVP 0 8 101",
    "b=AS:64",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp:10001",
    "a=sendrecv",
    "a=label:1",
    "a=ssrc:1234567 cname:abcdef",
    "a=rtcp-rsize",
    "a=ptime:20",
];

const SIPP: &[&str] = &[
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.1.1",
    "s=-",
    "c=IN IP4 127.0.1.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
];

/// RFC 4317 §2.1, Alice's offer.
const RFC4317_OFFER: &[&str] = &[
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s=",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 8 97",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:97 iLBC/8000",
    "m=video 51372 RTP/AVP 31 32",
    "a=rtpmap:31 H261/90000",
    "a=rtpmap:32 MPV/90000",
];

/// RFC 4317 §2.1, Bob's answer.
const RFC4317_ANSWER: &[&str] = &[
    "v=0",
    "o=bob 2808844564 2808844564 IN IP4 host.biloxi.example.com",
    "s=",
    "c=IN IP4 host.biloxi.example.com",
    "t=0 0",
    "m=audio 49174 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 49170 RTP/AVP 32",
    "a=rtpmap:32 MPV/90000",
];

/// RFC 4317 §2.3 style: a second audio stream for events, sendonly.
const RFC4317_EVENTS: &[&str] = &[
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com",
    "s=",
    "c=IN IP4 host.atlanta.example.com",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 97",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:97 iLBC/8000",
    "m=audio 49172 RTP/AVP 98",
    "a=rtpmap:98 telephone-event/8000",
    "a=sendonly",
];

const IPV6: &[&str] = &[
    "v=0",
    "o=- 3 4 IN IP6 2001:db8::10",
    "s=call",
    "c=IN IP6 2001:db8::10",
    "t=0 0",
    "m=audio 40000 RTP/AVP 9 0 101",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
];

/// RFC 8866 §5 example with the rarer session-level lines, and a media-level c=.
const RFC8866: &[&str] = &[
    "v=0",
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1",
    "s=Call to John Smith",
    "i=SDP Offer #1",
    "u=http://www.jdoe.example.com/home.html",
    "e=Jane Doe <jane@jdoe.example.com>",
    "p=+1 617 555-6011",
    "c=IN IP4 198.51.100.1",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "m=audio 49180 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "c=IN IP6 2001:db8::2",
    "a=rtpmap:99 h263-1998/90000",
];

/// A browser-ish offer: ICE, rtcp-mux, video, media-level c= only.
const WEBRTC: &[&str] = &[
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=ice-options:trickle",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126",
    "c=IN IP4 203.0.113.7",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2122260223 192.168.1.2 54400 typ host",
    "a=candidate:2 1 udp 1686052607 203.0.113.7 54400 typ srflx raddr 192.168.1.2 rport 54400",
    "a=end-of-candidates",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdef01234567",
    "a=fingerprint:sha-256 AA:BB",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:126 telephone-event/8000",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 203.0.113.7",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=mid:1",
    "a=rtpmap:96 VP8/90000",
];

const ALL: &[&[&str]] = &[
    BARESIP,
    SIPP,
    RFC4317_OFFER,
    RFC4317_ANSWER,
    RFC4317_EVENTS,
    IPV6,
    RFC8866,
    WEBRTC,
];

// ---------------------------------------------------------------- parse / serialise

#[test]
fn fixtures_round_trip_exactly() {
    for fixture in ALL {
        let text = crlf(fixture);
        let sdp = SessionDescription::parse(&text).expect("parses");
        assert_eq!(sdp.to_string(), text);
        // What the B2BUA sends is written by `encode`, the same text.
        assert_eq!(sdp.encode(), text);
        assert_eq!(SessionDescription::parse(&sdp.to_string()), Ok(sdp));
    }
}

#[test]
fn connection_from_ip_writes_the_address_as_text() {
    let c = Connection::from_ip("192.0.2.250".parse().expect("ip"));
    assert_eq!(c.to_string(), "IN IP4 192.0.2.250");
    let c = Connection::from_ip("0.0.0.0".parse().expect("ip"));
    assert_eq!(c.address, "0.0.0.0");
    let c = Connection::from_ip("2001:db8::1".parse().expect("ip"));
    assert_eq!(c.to_string(), "IN IP6 2001:db8::1");
}

#[test]
fn lf_line_ends_are_accepted_and_written_as_crlf() {
    let lf = SIPP.join("\n") + "\n";
    let sdp = SessionDescription::parse(&lf).expect("parses");
    assert_eq!(sdp.to_string(), crlf(SIPP));
    // No final line end, and mixed line ends.
    let mixed = "v=0\r\no=a 1 2 IN IP4 10.0.0.1\ns=x\r\nt=0 0\nm=audio 1 RTP/AVP 0";
    let sdp = SessionDescription::parse(mixed).expect("parses");
    assert_eq!(sdp.media[0].formats, ["0"]);
}

#[test]
fn baresip_fields() {
    let sdp = parse(BARESIP);
    assert_eq!(sdp.version, 0);
    assert_eq!(sdp.origin.username, "-");
    assert_eq!(sdp.origin.session_id, "1804289383");
    assert_eq!(sdp.origin.session_version, 1804289384);
    assert_eq!(sdp.origin.address, "192.168.1.10");
    assert_eq!(sdp.session_name, "-");
    assert_eq!(
        sdp.connection,
        Some(Connection {
            net_type: "IN".into(),
            addr_type: "IP4".into(),
            address: "192.168.1.10".into()
        })
    );
    assert_eq!(sdp.times, ["0 0"]);
    assert_eq!(sdp.attributes, [Attribute::new("tool", "baresip 3.10.1")]);
    let a = sdp.audio().expect("audio");
    assert_eq!(
        (a.media.as_str(), a.port, a.proto.as_str()),
        ("audio", 10000, "RTP/AVP")
    );
    assert_eq!(a.formats, ["0", "8", "101"]);
    assert_eq!(a.bandwidths, ["AS:64"]);
    assert_eq!(
        a.attribute("rtcp").and_then(|r| r.value.as_deref()),
        Some("10001")
    );
    assert_eq!(
        a.attribute("rtcp-rsize"),
        Some(&Attribute::flag("rtcp-rsize"))
    );
    assert_eq!(a.ptime(), Some(20));
    assert_eq!(a.direction(), Direction::SendRecv);
    assert_eq!(
        a.remote_addr(&sdp),
        Some("192.168.1.10:10000".parse().unwrap())
    );
}

#[test]
fn session_level_extras_are_kept_in_rfc_order() {
    let sdp = parse(RFC8866);
    let kinds: Vec<char> = sdp.extra.iter().map(|l| l.kind).collect();
    assert_eq!(kinds, ['i', 'u', 'e', 'p']);
    assert_eq!(sdp.extra[3].value, "+1 617 555-6011");
    assert_eq!(sdp.media.len(), 3);
    // Out-of-order input is written in RFC order; r= stays with its t=; z=, k=, unknown
    // letters and media-level i=/k= are kept.
    let text = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=x\r\nk=prompt\r\nt=1 2\r\nr=7d 1h 0 25h\r\n\
                t=3 4\r\nz=2882844526 -1h\r\ni=info\r\nc=IN IP4 10.0.0.1\r\nx=unknown\r\n\
                a=recvonly\r\nm=audio 5004 RTP/AVP 0\r\nk=clear:x\r\na=ptime:30\r\ni=media info\r\n";
    let sdp = SessionDescription::parse(text).expect("parses");
    assert_eq!(sdp.times, ["1 2", "3 4"]);
    assert_eq!(sdp.repeats, [(0, "7d 1h 0 25h".to_string())]);
    assert_eq!(
        sdp.to_string(),
        "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=x\r\ni=info\r\nc=IN IP4 10.0.0.1\r\nt=1 2\r\n\
         r=7d 1h 0 25h\r\nt=3 4\r\nz=2882844526 -1h\r\nk=prompt\r\nx=unknown\r\na=recvonly\r\n\
         m=audio 5004 RTP/AVP 0\r\ni=media info\r\nk=clear:x\r\na=ptime:30\r\n"
    );
    assert_eq!(SessionDescription::parse(&sdp.to_string()), Ok(sdp));
}

#[test]
fn missing_t_line_is_written_as_zero() {
    let sdp = SessionDescription::parse("v=0\no=a 1 1 IN IP4 1.2.3.4\ns=-\nm=audio 1 RTP/AVP 0\n")
        .expect("parses");
    assert!(sdp.times.is_empty());
    assert!(sdp.to_string().contains("\r\nt=0 0\r\n"));
}

#[test]
fn multiple_media_with_video() {
    let sdp = parse(RFC4317_OFFER);
    assert_eq!(sdp.media.len(), 2);
    assert_eq!(sdp.media[1].media, "video");
    assert_eq!(sdp.media[1].port, 51372);
    let video = sdp.media[1].codecs();
    assert_eq!(video[0], Codec::new(31, "H261", 90000));
    assert_eq!(sdp.audio_index(), Some(0));
}

#[test]
fn port_count_and_multicast_connection() {
    let sdp = SessionDescription::parse(
        "v=0\no=a 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 233.252.0.1/127\nt=0 0\n\
         m=video 49170/2 RTP/AVP 31\n",
    )
    .expect("parses");
    let m = &sdp.media[0];
    assert_eq!((m.port, m.port_count), (49170, Some(2)));
    assert!(m.to_string().starts_with("m=video 49170/2 RTP/AVP 31\r\n"));
    assert_eq!(
        m.remote_addr(&sdp),
        Some("233.252.0.1:49170".parse().unwrap())
    );
}

#[test]
fn ipv6_connection() {
    let sdp = parse(IPV6);
    let a = sdp.audio().expect("audio");
    let addr = a.remote_addr(&sdp).expect("address");
    assert_eq!(
        addr,
        SocketAddr::new(IpAddr::V6("2001:db8::10".parse().unwrap()), 40000)
    );
    assert_eq!(
        sdp.connection.as_ref().map(|c| c.addr_type.as_str()),
        Some("IP6")
    );
}

#[test]
fn media_connection_overrides_session_connection() {
    let sdp = parse(RFC8866);
    assert_eq!(
        sdp.media[0].remote_addr(&sdp),
        Some("198.51.100.1:49170".parse().unwrap())
    );
    assert_eq!(
        sdp.media[2].remote_addr(&sdp),
        Some("[2001:db8::2]:51372".parse().unwrap())
    );
    // Media-level c= only.
    let sdp = parse(WEBRTC);
    assert_eq!(sdp.connection, None);
    assert_eq!(
        sdp.media[0].remote_addr(&sdp),
        Some("203.0.113.7:9".parse().unwrap())
    );
    // Domain names are not resolved here.
    let sdp = parse(RFC4317_ANSWER);
    assert_eq!(sdp.media[0].remote_addr(&sdp), None);
}

#[test]
fn attribute_forms() {
    let sdp = SessionDescription::parse(
        "v=0\no=a 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\na=flag\na=empty:\n\
         a=key:v:with:colons\n",
    )
    .expect("parses");
    let attrs = &sdp.media[0].attributes;
    assert_eq!(attrs[0], Attribute::flag("flag"));
    assert_eq!(attrs[1], Attribute::new("empty", ""));
    assert_eq!(attrs[2], Attribute::new("key", "v:with:colons"));
    assert!(sdp
        .to_string()
        .contains("a=empty:\r\na=key:v:with:colons\r\n"));
}

// ---------------------------------------------------------------- errors

fn err(text: &str) -> SdpError {
    match SessionDescription::parse(text) {
        Ok(s) => panic!("accepted {text:?} as {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn missing_mandatory_lines() {
    assert_eq!(err(""), SdpError::Empty);
    assert_eq!(err("\r\n\r\n"), SdpError::Empty);
    assert_eq!(
        err("o=a 1 1 IN IP4 1.2.3.4\r\nv=0\r\ns=-\r\n"),
        SdpError::MissingVersion
    );
    assert_eq!(err("v=0\r\ns=-\r\nt=0 0\r\n"), SdpError::MissingOrigin);
    assert_eq!(
        err("v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n"),
        SdpError::MissingOrigin
    );
    assert_eq!(
        err("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nt=0 0\r\n"),
        SdpError::MissingSessionName
    );
    assert_eq!(
        err("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\ns=-\r\n"),
        SdpError::MissingSessionName
    );
}

#[test]
fn bad_mandatory_lines() {
    let head = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n";
    assert!(matches!(
        err("v=x\r\n"),
        SdpError::BadValue {
            line: 1,
            kind: 'v',
            ..
        }
    ));
    assert!(matches!(
        err("v=-1\r\n"),
        SdpError::BadValue { kind: 'v', .. }
    ));
    for o in [
        "o=a 1 1 IN IP4",
        "o=a 1 1 IN IP4 1.2.3.4 extra",
        "o=a x 1 IN IP4 1.2.3.4",
        "o=a 1 -1 IN IP4 1.2.3.4",
        "o=a 1 99999999999999999999999 IN IP4 1.2.3.4",
        "o=",
    ] {
        let e = err(&format!("v=0\r\n{o}\r\ns=-\r\n"));
        assert!(
            matches!(
                e,
                SdpError::BadValue {
                    line: 2,
                    kind: 'o',
                    ..
                }
            ),
            "{o}: {e}"
        );
    }
    assert_eq!(
        err(&format!("{head}v=0\r\n")),
        SdpError::Duplicate { line: 5, kind: 'v' }
    );
    assert_eq!(
        err(&format!("{head}o=a 1 1 IN IP4 1.2.3.4\r\n")),
        SdpError::Duplicate { line: 5, kind: 'o' }
    );
    assert_eq!(
        err(&format!("{head}s=again\r\n")),
        SdpError::Duplicate { line: 5, kind: 's' }
    );
    assert_eq!(
        err(&format!("{head}m=audio 1 RTP/AVP 0\r\ns=again\r\n")),
        SdpError::Duplicate { line: 6, kind: 's' }
    );
    assert!(matches!(
        err(&format!("{head}c=IN IP4\r\n")),
        SdpError::BadValue { kind: 'c', .. }
    ));
    assert!(matches!(
        err(&format!(
            "{head}m=audio 1 RTP/AVP 0\r\nc=IN IP4 1.2.3.4 x\r\n"
        )),
        SdpError::BadValue {
            line: 6,
            kind: 'c',
            ..
        }
    ));
    assert!(matches!(
        err(&format!("{head}a=:x\r\n")),
        SdpError::BadValue { kind: 'a', .. }
    ));
    assert!(matches!(
        err("v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nr=1d 1h 0\r\n"),
        SdpError::BadValue { kind: 'r', .. }
    ));
}

#[test]
fn bad_media_lines() {
    let head = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n";
    for m in [
        "m=audio 70000 RTP/AVP 0",
        "m=audio -1 RTP/AVP 0",
        "m=audio x RTP/AVP 0",
        "m=audio +5 RTP/AVP 0",
        "m=audio 5/x RTP/AVP 0",
        "m=audio 5/ RTP/AVP 0",
        "m=audio 5004 RTP/AVP",
        "m=audio 5004",
        "m=audio",
        "m=",
        "m=au/dio 5004 RTP/AVP 0",
    ] {
        let e = err(&format!("{head}{m}\r\n"));
        assert!(
            matches!(
                e,
                SdpError::BadValue {
                    line: 5,
                    kind: 'm',
                    ..
                }
            ),
            "{m}: {e}"
        );
    }
}

#[test]
fn garbage_lines() {
    let head = "v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\n";
    for g in [
        "hello world",
        "v = 0",
        "A=foo",
        "=x",
        "a",
        "1=2",
        " a=x",
        "é=x",
        "a:b",
    ] {
        assert_eq!(
            err(&format!("{head}{g}\r\n")),
            SdpError::BadLine { line: 4 },
            "{g}"
        );
    }
    assert_eq!(err("garbage\r\n"), SdpError::BadLine { line: 1 });
    assert_eq!(err("<html>"), SdpError::BadLine { line: 1 });
}

/// A small xorshift generator, so the fuzz loop is deterministic without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const FUZZ_BYTES: &[u8] = b"vosicbtrzkamue= :/\r\n0123456789 -.IPN4 6RTPAVcdyx\t\0";

#[test]
fn fuzz_never_panics_and_accepted_input_round_trips() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<String> = ALL.iter().map(|f| crlf(f)).collect();
    let mut accepted = 0;
    for i in 0..20_000 {
        let mut bytes: Vec<u8> = if i % 10 == 0 {
            (0..rng.below(200))
                .map(|_| FUZZ_BYTES[rng.below(FUZZ_BYTES.len())])
                .collect()
        } else {
            seeds[rng.below(seeds.len())].clone().into_bytes()
        };
        for _ in 0..=rng.below(4) {
            let len = bytes.len();
            match rng.below(5) {
                0 if len > 0 => bytes[rng.below(len)] = FUZZ_BYTES[rng.below(FUZZ_BYTES.len())],
                1 => bytes.insert(rng.below(len + 1), FUZZ_BYTES[rng.below(FUZZ_BYTES.len())]),
                2 if len > 0 => {
                    bytes.remove(rng.below(len));
                }
                3 => bytes.truncate(rng.below(len + 1)),
                _ if len > 0 => bytes[rng.below(len)] = rng.next() as u8,
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let Ok(sdp) = SessionDescription::parse(&text) else {
            continue;
        };
        accepted += 1;
        // Everything accepted serialises to something that parses back to the same model
        // (up to the `t=0 0` written when t= is missing).
        let again = SessionDescription::parse(&sdp.to_string());
        let mut expected = sdp.clone();
        if expected.times.is_empty() {
            expected.times.push("0 0".into());
        }
        assert_eq!(again.as_ref(), Ok(&expected), "input {text:?}");
        // And the helpers do not panic on it either.
        for m in &sdp.media {
            let _ = (
                m.codecs(),
                m.direction(),
                m.ptime(),
                m.remote_addr(&sdp),
                m.is_on_hold(&sdp),
            );
            let _ = negotiate(m, m);
        }
        let mut relayed = sdp.clone();
        let mut origin = OriginState::new(1, IpAddr::V4(Ipv4Addr::LOCALHOST));
        rewrite_for_relay(
            &mut relayed,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            65535,
            &mut origin,
        );
        if let Some(a) = relayed.audio_mut() {
            add_transcodable(a);
        }
    }
    assert!(
        accepted > 1000,
        "only {accepted} mutated inputs were accepted"
    );
}

// ---------------------------------------------------------------- codecs

#[test]
fn codecs_static_and_dynamic() {
    let sdp = parse(IPV6);
    let c = sdp.audio().expect("audio").codecs();
    assert_eq!(c.len(), 3);
    assert_eq!(c[0], Codec::new(9, "G722", 8000));
    assert_eq!(c[1], Codec::new(0, "PCMU", 8000));
    assert_eq!(
        c[2],
        Codec {
            pt: 101,
            name: "telephone-event".into(),
            rate: 8000,
            channels: 1,
            fmtp: Some("0-16".into())
        }
    );
    assert!(c[2].is_telephone_event());

    let sdp = parse(WEBRTC);
    let c = sdp.media[0].codecs();
    assert_eq!(c[0].name, "opus");
    assert_eq!((c[0].rate, c[0].channels), (48000, 2));
    assert_eq!(c[0].fmtp.as_deref(), Some("minptime=10;useinbandfec=1"));
    assert_eq!(c[0].rtpmap_value(), "111 opus/48000/2");
}

#[test]
fn codecs_edge_cases() {
    let mut m = MediaDescription::new("audio", 5004, "RTP/AVP");
    m.formats = ["18", "3", "96", "97", "0", "0", "x", "200", "13"]
        .map(String::from)
        .to_vec();
    m.attributes = vec![
        Attribute::new("rtpmap", "97 speex/16000"),
        Attribute::new("rtpmap", "0 pcmu/8000"), // rtpmap for a static pt wins, case kept
        Attribute::new("fmtp", "18 annexb=no"),
        Attribute::new("rtpmap", "96 broken"),
    ];
    let c = m.codecs();
    let names: Vec<(u8, &str)> = c.iter().map(|c| (c.pt, c.name.as_str())).collect();
    // 96 has an unparsable rtpmap and no static meaning; duplicates, non-numbers and
    // out-of-range values are skipped.
    assert_eq!(
        names,
        [
            (18, "G729"),
            (3, "GSM"),
            (97, "speex"),
            (0, "pcmu"),
            (13, "CN")
        ]
    );
    assert_eq!(c[0].fmtp.as_deref(), Some("annexb=no"));
    assert_eq!(is_g711(&c[3]), Some(G711::Ulaw));
}

#[test]
fn retain_and_add_codecs() {
    let mut sdp = parse(WEBRTC);
    let a = sdp.audio_mut().expect("audio");
    a.retain_codecs(|c| is_g711(c).is_some() || c.is_telephone_event());
    assert_eq!(a.formats, ["0", "8", "126"]);
    assert!(a
        .attributes
        .iter()
        .all(|x| !x.value.as_deref().unwrap_or("").starts_with("111 ")));
    assert!(a.attribute("rtcp-mux").is_some());
    a.add_codec(&Codec {
        fmtp: Some("mode=30".into()),
        ..Codec::new(98, "iLBC", 8000)
    });
    assert_eq!(a.formats, ["0", "8", "126", "98"]);
    let text = a.to_string();
    assert!(text.contains(
        "a=rtpmap:126 telephone-event/8000\r\na=rtpmap:98 iLBC/8000\r\na=fmtp:98 mode=30\r\n"
    ));
    assert_eq!(
        a.codecs().last().and_then(|c| c.fmtp.clone()),
        Some("mode=30".into())
    );
    // Adding a payload type that is already there replaces it.
    a.add_codec(&Codec::new(98, "iLBC", 8000));
    assert_eq!(a.formats, ["0", "8", "126", "98"]);
    assert_eq!(a.codecs().last().and_then(|c| c.fmtp.clone()), None);
    // To an empty section.
    let mut m = MediaDescription::new("audio", 1, "RTP/AVP");
    m.add_codec(&Codec::new(0, "PCMU", 8000));
    assert_eq!(
        m.to_string(),
        "m=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
}

#[test]
fn intersect_by_name_and_rate() {
    let sdp = parse(WEBRTC);
    let a = &sdp.media[0];
    let names = |v: Vec<Codec>| v.into_iter().map(|c| c.pt).collect::<Vec<_>>();
    assert_eq!(
        names(intersect(a, &["pcma", "PCMU", "telephone-event"])),
        [0, 8, 126]
    );
    assert_eq!(names(intersect(a, &["opus/48000"])), [111]);
    assert_eq!(
        names(intersect(a, &["opus/8000", "G729"])),
        Vec::<u8>::new()
    );
}

// ---------------------------------------------------------------- direction and hold

#[test]
fn direction_media_and_session_level() {
    let sdp = parse(RFC4317_EVENTS);
    assert_eq!(sdp.media_direction(0), Direction::SendRecv);
    assert_eq!(sdp.media_direction(1), Direction::SendOnly);
    assert_eq!(sdp.media_direction(7), Direction::SendRecv);

    let mut sdp = parse(SIPP);
    sdp.attributes.push(Attribute::flag("recvonly"));
    assert_eq!(sdp.media[0].direction(), Direction::SendRecv);
    assert_eq!(sdp.media_direction(0), Direction::RecvOnly);
    sdp.media[0].set_direction(Direction::Inactive);
    assert_eq!(sdp.media_direction(0), Direction::Inactive);
    sdp.media[0].set_direction(Direction::SendRecv);
    assert_eq!(sdp.media_direction(0), Direction::SendRecv);
    assert_eq!(
        sdp.media[0]
            .attributes
            .iter()
            .filter(|a| Direction::from_name(&a.name).is_some())
            .count(),
        1
    );
    assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
    assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
}

#[test]
fn set_direction_replaces_in_place() {
    let mut sdp = parse(BARESIP);
    let a = sdp.audio_mut().expect("audio");
    a.set_direction(Direction::SendOnly);
    let pos = |a: &MediaDescription, n: &str| a.attributes.iter().position(|x| x.name == n);
    assert_eq!(pos(a, "sendonly"), Some(5));
    assert_eq!(pos(a, "sendrecv"), None);
}

#[test]
fn hold_detection() {
    let base = parse(SIPP);
    assert!(!base.media[0].is_on_hold(&base));

    for d in [Direction::SendOnly, Direction::Inactive] {
        let mut sdp = base.clone();
        sdp.media[0].set_direction(d);
        assert!(sdp.media[0].is_on_hold(&sdp), "{d}");
    }
    let mut sdp = base.clone();
    sdp.media[0].set_direction(Direction::RecvOnly);
    assert!(!sdp.media[0].is_on_hold(&sdp));

    // Session-level sendonly.
    let mut sdp = base.clone();
    sdp.attributes.push(Attribute::flag("sendonly"));
    assert!(sdp.media[0].is_on_hold(&sdp));

    // RFC 2543 hold: c=0.0.0.0, no address to send to.
    let mut sdp = base.clone();
    if let Some(c) = sdp.connection.as_mut() {
        c.address = "0.0.0.0".into();
    }
    assert!(sdp.media[0].is_on_hold(&sdp));
    assert_eq!(sdp.media[0].remote_addr(&sdp), None);

    // Port 0 declines, it is not hold.
    let mut sdp = base.clone();
    sdp.media[0].port = 0;
    assert!(!sdp.media[0].is_on_hold(&sdp));
    assert_eq!(sdp.media[0].remote_addr(&sdp), None);
}

#[test]
fn ptime_forms() {
    let mut m = MediaDescription::new("audio", 1, "RTP/AVP");
    assert_eq!(m.ptime(), None);
    m.attributes.push(Attribute::new("ptime", "20.0"));
    assert_eq!(m.ptime(), Some(20));
    m.set_ptime(Some(30));
    assert_eq!(m.attributes, [Attribute::new("ptime", "30")]);
    m.set_ptime(None);
    assert!(m.attributes.is_empty());
    m.attributes.push(Attribute::new("ptime", "abc"));
    assert_eq!(m.ptime(), None);
}

// ---------------------------------------------------------------- relay rewrite

const RELAY4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const RELAY6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53));

#[test]
fn rewrite_ipv4() {
    let mut sdp = parse(BARESIP);
    let mut origin = OriginState::new(42, RELAY4);
    rewrite_for_relay(&mut sdp, RELAY4, 20000, &mut origin);
    let text = sdp.to_string();
    assert!(
        text.starts_with("v=0\r\no=pasarela 42 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n")
    );
    let a = sdp.audio().expect("audio");
    assert_eq!(a.port, 20000);
    assert_eq!(a.attribute("rtcp"), Some(&Attribute::new("rtcp", "20001")));
    assert_eq!(a.remote_addr(&sdp), Some("10.0.0.1:20000".parse().unwrap()));
    // Codecs and the rest pass through.
    assert_eq!(a.formats, ["0", "8", "101"]);
    assert_eq!(a.ptime(), Some(20));
    assert!(!text.contains("192.168.1.10"));
}

#[test]
fn rewrite_ipv6_relay_for_ipv4_phone_and_back() {
    let mut sdp = parse(SIPP);
    let mut origin = OriginState::new(7, RELAY6);
    rewrite_for_relay(&mut sdp, RELAY6, 30000, &mut origin);
    assert!(sdp
        .to_string()
        .contains("o=pasarela 7 1 IN IP6 2001:db8::53\r\ns=-\r\nc=IN IP6 2001:db8::53\r\n"));
    assert_eq!(
        sdp.media[0].remote_addr(&sdp),
        Some(SocketAddr::new(RELAY6, 30000))
    );

    let mut sdp = parse(IPV6);
    let mut origin = OriginState::new(7, RELAY4);
    rewrite_for_relay(&mut sdp, RELAY4, 30000, &mut origin);
    assert!(!sdp.to_string().contains("IP6"));
}

#[test]
fn rewrite_strips_ice_and_declines_other_media() {
    let mut sdp = parse(WEBRTC);
    let mut origin = OriginState::new(1, RELAY4);
    rewrite_for_relay(&mut sdp, RELAY4, 12000, &mut origin);
    let text = sdp.to_string();
    for gone in [
        "candidate",
        "ice-",
        "end-of-candidates",
        "203.0.113.7",
        "0.0.0.0",
    ] {
        assert!(!text.contains(gone), "{gone} in {text}");
    }
    assert_eq!(sdp.connection, Some(Connection::from_ip(RELAY4)));
    assert_eq!(sdp.media[0].connection, Some(Connection::from_ip(RELAY4)));
    assert_eq!(sdp.media[0].port, 12000);
    assert_eq!(
        sdp.media[0].attribute("rtcp"),
        Some(&Attribute::new("rtcp", "12001"))
    );
    assert_eq!(sdp.media[1].port, 0);
    assert_eq!(sdp.media[1].attribute("rtcp"), None);
    assert!(text.contains("a=fingerprint:sha-256 AA:BB\r\n"));
    // Still valid SDP.
    assert_eq!(SessionDescription::parse(&text), Ok(sdp));

    // RFC 4317: video and the second audio stream are declined.
    let mut sdp = parse(RFC4317_EVENTS);
    rewrite_for_relay(&mut sdp, RELAY4, 12000, &mut origin);
    assert_eq!((sdp.media[0].port, sdp.media[1].port), (12000, 0));
    let mut sdp = parse(RFC4317_OFFER);
    rewrite_for_relay(&mut sdp, RELAY4, 12000, &mut origin);
    assert_eq!((sdp.media[0].port, sdp.media[1].port), (12000, 0));
}

#[test]
fn rewrite_turns_rfc2543_hold_into_a_direction() {
    let mut origin = OriginState::new(1, RELAY4);
    for (before, after) in [
        (None, Direction::SendOnly),
        (Some(Direction::SendRecv), Direction::SendOnly),
        (Some(Direction::SendOnly), Direction::SendOnly),
        (Some(Direction::RecvOnly), Direction::Inactive),
        (Some(Direction::Inactive), Direction::Inactive),
    ] {
        let mut sdp = parse(SIPP);
        if let Some(c) = sdp.connection.as_mut() {
            c.address = "0.0.0.0".into();
        }
        if let Some(d) = before {
            sdp.media[0].set_direction(d);
        }
        assert!(sdp.media[0].is_on_hold(&sdp));
        rewrite_for_relay(&mut sdp, RELAY4, 20000, &mut origin);
        assert_eq!(sdp.media_direction(0), after, "{before:?}");
        assert_eq!(
            sdp.media[0].remote_addr(&sdp),
            Some("10.0.0.1:20000".parse().unwrap())
        );
        assert!(sdp.media[0].is_on_hold(&sdp));
    }
    // Not on hold: no direction is added.
    let mut sdp = parse(SIPP);
    rewrite_for_relay(&mut sdp, RELAY4, 20000, &mut origin);
    assert_eq!(sdp.media[0].explicit_direction(), None);
}

#[test]
fn rewrite_keeps_declined_audio_declined_and_drops_rtcp_on_top_port() {
    let mut sdp = parse(BARESIP);
    let mut origin = OriginState::new(1, RELAY4);
    rewrite_for_relay(&mut sdp, RELAY4, 65535, &mut origin);
    assert_eq!(sdp.media[0].attribute("rtcp"), None);

    let mut sdp = parse(BARESIP);
    sdp.media[0].port = 0;
    rewrite_for_relay(&mut sdp, RELAY4, 20000, &mut origin);
    assert_eq!(sdp.media[0].port, 0);
}

#[test]
fn origin_version_bumps_only_on_change() {
    let mut origin = OriginState::new(1000, RELAY4);
    let send = |origin: &mut OriginState, fixture: &[&str], dir: Option<Direction>| {
        let mut sdp = parse(fixture);
        if let (Some(d), Some(a)) = (dir, sdp.audio_mut()) {
            a.set_direction(d);
        }
        rewrite_for_relay(&mut sdp, RELAY4, 20000, origin);
        (sdp.origin.session_id.clone(), sdp.origin.session_version)
    };
    assert_eq!(send(&mut origin, BARESIP, None), ("1000".into(), 1));
    // The same content again (a session refresh, or the phone bumped its own version only).
    let mut refreshed: Vec<&str> = BARESIP.to_vec();
    refreshed[1] = "o=- 1804289383 1804289399 IN IP4 192.168.1.10";
    assert_eq!(send(&mut origin, &refreshed, None), ("1000".into(), 1));
    // Hold changes the content.
    assert_eq!(
        send(&mut origin, BARESIP, Some(Direction::SendOnly)),
        ("1000".into(), 2)
    );
    assert_eq!(
        send(&mut origin, BARESIP, Some(Direction::SendOnly)),
        ("1000".into(), 2)
    );
    assert_eq!(send(&mut origin, BARESIP, None), ("1000".into(), 3));
    assert_eq!(origin.version(), 3);
    assert_eq!(origin.session_id(), 1000);
    // Another leg has its own state.
    let mut other = OriginState::new(2000, RELAY4);
    assert_eq!(send(&mut other, SIPP, None), ("2000".into(), 1));
}

// ---------------------------------------------------------------- offer/answer

fn audio(lines: &[&str]) -> MediaDescription {
    let mut v = vec![
        "v=0",
        "o=x 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
    ];
    v.extend_from_slice(lines);
    parse(&v).audio().cloned().expect("audio")
}

#[test]
fn is_g711_by_name_or_static_pt() {
    assert_eq!(is_g711(&Codec::new(0, "PCMU", 8000)), Some(G711::Ulaw));
    assert_eq!(is_g711(&Codec::new(8, "pcma", 8000)), Some(G711::Alaw));
    assert_eq!(is_g711(&Codec::new(100, "PCMA", 8000)), Some(G711::Alaw));
    assert_eq!(is_g711(&Codec::new(0, "", 0)), Some(G711::Ulaw));
    assert_eq!(is_g711(&Codec::new(8, "", 0)), Some(G711::Alaw));
    assert_eq!(is_g711(&Codec::new(0, "PCMU", 16000)), None);
    assert_eq!(is_g711(&Codec::new(9, "G722", 8000)), None);
    assert_eq!(G711::Ulaw.other().codec(), Codec::new(8, "PCMA", 8000));
}

#[test]
fn add_transcodable_adds_the_other_law() {
    let mut a = audio(&[
        "m=audio 4000 RTP/AVP 9 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
    ]);
    add_transcodable(&mut a);
    assert_eq!(a.formats, ["9", "0", "8", "101"]);
    let c = a.codecs();
    assert_eq!(c[2], Codec::new(8, "PCMA", 8000));
    assert!(c[3].is_telephone_event());
    assert_eq!(c[3].fmtp.as_deref(), Some("0-16"));

    let mut a = audio(&["m=audio 4000 RTP/AVP 8"]);
    add_transcodable(&mut a);
    assert_eq!(a.formats, ["8", "0"]);

    // Both laws already, or none: nothing to add.
    let mut a = audio(&["m=audio 4000 RTP/AVP 0 8"]);
    add_transcodable(&mut a);
    assert_eq!(a.formats, ["0", "8"]);
    let mut a = audio(&["m=audio 4000 RTP/AVP 18"]);
    add_transcodable(&mut a);
    assert_eq!(a.formats, ["18"]);

    // A dynamic PCMU whose other law's static pt is taken by something else.
    let mut a = audio(&[
        "m=audio 4000 RTP/AVP 96 8",
        "a=rtpmap:96 PCMU/8000",
        "a=rtpmap:8 foo/8000",
    ]);
    add_transcodable(&mut a);
    assert_eq!(a.formats, ["96", "97", "8"]);
    assert_eq!(a.codecs()[1], Codec::new(97, "PCMA", 8000));
}

#[test]
fn negotiate_same_codec() {
    let offer = audio(&[
        "m=audio 4000 RTP/AVP 0 8 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=ptime:20",
    ]);
    let answer = audio(&[
        "m=audio 5000 RTP/AVP 8 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let n = negotiate(&offer, &answer).expect("negotiates");
    assert_eq!(n.a_codec, Codec::new(8, "PCMA", 8000));
    assert_eq!(n.b_codec, Codec::new(8, "PCMA", 8000));
    assert!(!n.transcode);
    assert_eq!((n.a_dtmf_pt, n.b_dtmf_pt), (Some(101), Some(101)));
    assert_eq!(n.ptime, Some(20));
}

#[test]
fn negotiate_payload_types_differ() {
    let offer = audio(&[
        "m=audio 4000 RTP/AVP 96 97 101",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 useinbandfec=1",
        "a=rtpmap:97 iLBC/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let answer = audio(&[
        "m=audio 5000 RTP/AVP 13 111 100",
        "a=rtpmap:111 OPUS/48000/2",
        "a=rtpmap:100 telephone-event/48000",
        "a=rtpmap:13 CN/8000",
        "a=ptime:40",
    ]);
    let n = negotiate(&offer, &answer).expect("negotiates");
    assert_eq!(n.a_codec.pt, 96);
    assert_eq!(n.a_codec.fmtp.as_deref(), Some("useinbandfec=1"));
    assert_eq!((n.b_codec.pt, n.b_codec.name.as_str()), (111, "OPUS"));
    assert!(!n.transcode);
    assert_eq!((n.a_dtmf_pt, n.b_dtmf_pt), (Some(101), Some(100)));
    assert_eq!(n.ptime, Some(40));
}

#[test]
fn negotiate_transcodes_between_laws() {
    // A offered PCMU only (we added PCMA for B); B picked PCMA.
    let offer = audio(&[
        "m=audio 4000 RTP/AVP 9 0 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let answer = audio(&["m=audio 5000 RTP/AVP 8"]);
    let n = negotiate(&offer, &answer).expect("negotiates");
    assert_eq!(n.a_codec, Codec::new(0, "PCMU", 8000));
    assert_eq!(n.b_codec, Codec::new(8, "PCMA", 8000));
    assert!(n.transcode);
    assert_eq!((n.a_dtmf_pt, n.b_dtmf_pt), (Some(101), None));
    // The other way round.
    let n = negotiate(
        &audio(&["m=audio 4000 RTP/AVP 8"]),
        &audio(&["m=audio 5000 RTP/AVP 0"]),
    )
    .expect("negotiates");
    assert_eq!((n.a_codec.pt, n.b_codec.pt, n.transcode), (8, 0, true));
}

#[test]
fn negotiate_failures() {
    let offer = audio(&["m=audio 4000 RTP/AVP 18 9"]);
    assert_eq!(
        negotiate(&offer, &audio(&["m=audio 5000 RTP/AVP 0"])),
        Err(SdpError::NoCommonCodec)
    );
    assert_eq!(
        negotiate(&offer, &audio(&["m=audio 5000 RTP/AVP 3"])),
        Err(SdpError::NoCommonCodec)
    );
    // Only events in the answer.
    let answer = audio(&[
        "m=audio 5000 RTP/AVP 101",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    assert_eq!(negotiate(&offer, &answer), Err(SdpError::NoCommonCodec));
    // Declined.
    assert_eq!(
        negotiate(&offer, &audio(&["m=audio 0 RTP/AVP 18"])),
        Err(SdpError::NoAudio)
    );
    // Same name, different rate is not the same codec.
    let offer = audio(&["m=audio 4000 RTP/AVP 96", "a=rtpmap:96 L16/16000"]);
    assert_eq!(
        negotiate(&offer, &audio(&["m=audio 5000 RTP/AVP 11"])),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn answer_for_a_same_codec_with_events() {
    let a_offer = parse(&[
        "v=0",
        "o=alice 1 1 IN IP4 192.168.1.20",
        "s=-",
        "c=IN IP4 192.168.1.20",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 8 96",
        "a=rtpmap:96 telephone-event/8000",
        "a=fmtp:96 0-16",
    ]);
    let b_answer = parse(&[
        "v=0",
        "o=bob 9 9 IN IP4 192.168.1.30",
        "s=-",
        "c=IN IP4 192.168.1.30",
        "t=0 0",
        "m=audio 5000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]);
    let a_audio = a_offer.audio().expect("audio");
    let n = negotiate(a_audio, b_answer.audio().expect("audio")).expect("negotiates");
    let mut answer = answer_for_a(a_audio, &b_answer, &n);
    let m = answer.audio().expect("audio");
    assert_eq!(m.formats, ["8", "96"]);
    let c = m.codecs();
    assert_eq!(c[1].fmtp.as_deref(), Some("0-16"));
    assert_eq!(m.ptime(), Some(20));
    assert_eq!(m.direction(), Direction::SendRecv);
    assert!(!m.to_string().contains("101"));

    let mut origin = OriginState::new(5, RELAY4);
    rewrite_for_relay(&mut answer, RELAY4, 16000, &mut origin);
    assert_eq!(
        answer.to_string(),
        crlf(&[
            "v=0",
            "o=pasarela 5 1 IN IP4 10.0.0.1",
            "s=-",
            "c=IN IP4 10.0.0.1",
            "t=0 0",
            "m=audio 16000 RTP/AVP 8 96",
            "a=ptime:20",
            "a=sendrecv",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:96 telephone-event/8000",
            "a=fmtp:96 0-16",
        ])
    );
}

#[test]
fn answer_for_a_transcoding() {
    let a_offer = audio(&[
        "m=audio 4000 RTP/AVP 0 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=ptime:30",
    ]);
    // B has no events: A's events are still answered, the relay turns them into tones in G.711.
    let b_answer = parse(&[
        "v=0",
        "o=bob 9 9 IN IP4 192.168.1.30",
        "s=-",
        "c=IN IP4 192.168.1.30",
        "t=0 0",
        "m=audio 5000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
    ]);
    let n = negotiate(&a_offer, b_answer.audio().expect("audio")).expect("negotiates");
    assert!(n.transcode);
    let answer = answer_for_a(&a_offer, &b_answer, &n);
    let m = answer.audio().expect("audio");
    assert_eq!(m.formats, ["0", "101"]);
    assert_eq!(m.codecs()[0], Codec::new(0, "PCMU", 8000));
    assert_eq!(m.ptime(), Some(30));
}

#[test]
fn answer_for_a_without_events_when_not_convertible() {
    let a_offer = audio(&[
        "m=audio 4000 RTP/AVP 97 101",
        "a=rtpmap:97 iLBC/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    let b_answer = parse(&[
        "v=0",
        "o=bob 9 9 IN IP4 192.168.1.30",
        "s=-",
        "c=IN IP4 192.168.1.30",
        "t=0 0",
        "m=audio 5000 RTP/AVP 98",
        "a=rtpmap:98 iLBC/8000",
        "a=fmtp:98 mode=30",
        "m=video 0 RTP/AVP 31",
    ]);
    let n = negotiate(&a_offer, b_answer.audio().expect("audio")).expect("negotiates");
    assert_eq!((n.a_dtmf_pt, n.b_dtmf_pt), (None, None));
    let answer = answer_for_a(&a_offer, &b_answer, &n);
    let m = answer.audio().expect("audio");
    assert_eq!(m.formats, ["97"]);
    assert_eq!(m.attributes, [Attribute::new("rtpmap", "97 iLBC/8000")]);
    assert_eq!(answer.media.len(), 2);
}

#[test]
fn full_call_with_offer_in_invite() {
    // A (PCMU only) calls B (PCMA only) through the B2BUA.
    let a_invite = parse(SIPP);
    let a_offer = a_invite.audio().cloned().expect("audio");
    let mut b_offer = a_invite.clone();
    if let Some(m) = b_offer.audio_mut() {
        add_transcodable(m);
    }
    let mut b_origin = OriginState::new(111, RELAY4);
    rewrite_for_relay(&mut b_offer, RELAY4, 20000, &mut b_origin);
    assert_eq!(
        b_offer.audio().map(|m| m.formats.clone()),
        Some(vec!["0".into(), "8".into()])
    );

    let b_answer = parse(&[
        "v=0",
        "o=bob 5 5 IN IP4 192.168.1.30",
        "s=-",
        "c=IN IP4 192.168.1.30",
        "t=0 0",
        "m=audio 7000 RTP/AVP 8",
        "a=rtpmap:8 PCMA/8000",
    ]);
    let n = negotiate(&a_offer, b_answer.audio().expect("audio")).expect("negotiates");
    assert!(n.transcode);
    let mut a_answer = answer_for_a(&a_offer, &b_answer, &n);
    let mut a_origin = OriginState::new(222, RELAY4);
    rewrite_for_relay(&mut a_answer, RELAY4, 20002, &mut a_origin);
    let m = a_answer.audio().expect("audio");
    assert_eq!(m.formats, ["0"]);
    assert_eq!(
        m.remote_addr(&a_answer),
        Some("10.0.0.1:20002".parse().unwrap())
    );
    assert_eq!(a_answer.origin.session_id, "222");
}

#[test]
fn offerless_invite_answer_in_ack() {
    // INVITE without SDP: B offers in its 2xx, A answers in the ACK.
    let b_offer = parse(BARESIP);
    let mut to_a = b_offer.clone();
    let mut a_origin = OriginState::new(300, RELAY4);
    rewrite_for_relay(&mut to_a, RELAY4, 20004, &mut a_origin);
    assert_eq!(to_a.audio().map(|m| m.port), Some(20004));

    let ack_answer = parse(&[
        "v=0",
        "o=- 77 77 IN IP4 192.168.1.20",
        "s=-",
        "c=IN IP4 192.168.1.20",
        "t=0 0",
        "m=audio 4000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]);
    // The offerer is B here: roles, not leg names, decide the arguments.
    let n = negotiate(
        b_offer.audio().expect("audio"),
        ack_answer.audio().expect("audio"),
    )
    .expect("negotiates");
    assert_eq!((n.a_codec.pt, n.b_codec.pt, n.transcode), (8, 8, false));
    let mut to_b = answer_for_a(b_offer.audio().expect("audio"), &ack_answer, &n);
    let mut b_origin = OriginState::new(301, RELAY4);
    rewrite_for_relay(&mut to_b, RELAY4, 20006, &mut b_origin);
    let m = to_b.audio().expect("audio");
    assert_eq!(m.formats, ["8", "101"]);
    assert_eq!(
        m.remote_addr(&to_b),
        Some("10.0.0.1:20006".parse().unwrap())
    );
}

#[test]
fn rtcp_mux_in_offers_and_answers() {
    // An offer gets a=rtcp-mux once, and keeps naming the separate RTCP port (RFC 5761 §5.1.3).
    let mut offer = parse(BARESIP);
    let m = offer.audio_mut().expect("audio");
    assert!(!m.rtcp_mux());
    offer_rtcp_mux(m);
    offer_rtcp_mux(m);
    assert_eq!(
        m.attributes.iter().filter(|a| a.name == "rtcp-mux").count(),
        1
    );
    let mut origin = OriginState::new(7, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    rewrite_for_relay(
        &mut offer,
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        20000,
        &mut origin,
    );
    let text = offer.to_string();
    assert!(text.contains("a=rtcp-mux\r\n"), "{text}");
    assert!(text.contains("a=rtcp:20001\r\n"), "{text}");

    // An answer accepts it only when the offer had it; a muxed answer names no RTCP port.
    let mut answer = offer.clone();
    let m = answer.audio_mut().expect("audio");
    answer_rtcp_mux(m, true);
    assert!(m.rtcp_mux());
    assert!(m.attribute("rtcp").is_none());
    let mut answer = offer.clone();
    let m = answer.audio_mut().expect("audio");
    answer_rtcp_mux(m, false);
    assert!(!m.rtcp_mux());
    assert_eq!(
        m.attribute("rtcp").and_then(|a| a.value.as_deref()),
        Some("20001")
    );
}

#[test]
fn rtcp_mux_read_from_a_raw_body() {
    let mut with: Vec<&str> = BARESIP.to_vec();
    with.push("a=rtcp-mux");
    assert!(body_offers_rtcp_mux(crlf(&with).as_bytes()));
    assert!(!body_offers_rtcp_mux(crlf(BARESIP).as_bytes()));
    // LF line ends, upper case.
    assert!(body_offers_rtcp_mux(
        crlf(&with)
            .replace("\r\n", "\n")
            .replace("rtcp-mux", "RTCP-MUX")
            .as_bytes()
    ));
    // Only the first audio stream counts: a video stream's rtcp-mux does not.
    let mut video: Vec<&str> = BARESIP.to_vec();
    video.extend([
        "m=video 10002 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        "a=rtcp-mux",
    ]);
    assert!(!body_offers_rtcp_mux(crlf(&video).as_bytes()));
    let mut first_video: Vec<&str> = BARESIP[..5].to_vec();
    first_video.extend(["m=video 10002 RTP/AVP 96", "a=rtcp-mux"]);
    first_video.extend_from_slice(&BARESIP[6..]);
    assert!(!body_offers_rtcp_mux(crlf(&first_video).as_bytes()));
    // Not text, empty: no.
    assert!(!body_offers_rtcp_mux(&[0xff, 0xfe, b'a']));
    assert!(!body_offers_rtcp_mux(b""));
}

#[test]
fn rewrite_strips_ice_attributes_whatever_their_case() {
    let text = "v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                a=ICE-Options:trickle\r\nm=audio 4000 RTP/AVP 0\r\na=Candidate:1 1 UDP 1 192.0.2.1 4000 typ host\r\n\
                a=ice-ufrag:x\r\na=End-Of-Candidates\r\na=icecream\r\na=ice\r\n";
    let mut sdp = SessionDescription::parse(text).expect("parses");
    let mut origin = OriginState::new(1, RELAY4);
    rewrite_for_relay(&mut sdp, RELAY4, 12000, &mut origin);
    let out = sdp.encode();
    for gone in ["ICE-Options", "Candidate", "ice-ufrag", "End-Of-Candidates"] {
        assert!(!out.contains(gone), "{gone} in {out}");
    }
    // Names that only start like ICE ones stay.
    assert!(
        out.contains("a=icecream\r\n") && out.contains("a=ice\r\n"),
        "{out}"
    );
}
