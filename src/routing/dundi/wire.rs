//! The DUNDi wire format (RFC 7378, Asterisk `dundi-parser.c`): the 8-byte header, the
//! commands and the information elements, as typed values. Sans-IO and total: decoding any
//! byte string either yields a [`Packet`] or a [`WireError`], never a panic; encoding a decoded
//! packet gives back exactly the bytes it came from.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use super::eid::Eid;

/// The largest datagram Asterisk reads or writes (`MAX_PACKET_SIZE`).
pub const MAX_PACKET: usize = 8192;
/// Header length.
pub const HEADER_LEN: usize = 8;

/// `cmdresp` bit: last message of the transaction from this side.
pub const FLAG_FINAL: u8 = 0x80;
/// `cmdresp` bit: the command is a response.
pub const FLAG_RESPONSE: u8 = 0x40;

/// What went wrong decoding or encoding a datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram of {0} bytes is shorter than the 8-byte header")]
    Short(usize),
    #[error("datagram of {0} bytes exceeds the {MAX_PACKET}-byte maximum")]
    TooLarge(usize),
    #[error("information element {ie} claims {len} bytes but only {left} remain")]
    Truncated { ie: u8, len: usize, left: usize },
    #[error("a lone byte after the last information element")]
    Trailing,
    #[error("information element {ie} has a bad length {len}")]
    BadLength { ie: u8, len: usize },
    #[error("ENCDATA of {0} bytes is not an IV plus whole AES blocks")]
    BadEncData(usize),
    #[error("information element {ie} value of {len} bytes does not fit in one length byte")]
    ValueTooLong { ie: u8, len: usize },
    #[error("ENCDATA must be the last information element")]
    EncDataNotLast,
}

/// DUNDi commands (the low 7 bits of `cmdresp`, response bit included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Ack,
    DpDiscover,
    DpResponse,
    EidQuery,
    EidResponse,
    PrecacheRq,
    PrecacheRp,
    Invalid,
    Unknown,
    Null,
    RegReq,
    RegResponse,
    Cancel,
    Encrypt,
    EncRej,
    Status,
    /// Any other code, kept as received.
    Other(u8),
}

impl Command {
    /// The code on the wire, without the FINAL bit.
    pub fn code(self) -> u8 {
        match self {
            Command::Ack => 0x40,
            Command::DpDiscover => 1,
            Command::DpResponse => 2 | 0x40,
            Command::EidQuery => 3,
            Command::EidResponse => 4 | 0x40,
            Command::PrecacheRq => 5,
            Command::PrecacheRp => 6 | 0x40,
            Command::Invalid => 7 | 0x40,
            Command::Unknown => 8 | 0x40,
            Command::Null => 9,
            Command::RegReq => 10,
            Command::RegResponse => 11 | 0x40,
            Command::Cancel => 12,
            Command::Encrypt => 13,
            Command::EncRej => 14 | 0x40,
            Command::Status => 15,
            Command::Other(c) => c & 0x7f,
        }
    }

    /// The command for a code (FINAL bit ignored).
    pub fn from_code(c: u8) -> Command {
        match c & 0x7f {
            0x40 => Command::Ack,
            1 => Command::DpDiscover,
            0x42 => Command::DpResponse,
            3 => Command::EidQuery,
            0x44 => Command::EidResponse,
            5 => Command::PrecacheRq,
            0x46 => Command::PrecacheRp,
            0x47 => Command::Invalid,
            0x48 => Command::Unknown,
            9 => Command::Null,
            10 => Command::RegReq,
            0x4b => Command::RegResponse,
            12 => Command::Cancel,
            13 => Command::Encrypt,
            0x4e => Command::EncRej,
            15 => Command::Status,
            other => Command::Other(other),
        }
    }

    /// The name Asterisk's debug output uses.
    pub fn name(self) -> &'static str {
        match self {
            Command::Ack => "ACK",
            Command::DpDiscover => "DPDISCOVER",
            Command::DpResponse => "DPRESPONSE",
            Command::EidQuery => "EIDQUERY",
            Command::EidResponse => "EIDRESPONSE",
            Command::PrecacheRq => "PRECACHERQ",
            Command::PrecacheRp => "PRECACHERP",
            Command::Invalid => "INVALID",
            Command::Unknown => "UNKNOWN",
            Command::Null => "NULL",
            Command::RegReq => "REGREQ",
            Command::RegResponse => "REGRESPONSE",
            Command::Cancel => "CANCEL",
            Command::Encrypt => "ENCRYPT",
            Command::EncRej => "ENCREJ",
            Command::Status => "STATUS",
            Command::Other(_) => "UNKNOWN-CMD",
        }
    }

    /// Commands that travel inside ENCRYPT when the peer has keys (Asterisk `dundi_send`).
    pub fn is_encryptable(self) -> bool {
        matches!(
            self,
            Command::RegReq
                | Command::RegResponse
                | Command::DpDiscover
                | Command::DpResponse
                | Command::EidQuery
                | Command::EidResponse
                | Command::PrecacheRq
                | Command::PrecacheRp
        )
    }
}

