//! Composition root: the only place where concrete adapters meet the domain and the server.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{error, info, warn};

use crate::{
    audit,
    auth::{Reloadable, Security, SecurityError, Trigger, reload::Refresh},
    auth0::{Auth0Client, CREDENTIAL_SCOPES, READ_KEYS_SCOPE, ROTATE_SCOPE},
    config::Config,
    grpc::{self, Deadlines, RotationApi},
    listener::{self, Connections},
    metrics,
    proto::{self, secret_rotation_service_server::SecretRotationServiceServer},
    rotation::{self, ClientId, IssuerError, RotationService, StoreError},
    vault::VaultStore,
    webhook::{self, Webhook, WebhookError},
};

type Service = RotationService<Auth0Client, VaultStore, VaultStore>;

/// Name under which health reports the rotation service.
pub const SERVICE_NAME: &str = "secretrotator.v1.SecretRotationService";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the Auth0 client: {0}")]
    Auth0Client(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("cannot build the Vault client: {0}")]
    VaultClient(StoreError),
    #[error("{0}")]
    OwnCredential(IssuerError),
    #[error("cannot build the webhook client: {0}")]
    Webhook(#[from] WebhookError),
    #[error("schedule: {0}")]
    Schedule(String),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// An address as logs show it: `127.0.0.1:50051`, not `Some(127.0.0.1:50051)`.
fn shown(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

/// Descriptors kept for everything but callers' connections: Vault, Auth0, the webhook, files.
const DESCRIPTORS_RESERVED: u64 = 128;

/// The connection limits, with the maximum lowered to stay under the process's descriptor
/// limit: accepting into EMFILE would refuse callers at random and spin.
fn connection_limits(mut limits: listener::Limits) -> listener::Limits {
    match listener::descriptor_limit() {
        Some(fds) => {
            let room = usize::try_from(fds.saturating_sub(DESCRIPTORS_RESERVED).max(16))
                .unwrap_or(usize::MAX);
            if limits.max_connections > room {
                warn!(
                    descriptor_limit = fds,
                    configured = limits.max_connections,
                    max_connections = room,
                    "ROTATOR_MAX_CONNECTIONS lowered to stay under the file descriptor limit"
                );
                limits.max_connections = room;
            }
            info!(
                descriptor_limit = fds,
                max_connections = limits.max_connections,
                "connection limits"
            );
        }
        None => info!(
            max_connections = limits.max_connections,
            "connection limits (descriptor limit unknown)"
        ),
    }
    limits
}

/// Binds the configured address and serves until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    let addr = config.server.listen_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })?;
    serve(config, listener, shutdown).await
}

/// Serves on an already bound listener (tests bind 127.0.0.1:0).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let admin_addr = config.server.admin_addr;
    let admin = TcpListener::bind(admin_addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: admin_addr,
            source,
        })?;
    info!(addr = %shown(admin.local_addr().ok()), "admin listener (/metrics, /healthz, /readyz)");
    metrics::per_client(config.server.metrics_per_client);
    metrics::rotation_classes(&rotation::Class::ALL.map(rotation::Class::as_str));
    let admin = tokio::spawn(serve_admin(admin));
    let auth0 = Auth0Client::new(&config.auth0).map_err(AppError::Auth0Client)?;
    let vault = VaultStore::new(&config.vault).map_err(AppError::VaultClient)?;
    auth0.read_own_credential_from(Arc::new(vault.clone()));
    // A source that cannot be read stops the service now, in one line.
    auth0
        .own_credential()
        .await
        .map_err(AppError::OwnCredential)?;
    let rotations: Arc<Service> = Arc::new(RotationService::new(
        auth0.clone(),
        vault.clone(),
        vault.clone(),
        config.rotation.clone(),
    ));
    // Notifications are recorded only once someone delivers them.
    let notifications = match &config.webhook {
        Some(settings) => {
            let webhook = Webhook::new(settings)?;
            let clients = rotations.subscribe();
            Some(tokio::spawn(webhook::dispatch(
                Arc::clone(&rotations),
                webhook,
                clients,
            )))
        }
        None => None,
    };
    // The schedule, reloaded with the policy; the replica holding the scheduler lease runs it.
    let mut watched: Vec<Arc<dyn Refresh>> = Vec::new();
    let schedule_interval = match &config.schedule {
        None => None,
        Some(settings) => {
            let file = settings.file.clone();
            let schedule = Arc::new(
                Reloadable::new("schedule", Trigger::Files(vec![file.clone()]), move || {
                    let loaded = crate::config::load_schedule(&file);
                    async move { loaded }
                })
                .await
                .map_err(|e| AppError::Schedule(e.to_string()))?,
            );
            info!(rules = schedule.get().rules.len(), "schedule loaded");
            let source = Arc::clone(&schedule);
            rotations.use_schedule(Box::new(move || source.get()));
            watched.push(schedule);
            Some((settings.interval, settings.catalog_refresh))
        }
    };
    let security = Security::build(&config.security).await?;
    let refusals = Arc::new(audit::Refusals::new(config.security.refusal_audit_window));
    let api = SecretRotationServiceServer::new(RotationApi::new(
        Arc::clone(&rotations),
        Arc::clone(&security.gate),
        Arc::clone(&refusals),
        Deadlines {
            default: config.server.deadline,
            max: config.server.max_deadline,
        },
    ))
    // Batches may be larger; every other RPC's body is capped by `request_limits`.
    .max_decoding_message_size(grpc::BATCH_REQUEST_BYTES.max(config.server.max_request_bytes));

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let sample_path = config
        .rotation
        .path
        .render(&ClientId::parse("capability_probe").expect("valid sample id"));
    // Start-up checks, then the reconciler (its own open intents at once; a scan when this
    // replica holds the scanner lease).
    // Beside them, the watcher that reloads policy, certificates and keys.
    // A good answer to the heartbeat (every reconcile interval) stands for Vault's check.
    let readiness = (
        config.server.readiness_interval,
        config.rotation.reconcile_interval + config.server.readiness_interval,
    );
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    // A renewable VAULT_TOKEN renewed for the process's life; every token's expiry measured.
    let token_keeper = tokio::spawn({
        let vault = vault.clone();
        async move { vault.keep_token_alive().await }
    });
    let background = tokio::spawn({
        let (health, rotations) = (health.clone(), Arc::clone(&rotations));
        async move {
            tokio::join!(
                track_readiness(
                    health,
                    auth0,
                    vault,
                    &rotations,
                    sample_path,
                    readiness,
                    ready_tx
                ),
                async {
                    // The reconciler starts once the start-up checks have passed.
                    ready_rx.await.ok();
                    // Healing, scans and schedules are background work (`rotation::background`).
                    let scheduler = async {
                        if let Some((interval, refresh)) = schedule_interval {
                            rotation::scheduler::run(Arc::clone(&rotations), interval, refresh)
                                .await;
                        }
                    };
                    futures_util::future::join(
                        rotation::reconciler::run(Arc::clone(&rotations)),
                        scheduler,
                    )
                    .await;
                }
            );
        }
    });
    let tls = security.tls.clone();
    let watcher = tokio::spawn(security.watch(watched));
    // Writes the counts of repeated refusals as their windows end, and lets the rate
    // limiters forget whoever's budget is full again.
    let gate = Arc::clone(&security.gate);
    let refusal_counts = tokio::spawn(async move {
        let mut every = tokio::time::interval(refusals.window());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            refusals.flush();
            gate.forget_idle();
        }
    });

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details (RetryInfo, ...), so that grpcurl can print them.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(SERVICE_NAME)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection().build_v1()?;
    // grpcurl 1.8 speaks only v1alpha.
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stopped = async {
        stop_rx.await.ok();
    };
    // HTTP/2 settings, on purpose: a PING every 30 s on an idle connection (answered within
    // 10 s or the connection is closed) finds callers that vanished behind a load balancer;
    // flow-control windows stay at h2's 64 KiB, since every message here is a few KiB and
    // larger windows would only cost memory per connection. TCP_NODELAY is set by `listener`.
    let connections = Connections::new(connection_limits(config.server.connections));
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(config.server.max_streams_per_connection)
        // Streams a peer may open and reset before the connection is closed (HTTP/2 rapid
        // reset).
        .http2_max_pending_accept_reset_streams(Some(64))
        .layer(connections.layer())
        .layer(grpc::decode_refusals(config.server.max_request_bytes))
        .layer(grpc::request_limits(config.server.max_request_bytes))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api);
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match &tls {
            Some(listener_tls) => {
                let mutual_tls = config
                    .security
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.files.client_ca.is_some());
                info!(addr = %shown(addr), mutual_tls, "secret-rotator listening (TLS)");
                let incoming = listener::tls(
                    listener::accept(listener, connections),
                    Arc::clone(listener_tls),
                );
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            None => {
                warn!(
                    addr = %shown(addr),
                    "secret-rotator listening WITHOUT TLS or authentication (ROTATOR_INSECURE=true)"
                );
                let incoming = listener::accept(listener, connections);
                Box::pin(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        };
    tokio::pin!(server);

    // A pass cut short loses nothing: its writes are check-and-set, its lease expires; an
    // undelivered notification stays in its ledger record.
    let stop_background = || {
        admin.abort();
        background.abort();
        watcher.abort();
        token_keeper.abort();
        refusal_counts.abort();
        if let Some(dispatch) = &notifications {
            dispatch.abort();
        }
    };
    tokio::select! {
        result = &mut server => {
            stop_background();
            result?;
        }
        () = shutdown => {
            info!("shutdown requested: reporting NOT_SERVING and draining calls");
            stop_background();
            set_health(&health, ServingStatus::NotServing).await;
            let _ = stop_tx.send(());
            // Calls end when their rotations do, but a rotation whose caller hung up runs on
            // alone: wait for those too. Whatever the grace cuts off stays an open intent.
            let drained = async {
                server.await?;
                rotations.drained().await;
                rotations.leave().await;
                Ok::<(), AppError>(())
            };
            let grace = config.server.shutdown_grace;
            match tokio::time::timeout(grace, drained).await {
                Ok(result) => result?,
                Err(_) => warn!(?grace, "grace period over; open rotations are left to recovery"),
            }
        }
    }
    info!("stopped");
    Ok(())
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
    metrics::ready(status == ServingStatus::Serving);
}

/// The admin listener: `/metrics` (Prometheus, OpenMetrics text), `/healthz` (the process
/// answers) and `/readyz` (200 while SERVING, else 503).
async fn serve_admin(listener: TcpListener) {
    use axum::{Router, http::StatusCode, http::header, routing::get};
    let app = Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    metrics::encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|| async {
                match metrics::is_ready() {
                    true => (StatusCode::OK, "ready\n"),
                    false => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        error!(error = %e, "the admin listener stopped");
    }
}

/// Start-up checks until they pass (SERVING), then readiness checks every `interval`:
/// NOT_SERVING while Vault or Auth0 fails them, SERVING again when they pass. Each change is
/// logged once (and a failure again when its cause changes). Vault is checked with a request
/// of its own only when no request of the replica's own had a good answer within
/// `vault_window` (at rest, the heartbeat every reconcile interval is the check).
async fn track_readiness(
    health: HealthReporter,
    auth0: Auth0Client,
    vault: VaultStore,
    rotations: &Service,
    sample_path: String,
    (interval, vault_window): (Duration, Duration),
    started: oneshot::Sender<()>,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        match readiness_checks(&auth0, &vault, rotations, &sample_path).await {
            Ok(()) => break,
            Err(problem) => error!(retry_in = ?wait, "start-up check failed: {problem}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    set_health(&health, ServingStatus::Serving).await;
    info!("start-up checks passed: SERVING");
    let _ = started.send(());
    let mut failing: Option<String> = None;
    loop {
        tokio::time::sleep(interval).await;
        let vault_checked = match vault.answered_well_within(vault_window) {
            true => Ok(()),
            false => vault.check(&sample_path).await,
        };
        let checked = match vault_checked {
            Err(e) => Err(e.to_string()),
            Ok(()) => auth0.ready().await.map_err(|e| format!("Auth0: {e}")),
        };
        match (checked, &failing) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => {
                set_health(&health, ServingStatus::Serving).await;
                info!("readiness checks pass again: SERVING");
                failing = None;
            }
            (Err(problem), Some(before)) if *before == problem => {}
            (Err(problem), before) => {
                if before.is_none() {
                    set_health(&health, ServingStatus::NotServing).await;
                }
                error!("readiness check failed, NOT_SERVING until it passes: {problem}");
                failing = Some(problem);
            }
        }
    }
}

async fn readiness_checks(
    auth0: &Auth0Client,
    vault: &VaultStore,
    rotations: &Service,
    sample_path: &str,
) -> Result<(), String> {
    vault
        .check(sample_path)
        .await
        .map_err(|e| format!("Vault: {e}"))?;
    let token = auth0
        .check()
        .await
        .map_err(|e: IssuerError| format!("Auth0: {e}"))?;
    let Some(scopes) = token.scopes else {
        warn!(
            "the Management API token's scopes are unknown; assuming it may rotate and read secrets"
        );
        return Ok(());
    };
    if !scopes.iter().any(|s| s == ROTATE_SCOPE) {
        return Err(format!(
            "Auth0: the service's Management API token lacks the {ROTATE_SCOPE} scope; \
             grant it to the service's application in the Management API's client grant"
        ));
    }
    let can_recover = scopes.iter().any(|s| s == READ_KEYS_SCOPE);
    rotations.set_recovery_available(can_recover);
    if !can_recover {
        error!(
            "the Management API token lacks {READ_KEYS_SCOPE}: a lost Auth0 answer could not be \
             recovered, so rotations are refused unless ROTATOR_ALLOW_UNRECOVERABLE_ROTATIONS=true"
        );
    }
    // Keys and certificates need the credential scopes; a grant for secrets only is a normal
    // set-up, so this is information, not a warning.
    let missing: Vec<&str> = CREDENTIAL_SCOPES
        .into_iter()
        .filter(|scope| !scopes.iter().any(|s| s == scope))
        .collect();
    if !missing.is_empty() {
        info!(
            missing = %missing.join(" "),
            "the Management API token lacks scopes key rotations need: clients that authenticate \
             with a key or a certificate are refused, naming the scope; secrets are rotated"
        );
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
