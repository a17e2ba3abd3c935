//! Test support for the DUNDi tests: a tiny classic-libpcap reader (Ethernet, Linux cooked v1/v2,
//! raw IP, BSD loopback; IPv4/UDP), a parser for the `*-decoded.txt` listings of
//! `tests/data/dundi`, and a renderer of decoded elements in the listings' notation.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use pasarela::routing::dundi::wire::{answer_flags, hint_flags, proto, Ie};

/// `tests/data/dundi` (copied from the project's shared test data).
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dundi")
}

/// One UDP datagram from a capture.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let a: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    })
}

/// Reads every IPv4/UDP datagram of a classic pcap file.
pub fn read_pcap(path: &std::path::Path) -> Vec<Datagram> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let magic = u32_at(&b, 0, true).expect("pcap header");
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        m => panic!("not a classic pcap file (magic {m:#x})"),
    };
    let linktype = u32_at(&b, 20, le).expect("linktype") & 0xffff;
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= b.len() {
        let incl = u32_at(&b, at + 8, le).expect("record") as usize;
        let frame = &b[at + 16..(at + 16 + incl).min(b.len())];
        at += 16 + incl;
        let ip = match linktype {
            1 => {
                let mut off = 12;
                let mut et = u16::from_be_bytes([frame[off], frame[off + 1]]);
                while et == 0x8100 {
                    off += 4;
                    et = u16::from_be_bytes([frame[off], frame[off + 1]]);
                }
                if et != 0x0800 {
                    continue;
                }
                &frame[off + 2..]
            }
            113 => {
                if u16::from_be_bytes([frame[14], frame[15]]) != 0x0800 {
                    continue;
                }
                &frame[16..]
            }
            276 => {
                if u16::from_be_bytes([frame[0], frame[1]]) != 0x0800 {
                    continue;
                }
                &frame[20..]
            }
            0 => &frame[4..],
            101 | 12 | 14 | 228 => frame,
            other => panic!("unsupported pcap link type {other}"),
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let ip = &ip[..total.min(ip.len())];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let udp = &ip[ihl..];
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        out.push(Datagram {
            src: SocketAddr::V4(SocketAddrV4::new(src, sport)),
            dst: SocketAddr::V4(SocketAddrV4::new(dst, dport)),
            payload: udp[8..ulen.min(udp.len())].to_vec(),
        });
    }
    out
}

/// One element line of a listing: name, length, rendered value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IeLine {
    pub name: String,
    pub len: usize,
    pub value: String,
}

/// One packet of a listing.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    pub number: usize,
    pub src: String,
    pub dst: String,
    /// `strans=… dtrans=… iseq=… oseq=… cmd=0x.. NAME|FINAL flags=0x..`
    pub header: String,
    pub bytes: Vec<u8>,
    pub ies: Vec<IeLine>,
    /// The recovered AES key when the listing gives one.
    pub aes_key: Option<Vec<u8>>,
    /// Decrypted inner packet from byte 6 on (cmdresp, cmdflags, IEs).
    pub inner: Option<Vec<u8>>,
    pub inner_ies: Vec<IeLine>,
}

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex_line(line: &str) -> Vec<u8> {
    let t = line.trim_start();
    let hex: String = t.chars().skip(6).take(48).collect();
    hex.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect()
}

fn ie_line(line: &str) -> IeLine {
    let t = line.trim();
    let (name, rest) = t.split_once(char::is_whitespace).expect("ie line");
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("len=").expect("len=");
    let (len, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    IeLine {
        name: name.to_string(),
        len: len.parse().expect("len"),
        value: norm(value),
    }
}

/// Parses a `*-decoded.txt` listing.
pub fn read_listing(path: &std::path::Path) -> Vec<Listed> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out: Vec<Listed> = Vec::new();
    let mut in_plain = false;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if indent == 0 && t.starts_with('#') {
            let words: Vec<&str> = t.split_whitespace().collect();
            let hdr_at = t.find("strans=").expect("strans");
            out.push(Listed {
                number: words[0][1..].parse().expect("packet number"),
                src: words[2].to_string(),
                dst: words[4].to_string(),
                header: norm(&t[hdr_at..]),
                ..Default::default()
            });
            in_plain = false;
            continue;
        }
        let cur = out.last_mut().expect("packet line first");
        if t.starts_with("-> SHAREDKEY") {
            let k = t.split("key=").nth(1).expect("key=");
            let k: String = k.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            cur.aes_key = Some(hex::decode(k).expect("key hex"));
        } else if t.starts_with("->") {
        } else if t.starts_with("plaintext") {
            in_plain = true;
            cur.inner = Some(Vec::new());
        } else if indent == 6 {
            cur.bytes.extend(hex_line(line));
        } else if indent == 4 {
            cur.ies.push(ie_line(line));
        } else if indent == 9 && in_plain {
            if let Some(inner) = cur.inner.as_mut() {
                inner.extend(hex_line(line));
            }
        } else if indent == 7 {
            cur.inner_ies.push(ie_line(line));
        }
    }
    out
}

