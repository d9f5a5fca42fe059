//! CLI verbs for a function's lifecycle (versions, rollback, delete) and for
//! API tokens.

use stoke_proto::{
    CreateTokenRequest, DeleteFunctionRequest, ListTokensRequest, ListVersionsRequest, RevokeTokenRequest,
    RollbackRequest, TokenInfo, WhoAmIRequest,
};

use crate::client::{Admin, rpc_error};

#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed once (store it now).
    ///
    /// Example: stoke tokens create ci-deploy --role deployer --namespace team-a
    Create {
        /// A label for people, e.g. ci-deploy.
        name: String,
        /// admin, deployer, invoker, reader, or worker (for `stoke worker`).
        #[arg(long)]
        role: String,
        /// The namespace it acts in ("*" for all); default: your token's.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// List tokens (of your namespace; all of them for an all-namespace admin).
    List,
    /// Revoke a token by id (takes effect within 5 s everywhere).
    Revoke { id: String },
    /// Show the token you are using.
    Whoami,
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

fn token_line(t: &TokenInfo) -> String {
    format!(
        "{:<16} {:<20} {:<12} {:<9} {:<19} {}",
        t.id,
        t.name,
        t.namespace,
        t.role,
        when(t.created_unix_ms),
        if t.revoked_unix_ms == 0 {
            "live".to_string()
        } else {
            format!("revoked {}", when(t.revoked_unix_ms))
        }
    )
}

pub async fn tokens(admin: &mut Admin, addr: &str, command: TokensCommand) -> anyhow::Result<()> {
    let c = admin.client();
    match command {
        TokensCommand::Create { name, role, namespace } => {
            let r = c
                .create_token(CreateTokenRequest {
                    name,
                    namespace: namespace.unwrap_or_default(),
                    role,
                })
                .await
                .map_err(|s| rpc_error(addr, s))?
                .into_inner();
            let t = r.token.unwrap_or_default();
            eprintln!(
                "created {} ({} in {}); the secret below is shown only now:",
                t.id, t.role, t.namespace
            );
            println!("{}", r.secret);
        }
        TokensCommand::List => {
            let list = c
                .list_tokens(ListTokensRequest {})
                .await
                .map_err(|s| rpc_error(addr, s))?
                .into_inner()
                .tokens;
            println!(
                "{:<16} {:<20} {:<12} {:<9} {:<19} STATE",
                "ID", "NAME", "NAMESPACE", "ROLE", "CREATED"
            );
            for t in &list {
                println!("{}", token_line(t));
            }
        }
        TokensCommand::Revoke { id } => {
            c.revoke_token(RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(|s| rpc_error(addr, s))?;
            println!("revoked {id}");
        }
        TokensCommand::Whoami => {
            let t = c
                .who_am_i(WhoAmIRequest {})
                .await
                .map_err(|s| rpc_error(addr, s))?
                .into_inner();
            println!("{} {} (role {}, namespace {})", t.id, t.name, t.role, t.namespace);
        }
    }
    Ok(())
}

/// `stoke versions NAME`.
pub async fn versions(admin: &mut Admin, addr: &str, name: String) -> anyhow::Result<()> {
    let r = admin
        .client()
        .list_versions(ListVersionsRequest { name })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    println!(
        "{:<3} {:>7} {:<14} {:<19} {:>10}",
        "", "VERSION", "DIGEST", "DEPLOYED", "SIZE"
    );
    for v in &r.versions {
        println!(
            "{:<3} {:>7} {:<14} {:<19} {:>10}",
            if v.version == r.current_version { "*" } else { "" },
            v.version,
            &v.digest[..12.min(v.digest.len())],
            when(v.created_unix_ms),
            v.package_size
        );
    }
    if r.current_version == 0 {
        println!("(deleted: no version is current; deploy to bring it back)");
    }
    Ok(())
}

/// `stoke rollback NAME [--to N]`.
pub async fn rollback(admin: &mut Admin, addr: &str, name: String, to: Option<u32>) -> anyhow::Result<()> {
    let f = admin
        .client()
        .rollback(RollbackRequest {
            name,
            version: to.unwrap_or(0),
        })
        .await
        .map_err(|s| rpc_error(addr, s))?
        .into_inner();
    println!(
        "{} now runs version {} (digest {})",
        f.name,
        f.version,
        &f.digest[..12.min(f.digest.len())]
    );
    Ok(())
}

/// `stoke delete NAME`.
pub async fn delete(admin: &mut Admin, addr: &str, name: String) -> anyhow::Result<()> {
    admin
        .client()
        .delete_function(DeleteFunctionRequest { name: name.clone() })
        .await
        .map_err(|s| rpc_error(addr, s))?;
    println!("deleted {name} (its versions, invocations and usage are kept; `stoke deploy` brings it back)");
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum WorkersCommand {
    /// List the workers attached to this dispatcher (the default).
    List,
    /// Place no new work on a worker; in-flight work finishes.
    ///
    /// Example: stoke workers drain w-3f2a
    Drain { id: String },
}

/// `stoke workers [list|drain ID]`.
pub async fn workers(admin: &mut Admin, addr: &str, command: Option<WorkersCommand>) -> anyhow::Result<()> {
    let c = admin.client();
    let list = match command.unwrap_or(WorkersCommand::List) {
        WorkersCommand::List => {
            c.list_workers(stoke_proto::ListWorkersRequest {})
                .await
                .map_err(|s| rpc_error(addr, s))?
                .into_inner()
                .workers
        }
        WorkersCommand::Drain { id } => {
            let w = c
                .drain_worker(stoke_proto::DrainWorkerRequest { id })
                .await
                .map_err(|s| rpc_error(addr, s))?
                .into_inner();
            eprintln!("{} is drained: no new work; {} invocations still running", w.id, w.busy);
            vec![w]
        }
    };
    println!(
        "{:<24} {:<16} {:>9} {:>9} {:<8} WARM (idle sandboxes)",
        "ID", "HOST", "BUSY", "MEMORY", "STATE"
    );
    for w in &list {
        let warm: Vec<String> = w
            .warm
            .iter()
            .map(|f| format!("{}:v{}×{}", f.function, f.version, f.idle))
            .collect();
        println!(
            "{:<24} {:<16} {:>9} {:>7}MB {:<8} {}",
            w.id,
            w.hostname,
            format!("{}/{}", w.busy, w.slots),
            w.memory_mb,
            if w.draining { "draining" } else { "ready" },
            warm.join(" ")
        );
    }
    Ok(())
}
