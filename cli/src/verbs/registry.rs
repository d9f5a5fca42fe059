//! `stoke registry`: the credentials the dispatcher pulls images with, per
//! registry host (kept sealed like secrets; the password is never shown).

use std::io::Read as _;

use anyhow::Context as _;
use stoke_proto::{ListRegistriesRequest, RegistryLoginRequest, RegistryLogoutRequest};

use crate::client::Admin;
use crate::output::when;
use crate::row;

#[derive(clap::Subcommand)]
pub enum RegistryCommand {
    /// Keep credentials for a registry (replacing earlier ones); the
    /// password is read from stdin, never from the command line.
    #[command(after_help = "Examples:\n  \
        echo \"$REGISTRY_PASSWORD\" | stoke registry login registry.example.com --username ci --password-stdin")]
    Login {
        /// The registry host as image references name it (`host[:port]`).
        host: String,
        #[arg(long, short = 'u')]
        username: String,
        /// Read the password from stdin (the only way to give it; a
        /// trailing newline is dropped).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Forget the credentials kept for a registry.
    Logout { host: String },
    /// The registries credentials are kept for, and their usernames.
    List,
}

pub async fn registry(admin: &mut Admin, command: RegistryCommand) -> anyhow::Result<()> {
    let mut c = admin.client().clone();
    let (err, out) = (admin.err(), admin.out);
    match command {
        RegistryCommand::Login { host, username, .. } => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                anyhow::bail!("no password on stdin");
            }
            let r = c
                .registry_login(RegistryLoginRequest {
                    host,
                    username,
                    password,
                })
                .await
                .map_err(err)?
                .into_inner();
            out.one(&r, |r| {
                println!("credentials for {} kept (user {})", r.host, r.username)
            })
        }
        RegistryCommand::Logout { host } => {
            c.registry_logout(RegistryLogoutRequest { host: host.clone() })
                .await
                .map_err(err)?;
            if !out.is_json() {
                println!("credentials for {host} removed");
            }
            Ok(())
        }
        RegistryCommand::List => {
            let list = c
                .list_registries(ListRegistriesRequest {})
                .await
                .map_err(err)?
                .into_inner()
                .registries;
            out.list(&list, "no registry credentials", &["HOST", "USERNAME", "SET"], |r| {
                row![r.host, r.username, when(r.set_unix_ms)]
            })
        }
    }
}