/// Information element type codes.
pub mod ie {
    pub const EID: u8 = 1;
    pub const CALLED_CONTEXT: u8 = 2;
    pub const CALLED_NUMBER: u8 = 3;
    pub const EID_DIRECT: u8 = 4;
    pub const ANSWER: u8 = 5;
    pub const TTL: u8 = 6;
    pub const VERSION: u8 = 10;
    pub const EXPIRATION: u8 = 11;
    pub const UNKNOWN: u8 = 12;
    pub const CAUSE: u8 = 14;
    pub const REQEID: u8 = 15;
    pub const ENCDATA: u8 = 16;
    pub const SHAREDKEY: u8 = 17;
    pub const SIGNATURE: u8 = 18;
    pub const KEYCRC32: u8 = 19;
    pub const HINT: u8 = 20;
    pub const DEPARTMENT: u8 = 21;
    pub const ORGANIZATION: u8 = 22;
    pub const LOCALITY: u8 = 23;
    pub const STATE_PROV: u8 = 24;
    pub const COUNTRY: u8 = 25;
    pub const EMAIL: u8 = 26;
    pub const PHONE: u8 = 27;
    pub const IPADDR: u8 = 28;
    pub const CACHEBYPASS: u8 = 29;
    pub const PEERSTATUS: u8 = 30;
}

/// Answer protocols (`DUNDI_PROTO_*`).
pub mod proto {
    pub const NONE: u8 = 0;
    pub const IAX: u8 = 1;
    pub const SIP: u8 = 2;
    pub const H323: u8 = 3;
    pub const PJSIP: u8 = 4;

    /// The name Asterisk prints for a protocol.
    pub fn name(p: u8) -> &'static str {
        match p {
            NONE => "NONE",
            IAX => "IAX2",
            SIP => "SIP",
            H323 => "H323",
            PJSIP => "PJSIP",
            _ => "UNKNOWN",
        }
    }
}

/// Answer flags (`DUNDI_FLAG_*`).
pub mod answer_flags {
    pub const EXISTS: u16 = 1 << 0;
    pub const MATCHMORE: u16 = 1 << 1;
    pub const CANMATCH: u16 = 1 << 2;
    pub const IGNOREPAT: u16 = 1 << 3;
    pub const RESIDENTIAL: u16 = 1 << 4;
    pub const COMMERCIAL: u16 = 1 << 5;
    pub const MOBILE: u16 = 1 << 6;
    pub const NOUNSOLICITED: u16 = 1 << 7;
    pub const NOCOMUNSOLICIT: u16 = 1 << 8;
}

/// Hint flags (`DUNDI_HINT_*`).
pub mod hint_flags {
    pub const TTL_EXPIRED: u16 = 1 << 0;
    pub const DONT_ASK: u16 = 1 << 1;
    pub const UNAFFECTED: u16 = 1 << 2;
}

/// Cause codes (`DUNDI_CAUSE_*`).
pub mod cause {
    pub const SUCCESS: u8 = 0;
    pub const GENERAL: u8 = 1;
    pub const DYNAMIC: u8 = 2;
    pub const NOAUTH: u8 = 3;
    pub const DUPLICATE: u8 = 4;
    pub const TTL_EXPIRED: u8 = 5;
    pub const NEEDKEY: u8 = 6;
    pub const BADENCRYPT: u8 = 7;
}

/// One answer of a DPRESPONSE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerIe {
    /// The entity that gave the answer.
    pub eid: Eid,
    /// `proto::*`.
    pub protocol: u8,
    /// `answer_flags::*`.
    pub flags: u16,
    pub weight: u16,
    /// Protocol-specific destination, e.g. `15551234@127.0.0.1:5090`.
    pub destination: String,
}

