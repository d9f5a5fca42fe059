//! Settings of the CLI verbs (the server roles have theirs in config.rs):
//! the admin API address, the token, the output format. Each is taken from
//! the first of
//! 1. a flag: `--admin`, `--token` / `--token-file`, `-o/--output`, `--ca-file`;
//! 2. the environment: `STOKE_ADMIN`, `STOKE_TOKEN` / `STOKE_TOKEN_FILE`, `STOKE_OUTPUT`,
//!    `STOKE_CA_FILE`;
//! 3. the config file: `$STOKE_CONFIG` (which must exist), else
//!    `$XDG_CONFIG_HOME/stoke/config.toml`, else `~/.config/stoke/config.toml`
//!    (both optional), with top-level keys `admin`, `token`, `token_file`, `output`,
//!    `ca_file`;
//! 4. the defaults: `127.0.0.1:50051`, no token, `table`, the system's CA roots.
//!
//! An `https://` admin address is called over TLS, trusting `ca_file` (PEM)
//! or, without it, the system's roots.
//!
//! A `token_file` or `ca_file` in the config file may start with `~/`; a relative one is
//! relative to the config file. A token comes from the first of these levels that sets `token` or
//! `token_file` (both at one level is an error). A config file holding a
//! `token`, and any token file, must not be readable by group or others:
//! such a file is refused, as ssh refuses a private key, with the `chmod`
//! that fixes it — a token is a password.
//!
//! The file may be the servers' config file too (`STOKE_CONFIG` names both):
//! their keys and tables (`[broker]`, `data_dir`, ...) are skipped here and
//! these four keys are skipped by the servers; anything else is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use figment::Figment;
use figment::providers::{Format as _, Toml};
use serde::Deserialize;

use crate::output::Format;
use crate::server::config::SERVER_KEYS;

pub const DEFAULT_ADMIN: &str = "127.0.0.1:50051";

/// The flags of every verb that talks to the admin API.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientFlags {
    /// Admin API address [env: STOKE_ADMIN] [default: 127.0.0.1:50051].
    #[arg(long = "admin", value_name = "ADDR", global = true)]
    pub admin: Option<String>,
    /// API token, when the server requires one [env: STOKE_TOKEN].
    #[arg(long, value_name = "TOKEN", global = true, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// Read the API token from this file (mode 0600) [env: STOKE_TOKEN_FILE].
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Output format: table (for people) or json (one document for programs) [env: STOKE_OUTPUT].
    #[arg(long, short = 'o', value_name = "FORMAT", global = true)]
    pub output: Option<Format>,
    /// PEM file of the CA that signed the dispatcher's certificate, for an
    /// https:// admin address (default: the system's roots) [env: STOKE_CA_FILE].
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// What the CLI verbs run with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub admin: String,
    pub token: Option<String>,
    pub output: Format,
    /// The CA to trust for an `https://` admin address.
    pub ca_file: Option<PathBuf>,
}

/// One level's values (the config file, or the environment).
#[derive(Debug, Default, Deserialize)]
struct Level {
    admin: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    output: Option<Format>,
    ca_file: Option<PathBuf>,
    /// Anything else: must be a server setting (see `SERVER_KEYS`).
    #[serde(flatten)]
    rest: BTreeMap<String, figment::value::Value>,
}

impl ClientFlags {
    /// Flags, then the environment, then the config file, then defaults.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        // Errors below are printed as asked by what is known so far.
        if let Some(f) = self.output {
            crate::output::errors_as(f);
        }
        let env = env_level()?;
        if let Some(f) = self.output.or(env.output) {
            crate::output::errors_as(f);
        }
        let (file, file_path) = match config_path() {
            Some((path, required)) => (file_level(&path, required)?, Some(path)),
            None => (Level::default(), None),
        };
        let output = self.output.or(env.output).or(file.output).unwrap_or_default();
        crate::output::errors_as(output);
        let admin = self
            .admin
            .clone()
            .or(env.admin.clone())
            .or(file.admin.clone())
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let ca_file = self.ca_file.clone().or(env.ca_file).or_else(|| {
            let config = file_path.as_deref()?;
            Some(beside(config, file.ca_file.as_deref()?))
        });
        let token = if self.token.is_some() || self.token_file.is_some() {
            token(self.token.clone(), self.token_file.as_deref(), "the flags")?
        } else if env.token.is_some() || env.token_file.is_some() {
            token(env.token, env.token_file.as_deref(), "the environment")?
        } else if let Some(path) = file_path.filter(|_| file.token.is_some() || file.token_file.is_some()) {
            if file.token.is_some() {
                private(&path, "holds a token")?;
            }
            let token_file = file.token_file.map(|f| beside(&path, &f));
            token(file.token, token_file.as_deref(), &path.display().to_string())?
        } else {
            None
        };
        Ok(Settings {
            admin,
            token,
            output,
            ca_file,
        })
    }
}

