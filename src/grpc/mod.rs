//! tonic layer: request -> one domain call -> response. Validation errors and domain errors
//! become a `Status` in `status.rs` only.

mod batch;
mod convert;
mod status;

pub use status::{auth_status, code_name};

use tonic::{body::Body, codegen::http};

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument, Span, debug_span, field::Empty};

use crate::{
    audit::{self, Origin},
    auth::{AuthError, AuthErrorKind, Caller, Gate, Rpc},
    metrics::RateLimitedBy,
    proto::{self, secret_rotation_service_server::SecretRotationService},
    rotation::{
        ClientId, Ledger, RotateCommand, RotationError, RotationService, SecretIssuer, SecretStore,
        ValidationError,
    },
};
use uuid::Uuid;

pub struct RotationApi<I, S, L> {
    service: Arc<RotationService<I, S, L>>,
    gate: Arc<Gate>,
    refusals: Arc<audit::Refusals>,
    deadlines: Deadlines,
}

/// The deadline of a call without `grpc-timeout`, and the cap on callers' deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub default: Duration,
    pub max: Duration,
}

impl<I, S, L> RotationApi<I, S, L> {
    pub fn new(
        service: Arc<RotationService<I, S, L>>,
        gate: Arc<Gate>,
        refusals: Arc<audit::Refusals>,
        deadlines: Deadlines,
    ) -> Self {
        Self {
            service,
            gate,
            refusals,
            deadlines,
        }
    }

    /// A refused attempt: counted against its address (beyond its rate, the refusal becomes
    /// a throttle, RESOURCE_EXHAUSTED), and audited, repeats aggregated. The client id is
    /// recorded only when it is a valid one: anything else is the caller's raw input.
    fn refuse(&self, origin: &Origin, client_id: &str, err: AuthError) -> Status {
        let err = match err.kind() {
            AuthErrorKind::Unauthenticated | AuthErrorKind::PermissionDenied => {
                let peer = origin
                    .peer
                    .as_deref()
                    .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
                    .map(|a| a.ip());
                self.gate.count_refusal(peer).err().unwrap_or(err)
            }
            _ => err,
        };
        let client_id = match err.kind() {
            // A throttled address's refusals are one kind, whatever they named.
            AuthErrorKind::Throttled => "",
            _ => ClientId::parse(client_id).map_or("", |_| client_id),
        };
        let origin = match err.kind() {
            AuthErrorKind::Throttled => &Origin {
                caller: None,
                ..origin.clone()
            },
            _ => origin,
        };
        let limited = match &err {
            AuthError::RateLimited { .. } => Some(RateLimitedBy::Caller),
            AuthError::StatusRateLimited { .. } => Some(RateLimitedBy::Status),
            AuthError::RefusalsThrottled { .. } => Some(RateLimitedBy::Address),
            _ => None,
        };
        if let Some(by) = limited {
            crate::metrics::rate_limited(by);
        }
        self.refusals.denied(origin, client_id, err.kind().as_str());
        err.into()
    }

    /// The caller of a call, with where the call came from; a refusal is audited.
    fn authenticate<T>(
        &self,
        call: &Call,
        request: &Request<T>,
        client_id: &str,
    ) -> Result<(Origin, Caller), Status> {
        let mut origin = Origin {
            caller: None,
            peer: request.remote_addr().map(|a| a.to_string()),
            trace_id: call.trace_id.clone(),
            on_behalf_of: None,
            service_actor: None,
        };
        let caller = self
            .gate
            .authenticate(request)
            .map_err(|e| self.refuse(&origin, client_id, e))?;
        origin.caller = Some(caller.id.clone());
        Ok((origin, caller))
    }

    /// Authorization and the rate limit (promotions and cancellations count as rotations).
    fn admit(&self, caller: &Caller, rpc: Rpc, client_id: &ClientId) -> Result<(), AuthError> {
        self.gate
            .authorize(caller, rpc, client_id.as_str())
            .and_then(|()| self.gate.admit_rotation(caller))
    }

    /// A read-only call about one client (GetRotationStatus, ListRotations): the caller
    /// authenticated, the client id parsed, the call authorized and counted against the
    /// caller's status rate.
    fn admit_read<T>(
        &self,
        call: &Call,
        request: &Request<T>,
        client_id: &str,
        rpc: Rpc,
    ) -> Result<ClientId, Status> {
        let (origin, caller) = self.authenticate(call, request, client_id)?;
        let client_id = ClientId::parse(client_id).map_err(RotationError::from)?;
        self.gate
            .authorize(&caller, rpc, client_id.as_str())
            .and_then(|()| self.gate.admit_status(&caller))
            .map_err(|e| self.refuse(&origin, client_id.as_str(), e))?;
        Ok(client_id)
    }