/// The PEERSTATUS element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub flags: u32,
    pub netlag: u16,
    pub querylag: u16,
    pub peer_eid: Eid,
}

/// An information element, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ie {
    Eid(Eid),
    CalledContext(String),
    CalledNumber(String),
    EidDirect(Eid),
    Answer(AnswerIe),
    Ttl(u16),
    Version(u16),
    Expiration(u16),
    /// UNKNOWN: the command code that was not understood.
    UnknownCommand(u8),
    Cause {
        code: u8,
        text: String,
    },
    ReqEid(Eid),
    /// ENCDATA: IV and AES-CBC ciphertext (whole blocks); it runs to the end of the datagram.
    EncData {
        iv: [u8; 16],
        data: Vec<u8>,
    },
    SharedKey(Vec<u8>),
    Signature(Vec<u8>),
    KeyCrc32(u32),
    Hint {
        flags: u16,
        data: String,
    },
    Department(String),
    Organization(String),
    Locality(String),
    StateProv(String),
    Country(String),
    Email(String),
    Phone(String),
    IpAddr(String),
    CacheBypass,
    PeerStatus(PeerStatus),
    /// An element we do not know, or whose text is not UTF-8: kept as received.
    Other {
        ie: u8,
        data: Vec<u8>,
    },
}

impl Ie {
    /// The element's type code.
    pub fn code(&self) -> u8 {
        match self {
            Ie::Eid(_) => ie::EID,
            Ie::CalledContext(_) => ie::CALLED_CONTEXT,
            Ie::CalledNumber(_) => ie::CALLED_NUMBER,
            Ie::EidDirect(_) => ie::EID_DIRECT,
            Ie::Answer(_) => ie::ANSWER,
            Ie::Ttl(_) => ie::TTL,
            Ie::Version(_) => ie::VERSION,
            Ie::Expiration(_) => ie::EXPIRATION,
            Ie::UnknownCommand(_) => ie::UNKNOWN,
            Ie::Cause { .. } => ie::CAUSE,
            Ie::ReqEid(_) => ie::REQEID,
            Ie::EncData { .. } => ie::ENCDATA,
            Ie::SharedKey(_) => ie::SHAREDKEY,
            Ie::Signature(_) => ie::SIGNATURE,
            Ie::KeyCrc32(_) => ie::KEYCRC32,
            Ie::Hint { .. } => ie::HINT,
            Ie::Department(_) => ie::DEPARTMENT,
            Ie::Organization(_) => ie::ORGANIZATION,
            Ie::Locality(_) => ie::LOCALITY,
            Ie::StateProv(_) => ie::STATE_PROV,
            Ie::Country(_) => ie::COUNTRY,
            Ie::Email(_) => ie::EMAIL,
            Ie::Phone(_) => ie::PHONE,
            Ie::IpAddr(_) => ie::IPADDR,
            Ie::CacheBypass => ie::CACHEBYPASS,
            Ie::PeerStatus(_) => ie::PEERSTATUS,
            Ie::Other { ie, .. } => *ie,
        }
    }

