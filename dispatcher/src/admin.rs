//! The gRPC admin API (`AdminService`) the `stoke` CLI drives.

use std::sync::Arc;

use bytes::Bytes;
use stoke_auth::{Authenticator, Role};
use stoke_bus::{InvokeError, InvokeRequest, Invoked, Invoker};
use stoke_core::Manifest;
use stoke_core::manifest::MANIFEST_FILE;
use stoke_core::package::{self, Limits};
use stoke_proto::admin_service_server::AdminService;
use stoke_proto::{
    CreateScheduleRequest, DeleteScheduleResponse, ListSchedulesRequest, ListSchedulesResponse, ScheduleInfo,
    ScheduleNameRequest,
};
use stoke_proto::{
    CreateTokenRequest, CreateTokenResponse, DeleteFunctionRequest, DeleteFunctionResponse, ListTokensRequest,
    ListTokensResponse, ListVersionsRequest, ListVersionsResponse, RevokeTokenRequest, RevokeTokenResponse,
    RollbackRequest, TokenInfo, WhoAmIRequest,
};
use stoke_proto::{
    DeadLetterInfo, DeployRequest, DeployResponse, FunctionInfo, GetDeadLetterRequest, GetFunctionRequest,
    GetInvocationRequest, GetUsageRequest, GetUsageResponse, InvocationInfo, InvokeResponse, ListCronTicksRequest,
    ListCronTicksResponse, ListDeadLettersRequest, ListDeadLettersResponse, ListFunctionsRequest,
    ListFunctionsResponse, PublishRequest, PublishResponse, RedriveRequest, RedriveResponse, deploy_request,
};
use stoke_store::{DeadLetterFilter, DeployOutcome, FunctionVersion, NewVersion, Store, StoreError};
use tonic::{Request, Response, Status, Streaming};

use crate::guard;

pub(crate) struct AdminApi {
    pub store: Arc<dyn Store>,
    pub js: async_nats::jetstream::Context,
    pub streams: stoke_bus::streams::StreamOptions,
    pub invoker: Invoker,
    pub deployed: Arc<crate::current::Deployments>,
    pub limits: Limits,
    pub auth: Authenticator,
    pub registry: Arc<crate::workers::Registry>,
    /// The pullers' delivery state, for the queue view.
    pub delivery: Arc<crate::pull::Ctx>,
    /// Cancelled when the dispatcher stops: ends log tails.
    pub stop: tokio_util::sync::CancellationToken,
}

pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(format!("store unavailable: {m}")),
        other => Status::internal(other.to_string()),
    }
}

fn invoke_status(e: InvokeError) -> Status {
    let msg = e.to_string();
    match e {
        InvokeError::NotFound(_) => Status::not_found(msg),
        InvokeError::NoHttpTrigger(_) | InvokeError::BadManifest(..) => Status::failed_precondition(msg),
        InvokeError::PayloadTooLarge { .. } => Status::resource_exhausted(msg),
        InvokeError::InvalidKey(_) => Status::invalid_argument(msg),
        InvokeError::Unavailable(_) => Status::unavailable(msg),
        InvokeError::KeyConflict(_) => Status::already_exists(msg),
        InvokeError::Unauthenticated(_) => Status::unauthenticated(msg),
        InvokeError::Forbidden(_) => Status::permission_denied(msg),
    }
}