    /// A step of a staged rotation (CompleteRotation, CancelRotation): the caller
    /// authenticated, the ids parsed, the step authorized and counted as a rotation.
    fn admit_step<T>(
        &self,
        call: &Call,
        request: &Request<T>,
        (client_id, rotation_id): (&str, &str),
        rpc: Rpc,
    ) -> Result<(Origin, ClientId, Uuid), Status> {
        let (origin, caller) = self.authenticate(call, request, client_id)?;
        let (client_id, rotation_id) = parse_step(client_id, rotation_id)?;
        self.admit(&caller, rpc, &client_id)
            .map_err(|e| self.refuse(&origin, client_id.as_str(), e))?;
        Ok((origin, client_id, rotation_id))
    }

    /// When a call must be answered by: the caller's `grpc-timeout` within the service's caps.
    fn deadline_of<T>(&self, request: &Request<T>) -> Instant {
        Instant::now() + deadline(request.metadata(), self.deadlines)
    }
}

/// One RPC: its server span (the caller's `traceparent` its parent), the trace id its audit
/// events carry, and its duration in `secret_rotator_rpc_duration_seconds`, recorded however
/// it ends (a caller hanging up drops it).
struct Call {
    rpc: &'static str,
    span: Span,
    trace_id: String,
    started: Instant,
}

impl Call {
    fn start<T>(rpc: &'static str, request: &Request<T>) -> Self {
        use proto::secret_rotation_service_server::SERVICE_NAME;
        // Debug: without an OTLP endpoint (and at the default log level) it costs nothing.
        let span = debug_span!(
            "rpc",
            otel.name = %format_args!("{SERVICE_NAME}/{rpc}"),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = SERVICE_NAME,
            rpc.method = rpc,
            rpc.grpc.status_code = Empty,
        );
        let caller = crate::trace::caller_context(request.metadata().as_ref());
        let trace_id = crate::trace::adopt(&span, caller);
        Self {
            rpc,
            span,
            trace_id,
            started: Instant::now(),
        }
    }

    /// Runs the handler in the RPC's span and records its status code there.
    async fn run<T>(&self, handler: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        let result = status::TRACE_ID
            .scope(self.trace_id.clone(), handler.instrument(self.span.clone()))
            .await;
        let code = result.as_ref().err().map_or(tonic::Code::Ok, Status::code);
        self.span.record("rpc.grpc.status_code", code as i32);
        if status::is_server_error(code) {
            self.span.record("otel.status_code", "error");
        }
        result
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        crate::metrics::rpc(self.rpc, self.started.elapsed());
    }
}

/// The client id and rotation id of CompleteRotation and CancelRotation.
fn parse_step(client_id: &str, rotation_id: &str) -> Result<(ClientId, Uuid), RotationError> {
    let client_id = ClientId::parse(client_id)?;
    let rotation_id = Uuid::parse_str(rotation_id).map_err(|_| ValidationError::RotationId)?;
    Ok((client_id, rotation_id))
}

#[tonic::async_trait]
impl<I: SecretIssuer, S: SecretStore, L: Ledger> SecretRotationService for RotationApi<I, S, L> {
    async fn rotate_secret(
        &self,
        request: Request<proto::RotateSecretRequest>,
    ) -> Result<Response<proto::RotateSecretResponse>, Status> {
        let call = Call::start("RotateSecret", &request);
        call.run(async {
            let deadline = self.deadline_of(&request);
            let (origin, caller) =
                self.authenticate(&call, &request, &request.get_ref().client_id)?;
            let body = request.into_inner();
            let mut command =
                RotateCommand::parse(&body.client_id, &body.reason, &body.idempotency_key)
                    .map_err(RotationError::from)?;
            command.require_in_sync = body.require_in_sync;
            (command.strategy, command.distribute_for) =
                convert::staging(body.strategy, body.distribute_for)?;
            self.service
                .distribute_for(command.strategy, command.distribute_for)
                .map_err(RotationError::from)?;
            self.admit(&caller, Rpc::RotateSecret, &command.client_id)
                .map_err(|e| self.refuse(&origin, command.client_id.as_str(), e))?;
            command.origin = origin;
            if body.validate_only {
                let validated = within_deadline(deadline, self.service.validate(&command)).await?;
                return Ok(Response::new(validated.into()));
            }
            let rotation = self.service.rotate(command, deadline).await?;
            Ok(Response::new(rotation.into()))
        })
        .await
    }

