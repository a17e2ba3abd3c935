//! Password guessing and credential replay against a real `pasarela serve`: sipp guessing
//! extension 100's password from 127.0.0.66 is banned within a few attempts and stays banned
//! (even with the right password), while the real phone on another address keeps registering;
//! `pasarela bans list|lift` show and lift the ban through the control socket. A raw UDP client
//! replays a captured INVITE's Authorization towards another number and from another address,
//! and answers without qop: all refused. The store keeps HA1 hashes, never the password.
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::web_client::{csrf_of, set_up_admin};
use common::{config, header_values, recv_final, sipp, status_code, Server, MD5_ONLY};
use pasarela::sip::auth::{self, Algorithm, Credentials};

const ATTACKER: &str = "127.0.0.66";

fn bans(server: &Server, args: &[&str]) -> String {
    let out = Command::new(common::server_program())
        .arg("bans")
        .args(args)
        .arg("--config")
        .arg(server.dir().join("pasarela.toml"))
        .output()
        .expect("run pasarela bans");
    assert!(out.status.success(), "pasarela bans {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn a_password_guesser_is_banned_while_the_phone_keeps_working() {
    let server = Server::start(&config(MD5_ONLY));
    // Ten guesses, one call at a time, from the attacker's address.
    let guess = sipp(
        server.dir(),
        "register_guess.xml",
        server.udp,
        "u1",
        &[
            "-s",
            "100",
            "-au",
            "100",
            "-ap",
            "guess-1234",
            "-m",
            "10",
            "-l",
            "1",
            "-i",
            ATTACKER,
        ],
    );
    guess.assert_success(&server);
    let log = std::fs::read_to_string(&guess.messages).unwrap_or_default();
    let challenges = count(&log, "SIP/2.0 401");
    let refusals = count(&log, "SIP/2.0 403");
    assert_eq!(challenges, 5, "banned after 5 failures\n{log}");
    assert_eq!(refusals, 10, "every guess refused alike\n{log}");
    // The ban shows in the CLI, with the extension it went for.
    let list = bans(&server, &["list"]);
    assert!(list.contains(ATTACKER) && list.contains("100"), "{list}");

    // Banned: even the right password from there is refused …
    let right_from_attacker = |server: &Server| {
        sipp(
            server.dir(),
            "register_auth.xml",
            server.udp,
            "u1",
            &[
                "-s",
                "100",
                "-au",
                "100",
                "-ap",
                "secret100",
                "-i",
                ATTACKER,
            ],
        )
    };
    assert!(
        !right_from_attacker(&server).success(),
        "a banned source registered"
    );
    // … while the phone on its own address registers as usual, over UDP and TCP.
    for transport in ["u1", "t1"] {
        let remote = if transport == "u1" {
            server.udp
        } else {
            server.tcp
        };
        sipp(
            server.dir(),
            "register_auth.xml",
            remote,
            transport,
            &["-s", "100", "-au", "100", "-ap", "secret100"],
        )
        .assert_success(&server);
    }
    // Unknown extensions from the banned address get the very same answer (no enumeration).
    let unknown = sipp(
        server.dir(),
        "register_guess.xml",
        server.udp,
        "u1",
        &["-s", "999", "-au", "999", "-ap", "x", "-i", ATTACKER],
    );
    let log = std::fs::read_to_string(&unknown.messages).unwrap_or_default();
    assert!(
        log.contains("SIP/2.0 403 Forbidden") && !log.contains("SIP/2.0 401"),
        "{log}"
    );

    // Lifted from the command line: the right password works from there again.
    let lifted = bans(&server, &["lift", ATTACKER]);
    assert!(lifted.contains("lifted"), "{lifted}");
    assert!(bans(&server, &["list"]).contains("no banned sources"));
    right_from_attacker(&server).assert_success(&server);

    // Guessing again bans it again; the admin sees the ban on /security and lifts it there.
    sipp(
        server.dir(),
        "register_guess.xml",
        server.udp,
        "u1",
        &[
            "-s",
            "100",
            "-au",
            "100",
            "-ap",
            "guess-5678",
            "-m",
            "6",
            "-l",
            "1",
            "-i",
            ATTACKER,
        ],
    )
    .assert_success(&server);
    assert!(!right_from_attacker(&server).success(), "banned again");
    let mut admin = set_up_admin(server.web.expect("web address"));
    let page = admin.get("/security");
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(ATTACKER) && page.body.contains("100"),
        "{}",
        page.body
    );
    // Without the page's CSRF token nothing is lifted.
    let forged = admin.post("/security/lift", &[("csrf", "x"), ("source", ATTACKER)]);
    assert_ne!(forged.status, 200);
    assert!(
        !right_from_attacker(&server).success(),
        "lifted without CSRF"
    );
    let token = csrf_of(&page.body);
    let lifted = admin.post("/security/lift", &[("csrf", &token), ("source", ATTACKER)]);
    assert!(
        lifted.body.contains("is lifted")
            && !lifted.body.contains(&format!("<code>{ATTACKER}</code>")),
        "{}",
        lifted.body
    );
    assert!(bans(&server, &["list"]).contains("no banned sources"));
    right_from_attacker(&server).assert_success(&server);
}

/// A digest client over raw UDP from `local`.
struct Phone {
    sock: UdpSocket,
    server: SocketAddr,
    cseq: u32,
}

