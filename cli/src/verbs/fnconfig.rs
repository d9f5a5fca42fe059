//! CLI verbs for a function's configuration: environment variables and
//! secrets (`stoke env`), aliases (`stoke alias`).

use std::collections::HashMap;

use stoke_proto::{DeleteAliasRequest, GetFunctionRequest, ListAliasesRequest, SetAliasRequest, SetEnvRequest};

use crate::client::Admin;
use crate::row;

#[derive(clap::Args)]
pub struct EnvArgs {
    /// The function.
    pub function: String,
    /// Plain variables to set, NAME=VALUE (shown by `stoke env NAME`).
    #[arg(value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// A secret to set: NAME=VALUE, or just NAME to take the value of $NAME
    /// from this shell's environment (keeps it out of shell history and ps).
    /// Secret values are never shown again.
    #[arg(long, value_name = "NAME[=VALUE]")]
    pub secret: Vec<String>,
    /// Remove a variable or secret.
    #[arg(long, value_name = "NAME")]
    pub unset: Vec<String>,
}

#[derive(clap::Subcommand)]
pub enum AliasCommand {
    /// Point an alias at a version (default: the current one), creating or
    /// moving it.
    ///
    /// Example: stoke alias set hello live --version 3
    Set {
        function: String,
        alias: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// A function's aliases.
    List { function: String },
    /// Remove an alias.
    Delete { function: String, alias: String },
}

fn pair(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| anyhow::anyhow!("{what} {s:?}: expected NAME=VALUE"))
}

fn secret(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => {
            let v = std::env::var(s)
                .map_err(|_| anyhow::anyhow!("secret {s:?}: no NAME=VALUE and no ${s} in this environment"))?;
            Ok((s.to_string(), v))
        }
    }
}

/// Show (no changes given) or change a function's environment.
pub async fn env(admin: &mut Admin, a: EnvArgs) -> anyhow::Result<()> {
    let info = if a.set.is_empty() && a.secret.is_empty() && a.unset.is_empty() {
        admin
            .client()
            .get_function(GetFunctionRequest { name: a.function })
            .await
            .map_err(admin.err())?
            .into_inner()
    } else {
        let set: HashMap<String, String> = a.set.iter().map(|s| pair(s, "variable")).collect::<Result<_, _>>()?;
        let set_secrets: HashMap<String, String> = a.secret.iter().map(|s| secret(s)).collect::<Result<_, _>>()?;
        let r = admin
            .client()
            .set_env(SetEnvRequest {
                function: a.function,
                set,
                set_secrets,
                unset: a.unset,
            })
            .await
            .map_err(admin.err())?
            .into_inner();
        let f = r.function.unwrap_or_default();
        if r.unchanged {
            eprintln!("{} v{}: unchanged", f.name, f.version);
        } else {
            eprintln!("{} v{}: environment changed (a new version)", f.name, f.version);
        }
        f
    };
    let mut env: Vec<_> = info.env.iter().collect();
    env.sort();
    let rows: Vec<Vec<String>> = env
        .into_iter()
        .map(|(k, v)| vec![k.clone(), v.clone(), "variable".into()])
        .chain(
            info.secret_names
                .iter()
                .map(|k| vec![k.clone(), "<secret>".into(), "secret".into()]),
        )
        .collect();
    admin.out.one(&info, |i| {
        if rows.is_empty() {
            println!(
                "{} v{}: no variables or secrets set through the API (the manifest's [env] is in `stoke versions`)",
                i.name, i.version
            );
        } else {
            crate::output::emit(&crate::output::table(&["NAME", "VALUE", "KIND"], rows.clone()));
        }
    })
}

pub async fn alias(admin: &mut Admin, command: AliasCommand) -> anyhow::Result<()> {
    match command {
        AliasCommand::Set {
            function,
            alias,
            version,
        } => {
            let a = admin
                .client()
                .set_alias(SetAliasRequest {
                    function,
                    name: alias,
                    version: version.unwrap_or(0),
                })
                .await
                .map_err(admin.err())?
                .into_inner();
            admin
                .out
                .one(&a, |a| println!("{}:{} -> v{}", a.function, a.name, a.version))
        }
        AliasCommand::List { function } => {
            let list = admin
                .client()
                .list_aliases(ListAliasesRequest { function })
                .await
                .map_err(admin.err())?
                .into_inner();
            admin
                .out
                .list(&list.aliases, "no aliases", &["ALIAS", "VERSION", "UPDATED"], |a| {
                    row![a.name, a.version, crate::output::when(a.updated_unix_ms)]
                })
        }
        AliasCommand::Delete { function, alias } => {
            let r = admin
                .client()
                .delete_alias(DeleteAliasRequest {
                    function: function.clone(),
                    name: alias.clone(),
                })
                .await
                .map_err(admin.err())?
                .into_inner();
            admin.out.one(&r, |_| println!("deleted alias {function}:{alias}"))
        }
    }
}
