//! The key files of the office's DUNDi node when they are not named in the configuration file
//! (issue 17): our own key pair, generated on first use, and the public keys of peers added in
//! the dashboard (kept in the store as PEM text, written here as Asterisk-style `NAME.pub`
//! files that [`super::engine::Keys::load`] reads). Also the fingerprints the dashboard shows:
//! the MD5 of the key text, which Asterisk's `keys show` prints, and the SHA-256 of the key.

use std::path::{Path, PathBuf};

use md5::Md5;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use sha2::{Digest, Sha256};

use super::crypto::{self, CryptoError};
use super::eid::Eid;
use super::settings::Settings;

/// The name of our generated key pair (`pasarela.key`, `pasarela.pub`).
pub const OUR_KEY_NAME: &str = "pasarela";

/// Failures handling key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The directory for the node's key files beside the store at `db_path`
/// (`/var/lib/pasarela/pasarela.db` → `/var/lib/pasarela/dundi-keys`).
pub fn keys_dir(db_path: &Path) -> PathBuf {
    db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .join("dundi-keys")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Gives `settings` a private and public key when the configuration names none: those of
/// `dir`, generated there (1024-bit RSA, as Asterisk's `astgenkey`) when absent. Whether keys
/// were generated now.
pub fn ensure_our_keys(settings: &mut Settings, dir: &Path) -> Result<bool, KeyringError> {
    if settings.private_key.is_some() {
        return Ok(false);
    }
    let key = dir.join(format!("{OUR_KEY_NAME}.key"));
    let public = dir.join(format!("{OUR_KEY_NAME}.pub"));
    let mut made = false;
    if !key.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        if public.exists() {
            std::fs::remove_file(&public).map_err(io(&public))?;
        }
        crypto::keygen(dir, OUR_KEY_NAME)?;
        tracing::info!(dir = %dir.display(), "DUNDi: generated our key pair");
        made = true;
    }
    settings.private_key = Some(key);
    if settings.public_key.is_none() {
        settings.public_key = Some(public);
    }
    Ok(made)
}

/// Our public key as PEM (SubjectPublicKeyInfo, the form of Asterisk's `NAME.pub`): the file
/// `public_key` names, else derived from the private key. `None` without keys.
pub fn our_public_pem(settings: &Settings) -> Result<Option<String>, KeyringError> {
    if let Some(p) = &settings.public_key {
        if p.exists() {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            crypto::parse_public_key(&text)?;
            return Ok(Some(text));
        }
    }
    let Some(p) = &settings.private_key else {
        return Ok(None);
    };
    let key = crypto::load_private_key(p)?;
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| CryptoError::BadPublicKey(e.to_string()))?;
    Ok(Some(pem))
}

/// A pasted or uploaded public key, checked (a 1024-bit RSA public key in PEM) and normalised
/// (trimmed, LF line ends, one final newline).
pub fn normalise_public_pem(text: &str) -> Result<String, CryptoError> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pem = format!("{}\n", lines.join("\n"));
    crypto::parse_public_key(&pem)?;
    Ok(pem)
}

/// Fingerprints of a public key in PEM: (MD5 of the text as Asterisk's `keys show` prints it,
/// SHA-256 of the DER key as `SHA256:` base64).
pub fn fingerprints(pem: &str) -> Result<(String, String), CryptoError> {
    let key = crypto::parse_public_key(pem)?;
    let der = key
        .to_public_key_der()
        .map_err(|e| CryptoError::BadPublicKey(e.to_string()))?;
    let md5 = hex::encode(Md5::digest(pem.as_bytes()));
    use base64::Engine as _;
    let sha =
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(der.as_bytes()));
    Ok((md5, format!("SHA256:{sha}")))
}

/// Writes the public key of `peer` into `dir` (when its text changed) and returns the path.
pub fn write_peer_key(dir: &Path, peer: Eid, pem: &str) -> Result<PathBuf, KeyringError> {
    let name = peer.to_string().replace(':', "");
    let path = dir.join(format!("peer-{name}.pub"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(pem) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(".peer-{name}.pub.tmp"));
        std::fs::write(&tmp, pem).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_fingerprints_pasted_keys() {
        let dir = std::env::temp_dir().join(format!("pasarela-keyring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Settings::default();
        assert!(ensure_our_keys(&mut s, &dir).unwrap());
        let pem = our_public_pem(&s).unwrap().unwrap();
        let mut again = Settings::default();
        assert!(
            !ensure_our_keys(&mut again, &dir).unwrap(),
            "kept, not regenerated"
        );
        assert_eq!(our_public_pem(&again).unwrap().unwrap(), pem);
        // Derived from the private key when no public key file is named.
        again.public_key = None;
        assert_eq!(
            normalise_public_pem(&our_public_pem(&again).unwrap().unwrap()).unwrap(),
            normalise_public_pem(&pem).unwrap()
        );
        // A pasted key with CR LF and indentation is the same key.
        let pasted = format!("  {}\r\n\r\n", pem.trim().replace('\n', "\r\n  "));
        let n = normalise_public_pem(&pasted).unwrap();
        assert_eq!(n, normalise_public_pem(&pem).unwrap());
        let (md5, sha) = fingerprints(&n).unwrap();
        assert_eq!(md5.len(), 32);
        assert!(sha.starts_with("SHA256:"));
        assert!(normalise_public_pem("not a key").is_err());
        let eid: Eid = "02:00:00:00:00:02".parse().unwrap();
        let p = write_peer_key(&dir, eid, &n).unwrap();
        assert!(p.ends_with("peer-020000000002.pub"));
        crypto::load_public_key(&p).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