/// `STOKE_ADMIN`, `STOKE_TOKEN`, `STOKE_TOKEN_FILE`, `STOKE_OUTPUT`,
/// `STOKE_CA_FILE` (empty = unset).
fn env_level() -> anyhow::Result<Level> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let output = match var("STOKE_OUTPUT") {
        Some(v) => Some(
            <Format as clap::ValueEnum>::from_str(&v, true)
                .map_err(|_| anyhow::anyhow!("STOKE_OUTPUT={v:?}: expected table or json"))?,
        ),
        None => None,
    };
    Ok(Level {
        admin: var("STOKE_ADMIN"),
        token: var("STOKE_TOKEN"),
        token_file: var("STOKE_TOKEN_FILE").map(PathBuf::from),
        output,
        ca_file: var("STOKE_CA_FILE").map(PathBuf::from),
        rest: BTreeMap::new(),
    })
}

/// The config file to read, and whether it must exist.
fn config_path() -> Option<(PathBuf, bool)> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("STOKE_CONFIG") {
        return Some((p, true));
    }
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some((base.join("stoke").join("config.toml"), false))
}

fn file_level(path: &Path, required: bool) -> anyhow::Result<Level> {
    if !path.is_file() {
        if required {
            bail!("config file {} (STOKE_CONFIG) not found", path.display());
        }
        return Ok(Level::default());
    }
    let level: Level = Figment::from(Toml::file(path))
        .extract()
        .with_context(|| format!("invalid config file {}", path.display()))?;
    if let Some(key) = level.rest.keys().find(|k| !SERVER_KEYS.contains(&k.as_str())) {
        bail!(
            "config file {}: unknown key `{key}` (the CLI reads admin, token, token_file, output and ca_file)",
            path.display()
        );
    }
    Ok(level)
}

/// A config file's `token_file` or `ca_file`: `~/` is the home directory, a relative
/// path is relative to the config file's directory.
fn beside(config: &Path, file: &Path) -> PathBuf {
    if let (Ok(rest), Some(home)) = (file.strip_prefix("~"), std::env::var_os("HOME")) {
        return PathBuf::from(home).join(rest);
    }
    config.parent().map_or(file.to_path_buf(), |dir| dir.join(file))
}

fn token(token: Option<String>, file: Option<&Path>, level: &str) -> anyhow::Result<Option<String>> {
    match (token, file) {
        (Some(_), Some(_)) => bail!("{level} set both a token and a token file: keep one"),
        (Some(t), None) => Ok(Some(t)),
        (None, Some(f)) => {
            private(f, "is a token file")?;
            let t =
                std::fs::read_to_string(f).with_context(|| format!("cannot read the token file {}", f.display()))?;
            let t = t.trim();
            anyhow::ensure!(!t.is_empty(), "the token file {} is empty", f.display());
            Ok(Some(t.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Refuse a file with a secret that group or others may read.
fn private(path: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{} {what} but is readable by others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_file_level_reads_its_keys_and_skips_server_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.toml",
            "admin = \"https://10.0.0.1:50051\"\noutput = \"json\"\nca_file = \"ca.pem\"\ndata_dir = \"/x\"\n\
             [broker]\nhttp = \"0.0.0.0:80\"\n",
            0o644,
        );
        let l = file_level(&p, true).unwrap();
        assert_eq!(l.admin.as_deref(), Some("https://10.0.0.1:50051"));
        assert_eq!(l.output, Some(Format::Json));
        // Relative to the config file, as a token_file is.
        assert_eq!(beside(&p, l.ca_file.as_deref().unwrap()), dir.path().join("ca.pem"));

        let p = write(dir.path(), "bad.toml", "admn = \"x\"\n", 0o600);
        let err = format!("{:#}", file_level(&p, true).unwrap_err());
        assert!(err.contains("`admn`"), "{err}");
        let err = format!("{:#}", file_level(&dir.path().join("nope.toml"), true).unwrap_err());
        assert!(err.contains("not found"), "{err}");
        assert!(
            file_level(&dir.path().join("nope.toml"), false)
                .unwrap()
                .admin
                .is_none()
        );
    }

    #[test]
    fn secrets_in_readable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = write(dir.path(), "open", "stoke_secret\n", 0o640);
        let err = format!("{:#}", token(None, Some(&open), "x").unwrap_err());
        assert!(err.contains("chmod 600") && err.contains("0640"), "{err}");
        let closed = write(dir.path(), "closed", "stoke_secret\n", 0o600);
        assert_eq!(
            token(None, Some(&closed), "x").unwrap().as_deref(),
            Some("stoke_secret")
        );
        assert!(token(Some("a".into()), Some(&closed), "x").is_err());
    }
}
