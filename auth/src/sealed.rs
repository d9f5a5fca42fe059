//! Secrets sealed at rest.
//!
//! Secrets set through the admin API (`stoke env NAME --secret K=V`) are stored
//! in the function's configuration, in the database: sealed with AES-256-
//! GCM-SIV under a key that lives in a file beside the dispatcher, never in
//! the database, so a dump or backup of the database does not hold them.
//! The dispatcher opens them only to build the environment it sends a
//! worker with an invocation.
//!
//! A sealed value is `sealed:v1:<base64 of the ciphertext>`. The nonce
//! comes from the function's and the variable's names, which are the
//! associated data too: a ciphertext moved to another function or name does
//! not open. GCM-SIV keeps a fixed nonce safe, at the cost of showing that
//! two values of one function's variable are equal — which is what lets
//! setting a secret to its current value change nothing (no new version),
//! as for plain variables.
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
        "secret {0} cannot be opened: sealed under another key or damaged. Give this dispatcher the \
         secrets_key_file that sealed it (every dispatcher needs the same one): events already queued \
         for this version wait for it; setting the secret again fixes only later versions"
    )]
    WrongKey(String),
    #[error("secret {0} is sealed, and this dispatcher has no secrets_key_file to open it")]
    NoKey(String),
    #[error(
        "this dispatcher's secrets key ({path}, fingerprint {ours}) is not the one this store's secrets are \
         sealed with (fingerprint {theirs}): copy secrets_key_file from a dispatcher that runs. If that key \
         is lost, start once with secrets_key_adopt = true ([dispatcher]; STOKE_DISPATCHER__SECRETS_KEY_ADOPT) \
         and set every secret again"
    )]
    OtherKey { path: String, ours: String, theirs: String },
    #[error(
        "this dispatcher's secrets key ({path}) cannot open secrets already sealed in the store ({secrets:?}): \
         it is not the key they were sealed with. Give this dispatcher that key file (from the dispatcher that \
         sealed them). If that key is lost, start once with secrets_key_adopt = true \
         (STOKE_DISPATCHER__SECRETS_KEY_ADOPT) and set those secrets again"
    )]
    NotTheSealingKey { path: String, secrets: Vec<String> },
    #[error("cannot check the secrets key against the store: {0}")]
    Store(stoke_store::StoreError),
}

impl From<stoke_store::StoreError> for SealError {
    fn from(e: stoke_store::StoreError) -> Self {
        SealError::Store(e)
    }
}

/// Check this dispatcher's key against the store at start (one read of
/// the current versions). The store records which key seals secrets: the
/// first dispatcher's key is recorded — if it opens every secret already
/// sealed in the store (an upgrade from before the record, or a new box
/// whose key file was never copied, must not make its key the cluster's) —
/// and a dispatcher with another one refuses to start: it could open none
/// of the others' secrets, and they none of its own. With `adopt`, this key
/// replaces the recorded one (for a lost key: the secrets sealed under it
/// must be set again). Secrets this key cannot open are named in an error
/// log now, not at each of their events.
pub async fn check_at_start(
    key: &SecretsKey,
    path: &Path,
    store: &dyn stoke_store::Catalog,
    adopt: bool,
) -> Result<(), SealError> {
    const SETTING: &str = "secrets_key_fingerprint";
    let now = stoke_core::now_ms();
    let foreign = unopenable(key, &store.list_functions().await?);
    if !foreign.is_empty() {
        tracing::error!(
            secrets = ?foreign,
            key_file = %path.display(),
            "these secrets were sealed under another key: their events wait until this dispatcher has the \
             secrets_key_file of the one that sealed them (or they are set again)"
        );
    }
    if adopt {
        let replaced = store.setting(SETTING).await?;
        store.replace_setting(SETTING, key.fingerprint(), now).await?;
        tracing::warn!(
            fingerprint = key.fingerprint(),
            replaced = replaced.as_deref().unwrap_or(""),
            "secrets_key_adopt is on: this dispatcher's key is now the one the store's secrets are sealed with \
             (those sealed under another cannot be opened until set again). Turn it off after this start: \
             while it is on, the key check is off"
        );
        return Ok(());
    }
    let recorded = match store.setting(SETTING).await? {
        Some(recorded) => recorded,
        None if !foreign.is_empty() => {
            return Err(SealError::NotTheSealingKey {
                path: path.display().to_string(),
                secrets: foreign,
            });
        }
        None => store.claim_setting(SETTING, key.fingerprint(), now).await?,
    };
    if recorded != key.fingerprint() {
        return Err(SealError::OtherKey {
            path: path.display().to_string(),
            ours: key.fingerprint().to_string(),
            theirs: recorded,
        });
    }
    Ok(())
}

