//! `stoke`: the one binary. Server roles (`up`, `broker`, `dispatcher`,
//! `worker`) and the CLI verbs that drive the admin API.

mod client;
mod output;
mod server;
mod settings;
mod verbs;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use client::Admin;
use server::config::{Config, ServeFlags};
use settings::ClientFlags;
use verbs::{cron, dlq, fnconfig, invocations, logs, manage, queue, registry, run};

const CLIENT_HELP: &str = "\
The verbs that talk to the admin API (all but up, broker, dispatcher, worker) take:
  --admin ADDR         admin API address            STOKE_ADMIN       default 127.0.0.1:50051
  --token T            API token                    STOKE_TOKEN
  --token-file FILE    API token from a 0600 file   STOKE_TOKEN_FILE
  -o, --output FORMAT  table or json                STOKE_OUTPUT      default table
  --ca-file FILE       CA (PEM) for https:// ADDR   STOKE_CA_FILE     default the system's roots
Flags win over the environment, which wins over the config file: $STOKE_CONFIG, else
$XDG_CONFIG_HOME/stoke/config.toml, else ~/.config/stoke/config.toml, e.g.
  admin = \"10.0.0.5:50051\"
  token_file = \"~/.config/stoke/token\"   # or token = \"...\" (then the file must be mode 0600)
  output = \"json\"
  ca_file = \"ca.pem\"                     # for admin = \"https://stoke.internal:50051\"
