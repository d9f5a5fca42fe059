//! Layered configuration for the server roles: defaults → TOML file
//! (`--config`) → `STOKE_*` environment (`__` separates levels, e.g.
//! `STOKE_BROKER__HTTP=0.0.0.0:8080`) → command-line flags. Validated once
//! at start and injected into each role's `build()`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use stoke_broker::BrokerOptions;
use stoke_bus::streams::StreamOptions;
use stoke_dispatcher::DispatcherOptions;
use stoke_worker::WorkerOptions;

/// How `stoke up` runs its own nats-server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsServerOptions {
    /// The nats-server program (looked up on PATH).
    pub bin: String,
    /// Client port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
}

impl Default for NatsServerOptions {
    fn default() -> Self {
        NatsServerOptions {
            bin: "nats-server".into(),
            port: 4222,
        }
    }
}

/// TLS to NATS (`[nats_tls]`), for servers with a `tls {}` block: dial
/// them as `tls://host:port`. With `ca_file` TLS is required whatever the
/// URL says; `cert_file` + `key_file` are for servers that verify clients
/// (`verify: true`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsTlsOptions {
    /// PEM: the CA(s) that signed the servers' certificates (default: the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM: this client's certificate and its key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite store, NATS data and worker files live.
    pub data_dir: Option<PathBuf>,
    /// An existing NATS server; without it `stoke up` starts one.
    pub nats_url: Option<String>,
    /// Store URL; default `sqlite://<data_dir>/stoke.db`.
    pub store: Option<String>,
    pub nats_server: NatsServerOptions,
    pub nats_tls: NatsTlsOptions,
    /// How the JetStream streams are made (`[streams]`): one table, read
    /// by every role, so whichever creates a stream first makes it alike.
    pub streams: StreamOptions,
    pub broker: BrokerOptions,
    pub dispatcher: DispatcherOptions,
    pub worker: WorkerOptions,
    /// The CLI's settings (settings.rs), when one file serves both: skipped.
    #[serde(skip_serializing)]
    pub admin: serde::de::IgnoredAny,
    #[serde(skip_serializing)]
    pub token: serde::de::IgnoredAny,
    #[serde(skip_serializing)]
    pub token_file: serde::de::IgnoredAny,
    #[serde(skip_serializing)]
    pub output: serde::de::IgnoredAny,
    #[serde(skip_serializing)]
    pub ca_file: serde::de::IgnoredAny,
}

/// The flags every server role shares; they override file and env.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeFlags {
    /// TOML config file ([streams], [broker], [dispatcher], [worker], [nats_server] tables).
    #[arg(long, env = "STOKE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite store, NATS JetStream files, worker cache).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this NATS server instead of starting one (e.g. nats://127.0.0.1:4222);
    /// a cluster's servers comma-separated.
    #[arg(long, value_name = "URL[,URL...]")]
    pub nats_url: Option<String>,
    /// Store URL (default sqlite://<data-dir>/stoke.db).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// The servers' top-level keys and tables (the CLI's own settings file
/// skips them, `settings.rs`).
pub const SERVER_KEYS: &[&str] = &[
    "data_dir",
    "nats_url",
    "store",
    "nats_server",
    "nats_tls",
    "streams",
    "broker",
    "dispatcher",
    "worker",
];