    async fn complete_rotation(
        &self,
        request: Request<proto::CompleteRotationRequest>,
    ) -> Result<Response<proto::CompleteRotationResponse>, Status> {
        let call = Call::start("CompleteRotation", &request);
        call.run(async {
            let deadline = self.deadline_of(&request);
            let body = request.get_ref();
            let ids = (body.client_id.as_str(), body.rotation_id.as_str());
            let (origin, client_id, rotation_id) =
                self.admit_step(&call, &request, ids, Rpc::CompleteRotation)?;
            let promoted = self
                .service
                .complete(client_id, rotation_id, origin, deadline)
                .await?;
            Ok(Response::new(promoted.into()))
        })
        .await
    }

    async fn rollback_rotation(
        &self,
        request: Request<proto::RollbackRotationRequest>,
    ) -> Result<Response<proto::RollbackRotationResponse>, Status> {
        let call = Call::start("RollbackRotation", &request);
        call.run(async {
            let deadline = self.deadline_of(&request);
            let body = request.get_ref();
            let ids = (body.client_id.as_str(), body.rotation_id.as_str());
            let (origin, client_id, rotation_id) =
                self.admit_step(&call, &request, ids, Rpc::RollbackRotation)?;
            let rolled_back = self
                .service
                .rollback(client_id, rotation_id, origin, deadline)
                .await?;
            Ok(Response::new(rolled_back.into()))
        })
        .await
    }

    async fn cancel_rotation(
        &self,
        request: Request<proto::CancelRotationRequest>,
    ) -> Result<Response<proto::CancelRotationResponse>, Status> {
        let call = Call::start("CancelRotation", &request);
        call.run(async {
            let deadline = self.deadline_of(&request);
            let body = request.get_ref();
            let ids = (body.client_id.as_str(), body.rotation_id.as_str());
            let (origin, client_id, rotation_id) =
                self.admit_step(&call, &request, ids, Rpc::CancelRotation)?;
            let cancelled = self
                .service
                .cancel(&client_id, rotation_id, &origin, deadline)
                .await?;
            Ok(Response::new(cancelled.into()))
        })
        .await
    }

    async fn get_rotation_status(
        &self,
        request: Request<proto::GetRotationStatusRequest>,
    ) -> Result<Response<proto::GetRotationStatusResponse>, Status> {
        let call = Call::start("GetRotationStatus", &request);
        call.run(async {
            let body = request.get_ref();
            let client_id =
                self.admit_read(&call, &request, &body.client_id, Rpc::GetRotationStatus)?;
            let check_drift = body.check_drift;
            let deadline = self.deadline_of(&request);
            let status =
                within_deadline(deadline, self.service.status(&client_id, check_drift)).await?;
            Ok(Response::new(status.into()))
        })
        .await
    }

    type RotateSecretsStream = batch::Stream;

    async fn rotate_secrets(
        &self,
        request: Request<proto::RotateSecretsRequest>,
    ) -> Result<Response<Self::RotateSecretsStream>, Status> {
        let call = Call::start("RotateSecrets", &request);
        call.run(self.batch(&call, request)).await
    }

    async fn list_clients(
        &self,
        request: Request<proto::ListClientsRequest>,
    ) -> Result<Response<proto::ListClientsResponse>, Status> {
        let call = Call::start("ListClients", &request);
        call.run(async {
            let (origin, caller) = self.authenticate(&call, &request, "")?;
            let body = request.get_ref();
            let size = convert::page_size(body.page_size)?;
            let from = convert::page_cursor(&body.page_token)?;
            self.gate
                .admit_status(&caller)
                .map_err(|e| self.refuse(&origin, "", e))?;
            // The caller sees the clients the policy grants it ListClients for.
            let visible = |id: &ClientId| {
                self.gate
                    .authorize(&caller, Rpc::ListClients, id.as_str())
                    .is_ok()
            };
            let deadline = self.deadline_of(&request);
            let page = within_deadline(
                deadline,
                crate::rotation::inventory::page(&self.service, from.as_ref(), size, visible),
            )
            .await?;
            Ok(Response::new(page.into()))
        })
        .await
    }

    async fn list_rotations(
        &self,
        request: Request<proto::ListRotationsRequest>,
    ) -> Result<Response<proto::ListRotationsResponse>, Status> {
        let call = Call::start("ListRotations", &request);
        call.run(async {
            // Read-only, one Vault read: counted with status calls.
            let client_id = self.admit_read(
                &call,
                &request,
                &request.get_ref().client_id,
                Rpc::ListRotations,
            )?;
            let history = self.service.history(&client_id).await?;
            Ok(Response::new(proto::ListRotationsResponse {
                rotations: history.into_iter().map(Into::into).collect(),
            }))
        })
        .await
    }
}

/// The largest RotateSecrets request: a thousand client ids of the longest kind (each with its
/// two bytes of framing) and room for the rest. Every other request stays within
/// ROTATOR_MAX_REQUEST_BYTES (`request_limits`).
pub const BATCH_REQUEST_BYTES: usize =
    crate::rotation::BATCH_MAX * (crate::rotation::CLIENT_ID_MAX + 2) + 4096;