With -o json each verb prints one JSON document on stdout (an array for lists; proto field
names; *_unix_ms fields as *_at in RFC 3339; bytes as text, or base64 in <name>_base64) and
an error as {\"error\":{\"code\":\"NOT_FOUND\",\"message\":...}} on stderr. The exit status is 1
on any error.";

#[derive(Parser)]
#[command(
    name = "stoke",
    version,
    about = "stoke: functions-as-a-service on your own machines",
    long_about = "stoke runs functions that speak the AWS Lambda Runtime API, triggered over HTTP, cron and NATS \
                  subjects, with durable delivery through NATS JetStream.\n\n\
                  Quick start:\n  stoke up                              # platform + local nats-server\n  \
                  stoke deploy examples/hello-python    # in another terminal\n  \
                  curl -X POST localhost:8080/fn/hello -d '{\"name\":\"Ada\"}'",
    after_help = CLIENT_HELP
)]
struct Cli {
    /// Log as JSON lines instead of text, one object per event on stderr
    /// (log level: RUST_LOG, default info). Server roles then announce their
    /// addresses as a log event too, not as text on stdout.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process: HTTP gateway, dispatcher with
    /// the admin API, one worker, and (unless --nats-url) a local nats-server.
    #[command(
        after_help = "Examples:\n  stoke up                                  # data in ./.stoke, nats-server started\n  stoke up --data-dir /var/lib/stoke --sandbox strict\n  stoke up --nats-url nats://127.0.0.1:4222 --http 0.0.0.0:8080"
    )]
    Up {
        #[command(flatten)]
        serve: ServeFlags,
        /// HTTP gateway address.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// gRPC admin API (and worker attachment) address.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Serve Prometheus metrics (GET /metrics) here instead of on the
        /// HTTP gateway.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Seconds an idle warm sandbox is kept before it is stopped.
        #[arg(long, value_name = "SECS")]
        idle_ttl: Option<f64>,
        /// `strict` (default): cgroup memory/pids/cpu limits for every
        /// function, refusing to start without them. `none`: no isolation,
        /// for development only.
        #[arg(long, value_name = "MODE")]
        sandbox: Option<stoke_worker::SandboxMode>,
    },
    /// Run only the HTTP gateway (against a shared NATS and store).
    #[command(
        after_help = "Example:\n  stoke broker --nats-url nats://10.0.0.1:4222 --store postgres://stoke:pw@10.0.0.9/stoke --http 0.0.0.0:8080"
    )]
    Broker {
        #[command(flatten)]
        serve: ServeFlags,
        /// HTTP gateway address (POST /fn/<name>), e.g. 0.0.0.0:8080.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Run only the dispatcher and admin API (against a shared NATS and store).
    #[command(after_help = "Example:\n  stoke dispatcher --config /etc/stoke/stoke.toml --admin 0.0.0.0:50051")]
    Dispatcher {
        #[command(flatten)]
        serve: ServeFlags,
        /// gRPC address for workers and the admin API, e.g. 0.0.0.0:50051.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Serve Prometheus metrics (GET /metrics) here, e.g. 0.0.0.0:9464.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
    },
    /// Run only a worker, attached to a dispatcher.
    #[command(
        after_help = "Example:\n  STOKE_WORKER__TOKEN=... stoke worker --dispatcher http://10.0.0.5:50051,http://10.0.0.6:50051"
    )]
    Worker {
        #[command(flatten)]
        serve: ServeFlags,
        /// Dispatcher to attach to (e.g. http://10.0.0.5:50051); several,
        /// comma-separated, to fail over from one to the next.
        #[arg(long, value_name = "URL[,URL...]")]
        dispatcher: Option<String>,
        /// Seconds an idle warm sandbox is kept before it is stopped.
        #[arg(long, value_name = "SECS")]
        idle_ttl: Option<f64>,
        /// `strict` (default) or `none` (no isolation, development only).
        #[arg(long, value_name = "MODE")]
        sandbox: Option<stoke_worker::SandboxMode>,
    },
    /// Package a function directory (with its stoke.toml) and deploy it as a new version.
    #[command(
        after_help = "Examples:\n  stoke deploy examples/hello-python\n  stoke deploy ./fn --namespace team-a --token-file ~/.config/stoke/ci.token\n  stoke deploy ./fn -o json | jq .function.version"
    )]
    Deploy {
        #[command(flatten)]
        flags: ClientFlags,
        /// The function directory.
        dir: PathBuf,
        /// Namespace the function belongs to (fixed by its first deploy);
        /// default: the token's own, or "default".
        #[arg(long)]
        namespace: Option<String>,
        /// The image to run instead of stoke.toml's `image` (which must be
        /// set): a registry reference (`registry.example.com/team/fn:1.4`,
        /// `host:port/repo@sha256:<hex>`), pulled by the dispatcher, or a
        /// path to an image on this machine.
        #[arg(long, value_name = "REF")]
        image: Option<String>,
    },
    /// Every version of a function; `*` marks the one events run.
    #[command(
        after_help = "Examples:\n  stoke versions hello\n  stoke versions hello -o json | jq '.[] | select(.current) | .version'"
    )]
    Versions {
        #[command(flatten)]
        flags: ClientFlags,
        name: String,
    },
    /// Make an earlier version current again (default: the one before).
    #[command(
        after_help = "Examples:\n  stoke rollback hello            # back to the version before\n  stoke rollback hello --to 3"
    )]
    Rollback {
        #[command(flatten)]
        flags: ClientFlags,
        name: String,
        /// The version to run.
        #[arg(long)]
        to: Option<u32>,
    },
    /// Stop serving a function (history and usage are kept).
    #[command(after_help = "Example:\n  stoke delete hello")]
    Delete {
        #[command(flatten)]
        flags: ClientFlags,
        name: String,
    },
    /// Workers attached to the dispatcher: capacity, load, warm sandboxes; drain one.
    #[command(
        after_help = "Examples:\n  stoke workers\n  stoke workers drain w-3f2a\n  stoke workers -o json | jq '.[] | {id, busy, slots}'"
    )]
    Workers {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(subcommand)]
        command: Option<manage::WorkersCommand>,
    },
    /// Show or change a function's environment variables and secrets; each
    /// change is a new version (rollback restores the old environment).
    #[command(
        after_help = "Examples:\n  stoke env hello                                   # show (secrets by name only)\n  stoke env hello LOG_LEVEL=debug --secret API_KEY  # the secret's value from $API_KEY\n  stoke env hello --unset LOG_LEVEL"
    )]
    Env {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(flatten)]
        args: fnconfig::EnvArgs,
    },
    /// Aliases: names for versions (`live` -> v3); invoke `hello:live`.
    #[command(
        after_help = "Examples:\n  stoke alias set hello live --version 3\n  stoke invoke hello:live\n  curl -X POST localhost:8080/fn/hello:live -d '{}'\n  stoke alias list hello -o json"
    )]
    Alias {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(subcommand)]
        command: fnconfig::AliasCommand,
    },
    /// Events waiting per function: queued and unacked in JetStream (whole
    /// cluster); running, waiting for a slot, retrying after a failure and
    /// deferred (busy key) as this dispatcher sees them.
    #[command(after_help = "Examples:\n  stoke queue\n  stoke queue orders --by-key -o json")]
    Queue {
        #[command(flatten)]
        flags: ClientFlags,
        /// One function (default: all).
        function: Option<String>,
        /// Also list concurrency keys with events running or waiting.
        #[arg(long)]
        by_key: bool,
    },
    /// Credentials for the OCI registries the dispatcher pulls images from
    /// (login, logout, list; cluster admin).
    #[command(
        after_help = "Examples:\n  echo \"$PASSWORD\" | stoke registry login registry.example.com --username ci --password-stdin\n  stoke registry list\n  stoke registry logout registry.example.com"
    )]
    Registry {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(subcommand)]
        command: registry::RegistryCommand,
    },
    /// API tokens: create, list, revoke, whoami.
    #[command(
        after_help = "Examples:\n  stoke tokens whoami\n  stoke tokens create ci --role deployer --namespace team-a\n  stoke tokens list -o json"
    )]
    Tokens {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(subcommand)]
        command: manage::TokensCommand,
    },
    /// Run a function and print its result (or, with --async, its invocation id).
    #[command(
        after_help = "Examples:\n  stoke invoke hello --data '{\"name\":\"Ada\"}'\n  stoke invoke hello --data @event.json --idempotency-key order-42\n  echo '{}' | stoke invoke hello --data @- --async\n  stoke invoke hello -o json | jq -r .invocation.result"
    )]
    Invoke {
        #[command(flatten)]
        flags: ClientFlags,
        /// Function name.
        name: String,
        /// Event payload: inline JSON, @FILE, or @- for stdin (default {}).
        #[arg(long, short)]
        data: Option<String>,
        /// Queue the event and return at once (retried on failure).
        #[arg(long = "async")]
        is_async: bool,
        /// Idempotency key: a repeat with the same key returns the first result without running.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Publish a message on a subject that functions subscribe to
    /// (any NATS client can do the same; this waits until JetStream stored it).
    #[command(
        after_help = "Examples:\n  stoke publish orders.new '{\"id\":42}' --msg-id order-42\n  stoke publish orders.new @order.json -o json"
    )]
    Publish {
        #[command(flatten)]
        flags: ClientFlags,
        /// A concrete subject, e.g. orders.new.
        subject: String,
        /// Payload: inline text/JSON, @FILE, or @- for stdin (default {}).
        data: Option<String>,
        /// Nats-Msg-Id: repeats within the duplicate window are dropped, and it
        /// becomes the idempotency key of the invocations it triggers.
        #[arg(long, value_name = "ID")]
        msg_id: Option<String>,
    },
    /// Show an invocation: status, attempts, result or error.
    #[command(
        after_help = "Examples:\n  stoke status 0192f3c4-...\n  stoke status 0192f3c4-... -o json | jq -r .status"
    )]
    Status {
        #[command(flatten)]
        flags: ClientFlags,
        invocation_id: String,
    },
    /// List deployed functions.
    #[command(after_help = "Examples:\n  stoke functions\n  stoke functions -o json | jq -r '.[].name'")]
    Functions {
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// The routes functions claim at the gateway's root (an http trigger's
    /// `routes`), the way the gateway matches them: per host (any host
    /// first), the most specific route winning; `$default` takes what no
    /// other route matches.
    #[command(
        after_help = "Examples:\n  stoke routes\n  stoke routes -o json | jq -r '.[] | \"\\(.route_key) -> \\(.function)\"'"
    )]
    Routes {
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Dead letters: events that ended without a completion.
    #[command(
        after_help = "Examples:\n  stoke dlq list\n  stoke dlq show 0192f3c4-...\n  stoke dlq redrive --function hello --version 3"
    )]
    Dlq {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Cron schedules: create, list, pause, resume, delete; the ledger of ticks.
    #[command(
        after_help = "Examples:\n  stoke cron list\n  stoke cron create nightly --function report --cron '0 0 3 * * *'\n  stoke cron ledger --function tick -o json"
    )]
    Cron {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(subcommand)]
        command: cron::CronCommand,
    },
    /// Function output (stdout, stderr): one invocation's, or a function's as it runs.
    #[command(after_help = logs::EXAMPLES)]
    Logs {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(flatten)]
        args: logs::LogsArgs,
    },
    /// Billed milliseconds and GB-seconds per function or namespace, per hour or day.
    #[command(after_help = invocations::USAGE_HELP)]
    Usage {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(flatten)]
        args: invocations::UsageArgs,
    },
    /// List invocations, newest first: status, attempts, duration.
    #[command(after_help = invocations::INVOCATIONS_HELP)]
    Invocations {
        #[command(flatten)]
        flags: ClientFlags,
        #[command(flatten)]
        args: invocations::InvocationsArgs,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    // Colours only on a terminal: log files and journald get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let announce = server::Announce { json: cli.log_json };
    if let Err(e) = run(cli.command, announce).await {
        let code = e.chain().find_map(|c| c.downcast_ref::<client::RpcError>());
        output::print_error(&e, code.map(client::RpcError::code_name).as_deref());
        std::process::exit(1);
    }
}

