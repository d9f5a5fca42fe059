//! The admin handlers over a real SQLite store and fake dispatcher handles:
//! no JetStream, no dispatcher (what `Handles` is for). Each call carries
//! the grant `Guarded` would have put on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use stoke_auth::{Caller, Role};
use stoke_proto::admin_service_server::AdminService;
use stoke_proto::{
    DeleteFunctionRequest, DrainWorkerRequest, FunctionQueue, GetQueueRequest, ListRoutesRequest, ListWorkersRequest,
    RollbackRequest, WorkerInfo,
};
use stoke_store::{DeployOutcome, FunctionVersion, NewVersion, Store};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

use crate::{AdminApi, Deployments, Grant, Handles, QueueView, Workers};

/// Counts the changes the API reports.
#[derive(Default)]
struct Changes(AtomicUsize);

impl Deployments for Changes {
    fn changed(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Changes {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Every function has 7 queued events.
struct Sevens;

impl QueueView for Sevens {
    fn function_queue<'a>(
        &'a self,
        v: &'a FunctionVersion,
        _by_key: bool,
    ) -> BoxFuture<'a, Result<FunctionQueue, async_nats::Error>> {
        Box::pin(async move {
            Ok(FunctionQueue {
                function: v.function.clone(),
                queued: 7,
                ..Default::default()
            })
        })
    }
}

/// One worker, `w-1`.
struct OneWorker;

impl Workers for OneWorker {
    fn snapshot(&self) -> Vec<WorkerInfo> {
        vec![WorkerInfo {
            id: "w-1".into(),
            ..Default::default()
        }]
    }

    fn cordon(&self, id: &str) -> Option<WorkerInfo> {
        (id == "w-1").then(|| WorkerInfo {
            id: id.into(),
            draining: true,
            ..Default::default()
        })
    }
}

struct Fixture {
    api: AdminApi,
    store: Arc<dyn Store>,
    changes: Arc<Changes>,
    _dir: tempfile::TempDir,
}

/// The API over a fresh store holding `f` (versions 1 and 2) in namespace
/// `a`.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = stoke_store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    for (n, digest) in [(1, "d-1"), (2, "d-2")] {
        store.put_package(digest, b"pkg").await.unwrap();
        let made = store
            .deploy_version(NewVersion {
                function: "f",
                namespace: "a",
                digest,
                manifest: "name = \"f\"\ncommand = [\"true\"]\n",
                package_size: 3,
                image: "",
                now_ms: n,
            })
            .await
            .unwrap();
        assert!(matches!(made, DeployOutcome::Created(_)), "{made:?}");
    }
    // No server behind it: these calls never reach NATS.
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect("nats://127.0.0.1:1")
        .await
        .unwrap();
    let changes = Arc::new(Changes::default());
    let api = AdminApi {
        store: store.clone(),
        js: async_nats::jetstream::new(nats.clone()),
        streams: Default::default(),
        invoker: stoke_bus::Invoker::new(nats, store.clone(), 1 << 20, Duration::from_secs(1)),
        limits: Default::default(),
        secrets: None,
        handles: Handles {
            deployments: changes.clone(),
            queue: Arc::new(Sevens),
            workers: Arc::new(OneWorker),
        },
        insecure_registries: Vec::new(),
        stop: CancellationToken::new(),
    };
    Fixture {
        api,
        store,
        changes,
        _dir: dir,
    }
}

/// `body` from an admin of every namespace.
fn admin<T>(body: T) -> Request<T> {
    call(body, "*", Role::Admin, Role::Admin)
}

/// `body` from a caller of `namespace` with `role`, admitted for `need`.
fn call<T>(body: T, namespace: &str, role: Role, need: Role) -> Request<T> {
    let mut req = Request::new(body);
    req.extensions_mut().insert(Grant {
        caller: Caller {
            token_id: Some("t".into()),
            namespace: namespace.into(),
            role,
        },
        need,
    });
    req
}

