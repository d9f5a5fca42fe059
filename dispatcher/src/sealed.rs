//! Secrets sealed at rest.
//!
//! Secrets set through the admin API (`stoke env set --secret`) are stored
//! in the function's configuration, in the database: sealed with AES-256-
//! GCM-SIV under a key that lives in a file beside the dispatcher, never in
//! the database, so a dump or backup of the database does not hold them.
//! The dispatcher opens them only to build the environment it sends a
//! worker with an invocation.
//!
//! A sealed value is `sealed:v1:<base64 of the ciphertext>`. The nonce
//! comes from the variable's name, and the name is the associated data: a
//! ciphertext moved to another name does not open. GCM-SIV keeps a fixed
//! nonce safe, at the cost of showing that two values of one name are
//! equal — which is what lets setting a secret to its current value change
//! nothing (no new version), as for plain variables.
//!
//! A value without the prefix was stored before sealing existed (or by a
//! dispatcher without a key) and is used as it is; it is sealed when next
//! set.

use std::path::Path;

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use sha2::Digest as _;

use stoke_core::fnconfig::SEALED_PREFIX as PREFIX;

const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("secrets key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("secrets key file {0} must hold exactly {KEY_BYTES} bytes")]
    KeyLength(String),
    #[error(
        "secret {0} was sealed under another key: every dispatcher needs the same secrets_key_file \
         (set the secret again to seal it under this one)"
    )]
    WrongKey(String),
    #[error("secret {0} is sealed, and this dispatcher has no secrets_key_file to open it")]
    NoKey(String),
}

/// The key secrets are sealed with.
pub struct SecretsKey {
    cipher: Aes256GcmSiv,
}

impl SecretsKey {
    /// Read the key in `path`, or make one there (32 random bytes, mode
    /// 0600, created only if absent: two processes starting together end
    /// up with the same key).
    pub fn load_or_create(path: &Path) -> Result<SecretsKey, SealError> {
        let shown = path.display().to_string();
        let err = |source| SealError::KeyFile {
            path: shown.clone(),
            source,
        };
        if !path.exists() {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let key: [u8; KEY_BYTES] = rand::random();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(mut f) => {
                    f.write_all(&key).and_then(|()| f.sync_all()).map_err(err)?;
                    tracing::info!(path = %shown, "made a new secrets key");
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
        }
        let bytes = std::fs::read(path).map_err(err)?;
        Self::from_bytes(&bytes).ok_or(SealError::KeyLength(shown))
    }

    fn from_bytes(bytes: &[u8]) -> Option<SecretsKey> {
        (bytes.len() == KEY_BYTES).then(|| SecretsKey {
            cipher: Aes256GcmSiv::new_from_slice(bytes).expect("32 bytes"),
        })
    }

    /// `value` of secret `name`, sealed.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let sealed = self
            .cipher
            .encrypt(
                &nonce(name),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .expect("AES-GCM-SIV seals any value under 64 GiB");
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// The value of secret `name` as stored: opened when sealed.
    pub fn open(key: Option<&SecretsKey>, name: &str, stored: &str) -> Result<String, SealError> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let key = key.ok_or_else(|| SealError::NoKey(name.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::WrongKey(name.to_string()))?;
        let plain = key
            .cipher
            .decrypt(
                &nonce(name),
                Payload {
                    msg: &bytes,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongKey(name.to_string()))?;
        String::from_utf8(plain).map_err(|_| SealError::WrongKey(name.to_string()))
    }
}

/// The nonce of secret `name`: 12 bytes of its SHA-256.
fn nonce(name: &str) -> Nonce {
    let digest = sha2::Sha256::digest(name.as_bytes());
    *Nonce::from_slice(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_bytes(&[byte; KEY_BYTES]).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key_and_name() {
        let (k, other) = (key(1), key(2));
        let sealed = k.seal("API_KEY", "s3cr3t");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(SecretsKey::open(Some(&k), "API_KEY", &sealed).unwrap(), "s3cr3t");
        assert_eq!(k.seal("API_KEY", "s3cr3t"), sealed, "one value of one name seals alike");
        assert_ne!(k.seal("OTHER", "s3cr3t"), sealed);
        assert!(matches!(
            SecretsKey::open(Some(&other), "API_KEY", &sealed),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(Some(&k), "OTHER", &sealed),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(None, "API_KEY", &sealed),
            Err(SealError::NoKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(Some(&k), "API_KEY", "sealed:v1:!!"),
            Err(SealError::WrongKey(_))
        ));
        // Counted as the value it holds against the 4096-byte limit.
        let edit = stoke_core::ConfigEdit {
            set_secrets: [("S".to_string(), k.seal("S", &"x".repeat(4095)))].into(),
            ..Default::default()
        };
        assert!(stoke_core::FunctionConfig::default().apply(&edit).is_ok());
        let edit = stoke_core::ConfigEdit {
            set_secrets: [("S".to_string(), k.seal("S", &"x".repeat(4096)))].into(),
            ..Default::default()
        };
        assert!(stoke_core::FunctionConfig::default().apply(&edit).is_err());
        // Stored before sealing existed: used as it is.
        assert_eq!(SecretsKey::open(None, "OLD", "plain").unwrap(), "plain");
    }

    #[test]
    fn a_key_file_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealed = SecretsKey::load_or_create(&path).unwrap().seal("A", "v");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = SecretsKey::load_or_create(&path).unwrap();
        assert_eq!(SecretsKey::open(Some(&again), "A", &sealed).unwrap(), "v");
        std::fs::write(&path, b"short").unwrap();
        let err = SecretsKey::load_or_create(&path).err().unwrap();
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    }
}
