//! Calls into the office from outside (issue 14): a SIP trunk provider (sipp on its own loopback
//! address, 127.0.0.5) calling a DID rings the extension's phone (baresip), which answers; the
//! same INVITE from another address is refused and nothing rings; a number that is not ours
//! gets 404 from the trunk and never leaves again; with `[inbound] public = true` a peer reaches
//! a DID written as E.164 digits without a password, and only a DID. Every one of these calls
//! leaves a record (direction incoming, where it came from, the caller in E.164, the DID).
mod common;
mod phone;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use phone::*;

const DID: &str = "+4930123457";

/// The office: 100 has the DID, 101 has none; the trunk `carrier` is whatever listens on
/// `trunk` (its calls come from 127.0.0.5).
fn office(trunk: SocketAddr, public: bool) -> String {
    let (lo, hi) = rtp_port_range();
    format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"
{MD5_ONLY}

[media]
rtp_ports = "{lo}-{hi}"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[[trunk]]
name = "carrier"
uri = "sip:{trunk}"
number_format = "national"
sources = ["127.0.0.5"]

[inbound]
public = {public}

[[extension]]
number = "100"
password = "secret100"
name = "Reception"
did = "{DID}"

[[extension]]
number = "101"
password = "secret101"
name = "Office"
"#
    )
}

/// A socket on the trunk's address: whatever pasarela sends to the trunk arrives here.
fn trunk_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.5:0").expect("bind 127.0.0.5 (loopback aliases)");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

fn invite(to_user: &str, from_user: &str, local: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let tag = random_token();
    let sdp = format!(
        "v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0\r\n",
        ip = local.ip()
    );
    format!(
        "INVITE sip:{to_user}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{tag};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from_user}@{ip}>;tag={tag}\r\nTo: <sip:{to_user}@{server}>\r\n\
         Call-ID: {tag}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@{local}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        ip = local.ip()
    )
    .into_bytes()
}

/// Sends an INVITE from `sock` and returns the first final status.
fn final_status(sock: &UdpSocket, server: SocketAddr, to_user: &str, from_user: &str) -> u16 {
    status_code(&final_response(sock, server, to_user, from_user)).unwrap_or(0)
}

/// Sends an INVITE from `sock` and returns the first final response.
fn final_response(sock: &UdpSocket, server: SocketAddr, to_user: &str, from_user: &str) -> Vec<u8> {
    let local = sock.local_addr().unwrap();
    sock.send_to(&invite(to_user, from_user, local, server), server)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 65535];
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from != server {
                continue;
            }
            if status_code(&buf[..n]).is_some_and(|st| st >= 200) {
                return buf[..n].to_vec();
            }
        }
    }
    panic!("no final response to INVITE {to_user} from {local}");
}

/// (direction, route_source, caller_e164, callee_e164, extension, disposition, sip_status,
/// packets) of every record, oldest first.
type Row = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
);