#[tokio::test]
async fn a_rollback_or_delete_tells_the_dispatcher_and_stays_in_its_namespace() {
    let f = fixture().await;
    let rollback = |ns: &str| {
        call(
            RollbackRequest {
                name: "f".into(),
                version: 0,
            },
            ns,
            Role::Deployer,
            Role::Deployer,
        )
    };
    let err = f.api.rollback(rollback("b")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("another namespace"), "{err:?}");
    assert_eq!(f.changes.count(), 0, "a refused call changes nothing");
    assert_eq!(f.store.current_version("f").await.unwrap().unwrap().version, 2);

    let info = f.api.rollback(rollback("a")).await.unwrap().into_inner();
    assert_eq!(info.version, 1);
    assert_eq!(f.changes.count(), 1, "the dispatcher is told");

    let delete = call(
        DeleteFunctionRequest { name: "f".into() },
        "a",
        Role::Deployer,
        Role::Deployer,
    );
    f.api.delete_function(delete).await.unwrap();
    assert_eq!(f.changes.count(), 2);
    assert!(f.store.current_version("f").await.unwrap().is_none());
}

/// Deploy `manifest` as a new version of `function` in `namespace`.
async fn deploy(store: &dyn Store, function: &str, namespace: &str, manifest: &str) {
    let digest = stoke_core::package::digest(manifest.as_bytes());
    store.put_package(&digest, b"pkg").await.unwrap();
    let made = store
        .deploy_version(NewVersion {
            function,
            namespace,
            digest: &digest,
            manifest,
            package_size: 3,
            image: "",
            now_ms: 10,
        })
        .await
        .unwrap();
    assert!(matches!(made, DeployOutcome::Created(_)), "{made:?}");
}

#[tokio::test]
async fn a_rollback_cannot_take_back_a_route_another_function_claimed_since() {
    let f = fixture().await;
    let routed = |name: &str, routes: &str| {
        format!("name = \"{name}\"\ncommand = [\"true\"]\n[[triggers]]\nhttp = true\nroutes = [{routes}]\n")
    };
    // f v3 claims GET /shared; v4 lets it go; g takes it.
    deploy(
        f.store.as_ref(),
        "f",
        "a",
        &routed("f", "\"GET /shared\", \"GET /f/{id}\""),
    )
    .await;
    deploy(f.store.as_ref(), "f", "a", &routed("f", "\"GET /f/{id}\"")).await;
    deploy(f.store.as_ref(), "g", "b", &routed("g", "\"GET /shared\"")).await;
    let back_to_3 = call(
        RollbackRequest {
            name: "f".into(),
            version: 3,
        },
        "a",
        Role::Deployer,
        Role::Deployer,
    );
    let err = f.api.rollback(back_to_3).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message()
            .contains("route \"GET /shared\" is already claimed by function \"g\""),
        "{err:?}"
    );
    assert_eq!(f.store.current_version("f").await.unwrap().unwrap().version, 4);
    assert_eq!(f.changes.count(), 0);

    let routes = |ns: &str, role: Role| call(ListRoutesRequest::default(), ns, role, Role::Reader);
    let all = f
        .api
        .list_routes(admin(ListRoutesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = all
        .routes
        .iter()
        .map(|r| (r.route_key.as_str(), r.function.as_str(), r.version))
        .collect();
    assert_eq!(keys, [("GET /f/{id}", "f", 4), ("GET /shared", "g", 1)]);
    let mine = f.api.list_routes(routes("a", Role::Reader)).await.unwrap().into_inner();
    assert_eq!(mine.routes.len(), 1, "a reader of `a` sees a's routes only");
    assert_eq!(mine.routes[0].namespace, "a");
}

#[tokio::test]
async fn the_worker_and_queue_views_come_from_the_dispatchers_handles() {
    let f = fixture().await;
    let workers = f
        .api
        .list_workers(admin(ListWorkersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workers.workers.len(), 1);
    let drained = f
        .api
        .drain_worker(admin(DrainWorkerRequest { id: "w-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert!(drained.draining);
    let err = f
        .api
        .drain_worker(admin(DrainWorkerRequest { id: "w-9".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let queue = |function: &str| {
        call(
            GetQueueRequest {
                function: function.into(),
                by_key: false,
            },
            "a",
            Role::Reader,
            Role::Reader,
        )
    };
    let q = f.api.get_queue(queue("f")).await.unwrap().into_inner();
    assert_eq!((q.functions.len(), q.functions[0].queued), (1, 7));
    let err = f.api.get_queue(queue("nobody")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// A call that reached a handler without passing `Guarded` is refused,
/// never served as anonymous.
#[tokio::test]
async fn a_call_without_a_grant_is_refused() {
    let f = fixture().await;
    let err = f
        .api
        .list_workers(Request::new(ListWorkersRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
}
