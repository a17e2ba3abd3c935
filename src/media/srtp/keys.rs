//! Crypto suites and master keys (RFC 4568 §6.2), and the session key derivation of RFC 3711
//! §4.3 (key derivation rate 0: the session keys never change for a master key).

use std::fmt;

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::Aes128;

/// Length of an AES-128 master key.
pub const MASTER_KEY_LEN: usize = 16;
/// Length of the master salt.
pub const MASTER_SALT_LEN: usize = 14;

/// An SDES crypto suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// AES counter mode, HMAC-SHA1 with an 80-bit tag on SRTP and SRTCP.
    AesCm128HmacSha1_80,
    /// AES counter mode, HMAC-SHA1 with a 32-bit tag on SRTP (80 bits on SRTCP).
    AesCm128HmacSha1_32,
}

impl Suite {
    /// Both suites, in the order we prefer them.
    pub const ALL: [Suite; 2] = [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32];

    /// The name used in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite called `name` (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Length of the SRTP authentication tag in bytes.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }

    /// Length of the SRTCP authentication tag in bytes (80 bits for both, RFC 4568 §6.2.2).
    pub fn rtcp_tag_len(self) -> usize {
        10
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A master key and master salt. Its `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub(crate) key: [u8; MASTER_KEY_LEN],
    pub(crate) salt: [u8; MASTER_SALT_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A key and salt from their bytes.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> Self {
        MasterKey { key, salt }
    }

    /// A fresh random key and salt (from the operating system's generator via `rand`).
    pub fn random() -> Self {
        MasterKey {
            key: rand::random(),
            salt: rand::random(),
        }
    }

    /// Key then salt, 30 bytes: the content of an SDES `inline:` key.
    pub fn from_concatenated(bytes: &[u8]) -> Option<Self> {
        let key = bytes.get(..MASTER_KEY_LEN)?.try_into().ok()?;
        let salt = bytes
            .get(MASTER_KEY_LEN..MASTER_KEY_LEN + MASTER_SALT_LEN)?
            .try_into()
            .ok()?;
        (bytes.len() == MASTER_KEY_LEN + MASTER_SALT_LEN).then_some(MasterKey { key, salt })
    }

    /// Key then salt, 30 bytes.
    pub fn concatenated(&self) -> [u8; MASTER_KEY_LEN + MASTER_SALT_LEN] {
        let mut out = [0u8; MASTER_KEY_LEN + MASTER_SALT_LEN];
        let (k, s) = out.split_at_mut(MASTER_KEY_LEN);
        k.copy_from_slice(&self.key);
        s.copy_from_slice(&self.salt);
        out
    }
}

/// Key derivation labels (RFC 3711 §4.3.1).
#[derive(Clone, Copy)]
pub(crate) enum Label {
    RtpEncryption = 0,
    RtpAuth = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuth = 4,
    RtcpSalt = 5,
}

/// Session keys of one of SRTP or SRTCP.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    pub(crate) cipher: Aes128,
    pub(crate) auth: [u8; 20],
    pub(crate) salt: [u8; MASTER_SALT_LEN],
}

impl SessionKeys {
    /// The SRTP (`rtcp == false`) or SRTCP session keys of a master key.
    pub(crate) fn derive(master: &MasterKey, rtcp: bool) -> Self {
        let (e, a, s) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
        };
        let prf = Aes128::new(&master.key.into());
        let mut key = [0u8; 16];
        derive(&prf, &master.salt, e, &mut key);
        let mut auth = [0u8; 20];
        derive(&prf, &master.salt, a, &mut auth);
        let mut salt = [0u8; MASTER_SALT_LEN];
        derive(&prf, &master.salt, s, &mut salt);
        SessionKeys {
            cipher: Aes128::new(&key.into()),
            auth,
            salt,
        }
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with key derivation rate 0: `x = label‖0⁴⁸ XOR salt`,
/// keystream from `IV = x·2¹⁶`.
pub(crate) fn derive(prf: &Aes128, salt: &[u8; MASTER_SALT_LEN], label: Label, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    if let Some(x) = iv.get_mut(..MASTER_SALT_LEN) {
        x.copy_from_slice(salt);
    }
    if let Some(b) = iv.get_mut(7) {
        *b ^= label as u8;
    }
    out.fill(0);
    aes_cm_xor(prf, iv, out);
}

/// XORs `data` with the AES counter-mode keystream that starts at `iv` (RFC 3711 §4.1.1).
pub(crate) fn aes_cm_xor(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let start = u128::from_be_bytes(iv);
    for (i, chunk) in data.chunks_mut(16).enumerate() {
        let mut block = start.wrapping_add(i as u128).to_be_bytes().into();
        cipher.encrypt_block(&mut block);
        for (d, k) in chunk.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
    }
}