    /// The name Asterisk's debug output uses for an element type.
    pub fn name_of(code: u8) -> &'static str {
        match code {
            ie::EID => "EID",
            ie::CALLED_CONTEXT => "CALLED_CONTEXT",
            ie::CALLED_NUMBER => "CALLED_NUMBER",
            ie::EID_DIRECT => "EID_DIRECT",
            ie::ANSWER => "ANSWER",
            ie::TTL => "TTL",
            ie::VERSION => "VERSION",
            ie::EXPIRATION => "EXPIRATION",
            ie::UNKNOWN => "UNKNOWN",
            ie::CAUSE => "CAUSE",
            ie::REQEID => "REQEID",
            ie::ENCDATA => "ENCDATA",
            ie::SHAREDKEY => "SHAREDKEY",
            ie::SIGNATURE => "SIGNATURE",
            ie::KEYCRC32 => "KEYCRC32",
            ie::HINT => "HINT",
            ie::DEPARTMENT => "DEPARTMENT",
            ie::ORGANIZATION => "ORGANIZATION",
            ie::LOCALITY => "LOCALITY",
            ie::STATE_PROV => "STATE_PROV",
            ie::COUNTRY => "COUNTRY",
            ie::EMAIL => "EMAIL",
            ie::PHONE => "PHONE",
            ie::IPADDR => "IPADDR",
            ie::CACHEBYPASS => "CACHEBYPASS",
            ie::PEERSTATUS => "PEERSTATUS",
            _ => "UNKNOWN-IE",
        }
    }

    fn decode(code: u8, v: &[u8]) -> Result<Ie, WireError> {
        let bad = || WireError::BadLength {
            ie: code,
            len: v.len(),
        };
        let eid = || Eid::from_slice(v).ok_or_else(bad);
        let short = || -> Result<u16, WireError> {
            let a: [u8; 2] = v.try_into().map_err(|_| bad())?;
            Ok(u16::from_be_bytes(a))
        };
        let text = |make: fn(String) -> Ie| match std::str::from_utf8(v) {
            Ok(s) => make(s.to_string()),
            Err(_) => Ie::Other {
                ie: code,
                data: v.to_vec(),
            },
        };
        Ok(match code {
            ie::EID => Ie::Eid(eid()?),
            ie::EID_DIRECT => Ie::EidDirect(eid()?),
            ie::REQEID => Ie::ReqEid(eid()?),
            ie::CALLED_CONTEXT => text(Ie::CalledContext),
            ie::CALLED_NUMBER => text(Ie::CalledNumber),
            ie::DEPARTMENT => text(Ie::Department),
            ie::ORGANIZATION => text(Ie::Organization),
            ie::LOCALITY => text(Ie::Locality),
            ie::STATE_PROV => text(Ie::StateProv),
            ie::COUNTRY => text(Ie::Country),
            ie::EMAIL => text(Ie::Email),
            ie::PHONE => text(Ie::Phone),
            ie::IPADDR => text(Ie::IpAddr),
            ie::TTL => Ie::Ttl(short()?),
            ie::VERSION => Ie::Version(short()?),
            ie::EXPIRATION => Ie::Expiration(short()?),
            ie::UNKNOWN => match v {
                [c] => Ie::UnknownCommand(*c),
                _ => return Err(bad()),
            },
            ie::KEYCRC32 => {
                let a: [u8; 4] = v.try_into().map_err(|_| bad())?;
                Ie::KeyCrc32(u32::from_be_bytes(a))
            }
            ie::CAUSE => match v.split_first() {
                Some((c, rest)) => match std::str::from_utf8(rest) {
                    Ok(s) => Ie::Cause {
                        code: *c,
                        text: s.to_string(),
                    },
                    Err(_) => Ie::Other {
                        ie: code,
                        data: v.to_vec(),
                    },
                },
                None => return Err(bad()),
            },
            ie::HINT => {
                let [f0, f1, rest @ ..] = v else {
                    return Err(bad());
                };
                match std::str::from_utf8(rest) {
                    Ok(s) => Ie::Hint {
                        flags: u16::from_be_bytes([*f0, *f1]),
                        data: s.to_string(),
                    },
                    Err(_) => Ie::Other {
                        ie: code,
                        data: v.to_vec(),
                    },
                }
            }
            ie::ANSWER => {
                let [e0, e1, e2, e3, e4, e5, protocol, f0, f1, w0, w1, rest @ ..] = v else {
                    return Err(bad());
                };
                match std::str::from_utf8(rest) {
                    Ok(dest) => Ie::Answer(AnswerIe {
                        eid: Eid([*e0, *e1, *e2, *e3, *e4, *e5]),
                        protocol: *protocol,
                        flags: u16::from_be_bytes([*f0, *f1]),
                        weight: u16::from_be_bytes([*w0, *w1]),
                        destination: dest.to_string(),
                    }),
                    Err(_) => Ie::Other {
                        ie: code,
                        data: v.to_vec(),
                    },
                }
            }
            ie::SHAREDKEY => Ie::SharedKey(v.to_vec()),
            ie::SIGNATURE => Ie::Signature(v.to_vec()),
            ie::CACHEBYPASS => {
                if !v.is_empty() {
                    return Err(bad());
                }
                Ie::CacheBypass
            }
            ie::PEERSTATUS => {
                let [a, b, c, d, n0, n1, q0, q1, e0, e1, e2, e3, e4, e5] = v else {
                    return Err(bad());
                };
                Ie::PeerStatus(PeerStatus {
                    flags: u32::from_be_bytes([*a, *b, *c, *d]),
                    netlag: u16::from_be_bytes([*n0, *n1]),
                    querylag: u16::from_be_bytes([*q0, *q1]),
                    peer_eid: Eid([*e0, *e1, *e2, *e3, *e4, *e5]),
                })
            }
            _ => Ie::Other {
                ie: code,
                data: v.to_vec(),
            },
        })
    }

    /// Appends `type len value`; ENCDATA writes Asterisk's (truncated) length byte.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let code = self.code();
        let start = out.len();
        out.push(code);
        out.push(0);
        match self {
            Ie::Eid(e) | Ie::EidDirect(e) | Ie::ReqEid(e) => out.extend_from_slice(&e.0),
            Ie::CalledContext(s)
            | Ie::CalledNumber(s)
            | Ie::Department(s)
            | Ie::Organization(s)
            | Ie::Locality(s)
            | Ie::StateProv(s)
            | Ie::Country(s)
            | Ie::Email(s)
            | Ie::Phone(s)
            | Ie::IpAddr(s) => out.extend_from_slice(s.as_bytes()),
            Ie::Answer(a) => {
                out.extend_from_slice(&a.eid.0);
                out.push(a.protocol);
                out.extend_from_slice(&a.flags.to_be_bytes());
                out.extend_from_slice(&a.weight.to_be_bytes());
                out.extend_from_slice(a.destination.as_bytes());
            }
            Ie::Ttl(v) | Ie::Version(v) | Ie::Expiration(v) => {
                out.extend_from_slice(&v.to_be_bytes())
            }
            Ie::UnknownCommand(c) => out.push(*c),
            Ie::Cause { code, text } => {
                out.push(*code);
                out.extend_from_slice(text.as_bytes());
            }
            Ie::EncData { iv, data } => {
                if data.is_empty() || !data.len().is_multiple_of(16) {
                    return Err(WireError::BadEncData(data.len() + 16));
                }
                out.extend_from_slice(iv);
                out.extend_from_slice(data);
                // Asterisk stores (16 + len) in one byte; readers take ENCDATA to the end.
                if let Some(l) = out.get_mut(start + 1) {
                    *l = ((data.len() + 16) & 0xff) as u8;
                }
                return Ok(());
            }
            Ie::SharedKey(d) | Ie::Signature(d) | Ie::Other { data: d, .. } => {
                out.extend_from_slice(d)
            }
            Ie::KeyCrc32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Ie::Hint { flags, data } => {
                out.extend_from_slice(&flags.to_be_bytes());
                out.extend_from_slice(data.as_bytes());
            }
            Ie::CacheBypass => {}
            Ie::PeerStatus(p) => {
                out.extend_from_slice(&p.flags.to_be_bytes());
                out.extend_from_slice(&p.netlag.to_be_bytes());
                out.extend_from_slice(&p.querylag.to_be_bytes());
                out.extend_from_slice(&p.peer_eid.0);
            }
        }
        let len = out.len() - start - 2;
        if len > 255 {
            out.truncate(start);
            return Err(WireError::ValueTooLong { ie: code, len });
        }
        if let Some(l) = out.get_mut(start + 1) {
            *l = len as u8;
        }
        Ok(())
    }
}

