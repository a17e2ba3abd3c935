//! RFC 4475 / RFC 5118 torture messages (tests/data/sip-torture), each sent as one UDP
//! datagram to one running server; the answer is checked against the table below, and after every
//! message the server must still answer OPTIONS. All mismatches are reported at the end.
//!
//! Where replies go: most messages carry a Via without rport whose sent-by port is 5060 (or
//! another port) at a host that is not ours. The test therefore sends each message from a socket
//! bound to 127.0.0.X:P, where P is the sent-by port of the top Via (5060 when absent) and X a
//! loopback address of its own per message (so late retransmissions of an earlier answer never
//! mix in). Both rules of RFC 3261 18.2.2 / RFC 3581 (source port with rport; received address +
//! sent-by port without) then lead to that socket. A TCP listener on the same address and port
//! takes the answer if the server follows a TCP/TLS/SCTP sent-protocol in the Via by opening a
//! connection (RFC 3261 18.2.2); a TLS or SCTP Via may also get no answer at all (the server has
//! no such transport), which the table allows.
mod common;

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::{config, first_line, status_code, Server};

/// What may come back for one file.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A final response with one of these codes is required.
    Codes(&'static [u16]),
    /// Either no response, or a final response with one of these codes.
    CodesOrNone(&'static [u16]),
    /// Nothing may come back (responses sent to a UAS are discarded).
    Nothing,
}
use Expect::*;

/// What a registrar/B2BUA may answer to an unauthenticated request it accepted as well-formed.
/// RFC 3261 8.2 has the UAS authenticate first, so a 401/407 challenge is always acceptable.
const INVITE_OK: &[u16] = &[401, 403, 404, 407, 480, 484, 488];
const REGISTER_OK: &[u16] = &[401, 403, 404];
const BYE_OK: &[u16] = &[401, 403, 404, 405, 407, 481, 501];
const UNKNOWN_METHOD: &[u16] = &[405, 501];
const INVITE_400_OR_OK: &[u16] = &[400, 401, 403, 404, 407, 480, 484, 488];

/// file -> expectation, with the reason where the choice is not the MANIFEST's verbatim.
const TABLE: &[(&str, Expect)] = &[
    // ---- RFC 4475 3.1.1: valid messages
    // Its To carries a tag: a mid-dialog INVITE for a dialog that does not exist, which
    // RFC 3261 §12.2.2 answers with 481 (an INVITE without the tag would be challenged).
    ("rfc4475/wsinv.dat", Codes(&[481])),
    ("rfc4475/intmeth.dat", Codes(UNKNOWN_METHOD)),
    ("rfc4475/esc01.dat", Codes(INVITE_OK)),
    ("rfc4475/escnull.dat", Codes(REGISTER_OK)),
    ("rfc4475/esc02.dat", Codes(UNKNOWN_METHOD)), // RE%47IST%45R is not REGISTER
    ("rfc4475/lwsdisp.dat", Codes(&[200])),
    ("rfc4475/longreq.dat", Codes(INVITE_OK)),
    ("rfc4475/dblreq.dat", Codes(REGISTER_OK)), // the trailing INVITE octets are ignored
    ("rfc4475/semiuri.dat", Codes(&[200])),
    ("rfc4475/transports.dat", Codes(&[200])),
    (
        "rfc4475/mpart01.dat",
        Codes(&[401, 403, 404, 405, 407, 415, 480, 501]),
    ), // MESSAGE
    ("rfc4475/unreason.dat", Nothing), // a response
    ("rfc4475/noreason.dat", Nothing), // a response
    // ---- RFC 4475 3.1.2: invalid messages
    ("rfc4475/badinv01.dat", Codes(&[400])),
    ("rfc4475/clerr.dat", Codes(&[400])),
    ("rfc4475/ncl.dat", Codes(&[400])),
    ("rfc4475/scalar02.dat", Codes(&[400])),
    ("rfc4475/scalarlg.dat", Nothing),                 // a response
    ("rfc4475/quotbal.dat", Codes(INVITE_400_OR_OK)),  // 400, or liberal: infer the quote
    ("rfc4475/ltgtruri.dat", Codes(INVITE_400_OR_OK)), // 400, or liberal: strip <>
    ("rfc4475/lwsruri.dat", Codes(&[400])),
    ("rfc4475/lwsstart.dat", Codes(INVITE_400_OR_OK)), // may reject, or ignore extra SP
    ("rfc4475/trws.dat", Codes(&[200, 400])),          // may reject, or ignore trailing SP
    ("rfc4475/escruri.dat", Codes(INVITE_400_OR_OK)),  // 400 acceptable
    ("rfc4475/baddate.dat", Codes(INVITE_400_OR_OK)),  // may reject, else ignore Date
    ("rfc4475/regbadct.dat", Codes(&[400])),
    ("rfc4475/badaspec.dat", Codes(&[200, 400])), // "400 reasonable; parser must not break"
    // No empty line ends the header: a datagram that is not a message may be dropped.
    ("rfc4475/baddn.dat", CodesOrNone(&[400])),
    ("rfc4475/badvers.dat", Codes(&[505])),
    ("rfc4475/mismatch01.dat", Codes(&[400])),
    ("rfc4475/mismatch02.dat", Codes(&[400, 405, 501])), // 501 preferred, 400 acceptable
    ("rfc4475/bigcode.dat", Nothing),                    // a response
    // ---- RFC 4475 3.2, 3.3: semantically odd messages
    ("rfc4475/badbranch.dat", Codes(&[200, 400])),
    ("rfc4475/insuf.dat", Codes(&[400])),
    ("rfc4475/unkscm.dat", Codes(&[416])),
    ("rfc4475/novelsc.dat", Codes(&[404, 416])),
    ("rfc4475/unksm2.dat", Codes(&[400, 401, 403, 404, 416])), // registrar rejects (or challenges first)
    ("rfc4475/bext01.dat", CodesOrNone(&[420])),               // top Via is TLS
    ("rfc4475/invut.dat", Codes(&[415, 401, 407])),            // 415, or the challenge first
    ("rfc4475/regaut01.dat", Codes(&[401])),
    ("rfc4475/multi01.dat", Codes(&[400])),
    ("rfc4475/mcl01.dat", Codes(&[400])),
    ("rfc4475/bcast.dat", Nothing), // a response; never forwarded to 255.255.255.255
    ("rfc4475/zeromf.dat", Codes(&[200, 483])),
    ("rfc4475/cparam01.dat", Codes(REGISTER_OK)),
    ("rfc4475/cparam02.dat", Codes(REGISTER_OK)),
    ("rfc4475/regescrt.dat", Codes(REGISTER_OK)),
    ("rfc4475/sdp01.dat", Codes(&[406, 401, 407])), // 406, or the challenge first
    ("rfc4475/inv2543.dat", Codes(INVITE_OK)),
    // Not in the RFC text: no SIP version, no Via. Nowhere to send a response: drop or 400.
    ("rfc4475/test.dat", CodesOrNone(&[400])),
    // ---- RFC 5118
    ("rfc5118/ipv6-good.dat", Codes(REGISTER_OK)),
    ("rfc5118/ipv6-bad.dat", Codes(&[400])),
    ("rfc5118/port-ambiguous.dat", Codes(REGISTER_OK)),
    ("rfc5118/port-unambiguous.dat", Codes(REGISTER_OK)),
    ("rfc5118/via-received-param-with-delim.dat", Codes(BYE_OK)),
    ("rfc5118/via-received-param-no-delim.dat", Codes(&[200])),
    ("rfc5118/ipv6-in-sdp.dat", Codes(INVITE_OK)),
    ("rfc5118/mult-ip-in-header.dat", Codes(BYE_OK)),
    ("rfc5118/mult-ip-in-sdp.dat", Codes(INVITE_OK)),
    ("rfc5118/ipv4-mapped-ipv6.dat", Codes(INVITE_OK)),
    ("rfc5118/ipv6-bug-abnf-3-colons.dat", Codes(&[200, 400])), // tolerate, or reject the bad address
    ("rfc5118/ipv6-correct-abnf-2-colons.dat", Codes(&[200])),
];

/// The sent-by port of the first Via (5060 if absent or unparsable), found leniently.
fn top_via_port(msg: &[u8]) -> u16 {
    let vias = common::header_values(msg, "Via", Some("v"));
    let Some(via) = vias.first() else { return 5060 };
    // "SIP / 2.0 / UDP host:port;params" (possibly with LWS everywhere, or folded).
    let after_proto = via.split_whitespace().collect::<Vec<_>>().join(" ");
    let sent_by = after_proto
        .rsplit('/')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split([';', ','])
        .next()
        .unwrap_or("");
    let port = if let Some(rest) = sent_by.strip_prefix('[') {
        rest.split_once(']')
            .and_then(|(_, p)| p.strip_prefix(':'))
            .unwrap_or("")
    } else {
        sent_by.rsplit_once(':').map(|(_, p)| p).unwrap_or("")
    };
    port.parse().unwrap_or(5060)
}

/// UDP socket + TCP listener on 127.0.0.X:port, X counting up from `*next`.
fn bind_pair(next: &mut u8, port: u16) -> (UdpSocket, TcpListener) {
    for _ in 0..200 {
        let ip = Ipv4Addr::new(127, 0, 0, *next);
        *next = if *next >= 250 { 10 } else { *next + 1 };
        let addr = SocketAddr::from((ip, port));
        if let (Ok(u), Ok(t)) = (UdpSocket::bind(addr), TcpListener::bind(addr)) {
            return (u, t);
        }
    }
    panic!("no free 127.0.0.X:{port} for the torture test");
}

/// The final answer arriving on the UDP socket or over a TCP connection to the listener, within
/// `limit`. 1xx responses are skipped.
fn await_answer(udp: &UdpSocket, tcp: &TcpListener, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok((n, _)) = udp.recv_from(&mut buf) {
            let m = buf[..n].to_vec();
            let provisional = status_code(&m).map(|c| c < 200).unwrap_or(false);
            last = Some(m);
            if !provisional {
                return last;
            }
        }
        if let Ok((mut s, _)) = tcp.accept() {
            s.set_nonblocking(false).ok();
            let left = deadline.saturating_duration_since(Instant::now());
            while let Some(m) = common::read_stream_message(&mut s, left) {
                let provisional = status_code(&m).map(|c| c < 200).unwrap_or(false);
                last = Some(m);
                if !provisional {
                    return last;
                }
            }
        }
    }
    last
}

