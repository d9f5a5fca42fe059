//! What an admin call can fail with, in the API's own terms, and the one
//! place those become gRPC statuses ([`From<ApiError> for Status`]).

use stoke_auth::AuthError;
use stoke_bus::InvokeError;
use stoke_store::StoreError;
use tonic::Status;

/// Why an admin call failed. Domain functions return these; handlers let
/// `?` turn them into statuses.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The call names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a bad name, value or package).
    #[error("{0}")]
    Invalid(String),
    /// It would create something that already exists.
    #[error("{0}")]
    Exists(String),
    /// The state of things does not allow it now (nothing subscribed, ...).
    #[error("{0}")]
    Precondition(String),
    /// The caller may not do it (beyond what the authenticator says).
    #[error("{0}")]
    Denied(String),
    /// NATS (JetStream) did not answer or refused (`hint`: what to check).
    #[error("{what}: {cause}{hint}")]
    Nats {
        what: String,
        cause: async_nats::Error,
        hint: &'static str,
    },
    /// A service outside stoke (an image registry) cannot be reached or
    /// failed; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// Something the API relies on broke (not the caller's doing).
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// A status from the transport itself (a broken request stream).
    #[error(transparent)]
    Transport(#[from] Status),
}

impl ApiError {
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::NotFound(m.into())
    }
    pub fn invalid(m: impl Into<String>) -> ApiError {
        ApiError::Invalid(m.into())
    }
    pub fn exists(m: impl Into<String>) -> ApiError {
        ApiError::Exists(m.into())
    }
    pub fn precondition(m: impl Into<String>) -> ApiError {
        ApiError::Precondition(m.into())
    }
    pub fn denied(m: impl Into<String>) -> ApiError {
        ApiError::Denied(m.into())
    }
    pub fn unavailable(m: impl Into<String>) -> ApiError {
        ApiError::Unavailable(m.into())
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        ApiError::Internal(m.into())
    }
    pub fn nats(what: impl Into<String>, cause: impl Into<async_nats::Error>) -> ApiError {
        ApiError::Nats {
            what: what.into(),
            cause: cause.into(),
            hint: "",
        }
    }
}

impl From<stoke_bus::logs::LogsUnavailable> for ApiError {
    fn from(e: stoke_bus::logs::LogsUnavailable) -> Self {
        ApiError::Nats {
            what: e.what.to_string(),
            cause: e.cause,
            hint: stoke_bus::logs::HINT,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let msg = e.to_string();
        match e {
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::Invalid(_) => Status::invalid_argument(msg),
            ApiError::Exists(_) => Status::already_exists(msg),
            ApiError::Precondition(_) => Status::failed_precondition(msg),
            ApiError::Denied(_) => Status::permission_denied(msg),
            ApiError::Nats { .. } | ApiError::Unavailable(_) => Status::unavailable(msg),
            ApiError::Internal(_) => Status::internal(msg),
            ApiError::Store(StoreError::Unavailable(m)) => Status::unavailable(format!("store unavailable: {m}")),
            ApiError::Store(_) => Status::internal(msg),
            ApiError::Auth(e) => match e {
                AuthError::Unauthenticated(m) => Status::unauthenticated(m),
                AuthError::PermissionDenied(m) => Status::permission_denied(m),
                AuthError::Invalid(m) => Status::invalid_argument(m),
                AuthError::Unavailable(e) => ApiError::Store(e).into(),
            },
            ApiError::Invoke(e) => match e {
                InvokeError::NotFound(_) => Status::not_found(msg),
                InvokeError::NoHttpTrigger(_) | InvokeError::BadManifest { .. } => Status::failed_precondition(msg),
                InvokeError::PayloadTooLarge { .. } => Status::resource_exhausted(msg),
                InvokeError::InvalidKey(_) | InvokeError::BadRequest(_) => Status::invalid_argument(msg),
                InvokeError::Unavailable(_) => Status::unavailable(msg),
                InvokeError::KeyConflict(_) => Status::already_exists(msg),
                InvokeError::Unauthenticated(_) => Status::unauthenticated(msg),
                InvokeError::Forbidden(_) => Status::permission_denied(msg),
            },
            ApiError::Transport(s) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_kind_has_its_status_and_keeps_its_message() {
        let cases = [
            (ApiError::not_found("no f"), Code::NotFound),
            (ApiError::invalid("bad"), Code::InvalidArgument),
            (ApiError::exists("twice"), Code::AlreadyExists),
            (ApiError::precondition("later"), Code::FailedPrecondition),
            (ApiError::denied("no"), Code::PermissionDenied),
            (ApiError::nats("publish", "down"), Code::Unavailable),
            (ApiError::internal("oops"), Code::Internal),
            (StoreError::unavailable("gone").into(), Code::Unavailable),
            (AuthError::Unauthenticated("who".into()).into(), Code::Unauthenticated),
            (InvokeError::KeyConflict("k".into()).into(), Code::AlreadyExists),
            (Status::cancelled("bye").into(), Code::Cancelled),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            assert_eq!(Status::from(e).code(), code, "{msg}");
        }
        // The message is the error's own, its cause included.
        assert_eq!(Status::from(ApiError::not_found("no f")).message(), "no f");
        let s = Status::from(ApiError::nats("nats publish", "no responders"));
        assert_eq!(s.message(), "nats publish: no responders");
    }
}