fn records(server: &Server, want: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows: Vec<Row> = rusqlite::Connection::open(&server.db)
            .and_then(|c| {
                let mut st = c.prepare(
                    "SELECT direction, route_source, caller_e164, callee_e164, extension, \
                     disposition, sip_status, packets FROM call_records \
                     WHERE end_reason IS NOT 'in progress' ORDER BY id",
                )?;
                let rows = st
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .unwrap_or_default();
        if rows.len() >= want || Instant::now() > deadline {
            return rows;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// sipp as the provider, from 127.0.0.5, calling `did` with caller id `caller`.
fn provider_call(server: &Server, did: &str, caller: &str) -> (bool, String) {
    require_program("sipp", "sip-tester");
    let dir = server.dir();
    let stem = format!("sipp-provider-{}", random_token());
    let messages = dir.join(format!("{stem}.messages.log"));
    let screen = dir.join(format!("{stem}.screen"));
    let out = std::fs::File::create(&screen).unwrap();
    let mut child = Command::new("sipp")
        .args([
            "-sf",
            &scenario("trunk_uac_did.xml").display().to_string(),
            &server.udp.to_string(),
            "-ci",
            "127.0.0.5",
            "-cp",
            &free_port().to_string(),
            "-nostdin",
            "-i",
            "127.0.0.5",
            "-mi",
            "127.0.0.5",
            "-mp",
            &free_media_base().to_string(),
            "-p",
            &free_port().to_string(),
            "-t",
            "u1",
            "-m",
            "1",
            "-s",
            did,
            "-key",
            "caller",
            caller,
            "-timeout",
            "30s",
            "-timeout_error",
            "-trace_msg",
            "-message_file",
            &messages.display().to_string(),
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn sipp");
    let status = wait_timeout(&mut child, Duration::from_secs(40));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let report = format!(
        "--- sipp screen ---\n{}\n--- sipp messages ---\n{}",
        std::fs::read_to_string(&screen).unwrap_or_default(),
        std::fs::read_to_string(&messages).unwrap_or_default()
    );
    (status.is_some_and(|s| s.success()), report)
}

/// The provider calls the DID in national form from the trunk's address: the phone rings and
/// answers, audio reaches the phone through the relay, and the record says where the call
/// came from. The same INVITE from another address is challenged like any unknown caller and
/// nothing rings; a number that is not ours gets 404 and nothing leaves on the trunk.
#[test]
fn trunk_calls_reach_the_did_and_nothing_else() {
    let trunk = trunk_socket();
    let mut server = Server::start(&office(trunk.local_addr().unwrap(), false));
    let base = server.dir().to_path_buf();
    let mut phone = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 10.0,
        },
    );
    wait_registered(&server, &mut phone, "100");

    let (ok, report) = provider_call(&server, "030123457", "0301234");
    if !ok {
        panic!(
            "the provider's call failed\n{report}\n{}\n{}",
            phone.report(),
            server.log_excerpt()
        );
    }
    phone.expect_event("CALL_ESTABLISHED", Duration::from_secs(2), &[], &server);
    phone.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    thread::sleep(Duration::from_millis(500));
    let wav = phone.received_wav();
    let (_, samples) = read_wav(&wav).unwrap_or_else(|e| phone.fail(&e));
    let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(
        loud > 4000,
        "the phone received no audio from the provider ({loud} loud samples in {})",
        wav.display()
    );

    // The same call from another address is no trunk call: challenged, nothing rings.
    let stranger = UdpSocket::bind("127.0.0.6:0").expect("bind 127.0.0.6");
    stranger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let before = phone.seen.len();
    assert_eq!(
        final_status(&stranger, server.udp, "030123457", "0301234"),
        401
    );
    thread::sleep(Duration::from_millis(500));
    phone.drain();
    assert!(
        phone.seen[before..]
            .iter()
            .all(|e| !event_type(e).is_some_and(|t| t.starts_with("CALL_"))),
        "the phone rang for a call from a stranger: {:?}",
        &phone.seen[before..]
    );

    // From the trunk to a number that is not ours: 404, and nothing goes back out on the trunk.
    assert_eq!(
        final_status(&trunk, server.udp, "030999999", "0301234"),
        404
    );
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok((n, from)) = trunk.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !(text.starts_with("INVITE") && from.ip() == server.udp.ip()),
                "pasarela sent the trunk's call back out: {text}"
            );
        }
    }

    let rows = records(&server, 2);
    let (answered, refused) = (&rows[0], &rows[1]);
    assert_eq!(answered.0, "incoming", "{rows:?}");
    assert_eq!(answered.1.as_deref(), Some("trunk carrier"), "{rows:?}");
    assert_eq!(answered.2.as_deref(), Some("+49301234"), "{rows:?}");
    assert_eq!(answered.3.as_deref(), Some(DID), "{rows:?}");
    assert_eq!(answered.4.as_deref(), Some("100"), "{rows:?}");
    assert_eq!(answered.5, "answered", "{rows:?}");
    assert!(answered.7 > 50, "no RTP relayed: {rows:?}");
    assert_eq!(refused.0, "incoming", "{rows:?}");
    assert_eq!(refused.1.as_deref(), Some("trunk carrier"), "{rows:?}");
    assert_eq!(refused.6, 404, "{rows:?}");
    assert_eq!(
        rows.len(),
        2,
        "the stranger's challenged INVITE is no call: {rows:?}"
    );
    server.assert_alive();
}

/// `[inbound] public = true`: a peer dials the DID as DUNDi answers carry it (E.164 digits, no
/// '+') without a password and the phone rings; an extension without a DID and a number that
/// does not exist get the same challenge (no extension enumeration); a call routed to this
/// gateway's own address is not made (loop).
#[test]
fn peers_reach_published_numbers_only() {
    let trunk = trunk_socket();
    let mut server = Server::start(&office(trunk.local_addr().unwrap(), true));
    let base = server.dir().to_path_buf();
    let mut phone = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 2.0,
        },
    );
    wait_registered(&server, &mut phone, "100");
    let peer = UdpSocket::bind("127.0.0.7:0").expect("bind 127.0.0.7");
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The extension number and a number nobody has: both challenged alike.
    assert_eq!(final_status(&peer, server.udp, "101", "4989555"), 401);
    assert_eq!(final_status(&peer, server.udp, "107", "4989555"), 401);
    phone.drain();
    assert!(
        phone
            .seen
            .iter()
            .all(|e| !event_type(e).is_some_and(|t| t.starts_with("CALL_"))),
        "the phone rang: {:?}",
        phone.seen
    );
    // Max-Forwards exhausted: 483, nothing rings (RFC 3261 §16.3).
    let local = peer.local_addr().unwrap();
    let hops = String::from_utf8(invite("4930123457", "4989555", local, server.udp))
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    peer.send_to(hops.as_bytes(), server.udp).unwrap();
    let mut buf = [0u8; 65535];
    let mut status = None;
    let until = Instant::now() + Duration::from_secs(3);
    while status.is_none() && Instant::now() < until {
        if let Ok((n, _)) = peer.recv_from(&mut buf) {
            status = status_code(&buf[..n]).filter(|s| *s >= 200);
        }
    }
    assert_eq!(status, Some(483));
    // The DID as E.164 digits: answered by the phone, no password asked.
    let ok = final_response(&peer, server.udp, "4930123457", "4989555");
    assert_eq!(status_code(&ok), Some(200));
    phone.expect_event("CALL_ESTABLISHED", Duration::from_secs(2), &[], &server);
    // ACK, then the phone hangs up when its 2 s of audio end: answer the BYE.
    let to = header_values(&ok, "To", Some("t")).pop().expect("To");
    let call_id = header_values(&ok, "Call-ID", Some("i"))
        .pop()
        .expect("Call-ID");
    let from = header_values(&ok, "From", Some("f")).pop().expect("From");
    let ack = format!(
        "ACK sip:100@{srv} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        srv = server.udp,
        b = random_token()
    );
    peer.send_to(ack.as_bytes(), server.udp).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let mut byed = false;
    while Instant::now() < until && !byed {
        if let Ok((n, _)) = peer.recv_from(&mut buf) {
            let msg = &buf[..n];
            if first_line(msg).starts_with("BYE") {
                peer.send_to(&ok_for(msg), server.udp).unwrap();
                byed = true;
            }
        }
    }
    assert!(
        byed,
        "no BYE after the phone hung up\n{}",
        server.log_excerpt()
    );
    let rows = records(&server, 1);
    let call = rows.last().expect("a record");
    assert_eq!(call.0, "incoming", "{rows:?}");
    assert_eq!(call.1.as_deref(), Some("internet 127.0.0.7"), "{rows:?}");
    assert_eq!(call.2.as_deref(), Some("+4989555"), "{rows:?}");
    assert_eq!(call.3.as_deref(), Some(DID), "{rows:?}");
    assert_eq!(call.5, "answered", "{rows:?}");
    server.assert_alive();
}

