//! DUNDi encryption as Asterisk does it: RSA key files (Asterisk's `NAME.key` / `NAME.pub` PEM),
//! the per-peer AES-128 session key sent as SHAREDKEY (RSA-OAEP/SHA-1 to the peer's public key)
//! with its SIGNATURE (RSASSA-PKCS1-v1_5/SHA-1 over the SHAREDKEY bytes, by our private key) or
//! later as KEYCRC32, and ENCDATA (IV, then AES-128-CBC over zlib(packet[6..]) zero-padded).
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::Aes128;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use sha1::Sha1;

use super::eid::Eid;
use super::wire::{self, Header, Ie, Packet, WireError, HEADER_LEN, MAX_PACKET};

pub use rsa::{PrivateKey, PublicKey};

/// Size of SHAREDKEY and SIGNATURE: Asterisk only accepts 1024-bit RSA keys (one IE length byte).
pub const RSA_BYTES: usize = 128;
/// Asterisk's default life of a session key (`DUNDI_DEFAULT_KEY_EXPIRE`).
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(3600);

/// Crypto failures.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not an RSA private key in PEM (PKCS#8 or PKCS#1): {0}")]
    BadPrivateKey(String),
    #[error("not an RSA public key in PEM (SubjectPublicKeyInfo or PKCS#1): {0}")]
    BadPublicKey(String),
    #[error("RSA key is {0} bits; DUNDi needs 1024-bit keys")]
    KeySize(usize),
    #[error("RSA operation failed: {0}")]
    Rsa(#[from] rsa::Error),
    #[error("shared key signature does not verify")]
    BadSignature,
    #[error("shared key decrypts to {0} bytes, not an AES-128 key")]
    BadSharedKey(usize),
    #[error("ENCDATA does not decrypt and inflate")]
    BadEncData,
    #[error("packet to encrypt is malformed: {0}")]
    Wire(#[from] WireError),
}

/// Parses an RSA private key: `BEGIN PRIVATE KEY` (PKCS#8) or `BEGIN RSA PRIVATE KEY` (PKCS#1).
pub fn parse_private_key(pem: &str) -> Result<PrivateKey, CryptoError> {
    let key = match PrivateKey::from_pkcs8_pem(pem) {
        Ok(k) => k,
        Err(e8) => PrivateKey::from_pkcs1_pem(pem)
            .map_err(|e1| CryptoError::BadPrivateKey(format!("{e8}; {e1}")))?,
    };
    check_size(key.size())?;
    Ok(key)
}

/// Parses an RSA public key: `BEGIN PUBLIC KEY` (SPKI) or `BEGIN RSA PUBLIC KEY` (PKCS#1).
pub fn parse_public_key(pem: &str) -> Result<PublicKey, CryptoError> {
    let key = match PublicKey::from_public_key_pem(pem) {
        Ok(k) => k,
        Err(e8) => PublicKey::from_pkcs1_pem(pem)
            .map_err(|e1| CryptoError::BadPublicKey(format!("{e8}; {e1}")))?,
    };
    check_size(key.size())?;
    Ok(key)
}

fn check_size(bytes: usize) -> Result<(), CryptoError> {
    if bytes != RSA_BYTES {
        return Err(CryptoError::KeySize(bytes * 8));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CryptoError> {
    std::fs::read_to_string(path).map_err(|source| CryptoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an Asterisk private key file (`NAME.key`).
pub fn load_private_key(path: &Path) -> Result<PrivateKey, CryptoError> {
    parse_private_key(&read(path)?)
}

/// Reads an Asterisk public key file (`NAME.pub`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, CryptoError> {
    parse_public_key(&read(path)?)
}

/// Writes a new 1024-bit key pair as `DIR/NAME.key` (PKCS#8 PEM, mode 0600) and `DIR/NAME.pub`
/// (SubjectPublicKeyInfo PEM) — the forms `astgenkey` writes with OpenSSL 3 and Asterisk reads.
/// Refuses to overwrite existing files. Returns the two paths.
pub fn keygen(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), CryptoError> {
    let key_path = dir.join(format!("{name}.key"));
    let pub_path = dir.join(format!("{name}.pub"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CryptoError::Io { path, source }
    };
    let key = PrivateKey::new(&mut rand::rng(), RSA_BYTES * 8)?;
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| CryptoError::BadPrivateKey(e.to_string()))?;
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| CryptoError::BadPublicKey(e.to_string()))?;
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(CryptoError::Io {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists"),
            });
        }
    }
    write_private(&key_path, private_pem.as_bytes()).map_err(io(&key_path))?;
    std::fs::write(&pub_path, public_pem.as_bytes()).map_err(io(&pub_path))?;
    Ok((key_path, pub_path))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// crc32 as zlib computes it (Asterisk's KEYCRC32).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Our sending key towards one peer: the AES key and its RSA envelope.
#[derive(Clone)]
pub struct TxKey {
    pub aes: [u8; 16],
    /// SHAREDKEY bytes (RSA-OAEP/SHA-1 of `aes` to the peer's public key).
    pub shared_key: Vec<u8>,
    /// SIGNATURE bytes (PKCS#1 v1.5/SHA-1 over `shared_key`, by our private key).
    pub signature: Vec<u8>,
    /// crc32 of `shared_key` (KEYCRC32).
    pub crc32: u32,
    /// When a new key must be made.
    pub expires: Instant,
    /// Whether a packet with the full key has been sent since the key was made.
    pub sent_full: bool,
}

impl std::fmt::Debug for TxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxKey")
            .field("crc32", &format_args!("{:#010x}", self.crc32))
            .field("expires", &self.expires)
            .field("sent_full", &self.sent_full)
            .finish()
    }
}

