//! Parse and serialise time of typical SIP messages (`cargo bench --bench sip_parse`).
//! Prints nanoseconds per operation; the target for a typical INVITE is < 2 µs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::sip::parse::{parse_message, Framing, Limits};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INVITE: &str = "INVITE sip:101@office.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:101@office.test>\r\n\
From: \"Reception\" <sip:100@office.test>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@192.168.1.20\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:100@192.168.1.20:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n\
Supported: replaces, timer\r\n\
User-Agent: baresip v1.0.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 229\r\n\
\r\n\
v=0\r\n\
o=- 1234567890 1234567890 IN IP4 192.168.1.20\r\n\
s=-\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const REGISTER: &str = "REGISTER sip:office.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:100@office.test>;tag=a73kszlfl\r\n\
To: <sip:100@office.test>\r\n\
Call-ID: 1j9FpLxk3uxtm8tn@192.168.1.20\r\n\
CSeq: 2 REGISTER\r\n\
Contact: <sip:100@192.168.1.20:5060>;expires=600\r\n\
Authorization: Digest username=\"100\", realm=\"office.test\", nonce=\"AAAAAGkzqR1b7d3a8c7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1\", uri=\"sip:office.test\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n\
Content-Length: 0\r\n\
\r\n";

fn measure(name: &str, text: &str) {
    let bytes = Bytes::from(text.to_owned());
    let limits = Limits::default();
    assert!(
        parse_message(bytes.clone(), Framing::Datagram, &limits).is_ok(),
        "{name} must parse"
    );
    // Warm up, then time batches for about a second and keep the best batch.
    let mut best = Duration::MAX;
    let batch = 20_000;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(parse_message(black_box(bytes.clone()), Framing::Datagram, &limits).ok());
        }
        best = best.min(t.elapsed());
    }
    let parse_ns = best.as_nanos() as f64 / batch as f64;
    let msg = parse_message(bytes, Framing::Datagram, &limits).ok();
    let mut best = Duration::MAX;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        for _ in 0..batch {
            black_box(msg.as_ref().map(|m| m.encode()));
        }
        best = best.min(t.elapsed());
    }
    let encode_ns = best.as_nanos() as f64 / batch as f64;
    println!(
        "{name:<10} {} bytes: parse {parse_ns:>7.0} ns   serialise {encode_ns:>7.0} ns",
        text.len()
    );
}

fn main() {
    println!("sip_parse: best of 20 000-message batches, one core");
    measure("INVITE", INVITE);
    measure("REGISTER", REGISTER);
}