/// Caps the body of every request to the rotation service at `limit` bytes (and its gRPC frame
/// header), but RotateSecrets', which the service's decoding limit caps at
/// [`BATCH_REQUEST_BYTES`]: a batch names many clients, nothing else needs more than a few
/// hundred bytes. Health and reflection keep their own limits.
pub fn request_limits(
    limit: usize,
) -> tower::util::MapRequestLayer<impl Fn(http::Request<Body>) -> http::Request<Body> + Clone> {
    use proto::secret_rotation_service_server::SERVICE_NAME;
    let service = format!("/{SERVICE_NAME}/");
    let batch = format!("/{SERVICE_NAME}/RotateSecrets");
    tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
        let path = request.uri().path();
        if !path.starts_with(&service) || path == batch {
            return request;
        }
        request.map(|body| Body::new(http_body_util::Limited::new(body, limit + 5)))
    })
}

/// Tonic refuses a request it cannot decode (over the size cap, or not the RPC's message)
/// before any handler runs, in its own words and, for bad bytes, as INTERNAL; this layer puts
/// the service's refusal in its place, like every other refusal.
pub fn decode_refusals(
    limit: usize,
) -> tower::util::MapResponseLayer<impl Fn(http::Response<Body>) -> http::Response<Body> + Clone> {
    tower::util::MapResponseLayer::new(move |response: http::Response<Body>| {
        let Some(refused) = Status::from_header_map(response.headers()) else {
            return response;
        };
        let message = refused.message();
        match refused.code() {
            tonic::Code::OutOfRange
                if message.starts_with("Error, decoded message length too large") =>
            {
                status::batch_too_large(BATCH_REQUEST_BYTES.max(limit)).into_http()
            }
            // `request_limits` cut the body off.
            _ if message.contains("length limit exceeded") => status::too_large(limit).into_http(),
            tonic::Code::Internal
                if message.starts_with("failed to decode Protobuf message")
                    || message.starts_with("protocol error: received message with") =>
            {
                status::undecodable().into_http()
            }
            _ => response,
        }
    })
}

/// Runs `work` as an interactive call until `deadline`: Auth0's rate-limit budget is waited
/// for that long at most (`work::Work`).
async fn within_deadline<F: Future>(deadline: Instant, future: F) -> F::Output {
    let work = crate::work::Work {
        priority: crate::work::Priority::Interactive,
        deadline: Some(deadline),
    };
    crate::work::within(work, future).await
}

/// The caller's `grpc-timeout` capped at the maximum, or the default. A tenth of it (at most a
/// second) is kept back so that a refusal such as ABORTED still reaches the caller in time.
fn deadline(metadata: &MetadataMap, deadlines: Deadlines) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(deadlines.default, |d| {
            let own = d.saturating_sub((d / 10).min(Duration::from_secs(1)));
            own.min(deadlines.max)
        })
}

/// `grpc-timeout` is at most 8 digits and a unit: H, M, S, m (ms), u (µs), n (ns).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        let d = Deadlines {
            default: Duration::from_secs(30),
            max: Duration::from_secs(60),
        };
        let mut md = MetadataMap::new();
        assert_eq!(deadline(&md, d), Duration::from_secs(30));
        md.insert("grpc-timeout", "99H".parse().unwrap());
        assert_eq!(deadline(&md, d), Duration::from_secs(60));
        md.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(deadline(&md, d), Duration::from_millis(1800));
        md.insert("grpc-timeout", "50S".parse().unwrap());
        assert_eq!(deadline(&md, d), Duration::from_secs(49));
    }

    /// The largest batch the API allows fits the batch limit: a thousand ids of the longest
    /// kind, the longest reason (four bytes a character), key prefix and selector.
    #[test]
    fn the_largest_valid_batch_fits_the_batch_limit() {
        use prost::Message as _;

        use crate::rotation::{BATCH_MAX, CLIENT_ID_MAX, REASON_MAX};
        let request = proto::RotateSecretsRequest {
            client_ids: vec!["a".repeat(CLIENT_ID_MAX); BATCH_MAX],
            reason: "\u{1F511}".repeat(REASON_MAX),
            idempotency_key_prefix: "k".repeat(64),
            max_concurrency: 32,
            strategy: proto::RotationStrategy::Staged.into(),
            distribute_for: Some(prost_types::Duration {
                seconds: 86_400,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert!(
            request.encoded_len() <= BATCH_REQUEST_BYTES,
            "{} > {BATCH_REQUEST_BYTES}",
            request.encoded_len()
        );
    }
}
