//! The `AdminService` handlers: each takes its [`Grant`] (the caller, and
//! the role [`crate::ACCESS`] says the call needs; a call without one, which
//! did not pass `Guarded`, is refused), checks what depends on the request
//! through it, and calls a domain function. Errors become
//! statuses in one place (`From<ApiError> for Status`).

use bytes::Bytes;
use stoke_bus::{InvokeRequest, Invoked};
use stoke_proto::admin_service_server::AdminService;
use stoke_proto::{
    AliasInfo, CreateScheduleRequest, CreateTokenRequest, CreateTokenResponse, DeadLetterInfo, DeleteAliasRequest,
    DeleteAliasResponse, DeleteFunctionRequest, DeleteFunctionResponse, DeleteScheduleResponse, DeployRequest,
    DeployResponse, DrainWorkerRequest, FunctionInfo, GetDeadLetterRequest, GetFunctionRequest, GetInvocationRequest,
    GetLogsRequest, GetLogsResponse, GetQueueRequest, GetQueueResponse, GetUsageRequest, GetUsageResponse,
    InvocationInfo, InvokeResponse, ListAliasesRequest, ListAliasesResponse, ListCronTicksRequest,
    ListCronTicksResponse, ListDeadLettersRequest, ListDeadLettersResponse, ListFunctionsRequest,
    ListFunctionsResponse, ListInvocationsRequest, ListInvocationsResponse, ListRoutesRequest, ListRoutesResponse,
    ListSchedulesRequest, ListSchedulesResponse, ListTokensRequest, ListTokensResponse, ListVersionsRequest,
    ListVersionsResponse, ListWorkersRequest, ListWorkersResponse, LogLine, PublishRequest, PublishResponse,
    PutBlobRequest, PutBlobResponse, RedriveRequest, RedriveResponse, RevokeTokenRequest, RevokeTokenResponse,
    RollbackRequest, ScheduleInfo, ScheduleNameRequest, SetAliasRequest, SetEnvRequest, SetEnvResponse,
    TailLogsRequest, TokenInfo, WhoAmIRequest, WorkerInfo,
};
use stoke_store::DeadLetterFilter;
use tonic::{Request, Response, Status, Streaming};

use crate::AdminApi;
use crate::access::Grant;
use crate::error::ApiError;
use crate::versions::function_info;

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> Answer<T> {
    Ok(Response::new(v))
}

impl AdminApi {
    /// The schedule a schedule-changing call names, once the caller may
    /// change its function's schedules.
    async fn named_schedule(&self, req: Request<ScheduleNameRequest>) -> Result<String, ApiError> {
        let grant = Grant::of(&req)?;
        let name = req.into_inner().name;
        let schedule = self
            .store
            .schedules()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no schedule named {name:?}")))?;
        grant.on_function(self.store.as_ref(), &schedule.function).await?;
        Ok(name)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type TailLogsStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogLine, Status>> + Send>>;
    type PullImageStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<stoke_proto::PullImageProgress, Status>> + Send>>;

    async fn deploy(&self, req: Request<Streaming<DeployRequest>>) -> Answer<DeployResponse> {
        let grant = Grant::of(&req)?;
        let (v, unchanged) = crate::deploy::deploy(self, &grant, req.into_inner()).await?;
        ok(DeployResponse {
            function: Some(function_info(&v)),
            unchanged,
        })
    }

    async fn put_blob(&self, req: Request<Streaming<PutBlobRequest>>) -> Answer<PutBlobResponse> {
        let _grant = Grant::of(&req)?;
        let (digest, size) = crate::deploy::put_blob(self, req.into_inner()).await?;
        ok(PutBlobResponse { digest, size })
    }

    async fn pull_image(&self, req: Request<stoke_proto::PullImageRequest>) -> Answer<Self::PullImageStream> {
        let _grant = Grant::of(&req)?;
        let reference = req.into_inner().reference;
        // The pull runs in its own task, its progress relayed as it comes;
        // the stream ends with the spec's digest, or with the pull's error.
        let puller = crate::pull::Puller::of(self);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let (progress, mut relay) = tokio::sync::mpsc::channel(16);
            let out = tx.clone();
            let forward = async move {
                while let Some(p) = relay.recv().await {
                    let _ = out.send(Ok(p)).await;
                }
            };
            let (result, ()) = tokio::join!(
                async {
                    let r = puller.pull(&reference, &progress).await;
                    drop(progress);
                    r
                },
                forward
            );
            let last = match result {
                Ok((spec_digest, manifest_digest)) => Ok(stoke_proto::PullImageProgress {
                    message: format!("pulled {manifest_digest}: image spec {spec_digest}"),
                    manifest_digest,
                    spec_digest,
                    ..Default::default()
                }),
                Err(e) => {
                    tracing::warn!(%reference, error = %e, "image pull refused");
                    Err(Status::from(e))
                }
            };
            let _ = tx.send(last).await;
        });
        ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn registry_login(
        &self,
        req: Request<stoke_proto::RegistryLoginRequest>,
    ) -> Answer<stoke_proto::RegistryInfo> {
        let r = req.into_inner();
        ok(crate::registries::login(self, &r.host, &r.username, &r.password).await?)
    }

