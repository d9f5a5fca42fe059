//! The connection to the gRPC admin API every verb uses ([`Admin`]), and how
//! its errors are told ([`RpcError`]). The verbs are in `verbs/`; printing is
//! `output.rs`.

use std::time::Duration;

use anyhow::Context as _;
use stoke_proto::admin_service_client::AdminServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::output::{self, Output};
use crate::settings::Settings;

const MAX_MESSAGE: usize = 64 << 20;

pub type AdminClient = AdminServiceClient<InterceptedService<Channel, stoke_proto::BearerToken>>;

/// A connected admin API client, the address it was reached at (for error
/// messages) and how to print answers.
pub struct Admin {
    client: AdminClient,
    pub addr: String,
    pub out: Output,
}

/// A failed call, with the gRPC status code a program can branch on (see
/// output.rs: `-o json` prints it).
#[derive(Debug)]
pub struct RpcError {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

impl RpcError {
    /// `NOT_FOUND`, `PERMISSION_DENIED`, ...
    pub fn code_name(&self) -> String {
        output::screaming_snake(&format!("{:?}", self.code))
    }
}

fn unreachable(addr: &str, why: impl std::fmt::Display) -> anyhow::Error {
    let why = why.to_string();
    let message = match stoke_proto::tls::hint(addr, &why) {
        Some(hint) => format!("cannot reach the stoke admin API at {addr}: {why} ({hint})"),
        None => format!(
            "cannot reach the stoke admin API at {addr} ({why}): is `stoke up` running? (set --admin or STOKE_ADMIN)"
        ),
    };
    RpcError {
        code: tonic::Code::Unavailable,
        message,
    }
    .into()
}

/// Turn a gRPC status into an error that says what to do.
pub fn rpc_error(addr: &str, s: tonic::Status) -> anyhow::Error {
    // A status made from a transport failure says only "transport error";
    // the rest is in its causes.
    let transport = std::error::Error::source(&s).is_some();
    let s = match std::error::Error::source(&s) {
        Some(cause) => {
            let text = stoke_proto::tls::chain(cause);
            let message = if text.contains(s.message()) {
                text
            } else {
                format!("{}: {text}", s.message())
            };
            tonic::Status::new(s.code(), message)
        }
        None => s,
    };
    let message = match s.code() {
        tonic::Code::Unavailable if s.message().contains("transport") || s.message().contains("connect") => {
            return unreachable(addr, s.message());
        }
        tonic::Code::Unauthenticated => format!(
            "{} (the admin API at {addr} requires a token: pass --token or --token-file, set STOKE_TOKEN, \
             or put token_file in the config file; the first admin token is in <data-dir>/admin.token)",
            s.message()
        ),
        // TLS on one side only can fail the first call, not the connect:
        // a transport failure (not the server's answer) may say so.
        code => match stoke_proto::tls::hint(addr, s.message()).filter(|_| transport) {
            Some(hint) => format!("{} ({code:?}; {hint})", s.message()),
            None => format!("{} ({code:?})", s.message()),
        },
    };
    RpcError {
        code: s.code(),
        message,
    }
    .into()
}

impl Admin {
    /// Connect to the admin API, sending the token (if any) on every call.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Admin> {
        let addr = settings.admin.as_str();
        let bearer = stoke_proto::BearerToken::new(settings.token.as_deref().unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("the token has characters a header cannot carry"))?;
        let channel = stoke_proto::tls::endpoint(addr, settings.ca_file.as_deref())
            .context("cannot set up the admin API connection")?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| unreachable(addr, stoke_proto::tls::chain(&e)))?;
        let client = AdminServiceClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Admin {
            client,
            addr: addr.to_string(),
            out: Output::new(settings.output),
        })
    }

    pub fn client(&mut self) -> &mut AdminClient {
        &mut self.client
    }

    /// Map a failed call's status to an error naming this server.
    pub fn err(&self) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
        |s| rpc_error(&self.addr, s)
    }
}
