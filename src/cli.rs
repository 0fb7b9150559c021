//! The operator CLI in the same binary: `rotate`, `status`, `complete`, `cancel`, `rollback` and
//! `health`,
//! talking gRPC to a running server. Human output by default, `--output json` for scripts;
//! each kind of failure has its own exit code (see [`exit_code`]). Never prints a secret: the
//! server never sends one.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::proto::{
    CancelRotationRequest, CompleteRotationRequest, DriftState, GetRotationStatusRequest,
    ListRotationsRequest, RollbackRotationRequest, RotateSecretRequest, RotationStrategy,
    VaultSecret, secret_rotation_service_client::SecretRotationServiceClient,
};

/// How to reach the server, shared by every operator command.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server: http://host:port (plaintext) or https://host:port (TLS).
    #[arg(long, env = "ROTATOR_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,

    /// PEM bundle of the CA that signed the server's certificate (needed with https://).
    #[arg(long, env = "ROTATOR_SERVER_CA")]
    pub server_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS, with --client-key.
    #[arg(long, env = "ROTATOR_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,

    /// Its private key (PEM).
    #[arg(long, env = "ROTATOR_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,

    /// A bearer token (JWT) to present instead of a certificate.
    #[arg(long, env = "ROTATOR_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: Option<SecretString>,

    /// The deadline of the call.
    #[arg(long, env = "ROTATOR_CLI_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub timeout: Duration,

    /// First wait (at most this long) until the server reports SERVING.
    #[arg(long, value_parser = duration)]
    pub wait_ready: Option<Duration>,

    /// human or json.
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Operation {
    /// Rotate a client's secret (immediately, or staged with --staged).
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
        client_id: String,
        /// Why, recorded with the rotation.
        #[arg(long, default_value = "")]
        reason: String,
        /// Rotate once per key: a retry with the same key answers the first result.
        #[arg(long, default_value = "")]
        idempotency_key: String,
        /// Stage the next secret in Vault first; promote after --distribute-for.
        #[arg(long)]
        staged: bool,
        /// How long a staged secret is distributed before promotion [default: the server's].
        #[arg(long, value_parser = duration)]
        distribute_for: Option<Duration>,
        /// Refuse unless Vault holds the secret Auth0 accepts now.
        #[arg(long)]
        require_in_sync: bool,
        /// Check everything, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// A client's last rotation, staged rotation and open intent.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        client_id: String,
        /// Also compare Vault's secret with Auth0's (never shown).
        #[arg(long)]
        check_drift: bool,
    },
    /// Promote a staged rotation now.
    Complete {
        #[command(flatten)]
        client: ClientArgs,
        client_id: String,
        rotation_id: String,
    },
    /// Cancel a staged rotation before its promotion.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        client_id: String,
        rotation_id: String,
    },
    /// Undo the client's last secret rotation: its previous secret is put back at Auth0 and in
    /// Vault (within ROTATOR_PREVIOUS_SECRET_TTL of the rotation).
    Rollback {
        #[command(flatten)]
        client: ClientArgs,
        client_id: String,
        rotation_id: String,
    },
    /// A client's rotations, newest first (ListRotations).
    History {
        #[command(flatten)]
        client: ClientArgs,
        client_id: String,
    },
    /// Whether the server is SERVING.
    Health {
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl Operation {
    fn client(&self) -> &ClientArgs {
        match self {
            Self::Rotate { client, .. }
            | Self::Status { client, .. }
            | Self::Complete { client, .. }
            | Self::Cancel { client, .. }
            | Self::Rollback { client, .. }
            | Self::History { client, .. }
            | Self::Health { client } => client,
        }
    }
}

/// Exit codes, one per kind of failure (documented in docs/operations.md).
pub fn exit_code(code: Code) -> u8 {
    match code {
        Code::Ok => 0,
        Code::InvalidArgument | Code::OutOfRange => 2,
        Code::NotFound => 3,
        Code::FailedPrecondition | Code::AlreadyExists => 4,
        Code::PermissionDenied | Code::Unauthenticated => 5,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted => 6,
        _ => 1,
    }
}

/// gRPC's canonical name of `code` (`NOT_FOUND`), the spelling the docs use.
pub fn code_name(code: Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Prints a failure as the output asks (one JSON object on stdout, or a line on stderr) and
/// returns its exit code.
fn report(output: Output, status: &Status) -> u8 {
    let code = code_name(status.code());
    match output {
        Output::Json => println!("{}", json!({ "error": code, "message": status.message() })),
        Output::Human => eprintln!("secret-rotator: {code}: {}", status.message()),
    }
    exit_code(status.code())
}

/// Whether a command line asks for `--output json`, read before it parses: with it, a command
/// line that does not parse is reported as one JSON object too ([`usage_error`]).
pub fn wants_json(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json")
}

/// A command line that does not parse (`message`, clap's explained) as one JSON object, like
/// any INVALID_ARGUMENT.
pub fn usage_error(message: &str) -> u8 {
    report(Output::Json, &Status::invalid_argument(message))
}

/// Runs one operator command; prints its answer and returns the exit code.
pub async fn run(operation: Operation) -> u8 {
    let output = operation.client().output;
    match execute(operation).await {
        Ok(answer) => {
            println!("{}", render(output, &answer));
            0
        }
        Err(status) => report(output, &status),
    }
}

async fn execute(operation: Operation) -> Result<Value, Status> {
    let args = operation.client();
    let channel = connect(args).await?;
    if let Some(limit) = args.wait_ready {
        wait_ready(&channel, limit).await?;
    }
    let mut client = SecretRotationServiceClient::new(channel.clone());
    let timeout = args.timeout;
    let token = args.token.clone();
    Ok(match operation {
        Operation::History {
            client: _,
            client_id,
        } => {
            let request = request(timeout, token.as_ref(), ListRotationsRequest { client_id })?;
            let answer = client.list_rotations(request).await?.into_inner();
            let rotations: Vec<Value> = answer
                .rotations
                .into_iter()
                .map(|r| {
                    json!({
                        "rotation_id": r.rotation_id,
                        "strategy": strategy_name(r.strategy),
                        "outcome": r.outcome,
                        "started_at": r.started_at.map(|t| t.to_string()),
                        "stored_at": r.stored_at.map(|t| t.to_string()),
                        "rotated_by": r.rotated_by,
                        "reason": r.reason,
                        "recovered": r.recovered,
                        "kv_version": r.kv_version,
                    })
                })
                .collect();
            json!({ "rotations": rotations })
        }
        Operation::Rotate {
            client: _,
            client_id,
            reason,
            idempotency_key,
            staged,
            distribute_for,
            require_in_sync,
            dry_run,
        } => {
            let strategy = match staged {
                true => RotationStrategy::Staged,
                false => RotationStrategy::Immediate,
            };
            let answer = client
                .rotate_secret(request(
                    timeout,
                    token.as_ref(),
                    RotateSecretRequest {
                        client_id,
                        reason,
                        idempotency_key,
                        require_in_sync,
                        validate_only: dry_run,
                        strategy: strategy as i32,
                        distribute_for: distribute_for.map(|d| prost_types::Duration {
                            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                        }),
                    },
                )?)
                .await?
                .into_inner();
            json!({
                "client_id": answer.client.as_ref().map(|c| c.client_id.clone()),
                "client_name": answer.client.as_ref().map(|c| c.name.clone()),
                "rotation_id": answer.rotation_id,
                "strategy": strategy_name(answer.strategy),
                "vault": vault(answer.vault_secret.as_ref()),
                "rotated_at": answer.rotated_at.map(|t| t.to_string()),
                "promote_after": answer.promote_after.map(|t| t.to_string()),
                "recovered": answer.recovered,
                "replayed": answer.replayed,
                "dry_run": dry_run,
            })
        }
        Operation::Status {
            client: _,
            client_id,
            check_drift,
        } => {
            let status = client
                .get_rotation_status(request(
                    timeout,
                    token.as_ref(),
                    GetRotationStatusRequest {
                        client_id: client_id.clone(),
                        check_drift,
                    },
                )?)
                .await?
                .into_inner();
            json!({
                "client_id": client_id,
                "last_rotation": status.last_rotation.map(|l| json!({
                    "rotation_id": l.rotation_id,
                    "rotated_at": l.rotated_at.map(|t| t.to_string()),
                    "strategy": strategy_name(l.strategy),
                    "vault": vault(l.vault_secret.as_ref()),
                    "reason": l.reason,
                    "rotated_by": l.rotated_by,
                    "recovered": l.recovered,
                })),
                "staged_rotation": status.staged_rotation.map(|s| json!({
                    "rotation_id": s.rotation_id,
                    "staged_at": s.staged_at.map(|t| t.to_string()),
                    "promote_after": s.promote_after.map(|t| t.to_string()),
                    "vault": vault(s.vault_secret.as_ref()),
                    "caller": s.caller,
                })),
                "open_intent": status.open_intent.map(|i| json!({
                    "rotation_id": i.rotation_id,
                    "started_at": i.started_at.map(|t| t.to_string()),
                    "caller": i.caller,
                    "lease_active": i.lease_active,
                })),
                "drift": match DriftState::try_from(status.drift) {
                    Ok(DriftState::InSync) => Some("in_sync"),
                    Ok(DriftState::Drifted) => Some("drifted"),
                    Ok(DriftState::NotHeld) => Some("not_held"),
                    Ok(DriftState::Unknown) => Some("unknown"),
                    Ok(DriftState::Unspecified) | Err(_) => None,
                },
            })
        }
        Operation::Complete {
            client: _,
            client_id,
            rotation_id,
        } => {
            let done = client
                .complete_rotation(request(
                    timeout,
                    token.as_ref(),
                    CompleteRotationRequest {
                        client_id: client_id.clone(),
                        rotation_id,
                    },
                )?)
                .await?
                .into_inner();
            json!({
                "client_id": client_id,
                "rotation_id": done.rotation_id,
                "vault": vault(done.vault_secret.as_ref()),
                "rotated_at": done.rotated_at.map(|t| t.to_string()),
                "recovered": done.recovered,
                "replayed": done.replayed,
            })
        }
        Operation::Cancel {
            client: _,
            client_id,
            rotation_id,
        } => {
            let done = client
                .cancel_rotation(request(
                    timeout,
                    token.as_ref(),
                    CancelRotationRequest {
                        client_id: client_id.clone(),
                        rotation_id,
                    },
                )?)
                .await?
                .into_inner();
            json!({
                "client_id": client_id,
                "cancelled": done.rotation_id,
                "vault": vault(done.vault_secret.as_ref()),
            })
        }
        Operation::Rollback {
            client: _,
            client_id,
            rotation_id,
        } => {
            let done = client
                .rollback_rotation(request(
                    timeout,
                    token.as_ref(),
                    RollbackRotationRequest {
                        client_id: client_id.clone(),
                        rotation_id,
                    },
                )?)
                .await?
                .into_inner();
            json!({
                "client_id": client_id,
                "rolled_back": done.rotation_id,
                "vault": vault(done.vault_secret.as_ref()),
                "rolled_back_at": done.rolled_back_at.map(|t| t.to_string()),
                "replayed": done.replayed,
            })
        }
        Operation::Health { .. } => {
            let serving = serving(&channel).await?;
            if !serving {
                return Err(Status::unavailable("the server is NOT_SERVING"));
            }
            json!({ "status": "SERVING" })
        }
    })
}

fn vault(v: Option<&VaultSecret>) -> Value {
    v.map_or(
        Value::Null,
        |v| json!({ "mount": v.mount, "path": v.path, "version": v.version }),
    )
}

fn strategy_name(raw: i32) -> &'static str {
    match RotationStrategy::try_from(raw) {
        Ok(RotationStrategy::Staged) => "staged",
        _ => "immediate",
    }
}

/// `key: value` lines, nested objects indented; or the JSON itself.
fn render(output: Output, answer: &Value) -> String {
    fn lines(value: &Value, indent: usize, out: &mut Vec<String>) {
        let Value::Object(fields) = value else { return };
        for (key, value) in fields {
            let pad = "  ".repeat(indent);
            match value {
                Value::Null => {}
                Value::Object(_) => {
                    out.push(format!("{pad}{key}:"));
                    lines(value, indent + 1, out);
                }
                Value::Array(items) if items.iter().all(Value::is_object) => {
                    out.push(format!("{pad}{key}:"));
                    for item in items {
                        out.push(format!("{pad}  -"));
                        lines(item, indent + 2, out);
                    }
                }
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => out.push(format!("{pad}{key}: {s}")),
                other => out.push(format!("{pad}{key}: {other}")),
            }
        }
    }
    match output {
        Output::Json => answer.to_string(),
        Output::Human => {
            let mut out = Vec::new();
            lines(answer, 0, &mut out);
            out.join("\n")
        }
    }
}

async fn connect(args: &ClientArgs) -> Result<Channel, Status> {
    let bad = |what: String| Status::invalid_argument(what);
    // Never a guess at plaintext: a bearer token would go out in the clear.
    if !(args.server.starts_with("http://") || args.server.starts_with("https://")) {
        let server = &args.server;
        return Err(bad(match server.split_once("://") {
            Some((scheme, _)) => format!(
                "--server {server}: the scheme must be http:// (plaintext) or https:// (TLS), not {scheme}://"
            ),
            None => format!(
                "--server {server} names no scheme: write http://{server} (plaintext) or https://{server} (TLS)"
            ),
        }));
    }
    let mut endpoint = Endpoint::from_shared(args.server.clone())
        .map_err(|_| bad(format!("--server {} is not a URL", args.server)))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if args.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.server_ca {
            let pem = std::fs::read(ca)
                .map_err(|_| bad(format!("--server-ca {} cannot be read", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|_| bad(format!("{} cannot be read", p.display())))
                };
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(bad("--client-cert and --client-key go together".into())),
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| bad(format!("TLS: {e}")))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach {}: {e}", args.server)))
}

async fn serving(channel: &Channel) -> Result<bool, Status> {
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    Ok(status == ServingStatus::Serving as i32)
}

/// Polls health until SERVING, for at most `limit`.
async fn wait_ready(channel: &Channel, limit: Duration) -> Result<(), Status> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if serving(channel).await.unwrap_or(false) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            return Err(Status::unavailable(format!(
                "the server did not report SERVING within {}",
                humantime::format_duration(limit)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request with the deadline and, when given, the bearer token.
fn request<T>(
    timeout: Duration,
    token: Option<&SecretString>,
    message: T,
) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    if let Some(token) = token {
        let value = MetadataValue::try_from(format!("Bearer {}", token.expose_secret()))
            .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_owned()))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|_| "expected a duration such as 500ms, 5s or 2m".into())
}
