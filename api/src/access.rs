//! Who may make which call. [`ACCESS`] declares what every RPC of
//! `AdminService` needs (the dispatcher's `WorkerService` has a table of
//! its own); [`Guarded`] wraps a service, authenticates each call once
//! (bearer token → [`Caller`]), refuses a caller without the declared role
//! before the handler runs, and hands the handler a [`Grant`] (the caller
//! and the role the call needs). What depends on the
//! request (the function's or namespace's owner) the handler checks
//! through that grant: [`Grant::on_function`], [`Grant::on_namespace`],
//! [`Grant::visible`].

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use stoke_auth::{ALL_NAMESPACES, AuthError, Authenticator, Caller, Role};
use stoke_store::Admin;
use tonic::Status;
use tonic::server::NamedService;

use crate::error::ApiError;

/// What one RPC needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The role, anywhere the token reaches; the handler narrows it to the
    /// namespace or functions the request names, where it names any.
    Anywhere(Role),
    /// The role on the function the request names (or whose invocation,
    /// dead letter, schedule or output it names): checked by the handler
    /// through [`Grant::on_function`] once it knows the function; the role
    /// itself is checked first.
    Function(Role),
    /// An admin of every namespace (cluster-wide: workers).
    Cluster,
    /// Any valid token (or none, with auth off).
    Token,
}

/// Every `AdminService` RPC and what it needs. A method missing here is
/// refused for everyone (`UNIMPLEMENTED`), and a test fails.
pub const ACCESS: &[(&str, Access)] = {
    use Access::*;
    use Role::*;
    &[
        ("Deploy", Anywhere(Deployer)),
        // Blobs are content-addressed and shared: a deployer anywhere.
        ("PutBlob", Anywhere(Deployer)),
        // A pull stores blobs only (content-addressed, shared), as PutBlob.
        ("PullImage", Anywhere(Deployer)),
        // Registry credentials serve every namespace's pulls: cluster admin.
        ("RegistryLogin", Cluster),
        ("RegistryLogout", Cluster),
        ("ListRegistries", Cluster),
        ("ListFunctions", Anywhere(Reader)),
        ("ListRoutes", Anywhere(Reader)),
        ("GetFunction", Function(Reader)),
        ("ListVersions", Function(Reader)),
        ("Rollback", Function(Deployer)),
        ("DeleteFunction", Function(Deployer)),
        ("Invoke", Function(Invoker)),
        ("GetInvocation", Function(Reader)),
        ("GetUsage", Anywhere(Reader)),
        ("ListDeadLetters", Anywhere(Reader)),
        ("GetDeadLetter", Function(Reader)),
        ("Redrive", Anywhere(Deployer)),
        // Subjects are one bus for the cluster (as for any NATS client):
        // publishing needs the invoker role, in whatever namespace.
        ("Publish", Anywhere(Invoker)),
        ("ListCronTicks", Anywhere(Reader)),
        ("CreateSchedule", Function(Deployer)),
        ("ListSchedules", Anywhere(Reader)),
        ("PauseSchedule", Function(Deployer)),
        ("ResumeSchedule", Function(Deployer)),
        ("DeleteSchedule", Function(Deployer)),
        // An admin manages the tokens of its own namespace (tokens.rs).
        ("CreateToken", Anywhere(Admin)),
        ("ListTokens", Anywhere(Admin)),
        ("RevokeToken", Anywhere(Admin)),
        ("WhoAmI", Token),
        ("ListWorkers", Cluster),
        ("DrainWorker", Cluster),
        ("SetEnv", Function(Deployer)),
        ("SetAlias", Function(Deployer)),
        ("ListAliases", Function(Reader)),
        ("DeleteAlias", Function(Deployer)),
        ("GetQueue", Anywhere(Reader)),
        ("ListInvocations", Anywhere(Reader)),
        ("GetLogs", Function(Reader)),
        ("TailLogs", Function(Reader)),
    ]
};

/// A service's table: each method's name and what it needs.
pub type Table = &'static [(&'static str, Access)];