/// The 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Sender's transaction id.
    pub strans: u16,
    /// Receiver's transaction id (0 on the first packet of a transaction).
    pub dtrans: u16,
    /// Next sequence number the sender expects.
    pub iseqno: u8,
    /// The sender's sequence number of this packet.
    pub oseqno: u8,
    /// Command and FINAL / RESPONSE bits.
    pub cmdresp: u8,
    pub cmdflags: u8,
}

impl Header {
    /// Decodes the first 8 bytes.
    pub fn decode(b: &[u8]) -> Result<Header, WireError> {
        let [s0, s1, d0, d1, iseqno, oseqno, cmdresp, cmdflags, ..] = *b else {
            return Err(WireError::Short(b.len()));
        };
        Ok(Header {
            strans: u16::from_be_bytes([s0, s1]),
            dtrans: u16::from_be_bytes([d0, d1]),
            iseqno,
            oseqno,
            cmdresp,
            cmdflags,
        })
    }

    /// The 8 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [s0, s1] = self.strans.to_be_bytes();
        let [d0, d1] = self.dtrans.to_be_bytes();
        [
            s0,
            s1,
            d0,
            d1,
            self.iseqno,
            self.oseqno,
            self.cmdresp,
            self.cmdflags,
        ]
    }

    pub fn command(&self) -> Command {
        Command::from_code(self.cmdresp)
    }

    pub fn is_final(&self) -> bool {
        self.cmdresp & FLAG_FINAL != 0
    }
}

/// A whole datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub ies: Vec<Ie>,
}