/// A 200 OK for request `req` (Via, From, To, Call-ID, CSeq copied).
fn ok_for(req: &[u8]) -> Vec<u8> {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for (name, short) in [
        ("Via", Some("v")),
        ("From", Some("f")),
        ("To", Some("t")),
        ("Call-ID", Some("i")),
        ("CSeq", None),
    ] {
        for v in header_values(req, name, short) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// SIGHUP applies new trunk sources without a restart: an address that was a stranger (its
/// INVITE challenged) becomes the trunk (a number that is not ours: 404, recorded).
#[test]
fn reload_applies_new_trunk_sources() {
    let trunk = trunk_socket();
    let server = Server::start(&office(trunk.local_addr().unwrap(), false));
    let newcomer = UdpSocket::bind("127.0.0.8:0").expect("bind 127.0.0.8");
    newcomer
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert_eq!(
        final_status(&newcomer, server.udp, "030999999", "0301234"),
        401
    );
    let cfg = server.dir().join("pasarela.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            r#"sources = ["127.0.0.5"]"#,
            r#"sources = ["127.0.0.8/32"]"#,
        ),
    )
    .unwrap();
    signal(server.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = 0;
    while Instant::now() < deadline {
        status = final_status(&newcomer, server.udp, "030999999", "0301234");
        if status == 404 {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status, 404, "{}", server.log_excerpt());
    // The old source is a stranger now.
    assert_eq!(
        final_status(&trunk, server.udp, "030999999", "0301234"),
        401
    );
    let rows = records(&server, 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1.as_deref(), Some("trunk carrier"), "{rows:?}");
}

/// `[[inbound.route]]` to a `[[ring_group]]`: the trunk calls the group's number and both
/// members' phones ring at once; the trunk gives up (CANCEL) and both stop.
#[test]
fn a_trunk_call_rings_a_group() {
    let trunk = trunk_socket();
    let template = office(trunk.local_addr().unwrap(), false).replace(
        "[inbound]\n",
        "[[ring_group]]\nname = \"sales\"\nmembers = [\"100\", \"101\"]\n\n[inbound]\n",
    ) + "\n[[inbound.route]]\nnumber = \"+4930123450\"\ndestination = \"sales\"\n";
    // `[[inbound.route]]` must follow [inbound]'s keys: put it at the end, after the extensions.
    let server = Server::start(&template);
    let base = server.dir().to_path_buf();
    let mut phones: Vec<Phone> = ["100", "101"]
        .iter()
        .map(|ext| {
            Phone::start(
                &base,
                server.udp,
                PhoneCfg {
                    name: ext,
                    ext,
                    answer: "manual",
                    tone_hz: 440.0,
                    tone_secs: 5.0,
                },
            )
        })
        .collect();
    for (p, ext) in phones.iter_mut().zip(["100", "101"]) {
        wait_registered(&server, p, ext);
    }
    let local = trunk.local_addr().unwrap();
    let inv = invite("030123450", "0301234", local, server.udp);
    trunk.send_to(&inv, server.udp).unwrap();
    for p in phones.iter_mut() {
        p.expect_event("CALL_INCOMING", Duration::from_secs(10), &[], &server);
    }
    let cancel = cancel_for(&inv);
    trunk.send_to(cancel.as_bytes(), server.udp).unwrap();
    for p in phones.iter_mut() {
        p.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    }
    let rows = records(&server, 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "incoming", "{rows:?}");
    assert_eq!(rows[0].1.as_deref(), Some("trunk carrier"), "{rows:?}");
    assert_eq!(rows[0].3.as_deref(), Some("+4930123450"), "{rows:?}");
    assert_eq!(rows[0].5, "cancelled", "{rows:?}");
}

/// A `[[ring_group]]` with `strategy = "order"`: the members ring one after the other, each
/// for `member_timeout`: 100 rings first and alone; when it has not answered within 2 s it stops
/// and 101 rings; 102 (the last) has not rung yet when the trunk gives up.
#[test]
fn a_group_in_order_rings_the_next_member_after_its_turn() {
    let trunk = trunk_socket();
    let template = office(trunk.local_addr().unwrap(), false).replace(
        "[inbound]\n",
        "[[ring_group]]\nname = \"hunt\"\nmembers = [\"100\", \"101\", \"102\"]\nstrategy = \"order\"\n\
         member_timeout = 2\n\n[inbound]\n",
    ) + "\n[[extension]]\nnumber = \"102\"\npassword = \"secret102\"\nname = \"Lab\"\n\
         \n[[inbound.route]]\nnumber = \"+4930123450\"\ndestination = \"hunt\"\n";
    let server = Server::start(&template);
    let base = server.dir().to_path_buf();
    let exts = ["100", "101", "102"];
    let mut phones: Vec<Phone> = exts
        .iter()
        .map(|ext| {
            Phone::start(
                &base,
                server.udp,
                PhoneCfg {
                    name: ext,
                    ext,
                    answer: "manual",
                    tone_hz: 440.0,
                    tone_secs: 5.0,
                },
            )
        })
        .collect();
    for (p, ext) in phones.iter_mut().zip(exts) {
        wait_registered(&server, p, ext);
    }
    let local = trunk.local_addr().unwrap();
    let inv = invite("030123450", "0301234", local, server.udp);
    let sent = Instant::now();
    trunk.send_to(&inv, server.udp).unwrap();
    phones[0].expect_event("CALL_INCOMING", Duration::from_secs(3), &[], &server);
    // 101 and 102 stay quiet during 100's turn.
    thread::sleep(Duration::from_millis(1000));
    for p in phones[1..].iter_mut() {
        assert!(
            !p.has_event("CALL_INCOMING"),
            "{} rang during the first member's turn",
            p.name
        );
    }
    phones[1].expect_event("CALL_INCOMING", Duration::from_secs(4), &[], &server);
    let turn = sent.elapsed();
    assert!(
        turn >= Duration::from_millis(1800),
        "101 rang after {turn:?}, before 100's 2 s were over"
    );
    phones[0].expect_event("CALL_CLOSED", Duration::from_secs(2), &[], &server);
    assert!(!phones[2].has_event("CALL_INCOMING"), "102 rang too early");
    // CANCEL from the trunk: the ringing member stops.
    let cancel = cancel_for(&inv);
    trunk.send_to(cancel.as_bytes(), server.udp).unwrap();
    phones[1].expect_event("CALL_CLOSED", Duration::from_secs(5), &[], &server);
    let rows = records(&server, 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].3.as_deref(), Some("+4930123450"), "{rows:?}");
    assert_eq!(rows[0].5, "cancelled", "{rows:?}");
}

/// The CANCEL of INVITE `inv`: its request line, Via, From, To, Call-ID; CSeq 1 CANCEL.
fn cancel_for(inv: &[u8]) -> String {
    let text = String::from_utf8_lossy(inv).into_owned();
    let head: Vec<&str> = text.split("\r\n").collect();
    let pick = |name: &str| {
        head.iter()
            .find(|l| l.starts_with(name))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    format!(
        "{}\r\n{}\r\nMax-Forwards: 70\r\n{}\r\n{}\r\n{}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        head[0].replacen("INVITE", "CANCEL", 1),
        pick("Via:"),
        pick("From:"),
        pick("To:"),
        pick("Call-ID:")
    )
}