async fn run(command: Command, announce: server::Announce) -> anyhow::Result<()> {
    match command {
        Command::Up {
            serve,
            http,
            admin,
            metrics,
            idle_ttl,
            sandbox,
        } => {
            let mut cfg = Config::load(&serve)?;
            if let Some(m) = sandbox {
                cfg.worker.sandbox = m;
            }
            if let Some(a) = http {
                cfg.broker.http = a;
            }
            if let Some(a) = admin {
                cfg.dispatcher.listen = a;
            }
            if metrics.is_some() {
                cfg.dispatcher.metrics_listen = metrics;
            }
            if let Some(t) = idle_ttl {
                cfg.worker.idle_ttl_secs = t;
            }
            server::up(cfg, announce).await
        }
        Command::Broker { serve, http } => {
            let mut cfg = Config::load(&serve)?;
            if let Some(a) = http {
                cfg.broker.http = a;
            }
            server::broker(cfg, announce).await
        }
        Command::Dispatcher { serve, admin, metrics } => {
            let mut cfg = Config::load(&serve)?;
            if let Some(a) = admin {
                cfg.dispatcher.listen = a;
            }
            if metrics.is_some() {
                cfg.dispatcher.metrics_listen = metrics;
            }
            server::dispatcher(cfg, announce).await
        }
        Command::Worker {
            serve,
            dispatcher,
            idle_ttl,
            sandbox,
        } => {
            let mut cfg = Config::load(&serve)?;
            if let Some(m) = sandbox {
                cfg.worker.sandbox = m;
            }
            if let Some(d) = dispatcher {
                cfg.worker.dispatcher = d;
            }
            if let Some(t) = idle_ttl {
                cfg.worker.idle_ttl_secs = t;
            }
            server::worker(cfg, announce).await
        }
        Command::Deploy {
            flags,
            dir,
            namespace,
            image,
        } => run::deploy(&mut connect(&flags).await?, &dir, namespace, image).await,
        Command::Registry { flags, command } => registry::registry(&mut connect(&flags).await?, command).await,
        Command::Versions { flags, name } => manage::versions(&mut connect(&flags).await?, name).await,
        Command::Rollback { flags, name, to } => manage::rollback(&mut connect(&flags).await?, name, to).await,
        Command::Delete { flags, name } => manage::delete(&mut connect(&flags).await?, name).await,
        Command::Workers { flags, command } => manage::workers(&mut connect(&flags).await?, command).await,
        Command::Tokens { flags, command } => manage::tokens(&mut connect(&flags).await?, command).await,
        Command::Env { flags, args } => fnconfig::env(&mut connect(&flags).await?, args).await,
        Command::Alias { flags, command } => fnconfig::alias(&mut connect(&flags).await?, command).await,
        Command::Queue {
            flags,
            function,
            by_key,
        } => queue::queue(&mut connect(&flags).await?, function, by_key).await,
        Command::Invoke {
            flags,
            name,
            data,
            is_async,
            idempotency_key,
        } => {
            let payload = run::read_payload(data.as_deref())?;
            let args = run::InvokeArgs {
                function: &name,
                payload,
                is_async,
                idempotency_key,
            };
            run::invoke(&mut connect(&flags).await?, args).await
        }
        Command::Publish {
            flags,
            subject,
            data,
            msg_id,
        } => {
            let payload = run::read_payload(data.as_deref())?;
            run::publish(&mut connect(&flags).await?, &subject, payload, msg_id).await
        }
        Command::Status { flags, invocation_id } => run::status(&mut connect(&flags).await?, &invocation_id).await,
        Command::Functions { flags } => manage::functions(&mut connect(&flags).await?).await,
        Command::Routes { flags } => manage::routes(&mut connect(&flags).await?).await,
        Command::Dlq { flags, command } => dlq::run(&mut connect(&flags).await?, command).await,
        Command::Cron { flags, command } => cron::run(&mut connect(&flags).await?, command).await,
        Command::Usage { flags, args } => invocations::usage(&mut connect(&flags).await?, args).await,
        Command::Logs { flags, args } => logs::run(&mut connect(&flags).await?, args).await,
        Command::Invocations { flags, args } => invocations::invocations(&mut connect(&flags).await?, args).await,
    }
}

/// Resolve the CLI settings (flags, env, config file) and connect.
async fn connect(flags: &ClientFlags) -> anyhow::Result<Admin> {
    Admin::connect(&flags.resolve()?).await
}
