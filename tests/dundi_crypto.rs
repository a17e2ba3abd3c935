//! DUNDi encryption against the Asterisk 20 capture: every SHAREDKEY/SIGNATURE verifies and
//! unwraps to the recovered AES key, every ENCRYPT packet decrypts to the inner packet of the
//! listing (and re-encrypts to the captured bytes), and what we encrypt decrypts back.

mod dundi_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dundi_common::*;
use pasarela::routing::dundi::crypto::{self, KeyIntro, RxKeys, TxKey};
use pasarela::routing::dundi::wire::{Command, Ie, Packet};
use pasarela::routing::dundi::Eid;

struct Node {
    eid: Eid,
    private: crypto::PrivateKey,
    public: crypto::PublicKey,
}

fn node(name: &str, eid: &str) -> Node {
    let dir = testdata().join("keys");
    Node {
        eid: eid.parse().unwrap(),
        private: crypto::load_private_key(&dir.join(format!("{name}.key"))).unwrap(),
        public: crypto::load_public_key(&dir.join(format!("{name}.pub"))).unwrap(),
    }
}

fn nodes() -> HashMap<String, Node> {
    HashMap::from([
        (
            "127.0.0.1:4520".to_string(),
            node("anchor", "02:00:00:00:00:01"),
        ),
        (
            "127.0.0.2:4520".to_string(),
            node("peer", "02:00:00:00:00:02"),
        ),
    ])
}