impl TxKey {
    /// Wraps `aes` for the peer (`theirs`) and signs it with `ours`.
    pub fn new(
        aes: [u8; 16],
        theirs: &PublicKey,
        ours: &PrivateKey,
        expires: Instant,
    ) -> Result<TxKey, CryptoError> {
        let shared_key = theirs.oaep_encrypt::<Sha1>(&aes)?;
        let signature = ours.pkcs1v15_sign::<Sha1>(&shared_key)?;
        if shared_key.len() != RSA_BYTES || signature.len() != RSA_BYTES {
            return Err(CryptoError::KeySize(
                shared_key.len().max(signature.len()) * 8,
            ));
        }
        Ok(TxKey {
            aes,
            crc32: crc32(&shared_key),
            shared_key,
            signature,
            expires,
            sent_full: false,
        })
    }

    /// A fresh random key.
    pub fn generate(
        theirs: &PublicKey,
        ours: &PrivateKey,
        now: Instant,
        ttl: Duration,
    ) -> Result<TxKey, CryptoError> {
        let mut aes = [0u8; 16];
        rand::fill(&mut aes);
        TxKey::new(aes, theirs, ours, now + ttl)
    }
}

/// Checks a peer's SHAREDKEY/SIGNATURE (signature by `theirs`) and unwraps the AES key with `ours`.
pub fn open_shared_key(
    shared_key: &[u8],
    signature: &[u8],
    theirs: &PublicKey,
    ours: &PrivateKey,
) -> Result<[u8; 16], CryptoError> {
    theirs
        .pkcs1v15_verify::<Sha1>(shared_key, signature)
        .map_err(|_| CryptoError::BadSignature)?;
    let key = ours.oaep_decrypt::<Sha1>(shared_key)?;
    key.as_slice()
        .try_into()
        .map_err(|_| CryptoError::BadSharedKey(key.len()))
}

/// Keys peers have sent us, by (peer EID, crc32 of their SHAREDKEY). A few per peer are kept so
/// that a peer's transactions that straddle its key rotation still decrypt.
#[derive(Debug, Default)]
pub struct RxKeys {
    by_peer: HashMap<Eid, Vec<(u32, [u8; 16])>>,
}

const RX_KEYS_PER_PEER: usize = 4;

impl RxKeys {
    /// The key with this crc from this peer, if known.
    pub fn get(&self, peer: &Eid, crc: u32) -> Option<[u8; 16]> {
        self.by_peer
            .get(peer)?
            .iter()
            .find(|(c, _)| *c == crc)
            .map(|(_, k)| *k)
    }

    /// Remembers a key (most recent first).
    pub fn insert(&mut self, peer: Eid, crc: u32, key: [u8; 16]) {
        let v = self.by_peer.entry(peer).or_default();
        v.retain(|(c, _)| *c != crc);
        v.insert(0, (crc, key));
        v.truncate(RX_KEYS_PER_PEER);
    }

    /// Forgets every key of a peer.
    pub fn forget(&mut self, peer: &Eid) {
        self.by_peer.remove(peer);
    }

    /// Finds the key an incoming ENCRYPT names: KEYCRC32 from the cache, or SHAREDKEY and
    /// SIGNATURE checked against the peer's public key and unwrapped with ours (then cached).
    pub fn resolve(
        &mut self,
        peer: Eid,
        shared: Option<(&[u8], &[u8])>,
        crc: Option<u32>,
        theirs: &PublicKey,
        ours: &PrivateKey,
    ) -> Result<[u8; 16], CryptoError> {
        if let Some((key, sig)) = shared {
            let c = crc32(key);
            if let Some(k) = self.get(&peer, c) {
                return Ok(k);
            }
            let k = open_shared_key(key, sig, theirs, ours)?;
            self.insert(peer, c, k);
            return Ok(k);
        }
        crc.and_then(|c| self.get(&peer, c))
            .ok_or(CryptoError::BadSharedKey(0))
    }
}