/// The wire view of a deployed version.
pub(crate) fn function_info(v: &FunctionVersion) -> FunctionInfo {
    let manifest = Manifest::parse(&v.manifest).ok();
    FunctionInfo {
        name: v.function.clone(),
        version: v.version,
        digest: v.digest.clone(),
        package_size: v.package_size,
        memory_mb: manifest.as_ref().map_or(0, |m| m.memory),
        timeout_ms: manifest.as_ref().map_or(0, |m| m.timeout_ms() as u32),
        command: manifest.as_ref().map(|m| m.command.clone()).unwrap_or_default(),
        manifest: v.manifest.clone(),
        created_unix_ms: v.created_ms,
        triggers: manifest
            .and_then(|m| m.triggers().ok())
            .map(|ts| ts.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        namespace: v.namespace.clone(),
        env: v.config.env.clone().into_iter().collect(),
        secret_names: v.config.secrets.keys().cloned().collect(),
    }
}

impl AdminApi {
    /// A schedule-changing call: deployer on the schedule's function.
    async fn schedule_guard(&self, req: Request<ScheduleNameRequest>) -> Result<String, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Deployer)?;
        let name = req.into_inner().name;
        let schedule = self
            .store
            .schedules()
            .await
            .map_err(store_status)?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Status::not_found(format!("no schedule named {name:?}")))?;
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &schedule.function).await?;
        Ok(name)
    }

    /// Receive the archive: header first, then chunks, never more than the
    /// package limit. Returns the digest, the archive and the namespace asked for.
    async fn receive(&self, mut parts: Streaming<DeployRequest>) -> Result<(String, Vec<u8>, String), Status> {
        let limit = self.limits.max_archive_bytes;
        let header = match parts.message().await? {
            Some(DeployRequest {
                part: Some(deploy_request::Part::Header(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("the first Deploy message must be the header")),
        };
        if header.size > limit {
            return Err(Status::invalid_argument(format!(
                "package is {} bytes, over the {limit}-byte limit",
                header.size
            )));
        }
        let mut data = Vec::with_capacity(header.size as usize);
        while let Some(part) = parts.message().await? {
            match part.part {
                Some(deploy_request::Part::Chunk(c)) => {
                    if (data.len() + c.len()) as u64 > header.size {
                        return Err(Status::invalid_argument(format!(
                            "package is larger than the {} bytes its header declared",
                            header.size
                        )));
                    }
                    data.extend_from_slice(&c);
                }
                _ => return Err(Status::invalid_argument("only chunks may follow the Deploy header")),
            }
        }
        if data.len() as u64 != header.size {
            return Err(Status::invalid_argument(format!(
                "package ended after {} of {} bytes",
                data.len(),
                header.size
            )));
        }
        let digest = package::digest(&data);
        if digest != header.digest {
            return Err(Status::invalid_argument(format!(
                "package digest is {digest}, the header said {}",
                header.digest
            )));
        }
        Ok((digest, data, header.namespace))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type TailLogsStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<stoke_proto::LogLine, Status>> + Send>>;

    async fn deploy(&self, req: Request<Streaming<DeployRequest>>) -> Result<Response<DeployResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        // Refuse before reading a byte of the package.
        guard::role(&caller, Role::Deployer)?;
        let (digest, data, asked) = self.receive(req.into_inner()).await?;
        let namespace = caller.target_namespace(&asked);
        stoke_auth::validate_namespace(&namespace).map_err(guard::auth_status)?;
        caller.require(Role::Deployer, &namespace).map_err(guard::auth_status)?;
        // Unpack into a scratch dir to validate exactly what workers will run.
        let limits = self.limits;
        let (data, manifest, text) = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().map_err(|e| Status::internal(format!("scratch dir: {e}")))?;
            package::unpack(&data, dir.path(), &limits).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let manifest = Manifest::load_dir(dir.path()).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE))
                .map_err(|e| Status::invalid_argument(format!("{MANIFEST_FILE}: {e}")))?;
            Ok::<_, Status>((data, manifest, text))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        if let Some(owner) = self
            .store
            .function_namespace(&manifest.name)
            .await
            .map_err(store_status)?
            && owner != namespace
        {
            // Checked before subscribing, so a refused deploy creates nothing.
            return Err(guard::owned_elsewhere(&manifest.name, &namespace));
        }

        // Subscriptions exist before the deploy is acknowledged: from then
        // on, every message on the subject is captured for this function.
        for trigger in manifest
            .triggers()
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        {
            if let stoke_core::Trigger::Subject { subject, batch } = trigger {
                stoke_bus::streams::ensure_subscription(
                    &self.js,
                    &self.streams,
                    &manifest.name,
                    &subject,
                    stoke_bus::streams::Holding::of(&manifest, batch),
                )
                .await
                .map_err(|e| Status::unavailable(format!("cannot subscribe {} to {subject:?}: {e}", manifest.name)))?;
            }
        }

        self.store.put_package(&digest, &data).await.map_err(store_status)?;
        let outcome = self
            .store
            .deploy_version(NewVersion {
                function: &manifest.name,
                namespace: &namespace,
                digest: &digest,
                manifest: &text,
                package_size: data.len() as u64,
                now_ms: stoke_core::now_ms(),
            })
            .await
            .map_err(store_status)?;
        let (v, unchanged) = match outcome {
            DeployOutcome::Created(v) => (v, false),
            DeployOutcome::Unchanged(v) => (v, true),
            // A first deploy from another namespace won the race since the check above.
            DeployOutcome::OtherNamespace(_) => return Err(guard::owned_elsewhere(&manifest.name, &namespace)),
            DeployOutcome::NotDeployed | DeployOutcome::InvalidConfig(_) => {
                return Err(Status::internal("a package deploy came back as a configuration edit"));
            }
        };
        tracing::info!(function = %v.function, version = v.version, %digest, unchanged, "deployed");
        self.deployed.changed();
        Ok(Response::new(DeployResponse {
            function: Some(function_info(&v)),
            unchanged,
        }))
    }

    async fn list_functions(
        &self,
        req: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let only = req.into_inner().namespace;
        if only.is_empty() {
            guard::role(&caller, Role::Reader)?;
        } else {
            caller.require(Role::Reader, &only).map_err(guard::auth_status)?;
        }
        let fns = self.store.list_functions().await.map_err(store_status)?;
        Ok(Response::new(ListFunctionsResponse {
            functions: fns
                .iter()
                .filter(|v| caller.covers(&v.namespace) && (only.is_empty() || v.namespace == only))
                .map(function_info)
                .collect(),
        }))
    }

    async fn get_function(&self, req: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let name = req.into_inner().name;
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &name).await?;
        let v = stoke_store::resolve_version(self.store.as_ref(), &name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("function {name:?} not found")))?;
        Ok(Response::new(function_info(&v)))
    }

    async fn invoke(&self, req: Request<stoke_proto::InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        // A gRPC caller may pass its trace context as metadata, as HTTP does.
        let meta = |name: &str| req.metadata().get(name).and_then(|v| v.to_str().ok());
        let trace = stoke_core::trace::TraceContext::from_headers(meta("traceparent"), meta("x-amzn-trace-id"));
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Invoker, &r.function).await?;
        let invoked = self
            .invoker
            .invoke(InvokeRequest {
                function: r.function,
                payload: Bytes::from(r.payload),
                idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
                trigger: "admin",
                wait: !r.r#async,
                via: stoke_bus::Via::Platform,
                trace,
            })
            .await
            .map_err(invoke_status)?;
        Ok(Response::new(match invoked {
            Invoked::Completed(info) => InvokeResponse {
                invocation_id: info.invocation_id.clone(),
                invocation: Some(info),
            },
            Invoked::Queued { invocation_id } | Invoked::StillRunning { invocation_id } => InvokeResponse {
                invocation_id,
                invocation: None,
            },
        }))
    }

    async fn get_invocation(&self, req: Request<GetInvocationRequest>) -> Result<Response<InvocationInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Reader)?;
        let id = req.into_inner().invocation_id;
        let mut info = self
            .invoker
            .status(&id)
            .await
            .map_err(invoke_status)?
            .ok_or_else(|| Status::not_found(format!("invocation {id:?} not found")))?;
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &info.function).await?;
        let history = self.store.attempts(&id).await.map_err(store_status)?;
        info.attempt_history = history.iter().map(crate::dlq::attempt_info).collect();
        Ok(Response::new(info))
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Result<Response<GetUsageResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        crate::invocations::usage(self.store.as_ref(), &caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_dead_letters(
        &self,
        req: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Reader)?;
        let r = req.into_inner();
        if !r.function.is_empty() {
            guard::on_function(self.store.as_ref(), &caller, Role::Reader, &r.function).await?;
        }
        let filter = DeadLetterFilter {
            function: (!r.function.is_empty()).then_some(r.function),
            since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
            until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
            include_redriven: r.include_redriven,
            limit: r.limit,
        };
        let dead = self.store.dead_letters(&filter).await.map_err(store_status)?;
        let dead = guard::visible(self.store.as_ref(), &caller, dead, |d| &d.function).await?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: dead.iter().map(|d| crate::dlq::info(d, &[])).collect(),
        }))
    }

    async fn get_dead_letter(&self, req: Request<GetDeadLetterRequest>) -> Result<Response<DeadLetterInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Reader)?;
        let id = req.into_inner().invocation_id;
        let d = self
            .store
            .dead_letter(&id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no dead letter {id:?}")))?;
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &d.function).await?;
        let history = self.store.attempts(&id).await.map_err(store_status)?;
        Ok(Response::new(crate::dlq::info(&d, &history)))
    }

    async fn redrive(&self, req: Request<RedriveRequest>) -> Result<Response<RedriveResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Deployer)?;
        let r = req.into_inner();
        if !r.function.is_empty() {
            guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &r.function).await?;
        } else if !caller.sees_all_namespaces() && r.invocation_ids.is_empty() {
            return Err(Status::permission_denied(
                "name the function to redrive: this token covers one namespace",
            ));
        }
        for id in &r.invocation_ids {
            if let Some(d) = self.store.dead_letter(id).await.map_err(store_status)? {
                guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &d.function).await?;
            }
        }
        crate::dlq::redrive(self.store.as_ref(), &self.invoker, r)
            .await
            .map(Response::new)
    }

    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        // Subjects are one bus for the cluster (as for any NATS client):
        // publishing needs the invoker role, in whatever namespace.
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Invoker)?;
        let r = req.into_inner();
        stoke_core::manifest::validate_subject(&r.subject)
            .map_err(|e| Status::invalid_argument(format!("subject: {e}")))?;
        if r.subject.contains('*') || r.subject.contains('>') {
            return Err(Status::invalid_argument(
                "publish to a concrete subject, not a wildcard",
            ));
        }
        let mut headers = async_nats::HeaderMap::new();
        if !r.msg_id.is_empty() {
            headers.insert(stoke_core::naming::headers::MSG_ID, r.msg_id.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(r.subject.clone(), headers, r.payload.into())
            .await
            .map_err(|e| Status::unavailable(format!("nats publish: {e}")))?
            .await
            .map_err(|e| match e.kind() {
                async_nats::jetstream::context::PublishErrorKind::StreamNotFound => Status::failed_precondition(
                    format!("no function subscribes to {:?}: nothing would capture it", r.subject),
                ),
                _ => Status::unavailable(format!("nats publish ack: {e}")),
            })?;
        Ok(Response::new(PublishResponse {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        }))
    }

    async fn list_cron_ticks(
        &self,
        req: Request<ListCronTicksRequest>,
    ) -> Result<Response<ListCronTicksResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Reader)?;
        let r = req.into_inner();
        if !r.function.is_empty() {
            guard::on_function(self.store.as_ref(), &caller, Role::Reader, &r.function).await?;
        }
        let function = (!r.function.is_empty()).then_some(r.function.as_str());
        let ticks = self.store.cron_ticks(function, r.limit).await.map_err(store_status)?;
        let ticks = guard::visible(self.store.as_ref(), &caller, ticks, |t| &t.function).await?;
        Ok(Response::new(ListCronTicksResponse {
            ticks: ticks
                .into_iter()
                .map(|t| stoke_proto::CronTickInfo {
                    schedule_id: t.schedule_id,
                    function: t.function,
                    scheduled_unix_ms: t.scheduled_ms,
                    outcome: t.outcome.as_str().into(),
                    invocation_id: t.invocation_id.unwrap_or_default(),
                    recorded_unix_ms: t.recorded_ms,
                })
                .collect(),
        }))
    }

    async fn create_schedule(&self, req: Request<CreateScheduleRequest>) -> Result<Response<ScheduleInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &r.function).await?;
        crate::schedules::create(self.store.as_ref(), r)
            .await
            .map(Response::new)
    }

    async fn list_schedules(
        &self,
        req: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Reader)?;
        let schedules = crate::schedules::list(self.store.as_ref(), &req.into_inner().function).await?;
        let schedules = guard::visible(self.store.as_ref(), &caller, schedules, |s| &s.function).await?;
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(&self, req: Request<ScheduleNameRequest>) -> Result<Response<ScheduleInfo>, Status> {
        let name = self.schedule_guard(req).await?;
        crate::schedules::set_paused(self.store.as_ref(), &name, true)
            .await
            .map(Response::new)
    }

    async fn resume_schedule(&self, req: Request<ScheduleNameRequest>) -> Result<Response<ScheduleInfo>, Status> {
        let name = self.schedule_guard(req).await?;
        crate::schedules::set_paused(self.store.as_ref(), &name, false)
            .await
            .map(Response::new)
    }

    async fn delete_schedule(
        &self,
        req: Request<ScheduleNameRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let name = self.schedule_guard(req).await?;
        if !self.store.delete_schedule(&name).await.map_err(store_status)? {
            return Err(Status::not_found(format!("no schedule named {name:?}")));
        }
        Ok(Response::new(DeleteScheduleResponse {}))
    }

    async fn list_versions(&self, req: Request<ListVersionsRequest>) -> Result<Response<ListVersionsResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let name = req.into_inner().name;
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &name).await?;
        crate::versions::list(self.store.as_ref(), &name)
            .await
            .map(Response::new)
    }

    async fn rollback(&self, req: Request<RollbackRequest>) -> Result<Response<FunctionInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &r.name).await?;
        let info = crate::versions::rollback(self.store.as_ref(), &r.name, r.version).await?;
        self.deployed.changed();
        Ok(Response::new(info))
    }

    async fn delete_function(
        &self,
        req: Request<DeleteFunctionRequest>,
    ) -> Result<Response<DeleteFunctionResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let name = req.into_inner().name;
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &name).await?;
        let done = crate::versions::delete(self.store.as_ref(), &name).await?;
        self.deployed.changed();
        Ok(Response::new(done))
    }

    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        crate::tokens::create(self.store.as_ref(), &caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_tokens(&self, req: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let tokens = crate::tokens::list(self.store.as_ref(), &caller).await?;
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(&self, req: Request<RevokeTokenRequest>) -> Result<Response<RevokeTokenResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        crate::tokens::revoke(self.store.as_ref(), &caller, &req.into_inner().id).await?;
        Ok(Response::new(RevokeTokenResponse {}))
    }

    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Result<Response<TokenInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let token = match &caller.token_id {
            Some(id) => self
                .store
                .tokens()
                .await
                .map_err(store_status)?
                .iter()
                .find(|t| &t.id == id)
                .map(crate::tokens::info),
            None => None,
        };
        Ok(Response::new(token.unwrap_or(TokenInfo {
            id: String::new(),
            name: "(auth off: every caller is an admin of every namespace)".into(),
            namespace: caller.namespace,
            role: caller.role.to_string(),
            created_unix_ms: 0,
            revoked_unix_ms: 0,
        })))
    }

    async fn list_workers(
        &self,
        req: Request<stoke_proto::ListWorkersRequest>,
    ) -> Result<Response<stoke_proto::ListWorkersResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::cluster_admin(&caller)?;
        Ok(Response::new(stoke_proto::ListWorkersResponse {
            workers: self.registry.snapshot(),
        }))
    }

    async fn drain_worker(
        &self,
        req: Request<stoke_proto::DrainWorkerRequest>,
    ) -> Result<Response<stoke_proto::WorkerInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::cluster_admin(&caller)?;
        let id = req.into_inner().id;
        self.registry.cordon(&id).map(Response::new).ok_or_else(|| {
            Status::not_found(format!(
                "worker {id:?} is not attached to this dispatcher (list them with ListWorkers)"
            ))
        })
    }

    async fn set_env(
        &self,
        req: Request<stoke_proto::SetEnvRequest>,
    ) -> Result<Response<stoke_proto::SetEnvResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &r.function).await?;
        let done = crate::versions::set_env(self.store.as_ref(), self.delivery.shared.secrets.as_deref(), r).await?;
        self.deployed.changed();
        Ok(Response::new(done))
    }

    async fn set_alias(
        &self,
        req: Request<stoke_proto::SetAliasRequest>,
    ) -> Result<Response<stoke_proto::AliasInfo>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &r.function).await?;
        crate::versions::set_alias(self.store.as_ref(), &r.function, &r.name, r.version)
            .await
            .map(Response::new)
    }

    async fn list_aliases(
        &self,
        req: Request<stoke_proto::ListAliasesRequest>,
    ) -> Result<Response<stoke_proto::ListAliasesResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &r.function).await?;
        crate::versions::aliases(self.store.as_ref(), &r.function)
            .await
            .map(Response::new)
    }

    async fn delete_alias(
        &self,
        req: Request<stoke_proto::DeleteAliasRequest>,
    ) -> Result<Response<stoke_proto::DeleteAliasResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        guard::on_function(self.store.as_ref(), &caller, Role::Deployer, &r.function).await?;
        crate::versions::delete_alias(self.store.as_ref(), &r.function, &r.name).await?;
        Ok(Response::new(stoke_proto::DeleteAliasResponse {}))
    }

    async fn get_queue(
        &self,
        req: Request<stoke_proto::GetQueueRequest>,
    ) -> Result<Response<stoke_proto::GetQueueResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        let versions = if r.function.is_empty() {
            guard::role(&caller, Role::Reader)?;
            let all = self.store.list_functions().await.map_err(store_status)?;
            guard::visible(self.store.as_ref(), &caller, all, |v| v.function.as_str()).await?
        } else {
            guard::on_function(self.store.as_ref(), &caller, Role::Reader, &r.function).await?;
            let v = self
                .store
                .current_version(&r.function)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("function {:?} is not deployed", r.function)))?;
            vec![v]
        };
        let mut functions = Vec::with_capacity(versions.len());
        for v in versions {
            let q = crate::queue::function_queue(&self.delivery, &self.js, &v, r.by_key)
                .await
                .map_err(|e| Status::unavailable(format!("cannot read JetStream consumer state: {e}")))?;
            functions.push(q);
        }
        Ok(Response::new(stoke_proto::GetQueueResponse { functions }))
    }

    async fn list_invocations(
        &self,
        req: Request<stoke_proto::ListInvocationsRequest>,
    ) -> Result<Response<stoke_proto::ListInvocationsResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        crate::invocations::list(self.store.as_ref(), &caller, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_logs(
        &self,
        req: Request<stoke_proto::GetLogsRequest>,
    ) -> Result<Response<stoke_proto::GetLogsResponse>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        guard::role(&caller, Role::Reader)?;
        let r = req.into_inner();
        let id = r.invocation_id.trim();
        if id.is_empty() {
            return Err(Status::invalid_argument("name the invocation: invocation_id is empty"));
        }
        let (lines, truncated) = crate::logs::invocation_lines(&self.js, id, r.attempt).await?;
        let function = match lines.first() {
            Some(l) => l.function.clone(),
            // No output stored: an invocation that printed nothing (or whose
            // output has expired), or no invocation at all.
            None => match self.invoker.status(id).await.map_err(invoke_status)? {
                Some(info) => info.function,
                None => {
                    return Err(Status::not_found(format!(
                        "no invocation {id:?}: it has no stored output and no record (output is kept for {}; \
                         a synchronous invocation is recorded once it completes)",
                        crate::logs::kept_for(self.streams.logs_max_age_secs)
                    )));
                }
            },
        };
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &function).await?;
        // One id is one function's; should another function's lines share
        // it (an id chosen by a raw NATS publisher), they are not shown.
        let lines: Vec<_> = lines.into_iter().filter(|l| l.function == function).collect();
        Ok(Response::new(stoke_proto::GetLogsResponse {
            function,
            lines,
            truncated,
        }))
    }

    async fn tail_logs(
        &self,
        req: Request<stoke_proto::TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, Status> {
        let caller = guard::caller(&self.auth, &req).await?;
        let r = req.into_inner();
        stoke_core::manifest::validate_name(&r.function).map_err(|e| Status::invalid_argument(e.to_string()))?;
        guard::on_function(self.store.as_ref(), &caller, Role::Reader, &r.function).await?;
        if self
            .store
            .function_namespace(&r.function)
            .await
            .map_err(store_status)?
            .is_none()
        {
            return Err(Status::not_found(format!("function {:?} not found", r.function)));
        }
        if r.since_unix_ms < 0 {
            return Err(Status::invalid_argument("since_unix_ms must be a time (Unix ms) or 0"));
        }
        let tail = crate::logs::Tail {
            function: r.function,
            since_ms: r.since_unix_ms,
            follow: r.follow,
        };
        let lines = crate::logs::tail(self.js.clone(), tail, self.stop.clone()).await?;
        Ok(Response::new(Box::pin(lines)))
    }
}
