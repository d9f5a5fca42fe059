//! `stoke`: the one binary. Server roles (`up`, `broker`, `dispatcher`,
//! `worker`) and the CLI verbs that drive the admin API.

mod client;
mod config;
mod dlq;
mod logs;
mod manage;
mod nats_server;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use config::{Config, ServeFlags};

#[derive(Parser)]
#[command(
    name = "stoke",
    version,
    about = "stoke: functions-as-a-service on your own machines",
    long_about = "stoke runs functions that speak the AWS Lambda Runtime API, triggered over HTTP (and, soon, \
                  cron and NATS subjects), with durable delivery through NATS JetStream.\n\n\
                  Quick start:\n  stoke up                              # platform + local nats-server\n  \
                  stoke deploy examples/hello-python    # in another terminal\n  \
                  curl -X POST localhost:8080/fn/hello -d '{\"name\":\"Ada\"}'"
)]
struct Cli {
    /// Log as JSON lines instead of text (log level: RUST_LOG, default info).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process: HTTP gateway, dispatcher with
    /// the admin API, one worker, and (unless --nats-url) a local nats-server.
    Up {
        #[command(flatten)]
        serve: ServeFlags,
        /// HTTP gateway address.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// gRPC admin API (and worker attachment) address.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
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
    Broker {
        #[command(flatten)]
        serve: ServeFlags,
        /// HTTP gateway address (POST /fn/<name>), e.g. 0.0.0.0:8080.
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Run only the dispatcher and admin API (against a shared NATS and store).
    Dispatcher {
        #[command(flatten)]
        serve: ServeFlags,
        /// gRPC address for workers and the admin API, e.g. 0.0.0.0:50051.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Run only a worker, attached to a dispatcher.
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
    Deploy {
        #[command(flatten)]
        admin: AdminFlag,
        /// The function directory.
        dir: PathBuf,
        /// Namespace the function belongs to (fixed by its first deploy);
        /// default: the token's own, or "default".
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Every version of a function; `*` marks the one events run.
    Versions {
        #[command(flatten)]
        admin: AdminFlag,
        name: String,
    },
    /// Make an earlier version current again (default: the one before).
    ///
    /// Example: stoke rollback hello --to 3
    Rollback {
        #[command(flatten)]
        admin: AdminFlag,
        name: String,
        /// The version to run.
        #[arg(long)]
        to: Option<u32>,
    },
    /// Stop serving a function (history and usage are kept).
    Delete {
        #[command(flatten)]
        admin: AdminFlag,
        name: String,
    },
    /// Workers attached to the dispatcher: capacity, load, warm sandboxes; drain one.
    Workers {
        #[command(flatten)]
        admin: AdminFlag,
        #[command(subcommand)]
        command: Option<manage::WorkersCommand>,
    },
    /// API tokens: create, list, revoke, whoami.
    Tokens {
        #[command(flatten)]
        admin: AdminFlag,
        #[command(subcommand)]
        command: manage::TokensCommand,
    },
    /// Run a function and print its result (or, with --async, its invocation id).
    Invoke {
        #[command(flatten)]
        admin: AdminFlag,
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
    Publish {
        #[command(flatten)]
        admin: AdminFlag,
        /// A concrete subject, e.g. orders.new.
        subject: String,
        /// Payload: inline text/JSON, @FILE, or @- for stdin (default {}).
        data: Option<String>,
        /// Nats-Msg-Id: repeats within the duplicate window are dropped, and it
        /// becomes the idempotency key of the invocations it triggers.
        #[arg(long, value_name = "ID")]
        msg_id: Option<String>,
    },
    /// Show an invocation's status and result as JSON.
    Status {
        #[command(flatten)]
        admin: AdminFlag,
        invocation_id: String,
    },
    /// List deployed functions.
    Functions {
        #[command(flatten)]
        admin: AdminFlag,
    },
    /// Dead letters: events that ended without a completion.
    Dlq {
        #[command(flatten)]
        admin: AdminFlag,
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Cron schedules.
    Cron {
        #[command(flatten)]
        admin: AdminFlag,
        #[command(subcommand)]
        command: CronCommand,
    },
    /// Function output (stdout, stderr): one invocation's, or a function's as it runs.
    #[command(after_help = logs::EXAMPLES)]
    Logs {
        #[command(flatten)]
        admin: AdminFlag,
        #[command(flatten)]
        args: logs::LogsArgs,
    },
    /// Billed milliseconds and GB-seconds per function.
    Usage {
        #[command(flatten)]
        admin: AdminFlag,
        /// Only this function.
        #[arg(long)]
        function: Option<String>,
    },
}

#[derive(Subcommand)]
enum CronCommand {
    /// Create a schedule without redeploying (manifest `[[triggers]] cron` also works).
    Create {
        /// Schedule name ([a-z][a-z0-9-]*).
        name: String,
        #[arg(long)]
        function: String,
        /// sec min hour day month weekday [year], e.g. "0 */5 * * * *".
        #[arg(long)]
        cron: String,
        /// IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// allow | skip | queue (default allow).
        #[arg(long)]
        overlap: Option<String>,
        /// none | latest | all (default none).
        #[arg(long)]
        catch_up: Option<String>,
        /// Seconds `--catch-up all` reaches back (default 3600).
        #[arg(long)]
        catch_up_window: Option<u32>,
        /// Event data: inline JSON, @FILE or @-.
        #[arg(long)]
        data: Option<String>,
    },
    /// List schedules (from manifests and the admin API).
    List {
        #[arg(long)]
        function: Option<String>,
    },
    /// Stop a schedule firing (its ticks are not caught up on resume).
    Pause {
        name: String,
    },
    /// Start a paused schedule again, from now.
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
    /// The ledger: each tick and what became of it (fired, caught_up,
    /// skipped_overlap, missed_by_policy), newest first.
    Ledger {
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(clap::Args)]
struct AdminFlag {
    /// Admin API address.
    #[arg(
        long = "admin",
        env = "STOKE_ADMIN",
        default_value = "127.0.0.1:50051",
        value_name = "ADDR",
        global = true
    )]
    addr: String,
    /// API token (when the server requires tokens).
    #[arg(
        long,
        env = "STOKE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    token: Option<String>,
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
    if let Err(e) = run(cli.command).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            serve,
            http,
            admin,
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
            if let Some(t) = idle_ttl {
                cfg.worker.idle_ttl_secs = t;
            }
            serve::up(cfg).await
        }
        Command::Broker { serve, http } => {
            let mut cfg = Config::load(&serve)?;
            if let Some(a) = http {
                cfg.broker.http = a;
            }
            serve::broker(cfg).await
        }
        Command::Dispatcher { serve, admin } => {
            let mut cfg = Config::load(&serve)?;
            if let Some(a) = admin {
                cfg.dispatcher.listen = a;
            }
            serve::dispatcher(cfg).await
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
            serve::worker(cfg).await
        }
        Command::Deploy { admin, dir, namespace } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            client::deploy(&mut c, &addr, &dir, namespace).await
        }
        Command::Versions { admin, name } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            manage::versions(&mut c, &addr, name).await
        }
        Command::Rollback { admin, name, to } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            manage::rollback(&mut c, &addr, name, to).await
        }
        Command::Delete { admin, name } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            manage::delete(&mut c, &addr, name).await
        }
        Command::Workers { admin, command } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            manage::workers(&mut c, &addr, command).await
        }
        Command::Tokens { admin, command } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            manage::tokens(&mut c, &addr, command).await
        }
        Command::Invoke {
            admin,
            name,
            data,
            is_async,
            idempotency_key,
        } => {
            let payload = client::read_payload(data.as_deref())?;
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            let args = client::InvokeArgs {
                function: &name,
                payload,
                is_async,
                idempotency_key,
            };
            client::invoke(&mut c, &addr, args).await
        }
        Command::Publish {
            admin,
            subject,
            data,
            msg_id,
        } => {
            let payload = client::read_payload(data.as_deref())?;
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            client::publish(&mut c, &addr, &subject, payload, msg_id).await
        }
        Command::Status { admin, invocation_id } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            client::status(&mut c, &addr, &invocation_id).await
        }
        Command::Functions { admin } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            client::functions(&mut c, &addr).await
        }
        Command::Dlq { admin, command } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            dlq::run(&mut c, &addr, command).await
        }
        Command::Cron { admin, command } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            match command {
                CronCommand::Ledger { function, limit } => client::cron_ledger(&mut c, &addr, function, limit).await,
                CronCommand::Create {
                    name,
                    function,
                    cron,
                    timezone,
                    overlap,
                    catch_up,
                    catch_up_window,
                    data,
                } => {
                    let payload = match data {
                        Some(d) => client::read_payload(Some(&d))?,
                        None => Vec::new(),
                    };
                    let req = stoke_proto::CreateScheduleRequest {
                        name,
                        function,
                        cron,
                        timezone: timezone.unwrap_or_default(),
                        overlap: overlap.unwrap_or_default(),
                        catch_up: catch_up.unwrap_or_default(),
                        catch_up_window: catch_up_window.unwrap_or(0),
                        payload,
                    };
                    client::schedules(&mut c, &addr, client::ScheduleOp::Create(req)).await
                }
                CronCommand::List { function } => {
                    client::schedules(&mut c, &addr, client::ScheduleOp::List(function.unwrap_or_default())).await
                }
                CronCommand::Pause { name } => client::schedules(&mut c, &addr, client::ScheduleOp::Pause(name)).await,
                CronCommand::Resume { name } => {
                    client::schedules(&mut c, &addr, client::ScheduleOp::Resume(name)).await
                }
                CronCommand::Delete { name } => {
                    client::schedules(&mut c, &addr, client::ScheduleOp::Delete(name)).await
                }
            }
        }
        Command::Logs { admin, args } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            logs::run(&mut c, &addr, args).await
        }
        Command::Usage { admin, function } => {
            let (mut c, addr) = client::Admin::connect(&admin.addr, admin.token.as_deref()).await?;
            client::usage(&mut c, &addr, function).await
        }
    }
}