fn cbc_encrypt(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) {
    let cipher = Aes128::new(&(*key).into());
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(16) {
        for (b, p) in chunk.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        let mut block: [u8; 16] = [0; 16];
        block.copy_from_slice(chunk);
        let mut block = block.into();
        cipher.encrypt_block(&mut block);
        chunk.copy_from_slice(&block);
        prev.copy_from_slice(chunk);
    }
}

fn cbc_decrypt(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) {
    let cipher = Aes128::new(&(*key).into());
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(16) {
        let mut saved = [0u8; 16];
        saved.copy_from_slice(chunk);
        let mut block = saved.into();
        cipher.decrypt_block(&mut block);
        for ((o, b), p) in chunk.iter_mut().zip(block.iter()).zip(prev.iter()) {
            *o = b ^ p;
        }
        prev = saved;
    }
}

/// zlib-compresses `plain` (zlib's default level, as Asterisk's `compress()`), zero-pads it to
/// whole blocks and encrypts it with AES-128-CBC.
pub fn seal(key: &[u8; 16], iv: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(plain);
    let mut data = z.finish().unwrap_or_default();
    let padded = data.len().div_ceil(16) * 16;
    data.resize(padded, 0);
    cbc_encrypt(key, iv, &mut data);
    data
}

/// Decrypts ENCDATA and inflates it (trailing padding ignored, output capped at a datagram).
pub fn open(key: &[u8; 16], iv: &[u8; 16], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use std::io::Read;
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(CryptoError::BadEncData);
    }
    let mut buf = data.to_vec();
    cbc_decrypt(key, iv, &mut buf);
    let mut out = Vec::new();
    let mut z = flate2::read::ZlibDecoder::new(buf.as_slice()).take(MAX_PACKET as u64);
    z.read_to_end(&mut out)
        .map_err(|_| CryptoError::BadEncData)?;
    Ok(out)
}

/// How the first packet of a transaction introduces the key.
#[derive(Debug, Clone)]
pub enum KeyIntro<'a> {
    /// Not the first packet: ENCDATA only.
    None,
    /// EID and KEYCRC32.
    Crc { eid: Eid, crc: u32 },
    /// EID, SHAREDKEY and SIGNATURE.
    Full {
        eid: Eid,
        shared_key: &'a [u8],
        signature: &'a [u8],
    },
}

/// Turns `inner` into the ENCRYPT datagram that carries it: same header but command ENCRYPT
/// (flags 0), the key introduction, then ENCDATA over `inner`'s bytes from offset 6.
pub fn encrypt_packet(
    inner: &Packet,
    key: &[u8; 16],
    iv: &[u8; 16],
    intro: KeyIntro<'_>,
) -> Result<Vec<u8>, CryptoError> {
    let plain = inner.encode()?;
    let data = seal(key, iv, plain.get(6..).unwrap_or_default());
    let mut ies = Vec::new();
    match intro {
        KeyIntro::None => {}
        KeyIntro::Crc { eid, crc } => {
            ies.push(Ie::Eid(eid));
            ies.push(Ie::KeyCrc32(crc));
        }
        KeyIntro::Full {
            eid,
            shared_key,
            signature,
        } => {
            ies.push(Ie::Eid(eid));
            ies.push(Ie::SharedKey(shared_key.to_vec()));
            ies.push(Ie::Signature(signature.to_vec()));
        }
    }
    ies.push(Ie::EncData { iv: *iv, data });
    let outer = Packet {
        header: Header {
            cmdresp: wire::Command::Encrypt.code(),
            cmdflags: 0,
            ..inner.header
        },
        ies,
    };
    Ok(outer.encode()?)
}

/// Decrypts the ENCDATA of an ENCRYPT packet into the inner packet (outer strans, dtrans and
/// sequence numbers, inner command, flags and elements).
pub fn decrypt_packet(
    outer: &Header,
    iv: &[u8; 16],
    data: &[u8],
    key: &[u8; 16],
) -> Result<Packet, CryptoError> {
    let inner = open(key, iv, data)?;
    let mut full = Vec::with_capacity(inner.len() + 6);
    full.extend_from_slice(outer.encode().get(..6).unwrap_or_default());
    full.extend_from_slice(&inner);
    if full.len() < HEADER_LEN {
        return Err(CryptoError::BadEncData);
    }
    Ok(Packet::decode(&full)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cbc_round_trip() {
        let key = [7u8; 16];
        let iv = [9u8; 16];
        let plain = b"\x01\x00\x0a\x02\x00\x01hello dundi";
        let sealed = seal(&key, &iv, plain);
        assert_eq!(sealed.len() % 16, 0);
        assert_eq!(open(&key, &iv, &sealed).unwrap(), plain);
        assert!(
            open(&[8u8; 16], &iv, &sealed).is_err()
                || open(&[8u8; 16], &iv, &sealed).unwrap() != plain
        );
        assert!(open(&key, &iv, &sealed[..5]).is_err());
    }
}