/// What `method` needs according to `table`; None: not in it.
pub fn access_in(table: Table, method: &str) -> Option<Access> {
    table.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// What `method` (an `AdminService` method name) needs; None: unknown.
pub fn access_of(method: &str) -> Option<Access> {
    access_in(ACCESS, method)
}

/// The methods of service `service` (e.g. `AdminService`) in stoke's
/// protocol, for tests that every one has an entry in its table.
pub fn methods_of(service: &str) -> Vec<String> {
    use prost::Message as _;
    let set =
        prost_types::FileDescriptorSet::decode(stoke_proto::FILE_DESCRIPTOR_SET).expect("stoke's descriptors decode");
    set.file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == service)
        .flat_map(|s| &s.method)
        .map(|m| m.name().to_string())
        .collect()
}

impl Access {
    /// The role the call needs (Admin for cluster-wide calls; Reader, the
    /// least, for any token).
    fn role(self) -> Role {
        match self {
            Access::Anywhere(r) | Access::Function(r) => r,
            Access::Cluster => Role::Admin,
            Access::Token => Role::Reader,
        }
    }

    /// What can be checked before the request is read.
    pub fn admit(self, caller: &Caller) -> Result<(), AuthError> {
        match self {
            Access::Anywhere(r) | Access::Function(r) => role(caller, r),
            Access::Cluster => caller.require(Role::Admin, ALL_NAMESPACES),
            Access::Token => Ok(()),
        }
    }
}

/// `need` anywhere the caller's token reaches (for listings that are then
/// filtered by namespace).
fn role(caller: &Caller, need: Role) -> Result<(), AuthError> {
    caller.require(need, &caller.namespace)
}

/// An admitted call: who makes it and the role it needs.
#[derive(Debug, Clone)]
pub struct Grant {
    pub caller: Caller,
    pub need: Role,
}

impl Grant {
    /// The grant [`Guarded`] put on `req`.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Grant, ApiError> {
        req.extensions()
            .get::<Grant>()
            .cloned()
            .ok_or_else(|| ApiError::internal("an admin call reached its handler without authentication"))
    }

    /// The needed role on `function`'s namespace. A function the store has
    /// never heard of is NOT_FOUND for a one-namespace caller (an
    /// all-namespace caller passes, and the call itself then says "not
    /// found").
    pub async fn on_function(&self, store: &dyn Admin, function: &str) -> Result<(), ApiError> {
        let caller = &self.caller;
        // `name:7` and `name:alias` belong to `name`.
        let (function, _) = stoke_core::naming::split_qualified(function);
        // Every namespace is covered (and, with auth off, every caller is such
        // an admin): the role is all there is to check, no store read on the
        // invoke path.
        if caller.sees_all_namespaces() {
            return Ok(role(caller, self.need)?);
        }
        match store.function_namespace(function).await? {
            Some(ns) => caller.require(self.need, &ns).map_err(|e| match e {
                AuthError::PermissionDenied(_) if !caller.covers(&ns) => ApiError::denied(format!(
                    "function {function:?} belongs to another namespace than the token's ({:?})",
                    caller.namespace
                )),
                e => e.into(),
            }),
            None => {
                role(caller, self.need)?;
                Err(ApiError::not_found(format!("function {function:?} not found")))
            }
        }
    }

    /// The needed role on `namespace`.
    pub fn on_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        Ok(self.caller.require(self.need, namespace)?)
    }

    /// Keep the items whose function the caller may read.
    pub async fn visible<T>(
        &self,
        store: &dyn Admin,
        items: Vec<T>,
        function: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, ApiError> {
        let caller = &self.caller;
        if caller.sees_all_namespaces() {
            return Ok(items);
        }
        let mut owners = std::collections::HashMap::new();
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            let f = function(&item).to_string();
            if !owners.contains_key(&f) {
                let ns = store.function_namespace(&f).await?;
                owners.insert(f.clone(), ns);
            }
            if owners[&f].as_deref().is_some_and(|ns| caller.covers(ns)) {
                kept.push(item);
            }
        }
        Ok(kept)
    }
}

