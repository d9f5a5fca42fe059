//! CLI verbs for what is deployed (functions, versions, rollback, delete,
//! usage), the workers, and API tokens.

use stoke_proto::{
    CreateTokenRequest, DeleteFunctionRequest, ListFunctionsRequest, ListRoutesRequest, ListTokensRequest,
    ListVersionsRequest, RevokeTokenRequest, RollbackRequest, TokenInfo, WhoAmIRequest,
};

use crate::client::Admin;
use crate::output::{self, when};
use crate::row;

#[derive(clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed once (store it now).
    #[command(after_help = "Examples:\n  \
        stoke tokens create ci-deploy --role deployer --namespace team-a\n  \
        stoke tokens create ci-deploy --role deployer -o json | jq -r .secret > ci.token")]
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
    #[command(
        after_help = "Examples:\n  stoke tokens list\n  stoke tokens list -o json | jq -r '.[] | select(.revoked_at == null) | .id'"
    )]
    List,
    /// Revoke a token by id (takes effect within 5 s everywhere).
    #[command(after_help = "Example:\n  stoke tokens revoke tok_3f2a9c")]
    Revoke { id: String },
    /// Show the token you are using.
    #[command(after_help = "Examples:\n  stoke tokens whoami\n  stoke tokens whoami -o json | jq -r .role")]
    Whoami,
}

const TOKEN_HEADERS: &[&str] = &["ID", "NAME", "NAMESPACE", "ROLE", "CREATED", "STATE"];

fn token_row(t: &TokenInfo) -> Vec<String> {
    let state = if t.revoked_unix_ms == 0 {
        "live".to_string()
    } else {
        format!("revoked {}", when(t.revoked_unix_ms))
    };
    row![t.id, t.name, t.namespace, t.role, when(t.created_unix_ms), state]
}

pub async fn tokens(admin: &mut Admin, command: TokensCommand) -> anyhow::Result<()> {
    let mut c = admin.client().clone();
    let (err, out) = (admin.err(), admin.out);
    match command {
        TokensCommand::Create { name, role, namespace } => {
            let r = c
                .create_token(CreateTokenRequest {
                    name,
                    namespace: namespace.unwrap_or_default(),
                    role,
                })
                .await
                .map_err(err)?
                .into_inner();
            out.one(&r, |r| {
                let t = r.token.clone().unwrap_or_default();
                eprintln!(
                    "created {} ({} in {}); the secret below is shown only now:",
                    t.id, t.role, t.namespace
                );
                println!("{}", r.secret);
                eprintln!(
                    "as AWS credentials (SigV4, for the Lambda Invoke API), also shown only now:\n  \
                     AWS_ACCESS_KEY_ID={}\n  AWS_SECRET_ACCESS_KEY={}",
                    r.aws_access_key_id, r.aws_secret_access_key
                );
            })
        }
        TokensCommand::List => {
            let list = c
                .list_tokens(ListTokensRequest {})
                .await
                .map_err(err)?
                .into_inner()
                .tokens;
            out.list(&list, "no tokens", TOKEN_HEADERS, token_row)
        }
        TokensCommand::Revoke { id } => {
            let r = c
                .revoke_token(RevokeTokenRequest { id: id.clone() })
                .await
                .map_err(err)?
                .into_inner();
            out.one(&r, |_| println!("revoked {id}"))
        }
        TokensCommand::Whoami => {
            let t = c.who_am_i(WhoAmIRequest {}).await.map_err(err)?.into_inner();
            out.one(&t, |t| {
                println!("{} {} (role {}, namespace {})", t.id, t.name, t.role, t.namespace)
            })
        }
    }
}

fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}

/// `stoke functions`.
pub async fn functions(admin: &mut Admin) -> anyhow::Result<()> {
    let list = admin
        .client()
        .list_functions(ListFunctionsRequest::default())
        .await
        .map_err(admin.err())?
        .into_inner()
        .functions;
    admin.out.list(
        &list,
        "no functions deployed (deploy one with: stoke deploy examples/hello-python)",
        &[
            "NAME",
            "NAMESPACE",
            "VERSION",
            "MEMORY",
            "TIMEOUT",
            "DIGEST",
            "TRIGGERS",
        ],
        |f| {
            row![
                f.name,
                f.namespace,
                f.version,
                format!("{}MB", f.memory_mb),
                format!("{}s", f.timeout_ms / 1000),
                short(&f.digest),
                f.triggers.join(", ")
            ]
        },
    )
}

