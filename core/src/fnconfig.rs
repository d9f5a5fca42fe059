//! A function's run-time configuration set through the admin API, apart from
//! its package: environment variables and secrets. Each change makes a new
//! version (same package and manifest), so a version is an immutable
//! snapshot of code + configuration and a rollback restores both, as
//! Lambda's published versions do. A deploy carries the current
//! configuration over to the new version.
//!
//! Secret values reach the sandbox's environment and nothing else: the
//! admin API lists their names only, and `Debug` prints names, never values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::manifest::RESERVED_ENV;

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// Plain variables: shown by the admin API. Override the manifest's [env].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret variables: never shown. Override both of the above.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

impl fmt::Debug for FunctionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionConfig")
            .field("env", &self.env)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One change to a function's configuration: set these, remove those.
#[derive(Clone, Default)]
pub struct ConfigEdit {
    pub set_env: BTreeMap<String, String>,
    pub set_secrets: BTreeMap<String, String>,
    /// Names removed, from plain variables and secrets alike.
    pub unset: Vec<String>,
}

impl fmt::Debug for ConfigEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigEdit")
            .field("set_env", &self.set_env)
            .field("set_secrets", &self.set_secrets.keys().collect::<Vec<_>>())
            .field("unset", &self.unset)
            .finish()
    }
}

/// What is wrong with a name or value, for an error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {problem}")]
pub struct EnvError {
    pub name: String,
    pub problem: &'static str,
}

/// The rule for every environment variable name a user sets (manifest and
/// admin API alike).
pub fn check_env_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if !ok {
        return Err("names must match [A-Za-z_][A-Za-z0-9_]* (at most 256 characters)");
    }
    if RESERVED_ENV.contains(&name) {
        return Err("is reserved: stoke sets it");
    }
    Ok(())
}

/// Total bytes of names and values allowed through the admin API: Lambda's
/// limit for a function's environment.
pub const MAX_CONFIG_BYTES: usize = 4096;

/// How a secret sealed at rest starts (`stoke_dispatcher::sealed`): base64
/// of the value's ciphertext and a 16-byte tag follows.
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Bytes of the value `stored` holds: a sealed secret counts as its
/// plaintext, so sealing never brings a configuration over the limit.
fn value_len(stored: &str) -> usize {
    match stored.strip_prefix(SEALED_PREFIX) {
        Some(b64) => {
            let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
            (b64.len() / 4 * 3).saturating_sub(padding).saturating_sub(16)
        }
        None => stored.len(),
    }
}

impl ConfigEdit {
    /// Check names and values before anything is stored.
    pub fn validate(&self) -> Result<(), EnvError> {
        let named = self.set_env.iter().chain(self.set_secrets.iter());
        for (name, value) in named {
            check_env_name(name).map_err(|problem| EnvError {
                name: name.clone(),
                problem,
            })?;
            if value.contains('\0') {
                return Err(EnvError {
                    name: name.clone(),
                    problem: "values must not contain NUL bytes",
                });
            }
        }
        if let Some(name) = self.set_env.keys().find(|n| self.set_secrets.contains_key(*n)) {
            return Err(EnvError {
                name: name.clone(),
                problem: "set both as a plain variable and as a secret",
            });
        }
        Ok(())
    }
}

impl FunctionConfig {
    /// This configuration with `edit` applied. A name set as a secret stops
    /// being a plain variable and the other way round.
    pub fn apply(&self, edit: &ConfigEdit) -> Result<FunctionConfig, EnvError> {
        edit.validate()?;
        let mut next = self.clone();
        for name in &edit.unset {
            next.env.remove(name);
            next.secrets.remove(name);
        }
        for (k, v) in &edit.set_env {
            next.secrets.remove(k);
            next.env.insert(k.clone(), v.clone());
        }
        for (k, v) in &edit.set_secrets {
            next.env.remove(k);
            next.secrets.insert(k.clone(), v.clone());
        }
        let size: usize = next
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .chain(next.secrets.iter().map(|(k, v)| k.len() + value_len(v)))
            .sum();
        if size > MAX_CONFIG_BYTES {
            return Err(EnvError {
                name: "environment".into(),
                problem: "names and values together exceed 4096 bytes",
            });
        }
        Ok(next)
    }

    /// The environment the function runs with: the manifest's [env], then
    /// plain variables, then secrets, each overriding the one before.
    pub fn merged_env(&self, manifest_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = manifest_env.clone();
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(self.secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Stored form (JSON); `{}` when empty.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("string maps serialize")
    }

    pub fn from_json(s: &str) -> Result<FunctionConfig, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(env: &[(&str, &str)], secrets: &[(&str, &str)], unset: &[&str]) -> ConfigEdit {
        let map = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ConfigEdit {
            set_env: map(env),
            set_secrets: map(secrets),
            unset: unset.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn edits_move_names_between_plain_and_secret_and_unset_removes_both() {
        let c = FunctionConfig::default()
            .apply(&edit(&[("A", "1"), ("B", "2")], &[("TOKEN", "s3")], &[]))
            .unwrap();
        assert_eq!(c.env.len(), 2);
        assert_eq!(c.secrets["TOKEN"], "s3");
        let c = c.apply(&edit(&[], &[("A", "hidden")], &["B"])).unwrap();
        assert!(!c.env.contains_key("A") && !c.env.contains_key("B"));
        assert_eq!(c.secrets["A"], "hidden");
        let c = c.apply(&edit(&[], &[], &["A", "TOKEN"])).unwrap();
        assert_eq!(c, FunctionConfig::default());
        assert_eq!(c.to_json(), "{}");
    }

    #[test]
    fn secrets_override_plain_which_override_the_manifest() {
        let c = FunctionConfig::default()
            .apply(&edit(&[("LEVEL", "api")], &[("KEY", "secret")], &[]))
            .unwrap();
        let manifest = [("LEVEL", "toml"), ("KEY", "toml"), ("OTHER", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = c.merged_env(&manifest);
        assert_eq!(env["LEVEL"], "api");
        assert_eq!(env["KEY"], "secret");
        assert_eq!(env["OTHER"], "x");
    }

    #[test]
    fn bad_names_values_and_sizes_are_refused() {
        let c = FunctionConfig::default();
        let bad = |e: ConfigEdit| c.apply(&e).unwrap_err();
        assert_eq!(bad(edit(&[("1A", "x")], &[], &[])).name, "1A");
        assert_eq!(bad(edit(&[("A-B", "x")], &[], &[])).name, "A-B");
        assert_eq!(
            bad(edit(&[], &[("AWS_LAMBDA_RUNTIME_API", "x")], &[])).problem,
            "is reserved: stoke sets it"
        );
        assert_eq!(
            bad(edit(&[("A", "a\0b")], &[], &[])).problem,
            "values must not contain NUL bytes"
        );
        assert!(bad(edit(&[("A", "1")], &[("A", "2")], &[])).problem.contains("both"));
        let big = "x".repeat(MAX_CONFIG_BYTES);
        assert_eq!(bad(edit(&[("A", &big)], &[], &[])).name, "environment");
    }

    #[test]
    fn debug_output_never_holds_a_secret_value() {
        let c = FunctionConfig::default()
            .apply(&edit(&[("PLAIN", "visible")], &[("API_KEY", "hunter2")], &[]))
            .unwrap();
        let shown = format!("{c:?} {:?}", edit(&[], &[("API_KEY", "hunter2")], &[]));
        assert!(shown.contains("API_KEY") && shown.contains("visible"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(FunctionConfig::from_json(&c.to_json()).unwrap(), c);
    }
}