/// A gRPC service behind authentication and its [`Table`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Authenticator,
    table: Table,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, auth: Authenticator, table: Table) -> Guarded<S> {
        Guarded { inner, auth, table }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<http::Request<B>> for Guarded<S>
where
    S: tower_service::Service<http::Request<B>, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let table = self.table;
        Box::pin(async move {
            let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
            let Some(access) = access_in(table, &method) else {
                return Ok(Status::unimplemented(format!("no access rule for {method:?}")).into_http());
            };
            let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
            let admitted = match auth.authenticate(header).await {
                Ok(caller) => access.admit(&caller).map(|()| caller),
                Err(e) => Err(e),
            };
            match admitted {
                Ok(caller) => {
                    req.extensions_mut().insert(Grant {
                        caller,
                        need: access.role(),
                    });
                    inner.call(req).await
                }
                Err(e) => Ok(Status::from(ApiError::from(e)).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of the service has an entry, and every entry a method.
    #[test]
    fn every_admin_rpc_declares_what_it_needs() {
        let methods = methods_of("AdminService");
        assert!(methods.len() > 30, "{methods:?}");
        for m in &methods {
            assert!(access_of(m).is_some(), "AdminService.{m} has no entry in ACCESS");
        }
        for (m, _) in ACCESS {
            assert!(
                methods.iter().any(|x| x == m),
                "ACCESS names {m}, which AdminService lacks"
            );
        }
    }

    fn caller(ns: &str, role: Role) -> Caller {
        Caller {
            token_id: Some("t".into()),
            namespace: ns.into(),
            role,
        }
    }

    #[test]
    fn a_call_is_admitted_only_with_its_role() {
        let reader = caller("a", Role::Reader);
        assert!(access_of("ListFunctions").unwrap().admit(&reader).is_ok());
        assert!(access_of("Deploy").unwrap().admit(&reader).is_err());
        assert!(access_of("Invoke").unwrap().admit(&reader).is_err());
        assert!(access_of("WhoAmI").unwrap().admit(&reader).is_ok());
        let admin = caller("a", Role::Admin);
        assert!(access_of("CreateToken").unwrap().admit(&admin).is_ok());
        assert!(
            access_of("ListWorkers").unwrap().admit(&admin).is_err(),
            "one namespace"
        );
        assert!(
            access_of("ListWorkers")
                .unwrap()
                .admit(&caller("*", Role::Admin))
                .is_ok()
        );
        let worker = caller("*", Role::Worker);
        assert!(access_of("ListFunctions").unwrap().admit(&worker).is_err());
        assert!(access_of("WhoAmI").unwrap().admit(&worker).is_ok());
    }

    /// The wrapper, with a real authenticator over a real store: what it
    /// refuses never reaches the handler, what it admits arrives with its
    /// grant.
    #[tokio::test]
    async fn the_guard_authenticates_once_and_checks_the_table() {
        use tower_service::Service as _;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = stoke_store::open(&url).await.unwrap();
        let (_, reader) = stoke_auth::mint(store.as_ref(), "r", "a", Role::Reader).await.unwrap();
        let reached = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Grant>::new()));
        let seen = reached.clone();
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(req.extensions().get::<Grant>().cloned().expect("a grant"));
                Ok::<_, Infallible>(HttpResponse::new(tonic::body::Body::default()))
            }
        });
        let mut guarded = Guarded::new(inner, Authenticator::new(store, true), ACCESS);
        let mut call = |method: &str, token: Option<&str>| {
            let mut req = http::Request::builder().uri(format!("/stoke.v1.AdminService/{method}"));
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let fut = guarded.call(req.body(()).unwrap());
            async move {
                let resp = fut.await.unwrap();
                resp.headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_string())
            }
        };
        let unauthenticated = Some((tonic::Code::Unauthenticated as i32).to_string());
        let denied = Some((tonic::Code::PermissionDenied as i32).to_string());
        let unimplemented = Some((tonic::Code::Unimplemented as i32).to_string());
        assert_eq!(call("ListFunctions", None).await, unauthenticated);
        assert_eq!(call("ListFunctions", Some("junk")).await, unauthenticated);
        assert_eq!(call("Deploy", Some(&reader)).await, denied);
        assert_eq!(call("NoSuchCall", Some(&reader)).await, unimplemented);
        assert!(
            reached.lock().unwrap().is_empty(),
            "refused calls never reach the handler"
        );
        assert_eq!(call("ListFunctions", Some(&reader)).await, None);
        let grants = reached.lock().unwrap();
        assert_eq!(grants.len(), 1);
        assert_eq!(
            (grants[0].caller.namespace.as_str(), grants[0].need),
            ("a", Role::Reader)
        );
    }
}