    async fn registry_logout(
        &self,
        req: Request<stoke_proto::RegistryLogoutRequest>,
    ) -> Answer<stoke_proto::RegistryLogoutResponse> {
        crate::registries::logout(self, &req.into_inner().host).await?;
        ok(stoke_proto::RegistryLogoutResponse {})
    }

    async fn list_registries(
        &self,
        _req: Request<stoke_proto::ListRegistriesRequest>,
    ) -> Answer<stoke_proto::ListRegistriesResponse> {
        ok(stoke_proto::ListRegistriesResponse {
            registries: crate::registries::list(self).await?,
        })
    }

    async fn list_functions(&self, req: Request<ListFunctionsRequest>) -> Answer<ListFunctionsResponse> {
        let grant = Grant::of(&req)?;
        let only = req.into_inner().namespace;
        if !only.is_empty() {
            grant.on_namespace(&only)?;
        }
        let fns = self.store.list_functions().await.map_err(ApiError::from)?;
        ok(ListFunctionsResponse {
            functions: fns
                .iter()
                .filter(|v| grant.caller.covers(&v.namespace) && (only.is_empty() || v.namespace == only))
                .map(function_info)
                .collect(),
        })
    }

    async fn list_routes(&self, req: Request<ListRoutesRequest>) -> Answer<ListRoutesResponse> {
        let grant = Grant::of(&req)?;
        let only = req.into_inner().namespace;
        if !only.is_empty() {
            grant.on_namespace(&only)?;
        }
        let visible = |ns: &str| grant.caller.covers(ns) && (only.is_empty() || ns == only);
        ok(ListRoutesResponse {
            routes: crate::routes::list(self.store.as_ref(), visible).await?,
        })
    }