fn flag_names(flags: u16, names: &[(u16, &str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "NONE".into()
    } else {
        set.join("|")
    }
}

fn bytes_repr(s: &str) -> String {
    format!("b'{s}'")
}

/// An element in the listing's notation.
pub fn render(ie: &Ie, encoded_len: usize) -> IeLine {
    use pasarela::routing::dundi::wire::Ie as I;
    let name = Ie::name_of(ie.code()).to_string();
    let value = match ie {
        I::Eid(e) | I::EidDirect(e) | I::ReqEid(e) => e.to_string(),
        I::CalledContext(s)
        | I::CalledNumber(s)
        | I::Department(s)
        | I::Organization(s)
        | I::Locality(s)
        | I::StateProv(s)
        | I::Country(s)
        | I::Email(s)
        | I::Phone(s)
        | I::IpAddr(s) => format!("'{s}'"),
        I::Ttl(v) | I::Version(v) | I::Expiration(v) => v.to_string(),
        I::Answer(a) => format!(
            "eid={} proto={} flags={:#06x}({}) weight={} dest='{}'",
            a.eid,
            proto::name(a.protocol),
            a.flags,
            flag_names(
                a.flags,
                &[
                    (answer_flags::EXISTS, "EXISTS"),
                    (answer_flags::MATCHMORE, "MATCHMORE"),
                    (answer_flags::CANMATCH, "CANMATCH"),
                    (answer_flags::IGNOREPAT, "IGNOREPAT"),
                    (answer_flags::RESIDENTIAL, "RESIDENTIAL"),
                    (answer_flags::COMMERCIAL, "COMMERCIAL"),
                    (answer_flags::MOBILE, "MOBILE"),
                    (answer_flags::NOUNSOLICITED, "NOUNSOLICITED"),
                    (answer_flags::NOCOMUNSOLICIT, "NOCOMUNSOLICIT"),
                ]
            ),
            a.weight,
            a.destination
        ),
        I::Hint { flags, data } => format!(
            "flags={:#06x}({}) data={}",
            flags,
            flag_names(
                *flags,
                &[
                    (hint_flags::TTL_EXPIRED, "TTL_EXPIRED"),
                    (hint_flags::DONT_ASK, "DONT_ASK"),
                    (hint_flags::UNAFFECTED, "UNAFFECTED"),
                ]
            ),
            bytes_repr(data)
        ),
        I::CacheBypass => "(empty)".into(),
        I::SharedKey(d) | I::Signature(d) => {
            format!(
                "{}... ({} bytes)",
                hex::encode(&d[..16.min(d.len())]),
                d.len()
            )
        }
        I::EncData { iv, data } => {
            format!("IV={} + {} bytes ciphertext", hex::encode(iv), data.len())
        }
        I::KeyCrc32(v) => format!("{v:#010x}"),
        other => format!("{other:?}"),
    };
    IeLine {
        name,
        len: encoded_len,
        value: norm(&value),
    }
}

/// Renders a packet header in the listing's notation.
pub fn render_header(h: &pasarela::routing::dundi::wire::Header) -> String {
    let cmd = h.command();
    let mut name = cmd.name().to_string();
    if h.is_final() {
        name.push_str("|FINAL");
    }
    format!(
        "strans={} dtrans={} iseq={} oseq={} cmd={:#04x} {} flags={:#04x}",
        h.strans, h.dtrans, h.iseqno, h.oseqno, h.cmdresp, name, h.cmdflags
    )
}

/// Renders every element of an encoded IE run (lengths taken from the bytes).
pub fn render_all(ies: &[Ie], ie_bytes: &[u8]) -> Vec<IeLine> {
    let mut out = Vec::new();
    let mut at = 0;
    for ie in ies {
        let len = if matches!(ie, Ie::EncData { .. }) {
            ie_bytes.len() - at - 2
        } else {
            ie_bytes[at + 1] as usize
        };
        out.push(render(ie, len));
        at += 2 + len;
    }
    out
}