#[test]
fn test_keys_load() {
    let dir = testdata().join("keys");
    for n in ["anchor", "peer", "ext"] {
        crypto::load_private_key(&dir.join(format!("{n}.key"))).unwrap();
        crypto::load_public_key(&dir.join(format!("{n}.pub"))).unwrap();
    }
    assert!(crypto::parse_public_key(
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    .is_err());
}

#[test]
fn capture_decrypts_to_the_listing() {
    let nodes = nodes();
    let caps = read_pcap(&testdata().join("encrypted.pcap"));
    let listed = read_listing(&testdata().join("encrypted-decoded.txt"));
    let mut rx = RxKeys::default();
    // (initiator address, initiator strans) -> AES key of the transaction
    let mut by_trans: HashMap<(SocketAddr, u16), [u8; 16]> = HashMap::new();
    let (mut full_keys, mut decrypted, mut identical) = (0, 0, 0);
    for (d, l) in caps.iter().zip(&listed) {
        let ctx = format!("#{}", l.number);
        let p = Packet::decode(&d.payload).unwrap();
        if p.command() != Command::Encrypt {
            continue;
        }
        let sender = &nodes[&d.src.to_string()];
        let receiver = &nodes[&d.dst.to_string()];
        let shared = p.find(|i| match i {
            Ie::SharedKey(k) => Some(k.as_slice()),
            _ => None,
        });
        let sig = p.find(|i| match i {
            Ie::Signature(k) => Some(k.as_slice()),
            _ => None,
        });
        let crc = p.find(|i| match i {
            Ie::KeyCrc32(c) => Some(*c),
            _ => None,
        });
        let key = if p.header.dtrans == 0 {
            let eid = p.find(|i| match i {
                Ie::Eid(e) => Some(*e),
                _ => None,
            });
            assert_eq!(eid, Some(sender.eid), "{ctx}: EID of the sender");
            if let (Some(k), Some(s)) = (shared, sig) {
                let aes = crypto::open_shared_key(k, s, &sender.public, &receiver.private)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(Some(aes.to_vec()), l.aes_key, "{ctx}: recovered AES key");
                // The wrong keys must not do.
                assert!(
                    crypto::open_shared_key(k, s, &receiver.public, &receiver.private).is_err()
                );
                full_keys += 1;
            }
            let key = rx
                .resolve(
                    sender.eid,
                    shared.zip(sig),
                    crc,
                    &sender.public,
                    &receiver.private,
                )
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            by_trans.insert((d.src, p.header.strans), key);
            key
        } else {
            by_trans[&(d.dst, p.header.dtrans)]
        };
        let (iv, data) = p
            .find(|i| match i {
                Ie::EncData { iv, data } => Some((*iv, data.clone())),
                _ => None,
            })
            .unwrap();
        let inner = crypto::decrypt_packet(&p.header, &iv, &data, &key)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let inner_bytes = inner.encode().unwrap();
        assert_eq!(
            Some(inner_bytes[6..].to_vec()),
            l.inner,
            "{ctx}: inner packet"
        );
        decrypted += 1;
        // Same key and IV: our sealing of the inner packet opens to the same bytes. (The
        // ciphertext itself may differ: miniz and zlib do not always pick the same matches.)
        let ours = crypto::seal(&key, &iv, &inner_bytes[6..]);
        assert_eq!(
            crypto::open(&key, &iv, &ours).unwrap(),
            inner_bytes[6..],
            "{ctx}"
        );
        if ours == data {
            identical += 1;
        }
    }
    assert_eq!(full_keys, 2);
    assert_eq!(decrypted, 12);
    eprintln!("{identical} of {decrypted} re-encryptions are byte-identical to Asterisk's");
}

#[test]
fn what_we_encrypt_decrypts_back() {
    let nodes = nodes();
    let anchor = &nodes["127.0.0.1:4520"];
    let peer = &nodes["127.0.0.2:4520"];
    let now = Instant::now();
    // B (peer.key) to A (anchor.pub), as in the capture's first lookup.
    let tx = TxKey::generate(
        &anchor.public,
        &peer.private,
        now,
        Duration::from_secs(3600),
    )
    .unwrap();
    let inner = Packet::new(
        21252,
        0,
        0,
        0,
        Command::DpDiscover,
        false,
        vec![
            Ie::Version(1),
            Ie::EidDirect(peer.eid),
            Ie::CalledNumber("15551234".into()),
            Ie::CalledContext("e164".into()),
            Ie::Ttl(32),
        ],
    );
    let iv = [0x42; 16];
    for intro in [
        KeyIntro::Full {
            eid: peer.eid,
            shared_key: &tx.shared_key,
            signature: &tx.signature,
        },
        KeyIntro::Crc {
            eid: peer.eid,
            crc: tx.crc32,
        },
    ] {
        let bytes = crypto::encrypt_packet(&inner, &tx.aes, &iv, intro).unwrap();
        let outer = Packet::decode(&bytes).unwrap();
        assert_eq!(outer.command(), Command::Encrypt);
        let mut rx = RxKeys::default();
        if matches!(outer.ies[1], Ie::KeyCrc32(_)) {
            rx.insert(peer.eid, tx.crc32, tx.aes);
        }
        let shared = outer.find(|i| match i {
            Ie::SharedKey(k) => Some(k.as_slice()),
            _ => None,
        });
        let sig = outer.find(|i| match i {
            Ie::Signature(k) => Some(k.as_slice()),
            _ => None,
        });
        let crc = outer.find(|i| match i {
            Ie::KeyCrc32(c) => Some(*c),
            _ => None,
        });
        let key = rx
            .resolve(
                peer.eid,
                shared.zip(sig),
                crc,
                &peer.public,
                &anchor.private,
            )
            .unwrap();
        let Some(Ie::EncData { iv, data }) = outer.ies.last() else {
            panic!("no ENCDATA")
        };
        let back = crypto::decrypt_packet(&outer.header, iv, data, &key).unwrap();
        assert_eq!(back, inner);
        // The signature is checked: another sender's public key refuses it.
        if shared.is_some() {
            let mut other = RxKeys::default();
            assert!(other
                .resolve(
                    peer.eid,
                    shared.zip(sig),
                    None,
                    &anchor.public,
                    &anchor.private
                )
                .is_err());
        }
    }
}

#[test]
fn keygen_writes_asterisk_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (k, p) = crypto::keygen(dir.path(), "office").unwrap();
    let private = std::fs::read_to_string(&k).unwrap();
    let public = std::fs::read_to_string(&p).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let private = crypto::parse_private_key(&private).unwrap();
    let public = crypto::parse_public_key(&public).unwrap();
    let peer = node("peer", "02:00:00:00:00:02");
    let tx = TxKey::generate(
        &peer.public,
        &private,
        Instant::now(),
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(
        crypto::open_shared_key(&tx.shared_key, &tx.signature, &public, &peer.private).unwrap(),
        tx.aes
    );
    assert!(
        crypto::keygen(dir.path(), "office").is_err(),
        "must not overwrite"
    );
}