impl Config {
    /// Load defaults, the file, then `STOKE_*` env; apply the shared flags.
    pub fn load(flags: &ServeFlags) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &flags.config {
            anyhow::ensure!(file.is_file(), "config file {} not found", file.display());
            fig = fig.merge(Toml::file(file));
        }
        // Only keys of this struct: STOKE_ADMIN (the CLI's admin address)
        // and STOKE_CONFIG are not server settings.
        let known = SERVER_KEYS;
        fig = fig.merge(
            Env::prefixed("STOKE_")
                .split("__")
                .filter(move |k| known.iter().any(|n| k.as_str().to_ascii_lowercase().starts_with(n))),
        );
        for role in ["broker", "dispatcher"] {
            anyhow::ensure!(
                fig.find_value(&format!("{role}.stream")).is_err(),
                "invalid configuration: [{role}.stream] is now [streams], one table every role reads \
                 (env STOKE_STREAMS__<KEY>, e.g. STOKE_STREAMS__REPLICAS); move its keys there"
            );
        }
        let mut cfg: Config = fig.extract().context("invalid configuration")?;
        if flags.data_dir.is_some() {
            cfg.data_dir = flags.data_dir.clone();
        }
        if flags.nats_url.is_some() {
            cfg.nats_url = flags.nats_url.clone();
        }
        if flags.store.is_some() {
            cfg.store = flags.store.clone();
        }
        // Absolute, so nothing depends on the cwd of whoever reads it later.
        cfg.data_dir = Some(std::path::absolute(cfg.data_dir()).context("cannot resolve the data dir")?);
        if cfg.dispatcher.auth.bootstrap_token_file.is_none() {
            cfg.dispatcher.auth.bootstrap_token_file = Some(cfg.data_dir().join("admin.token"));
        }
        if cfg.dispatcher.secrets_key_file.is_none() {
            cfg.dispatcher.secrets_key_file = Some(cfg.data_dir().join("secrets.key"));
        }
        if cfg.worker.data_dir == WorkerOptions::default().data_dir {
            cfg.worker.data_dir = cfg.data_dir().join("worker");
        }
        Ok(cfg)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| PathBuf::from(".stoke"))
    }

    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir().join("stoke.db").display()))
    }

    /// Point the worker at a dispatcher listening on `addr`.
    pub fn attach_worker_to(&mut self, addr: SocketAddr) {
        self.worker.dispatcher = format!("http://{addr}");
    }
}

/// Create a directory (and parents) with a clear error.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stoke-config.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[broker]\nhttp = \"127.0.0.1:9999\"\n[worker]\nslots = 3\n",
        )
        .unwrap();
        let flags = ServeFlags {
            config: Some(file.clone()),
            ..Default::default()
        };
        let cfg = Config::load(&flags).unwrap();
        assert_eq!(cfg.data_dir(), PathBuf::from("/from/file"));
        assert_eq!(cfg.broker.http, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(cfg.worker.slots, 3);
        assert_eq!(cfg.worker.data_dir, PathBuf::from("/from/file/worker"));
        assert_eq!(cfg.store_url(), "sqlite:///from/file/stoke.db");

        let flags = ServeFlags {
            config: Some(file),
            data_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        let cfg = Config::load(&flags).unwrap();
        assert_eq!(cfg.data_dir(), PathBuf::from("/from/flag"));
    }

    /// The example in docs/DEPLOYMENT.md is a config stoke accepts.
    #[test]
    fn the_deployment_guide_example_loads() {
        let guide = include_str!("../../../docs/DEPLOYMENT.md");
        let example = guide
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a toml example in docs/DEPLOYMENT.md");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stoke.toml");
        std::fs::write(&file, example).unwrap();
        let cfg = Config::load(&ServeFlags {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.streams.replicas, 3);
        assert_eq!(cfg.worker.slots, 64);
        assert_eq!(cfg.dispatcher.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
        assert!(cfg.worker.dispatcher.contains(','), "{}", cfg.worker.dispatcher);
        assert!(cfg.store_url().starts_with("postgres://"));
    }

    /// One file may serve the CLI too (settings.rs): its keys are skipped.
    #[test]
    fn the_cli_keys_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let text = "admin = \"https://10.0.0.1:50051\"\ntoken_file = \"t\"\noutput = \"json\"\nca_file = \"ca.pem\"\n\
                    [worker]\nslots = 2\n";
        std::fs::write(&file, text).unwrap();
        let cfg = Config::load(&ServeFlags {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.worker.slots, 2);
    }

    /// The two roles' stream tables before `[streams]` say where they went,
    /// from a file or the environment.
    #[test]
    fn the_old_stream_tables_are_refused_naming_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        for (role, text) in [
            ("broker", "[broker.stream]\nreplicas = 3\n"),
            ("dispatcher", "[dispatcher]\nstream = { logs_max_bytes = 10 }\n"),
        ] {
            let file = dir.path().join(format!("{role}.toml"));
            std::fs::write(&file, text).unwrap();
            let err = Config::load(&ServeFlags {
                config: Some(file),
                ..Default::default()
            })
            .unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains(&format!("[{role}.stream] is now [streams]")), "{err}");
        }
        let file = dir.path().join("new.toml");
        std::fs::write(&file, "[streams]\nreplicas = 3\nlogs_max_bytes = 10\n").unwrap();
        let cfg = Config::load(&ServeFlags {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((cfg.streams.replicas, cfg.streams.logs_max_bytes), (3, 10));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[broker]\nhtp = \"x\"\n").unwrap();
        let err = Config::load(&ServeFlags {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("htp"), "{err:#}");
    }
}