    async fn get_function(&self, req: Request<GetFunctionRequest>) -> Answer<FunctionInfo> {
        let grant = Grant::of(&req)?;
        let name = req.into_inner().name;
        grant.on_function(self.store.as_ref(), &name).await?;
        let v = stoke_store::resolve_version(self.store.as_ref(), &name)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("function {name:?} not found")))?;
        ok(function_info(&v))
    }

    async fn invoke(&self, req: Request<stoke_proto::InvokeRequest>) -> Answer<InvokeResponse> {
        let grant = Grant::of(&req)?;
        // A gRPC caller may pass its trace context as metadata, as HTTP does.
        let meta = |name: &str| req.metadata().get(name).and_then(|v| v.to_str().ok());
        let trace = stoke_core::trace::TraceContext::from_headers(meta("traceparent"), meta("x-amzn-trace-id"));
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.function).await?;
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
                http: None,
                stream: false,
            })
            .await
            .map_err(ApiError::from)?;
        ok(match invoked {
            Invoked::Completed(info) => InvokeResponse {
                invocation_id: info.invocation_id.clone(),
                invocation: Some(info),
            },
            Invoked::Queued { invocation_id }
            | Invoked::StillRunning { invocation_id }
            // (Only a function URL's caller streams.)
            | Invoked::Streaming(stoke_bus::Streamed { invocation_id, .. }) => InvokeResponse {
                invocation_id,
                invocation: None,
            },
        })
    }

    async fn get_invocation(&self, req: Request<GetInvocationRequest>) -> Answer<InvocationInfo> {
        let grant = Grant::of(&req)?;
        let id = req.into_inner().invocation_id;
        let mut info = self
            .invoker
            .status(&id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("invocation {id:?} not found")))?;
        grant.on_function(self.store.as_ref(), &info.function).await?;
        let history = self.store.attempts(&id).await.map_err(ApiError::from)?;
        info.attempt_history = history.iter().map(crate::dlq::attempt_info).collect();
        ok(info)
    }

    async fn get_usage(&self, req: Request<GetUsageRequest>) -> Answer<GetUsageResponse> {
        let grant = Grant::of(&req)?;
        ok(crate::invocations::usage(self.store.as_ref(), &grant, req.into_inner()).await?)
    }

    async fn list_dead_letters(&self, req: Request<ListDeadLettersRequest>) -> Answer<ListDeadLettersResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        if !r.function.is_empty() {
            grant.on_function(self.store.as_ref(), &r.function).await?;
        }
        let filter = DeadLetterFilter {
            function: (!r.function.is_empty()).then_some(r.function),
            since_ms: (r.since_unix_ms != 0).then_some(r.since_unix_ms),
            until_ms: (r.until_unix_ms != 0).then_some(r.until_unix_ms),
            include_redriven: r.include_redriven,
            limit: r.limit,
        };
        let dead = self.store.dead_letters(&filter).await.map_err(ApiError::from)?;
        let dead = grant.visible(self.store.as_ref(), dead, |d| &d.function).await?;
        ok(ListDeadLettersResponse {
            dead_letters: dead.iter().map(|d| crate::dlq::info(d, &[])).collect(),
        })
    }

    async fn get_dead_letter(&self, req: Request<GetDeadLetterRequest>) -> Answer<DeadLetterInfo> {
        let grant = Grant::of(&req)?;
        let id = req.into_inner().invocation_id;
        let d = self
            .store
            .dead_letter(&id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("no dead letter {id:?}")))?;
        grant.on_function(self.store.as_ref(), &d.function).await?;
        let history = self.store.attempts(&id).await.map_err(ApiError::from)?;
        ok(crate::dlq::info(&d, &history))
    }

    async fn redrive(&self, req: Request<RedriveRequest>) -> Answer<RedriveResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        if !r.function.is_empty() {
            grant.on_function(self.store.as_ref(), &r.function).await?;
        } else if !grant.caller.sees_all_namespaces() && r.invocation_ids.is_empty() {
            return Err(ApiError::denied("name the function to redrive: this token covers one namespace").into());
        }
        for id in &r.invocation_ids {
            if let Some(d) = self.store.dead_letter(id).await.map_err(ApiError::from)? {
                grant.on_function(self.store.as_ref(), &d.function).await?;
            }
        }
        ok(crate::dlq::redrive(self.store.as_ref(), &self.invoker, r).await?)
    }

    async fn publish(&self, req: Request<PublishRequest>) -> Answer<PublishResponse> {
        // The role (invoker, in any namespace) is all there is to check.
        Grant::of(&req)?;
        ok(crate::publish::publish(&self.js, req.into_inner()).await?)
    }

    async fn list_cron_ticks(&self, req: Request<ListCronTicksRequest>) -> Answer<ListCronTicksResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        if !r.function.is_empty() {
            grant.on_function(self.store.as_ref(), &r.function).await?;
        }
        let function = (!r.function.is_empty()).then_some(r.function.as_str());
        let ticks = self.store.cron_ticks(function, r.limit).await.map_err(ApiError::from)?;
        let ticks = grant.visible(self.store.as_ref(), ticks, |t| &t.function).await?;
        ok(ListCronTicksResponse {
            ticks: ticks.into_iter().map(crate::schedules::tick_info).collect(),
        })
    }

    async fn create_schedule(&self, req: Request<CreateScheduleRequest>) -> Answer<ScheduleInfo> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.function).await?;
        ok(crate::schedules::create(self.store.as_ref(), r).await?)
    }

    async fn list_schedules(&self, req: Request<ListSchedulesRequest>) -> Answer<ListSchedulesResponse> {
        let grant = Grant::of(&req)?;
        let schedules = crate::schedules::list(self.store.as_ref(), &req.into_inner().function).await?;
        let schedules = grant.visible(self.store.as_ref(), schedules, |s| &s.function).await?;
        ok(ListSchedulesResponse { schedules })
    }

    async fn pause_schedule(&self, req: Request<ScheduleNameRequest>) -> Answer<ScheduleInfo> {
        let name = self.named_schedule(req).await?;
        ok(crate::schedules::set_paused(self.store.as_ref(), &name, true).await?)
    }

    async fn resume_schedule(&self, req: Request<ScheduleNameRequest>) -> Answer<ScheduleInfo> {
        let name = self.named_schedule(req).await?;
        ok(crate::schedules::set_paused(self.store.as_ref(), &name, false).await?)
    }

    async fn delete_schedule(&self, req: Request<ScheduleNameRequest>) -> Answer<DeleteScheduleResponse> {
        let name = self.named_schedule(req).await?;
        if !self.store.delete_schedule(&name).await.map_err(ApiError::from)? {
            return Err(ApiError::not_found(format!("no schedule named {name:?}")).into());
        }
        ok(DeleteScheduleResponse {})
    }

    async fn list_versions(&self, req: Request<ListVersionsRequest>) -> Answer<ListVersionsResponse> {
        let grant = Grant::of(&req)?;
        let name = req.into_inner().name;
        grant.on_function(self.store.as_ref(), &name).await?;
        ok(crate::versions::list(self.store.as_ref(), &name).await?)
    }

    async fn rollback(&self, req: Request<RollbackRequest>) -> Answer<FunctionInfo> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.name).await?;
        let info = crate::versions::rollback(self.store.as_ref(), &r.name, r.version).await?;
        self.handles.deployments.changed();
        ok(info)
    }

    async fn delete_function(&self, req: Request<DeleteFunctionRequest>) -> Answer<DeleteFunctionResponse> {
        let grant = Grant::of(&req)?;
        let name = req.into_inner().name;
        grant.on_function(self.store.as_ref(), &name).await?;
        let done = crate::versions::delete(self.store.as_ref(), &name).await?;
        self.handles.deployments.changed();
        ok(done)
    }

    async fn create_token(&self, req: Request<CreateTokenRequest>) -> Answer<CreateTokenResponse> {
        let grant = Grant::of(&req)?;
        ok(crate::tokens::create(self.store.as_ref(), &grant, req.into_inner()).await?)
    }

    async fn list_tokens(&self, req: Request<ListTokensRequest>) -> Answer<ListTokensResponse> {
        let grant = Grant::of(&req)?;
        let tokens = crate::tokens::list(self.store.as_ref(), &grant.caller).await?;
        ok(ListTokensResponse { tokens })
    }

    async fn revoke_token(&self, req: Request<RevokeTokenRequest>) -> Answer<RevokeTokenResponse> {
        let grant = Grant::of(&req)?;
        crate::tokens::revoke(self.store.as_ref(), &grant.caller, &req.into_inner().id).await?;
        ok(RevokeTokenResponse {})
    }

    async fn who_am_i(&self, req: Request<WhoAmIRequest>) -> Answer<TokenInfo> {
        let grant = Grant::of(&req)?;
        ok(crate::tokens::who_am_i(self.store.as_ref(), grant.caller).await?)
    }

    async fn list_workers(&self, req: Request<ListWorkersRequest>) -> Answer<ListWorkersResponse> {
        // Cluster-wide: checked before the call reached here.
        Grant::of(&req)?;
        ok(ListWorkersResponse {
            workers: self.handles.workers.snapshot(),
        })
    }

    async fn drain_worker(&self, req: Request<DrainWorkerRequest>) -> Answer<WorkerInfo> {
        Grant::of(&req)?;
        let id = req.into_inner().id;
        let drained = self.handles.workers.cordon(&id).ok_or_else(|| {
            ApiError::not_found(format!(
                "worker {id:?} is not attached to this dispatcher (list them with ListWorkers)"
            ))
        })?;
        ok(drained)
    }

    async fn set_env(&self, req: Request<SetEnvRequest>) -> Answer<SetEnvResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.function).await?;
        let done = crate::versions::set_env(self.store.as_ref(), self.secrets.as_deref(), r).await?;
        self.handles.deployments.changed();
        ok(done)
    }

    async fn set_alias(&self, req: Request<SetAliasRequest>) -> Answer<AliasInfo> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.function).await?;
        ok(crate::versions::set_alias(self.store.as_ref(), &r.function, &r.name, r.version).await?)
    }

    async fn list_aliases(&self, req: Request<ListAliasesRequest>) -> Answer<ListAliasesResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.function).await?;
        ok(crate::versions::aliases(self.store.as_ref(), &r.function).await?)
    }

    async fn delete_alias(&self, req: Request<DeleteAliasRequest>) -> Answer<DeleteAliasResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        grant.on_function(self.store.as_ref(), &r.function).await?;
        crate::versions::delete_alias(self.store.as_ref(), &r.function, &r.name).await?;
        ok(DeleteAliasResponse {})
    }

    async fn get_queue(&self, req: Request<GetQueueRequest>) -> Answer<GetQueueResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        let store = self.store.as_ref();
        let versions = if r.function.is_empty() {
            let all = store.list_functions().await.map_err(ApiError::from)?;
            grant.visible(store, all, |v| v.function.as_str()).await?
        } else {
            grant.on_function(store, &r.function).await?;
            let v = store
                .current_version(&r.function)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| ApiError::not_found(format!("function {:?} is not deployed", r.function)))?;
            vec![v]
        };
        let mut functions = Vec::with_capacity(versions.len());
        for v in versions {
            let q = self
                .handles
                .queue
                .function_queue(&v, r.by_key)
                .await
                .map_err(|e| ApiError::nats("cannot read JetStream consumer state", e))?;
            functions.push(q);
        }
        ok(GetQueueResponse { functions })
    }

    async fn list_invocations(&self, req: Request<ListInvocationsRequest>) -> Answer<ListInvocationsResponse> {
        let grant = Grant::of(&req)?;
        ok(crate::invocations::list(self.store.as_ref(), &grant, req.into_inner()).await?)
    }

    async fn get_logs(&self, req: Request<GetLogsRequest>) -> Answer<GetLogsResponse> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        let id = r.invocation_id.trim();
        if id.is_empty() {
            return Err(ApiError::invalid("name the invocation: invocation_id is empty").into());
        }
        let (lines, truncated) = stoke_bus::logs::invocation_lines(&self.js, id, r.attempt)
            .await
            .map_err(ApiError::from)?;
        let function = match lines.first() {
            Some(l) => l.function.clone(),
            // No output stored: an invocation that printed nothing (or whose
            // output has expired), or no invocation at all.
            None => match self.invoker.status(id).await.map_err(ApiError::from)? {
                Some(info) => info.function,
                None => {
                    return Err(ApiError::not_found(format!(
                        "no invocation {id:?}: it has no stored output and no record (output is kept for {}; \
                         a synchronous invocation is recorded once it completes)",
                        crate::logs::kept_for(self.streams.logs_max_age_secs)
                    ))
                    .into());
                }
            },
        };
        grant.on_function(self.store.as_ref(), &function).await?;
        // One id is one function's; should another function's lines share
        // it (an id chosen by a raw NATS publisher), they are not shown.
        let lines: Vec<_> = lines.into_iter().filter(|l| l.function == function).collect();
        ok(GetLogsResponse {
            function,
            lines,
            truncated,
        })
    }

    async fn tail_logs(&self, req: Request<TailLogsRequest>) -> Answer<Self::TailLogsStream> {
        let grant = Grant::of(&req)?;
        let r = req.into_inner();
        stoke_core::manifest::validate_name(&r.function).map_err(|e| ApiError::invalid(e.to_string()))?;
        grant.on_function(self.store.as_ref(), &r.function).await?;
        if self
            .store
            .function_namespace(&r.function)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::not_found(format!("function {:?} not found", r.function)).into());
        }
        if r.since_unix_ms < 0 {
            return Err(ApiError::invalid("since_unix_ms must be a time (Unix ms) or 0").into());
        }
        let tail = crate::logs::Tail {
            function: r.function,
            since_ms: r.since_unix_ms,
            follow: r.follow,
        };
        let lines = crate::logs::tail(self.js.clone(), tail, self.stop.clone()).await?;
        ok(Box::pin(lines))
    }
}