/// The start line's method and the raw top Via line: what a server transaction is matched by.
fn transaction_identity(bytes: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(bytes);
    let method = text.split(' ').next().unwrap_or("").to_string();
    let via = text
        .split("\r\n")
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("via") || l.starts_with("v:") || l.starts_with("v :")
        })
        .unwrap_or("")
        .to_string();
    (method, via)
}

#[test]
fn torture_messages() {
    let dir = common::test_data_dir().join("sip-torture");
    let manifest = fs::read_to_string(dir.join("MANIFEST.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/MANIFEST.tsv: {e}", dir.display()));
    let table: HashMap<&str, Expect> = TABLE.iter().copied().collect();

    let files: Vec<&str> = manifest
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .filter(|f| !f.is_empty())
        .collect();
    assert!(!files.is_empty(), "MANIFEST.tsv lists no files");
    let missing: Vec<&&str> = files.iter().filter(|f| !table.contains_key(**f)).collect();
    assert!(
        missing.is_empty(),
        "no expectation in TABLE for {missing:?}: add them"
    );

    let mut server = Server::start(&config(""));
    server.assert_alive();
    let mut next_ip = 10u8;
    let mut failures = Vec::new();
    let mut transactions = std::collections::HashSet::new();

    for file in &files {
        let bytes = fs::read(dir.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
        // Several files share the same top Via (branch and sent-by) and method. RFC 3261
        // §17.2.3 rightly matches such a message to the earlier file's server transaction and
        // answers it as a retransmission, to the earlier destination; a fresh server gives each
        // file its own transaction.
        if !transactions.insert(transaction_identity(&bytes)) {
            server.restart();
            transactions.clear();
            transactions.insert(transaction_identity(&bytes));
        }
        let port = top_via_port(&bytes);
        let (udp, tcp) = bind_pair(&mut next_ip, port);
        let from = udp.local_addr().unwrap();
        udp.send_to(&bytes, server.udp)
            .expect("send torture datagram");
        let answer = await_answer(&udp, &tcp, Duration::from_secs(2));
        let code = answer.as_deref().and_then(status_code);
        let ok = match (table[file], code, &answer) {
            (Nothing, _, None) => true,
            (Nothing, _, Some(_)) => false,
            (CodesOrNone(_), _, None) => true,
            (Codes(_), _, None) => false,
            (Codes(c) | CodesOrNone(c), Some(code), Some(_)) => c.contains(&code),
            (_, None, Some(_)) => false, // something that is not a SIP response came back
        };
        if !ok {
            failures.push(format!(
                "{file} (sent from {from}): expected {:?}, got {}",
                table[file],
                match &answer {
                    None => "no answer within 2 s".to_string(),
                    Some(a) => format!("{:?}", first_line(a)),
                }
            ));
        }
        // The process must survive every message and keep answering.
        if !server.is_running() {
            failures.push(format!("{file}: the server process DIED"));
            panic!(
                "server died; mismatches so far:\n{}\n{}",
                failures.join("\n"),
                server.log_excerpt()
            );
        }
        if common::options_status(server.udp) != Some(200) {
            failures.push(format!(
                "{file}: afterwards the server no longer answered OPTIONS with 200"
            ));
        }
    }

    if !failures.is_empty() {
        panic!(
            "{} of {} torture messages mismatched:\n{}\n{}",
            failures.len(),
            files.len(),
            failures.join("\n"),
            server.log_excerpt()
        );
    }
}