impl Phone {
    fn new(local: &str, server: SocketAddr) -> Phone {
        let sock = UdpSocket::bind((local, 0)).expect("bind");
        Phone {
            sock,
            server,
            cseq: 0,
        }
    }

    fn invite(&mut self, ruri: &str, authorization: Option<&str>) -> Vec<u8> {
        self.cseq += 1;
        let local = self.sock.local_addr().unwrap();
        let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n",
            ip = local.ip()
        );
        let msg = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-sec-{c};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:100@office.test>;tag=sec{c}\r\nTo: <{ruri}>\r\n\
             Call-ID: sec-{c}@{local}\r\nCSeq: {c} INVITE\r\nContact: <sip:100@{local}>\r\n\
             {auth}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
            c = self.cseq,
            len = body.len()
        );
        self.sock.send_to(msg.as_bytes(), self.server).unwrap();
        let reply = recv_final(&self.sock, Duration::from_secs(3)).expect("a final answer");
        // ACK non-2xx finals so the server stops retransmitting.
        let ack = format!(
            "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-sec-{c};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:100@office.test>;tag=sec{c}\r\nTo: <{ruri}>\r\n\
             Call-ID: sec-{c}@{local}\r\nCSeq: {c} ACK\r\nContent-Length: 0\r\n\r\n",
            c = self.cseq
        );
        let _ = self.sock.send_to(ack.as_bytes(), self.server);
        reply
    }
}

fn nonce(challenge: &[u8]) -> String {
    let v = header_values(challenge, "WWW-Authenticate", None);
    let v = v.first().expect("WWW-Authenticate");
    v.split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("nonce")
        .to_owned()
}

fn authorization(nonce: &str, uri: &str, nc: Option<u32>) -> String {
    let mut c = Credentials {
        scheme: "Digest".into(),
        username: "100".into(),
        realm: "office.test".into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: String::new(),
        algorithm: Algorithm::Md5,
        cnonce: nc.map(|_| "c0ffee".into()),
        opaque: None,
        qop: nc.map(|_| "auth".into()),
        nc,
    };
    c.response = auth::expected_response(&c, "INVITE", "secret100");
    let qop = nc.map_or(String::new(), |n| {
        format!(", cnonce=\"c0ffee\", qop=auth, nc={n:08x}")
    });
    format!(
        "Digest username=\"100\", realm=\"office.test\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{}\", algorithm=MD5{qop}",
        c.response
    )
}

#[test]
fn replayed_and_qopless_credentials_are_refused() {
    let mut server = Server::start(&config(MD5_ONLY));
    let mut phone = Phone::new("127.0.0.1", server.udp);
    let permitted = format!("sip:101@{}", server.udp);
    let premium = format!("sip:09001234567@{}", server.udp);

    // A valid INVITE to extension 101 (unregistered: 480 once authenticated).
    let ch = phone.invite(&permitted, None);
    assert_eq!(status_code(&ch), Some(401));
    let n = nonce(&ch);
    let good = authorization(&n, &permitted, Some(1));
    assert_eq!(
        status_code(&phone.invite(&permitted, Some(&good))),
        Some(480)
    );

    // The sniffed Authorization replayed towards a premium number: 400, not a call.
    let replay = phone.invite(&premium, Some(&good));
    assert_eq!(
        status_code(&replay),
        Some(400),
        "{}",
        String::from_utf8_lossy(&replay)
    );
    // Replayed as it was: the nonce count was used, so only a new challenge.
    assert_eq!(
        status_code(&phone.invite(&permitted, Some(&good))),
        Some(401)
    );
    // From another address with a fresh nc: the nonce belongs to the phone's address.
    let mut thief = Phone::new("127.0.0.67", server.udp);
    let stolen = authorization(&n, &permitted, Some(7));
    assert_eq!(
        status_code(&thief.invite(&permitted, Some(&stolen))),
        Some(401)
    );
    // RFC 2069 (no qop) is refused unless the extension has legacy_digest = true.
    let ch = phone.invite(&permitted, None);
    let qopless = authorization(&nonce(&ch), &permitted, None);
    assert_eq!(
        status_code(&phone.invite(&permitted, Some(&qopless))),
        Some(403)
    );
    server.assert_alive();

    // The store holds digest hashes only.
    let db = std::fs::read(&server.db).unwrap();
    assert!(
        !db.windows(9).any(|w| w == b"secret100"),
        "clear password in the store"
    );
    let row = pasarela::store::Store::open(&server.db)
        .unwrap()
        .extension("100")
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.ha1_md5, row.ha1_sha256),
        pasarela::store::digest_ha1("100", "office.test", "secret100")
    );
}

#[test]
fn the_allow_list_refuses_other_networks() {
    let cfg = config(MD5_ONLY).replace(
        "password = \"secret101\"",
        "password = \"secret101\"\nallow = [\"127.0.0.0/30\"]",
    );
    let server = Server::start(&cfg);
    let reg = |ip: &str| {
        sipp(
            server.dir(),
            "register_auth.xml",
            server.udp,
            "u1",
            &["-s", "101", "-au", "101", "-ap", "secret101", "-i", ip],
        )
    };
    reg("127.0.0.1").assert_success(&server);
    let outside = reg("127.0.0.68");
    assert!(!outside.success(), "registered from outside the allow-list");
    let log = std::fs::read_to_string(&outside.messages).unwrap_or_default();
    assert!(log.contains("SIP/2.0 403 Forbidden"), "{log}");
}