/// `stoke routes`: JSON is the array of routes (RouteInfo).
pub async fn routes(admin: &mut Admin) -> anyhow::Result<()> {
    let list = admin
        .client()
        .list_routes(ListRoutesRequest::default())
        .await
        .map_err(admin.err())?
        .into_inner()
        .routes;
    admin.out.list(
        &list,
        "no routes (an http trigger claims some with: routes = [\"GET /users/{id}\"])",
        &["ROUTE", "HOST", "FUNCTION", "VERSION", "NAMESPACE"],
        |r| {
            row![
                r.route_key,
                if r.host.is_empty() { "*" } else { r.host.as_str() },
                r.function,
                r.version,
                r.namespace
            ]
        },
    )
}

/// `stoke versions NAME`: JSON is the array of versions (FunctionInfo),
/// each with `current`: whether new events run it.
pub async fn versions(admin: &mut Admin, name: String) -> anyhow::Result<()> {
    let r = admin
        .client()
        .list_versions(ListVersionsRequest { name })
        .await
        .map_err(admin.err())?
        .into_inner();
    if admin.out.is_json() {
        let docs = r.versions.iter().map(|v| {
            let mut doc = output::to_json(v);
            doc["current"] = (v.version == r.current_version).into();
            doc
        });
        return output::print_json(&serde_json::Value::Array(docs.collect()));
    }
    let rows = r.versions.iter().map(|v| {
        let mark = if v.version == r.current_version { "*" } else { "" };
        row![
            mark,
            v.version,
            short(&v.digest),
            when(v.created_unix_ms),
            v.package_size
        ]
    });
    output::emit(&output::table(
        &["", "VERSION", "DIGEST", "DEPLOYED", "SIZE"],
        rows.collect(),
    ));
    if r.current_version == 0 {
        println!("(deleted: no version is current; deploy to bring it back)");
    }
    Ok(())
}

/// `stoke rollback NAME [--to N]`.
pub async fn rollback(admin: &mut Admin, name: String, to: Option<u32>) -> anyhow::Result<()> {
    let f = admin
        .client()
        .rollback(RollbackRequest {
            name,
            version: to.unwrap_or(0),
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    admin.out.one(&f, |f| {
        println!(
            "{} now runs version {} (digest {})",
            f.name,
            f.version,
            short(&f.digest)
        )
    })
}

/// `stoke delete NAME`.
pub async fn delete(admin: &mut Admin, name: String) -> anyhow::Result<()> {
    let r = admin
        .client()
        .delete_function(DeleteFunctionRequest { name: name.clone() })
        .await
        .map_err(admin.err())?
        .into_inner();
    admin.out.one(&r, |_| {
        println!("deleted {name} (its versions, invocations and usage are kept; `stoke deploy` brings it back)")
    })
}

#[derive(clap::Subcommand)]
pub enum WorkersCommand {
    /// List the workers attached to this dispatcher (the default).
    #[command(after_help = "Examples:\n  stoke workers\n  stoke workers list -o json | jq '.[] | {id, busy, slots}'")]
    List,
    /// Place no new work on a worker; in-flight work finishes.
    #[command(after_help = "Example:\n  stoke workers drain w-3f2a")]
    Drain { id: String },
}

/// `stoke workers [list|drain ID]`.
pub async fn workers(admin: &mut Admin, command: Option<WorkersCommand>) -> anyhow::Result<()> {
    let headers = &["ID", "HOST", "BUSY", "MEMORY", "STATE", "WARM (idle sandboxes)"];
    let row = |w: &stoke_proto::WorkerInfo| {
        let warm: Vec<String> = w
            .warm
            .iter()
            .map(|f| format!("{}:v{}×{}", f.function, f.version, f.idle))
            .collect();
        row![
            w.id,
            w.hostname,
            format!("{}/{}", w.busy, w.slots),
            format!("{}MB", w.memory_mb),
            if w.draining { "draining" } else { "ready" },
            warm.join(" ")
        ]
    };
    match command.unwrap_or(WorkersCommand::List) {
        WorkersCommand::List => {
            let list = admin
                .client()
                .list_workers(stoke_proto::ListWorkersRequest {})
                .await
                .map_err(admin.err())?
                .into_inner()
                .workers;
            admin.out.list(&list, "no workers attached", headers, row)
        }
        WorkersCommand::Drain { id } => {
            let w = admin
                .client()
                .drain_worker(stoke_proto::DrainWorkerRequest { id })
                .await
                .map_err(admin.err())?
                .into_inner();
            admin.out.one(&w, |w| {
                eprintln!("{} is drained: no new work; {} invocations still running", w.id, w.busy);
                output::emit(&output::table(headers, vec![row(w)]));
            })
        }
    }
}
