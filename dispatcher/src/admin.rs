//! The gRPC admin API (`AdminService`) the `stoke` CLI drives.

use std::sync::Arc;

use bytes::Bytes;
use stoke_broker::invoke::{InvokeError, InvokeRequest, Invoked, Invoker};
use stoke_core::Manifest;
use stoke_core::manifest::MANIFEST_FILE;
use stoke_core::package::{self, Limits};
use stoke_proto::admin_service_server::AdminService;
use stoke_proto::{
    CreateScheduleRequest, DeleteScheduleResponse, ListSchedulesRequest, ListSchedulesResponse, ScheduleInfo,
    ScheduleNameRequest,
};
use stoke_proto::{
    DeadLetterInfo, DeployRequest, DeployResponse, FunctionInfo, GetDeadLetterRequest, GetFunctionRequest,
    GetInvocationRequest, GetUsageRequest, GetUsageResponse, InvocationInfo, InvokeResponse, ListCronTicksRequest,
    ListCronTicksResponse, ListDeadLettersRequest, ListDeadLettersResponse, ListFunctionsRequest,
    ListFunctionsResponse, PublishRequest, PublishResponse, RedriveRequest, RedriveResponse, UsageRow, deploy_request,
};
use stoke_store::{DeadLetterFilter, DeployOutcome, FunctionVersion, NewVersion, Store, StoreError, UsageFilter};
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

pub(crate) struct AdminApi {
    pub store: Arc<dyn Store>,
    pub js: async_nats::jetstream::Context,
    pub streams: stoke_broker::streams::StreamOptions,
    pub invoker: Invoker,
    pub deployed: Arc<Notify>,
    pub limits: Limits,
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
    }
}

impl AdminApi {
    /// Receive the archive: header first, then chunks, never more than the
    /// package limit.
    async fn receive(&self, mut parts: Streaming<DeployRequest>) -> Result<(String, Vec<u8>), Status> {
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
        Ok((digest, data))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn deploy(&self, req: Request<Streaming<DeployRequest>>) -> Result<Response<DeployResponse>, Status> {
        let (digest, data) = self.receive(req.into_inner()).await?;
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

        // Subscriptions exist before the deploy is acknowledged: from then
        // on, every message on the subject is captured for this function.
        for trigger in manifest
            .triggers()
            .map_err(|e| Status::invalid_argument(e.to_string()))?
        {
            if let stoke_core::Trigger::Subject { subject, batch } = trigger {
                stoke_broker::streams::ensure_subscription(
                    &self.js,
                    &self.streams,
                    &manifest.name,
                    &subject,
                    stoke_broker::streams::Holding::of(&manifest, batch),
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
        };
        tracing::info!(function = %v.function, version = v.version, %digest, unchanged, "deployed");
        self.deployed.notify_one();
        Ok(Response::new(DeployResponse {
            function: Some(function_info(&v)),
            unchanged,
        }))
    }

    async fn list_functions(
        &self,
        _req: Request<ListFunctionsRequest>,
    ) -> Result<Response<ListFunctionsResponse>, Status> {
        let fns = self.store.list_functions().await.map_err(store_status)?;
        Ok(Response::new(ListFunctionsResponse {
            functions: fns.iter().map(function_info).collect(),
        }))
    }

    async fn get_function(&self, req: Request<GetFunctionRequest>) -> Result<Response<FunctionInfo>, Status> {
        let name = req.into_inner().name;
        let v = self
            .store
            .current_version(&name)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("function {name:?} not found")))?;
        Ok(Response::new(function_info(&v)))
    }

    async fn invoke(&self, req: Request<stoke_proto::InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
        let r = req.into_inner();
        let invoked = self
            .invoker
            .invoke(InvokeRequest {
                function: r.function,
                payload: Bytes::from(r.payload),
                idempotency_key: (!r.idempotency_key.is_empty()).then_some(r.idempotency_key),
                trigger: "admin",
                wait: !r.r#async,
                require_http_trigger: false,
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
        let id = req.into_inner().invocation_id;
        self.invoker
            .status(&id)
            .await
            .map_err(invoke_status)?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("invocation {id:?} not found")))
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Result<Response<GetUsageResponse>, Status> {
        let r = req.into_inner();
        let filter = UsageFilter {
            function: (!r.function.is_empty()).then_some(r.function),
            since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
            until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
        };
        let rows = self.store.usage(&filter).await.map_err(store_status)?;
        Ok(Response::new(GetUsageResponse {
            rows: rows
                .iter()
                .map(|u| UsageRow {
                    function: u.function.clone(),
                    attempts: u.attempts,
                    errors: u.errors,
                    cold_starts: u.cold_starts,
                    billed_ms: u.billed_ms,
                    gb_seconds: u.gb_seconds(),
                })
                .collect(),
        }))
    }

    async fn list_dead_letters(
        &self,
        req: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let r = req.into_inner();
        let filter = DeadLetterFilter {
            function: (!r.function.is_empty()).then_some(r.function),
            since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
            until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
            include_redriven: r.include_redriven,
            limit: r.limit,
        };
        let dead = self.store.dead_letters(&filter).await.map_err(store_status)?;
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: dead.iter().map(|d| crate::dlq::info(d, &[])).collect(),
        }))
    }

    async fn get_dead_letter(&self, req: Request<GetDeadLetterRequest>) -> Result<Response<DeadLetterInfo>, Status> {
        let id = req.into_inner().invocation_id;
        let d = self
            .store
            .dead_letter(&id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("no dead letter {id:?}")))?;
        let history = self.store.attempts(&id).await.map_err(store_status)?;
        Ok(Response::new(crate::dlq::info(&d, &history)))
    }

    async fn redrive(&self, req: Request<RedriveRequest>) -> Result<Response<RedriveResponse>, Status> {
        crate::dlq::redrive(self.store.as_ref(), &self.invoker, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
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
        let r = req.into_inner();
        let function = (!r.function.is_empty()).then_some(r.function.as_str());
        let ticks = self.store.cron_ticks(function, r.limit).await.map_err(store_status)?;
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
        crate::schedules::create(self.store.as_ref(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_schedules(
        &self,
        req: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        let schedules = crate::schedules::list(self.store.as_ref(), &req.into_inner().function).await?;
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(&self, req: Request<ScheduleNameRequest>) -> Result<Response<ScheduleInfo>, Status> {
        crate::schedules::set_paused(self.store.as_ref(), &req.into_inner().name, true)
            .await
            .map(Response::new)
    }

    async fn resume_schedule(&self, req: Request<ScheduleNameRequest>) -> Result<Response<ScheduleInfo>, Status> {
        crate::schedules::set_paused(self.store.as_ref(), &req.into_inner().name, false)
            .await
            .map(Response::new)
    }

    async fn delete_schedule(
        &self,
        req: Request<ScheduleNameRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        let name = req.into_inner().name;
        if !self.store.delete_schedule(&name).await.map_err(store_status)? {
            return Err(Status::not_found(format!("no schedule named {name:?}")));
        }
        Ok(Response::new(DeleteScheduleResponse {}))
    }
}