impl Packet {
    /// A packet with the given header fields.
    pub fn new(
        strans: u16,
        dtrans: u16,
        iseqno: u8,
        oseqno: u8,
        command: Command,
        fin: bool,
        ies: Vec<Ie>,
    ) -> Packet {
        Packet {
            header: Header {
                strans,
                dtrans,
                iseqno,
                oseqno,
                cmdresp: command.code() | if fin { FLAG_FINAL } else { 0 },
                cmdflags: 0,
            },
            ies,
        }
    }

    pub fn command(&self) -> Command {
        self.header.command()
    }

    pub fn is_final(&self) -> bool {
        self.header.is_final()
    }

    /// Decodes a datagram.
    pub fn decode(b: &[u8]) -> Result<Packet, WireError> {
        if b.len() > MAX_PACKET {
            return Err(WireError::TooLarge(b.len()));
        }
        let header = Header::decode(b)?;
        let ies = decode_ies(b.get(HEADER_LEN..).unwrap_or_default())?;
        Ok(Packet { header, ies })
    }

    /// Encodes a datagram.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.header.encode());
        encode_ies(&self.ies, &mut out)?;
        if out.len() > MAX_PACKET {
            return Err(WireError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// The first element matching `f`.
    pub fn find<'a, T>(&'a self, f: impl FnMut(&'a Ie) -> Option<T>) -> Option<T> {
        self.ies.iter().find_map(f)
    }
}

/// Decodes a run of information elements (a packet after its header).
pub fn decode_ies(mut b: &[u8]) -> Result<Vec<Ie>, WireError> {
    let mut ies = Vec::new();
    while !b.is_empty() {
        let [code, len, rest @ ..] = b else {
            return Err(WireError::Trailing);
        };
        let (code, len) = (*code, usize::from(*len));
        if code == ie::ENCDATA {
            // Asterisk ignores the length byte: ENCDATA is the rest of the datagram.
            let v = rest;
            if v.len() <= 16 || !v.len().is_multiple_of(16) {
                return Err(WireError::BadEncData(v.len()));
            }
            let (iv, data) = v
                .split_at_checked(16)
                .ok_or(WireError::BadEncData(v.len()))?;
            let iv: [u8; 16] = iv.try_into().map_err(|_| WireError::BadEncData(v.len()))?;
            ies.push(Ie::EncData {
                iv,
                data: data.to_vec(),
            });
            break;
        }
        let left = rest.len();
        let Some((value, next)) = rest.split_at_checked(len) else {
            return Err(WireError::Truncated {
                ie: code,
                len,
                left,
            });
        };
        ies.push(Ie::decode(code, value)?);
        b = next;
    }
    Ok(ies)
}

/// Encodes information elements after whatever `out` holds.
pub fn encode_ies(ies: &[Ie], out: &mut Vec<u8>) -> Result<(), WireError> {
    for (i, e) in ies.iter().enumerate() {
        if matches!(e, Ie::EncData { .. }) && i + 1 != ies.len() {
            return Err(WireError::EncDataNotLast);
        }
        e.encode(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_round_trip() {
        let bytes = hex::decode(
            "282e530401 00c2000522020000000001020187000031353535313233344031323\
             72e302e302e313a353039301402000 40b02003c"
                .replace(' ', ""),
        )
        .unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert_eq!(p.command(), Command::DpResponse);
        assert!(p.is_final());
        match &p.ies[0] {
            Ie::Answer(a) => {
                assert_eq!(a.destination, "15551234@127.0.0.1:5090");
                assert_eq!(a.flags, 0x0187);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.encode().unwrap(), bytes);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Packet::decode(&[1, 2, 3]).is_err());
        assert!(Packet::decode(&[0, 0, 0, 0, 0, 0, 1, 0, 6, 3, 0]).is_err());
        assert!(Packet::decode(&[0, 0, 0, 0, 0, 0, 1, 0, 6]).is_err());
        assert!(Packet::decode(&[0, 0, 0, 0, 0, 0, 1, 0, 16, 5, 1, 2]).is_err());
        let unknown = [0, 0, 0, 0, 0, 0, 1, 0, 99, 2, 7, 8];
        let p = Packet::decode(&unknown).unwrap();
        assert_eq!(
            p.ies,
            vec![Ie::Other {
                ie: 99,
                data: vec![7, 8]
            }]
        );
        assert_eq!(p.encode().unwrap(), unknown);
    }
}