/// The key secrets are sealed with.
pub struct SecretsKey {
    cipher: Aes256GcmSiv,
    /// What tells this key from another without giving it away (a hash of
    /// it): recorded in the store by the first dispatcher, checked by every
    /// other (`check_at_start`).
    fingerprint: String,
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
            create(path).map_err(err)?;
            tracing::info!(path = %shown, "made a new secrets key");
        }
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %shown, "the secrets key file can be read by others: chmod 600 it");
            }
        }
        let bytes = std::fs::read(path).map_err(err)?;
        Self::from_bytes(&bytes).ok_or(SealError::KeyLength(shown))
    }

    fn from_bytes(bytes: &[u8]) -> Option<SecretsKey> {
        (bytes.len() == KEY_BYTES).then(|| SecretsKey {
            cipher: Aes256GcmSiv::new_from_slice(bytes).expect("32 bytes"),
            fingerprint: hex::encode(
                &sha2::Sha256::new_with_prefix(b"stoke secrets key v1\0")
                    .chain_update(bytes)
                    .finalize()[..16],
            ),
        })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `value` of `function`'s secret `name`, sealed.
    pub fn seal(&self, function: &str, name: &str, value: &str) -> String {
        let aad = associated(function, name);
        let sealed = self
            .cipher
            .encrypt(
                &nonce(&aad),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM-SIV seals any value under 64 GiB");
        format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    /// The value of `function`'s secret `name` as stored: opened when sealed.
    pub fn open(key: Option<&SecretsKey>, function: &str, name: &str, stored: &str) -> Result<String, SealError> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let key = key.ok_or_else(|| SealError::NoKey(name.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::WrongKey(name.to_string()))?;
        let aad = associated(function, name);
        let plain = key
            .cipher
            .decrypt(&nonce(&aad), Payload { msg: &bytes, aad: &aad })
            .map_err(|_| SealError::WrongKey(name.to_string()))?;
        String::from_utf8(plain).map_err(|_| SealError::WrongKey(name.to_string()))
    }
}

/// The secrets of `versions` (`function/NAME`) that `key` cannot open:
/// sealed by a dispatcher with another key file.
pub fn unopenable(key: &SecretsKey, versions: &[stoke_store::FunctionVersion]) -> Vec<String> {
    versions
        .iter()
        .flat_map(|v| v.config.secrets.iter().map(move |(name, value)| (v, name, value)))
        .filter(|(v, name, value)| SecretsKey::open(Some(key), &v.function, name, value).is_err())
        .map(|(v, name, _)| format!("{}/{name}", v.function))
        .collect()
}

/// What a sealed value is bound to: `function`, NUL, `name`.
fn associated(function: &str, name: &str) -> Vec<u8> {
    [function.as_bytes(), b"\0", name.as_bytes()].concat()
}

/// The nonce of a value bound to `associated`: 12 bytes of its SHA-256.
fn nonce(associated: &[u8]) -> Nonce {
    let digest = sha2::Sha256::digest(associated);
    *Nonce::from_slice(&digest[..12])
}

/// Make a new key file at `path`: written whole (mode 0600) beside it,
/// synced, then linked into place, which fails if another process got
/// there first (then its key is the one). A crash leaves no empty key.
fn create(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".secrets-key-{}.tmp", std::process::id()));
    let key: [u8; KEY_BYTES] = rand::random();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&key).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    });
    let _ = std::fs::remove_file(&tmp);
    linked?;
    std::fs::File::open(dir)?.sync_all()
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
        let sealed = k.seal("f", "API_KEY", "s3cr3t");
        assert!(sealed.starts_with(PREFIX), "{sealed}");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(SecretsKey::open(Some(&k), "f", "API_KEY", &sealed).unwrap(), "s3cr3t");
        assert_eq!(
            k.seal("f", "API_KEY", "s3cr3t"),
            sealed,
            "one value of one name seals alike"
        );
        assert_ne!(k.seal("f", "OTHER", "s3cr3t"), sealed);
        assert_ne!(k.seal("g", "API_KEY", "s3cr3t"), sealed, "bound to its function too");
        assert!(matches!(
            SecretsKey::open(Some(&k), "g", "API_KEY", &sealed),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(Some(&other), "f", "API_KEY", &sealed),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(Some(&k), "f", "OTHER", &sealed),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(None, "f", "API_KEY", &sealed),
            Err(SealError::NoKey(_))
        ));
        assert!(matches!(
            SecretsKey::open(Some(&k), "f", "API_KEY", "sealed:v1:!!"),
            Err(SealError::WrongKey(_))
        ));
        // Counted as the value it holds against the 4096-byte limit.
        let edit = stoke_core::ConfigEdit {
            set_secrets: [("S".to_string(), k.seal("f", "S", &"x".repeat(4095)))].into(),
            ..Default::default()
        };
        assert!(stoke_core::FunctionConfig::default().apply(&edit).is_ok());
        let edit = stoke_core::ConfigEdit {
            set_secrets: [("S".to_string(), k.seal("f", "S", &"x".repeat(4096)))].into(),
            ..Default::default()
        };
        assert!(stoke_core::FunctionConfig::default().apply(&edit).is_err());
        // Stored before sealing existed: used as it is.
        assert_eq!(SecretsKey::open(None, "f", "OLD", "plain").unwrap(), "plain");
    }

    #[test]
    fn secrets_sealed_under_another_key_are_named() {
        let (k, other) = (key(1), key(2));
        let mut config = stoke_core::FunctionConfig::default();
        config.secrets.insert("MINE".into(), k.seal("f", "MINE", "v"));
        config.secrets.insert("THEIRS".into(), other.seal("f", "THEIRS", "v"));
        config.secrets.insert("OLD".into(), "plain".into());
        let version = stoke_store::FunctionVersion {
            function: "f".into(),
            version: 1,
            digest: String::new(),
            manifest: String::new(),
            package_size: 0,
            created_ms: 0,
            namespace: "default".into(),
            config,
            image: String::new(),
        };
        assert_eq!(unopenable(&k, &[version]), ["f/THEIRS"]);
    }

    #[test]
    fn a_key_file_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealed = SecretsKey::load_or_create(&path).unwrap().seal("f", "A", "v");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = SecretsKey::load_or_create(&path).unwrap();
        assert_eq!(SecretsKey::open(Some(&again), "f", "A", &sealed).unwrap(), "v");
        std::fs::write(&path, b"short").unwrap();
        let err = SecretsKey::load_or_create(&path).err().unwrap();
        assert!(err.to_string().contains("exactly 32 bytes"), "{err}");
    }
}
