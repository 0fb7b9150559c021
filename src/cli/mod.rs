//! The operator CLI in the same binary, a command per RPC: `rotate`, `batch`, `status`,
//! `history`, `list`, `complete`, `cancel`, `rollback`, and `health`, talking gRPC to a running
//! server. Human output by default, `--output json` for scripts (one JSON object per answer;
//! `batch` prints one per client as it finishes, then its summary); each kind of failure has its
//! own exit code (see [`exit_code`]). Never prints a secret: the server never sends one.

mod batch;
mod commands;
mod connect;
mod render;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use secrecy::SecretString;
use serde_json::{Value, json};
use tonic::{Code, Status};

pub use batch::BatchArgs;

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

    /// The deadline of the call [default: 30s; 1h for batch].
    #[arg(long, env = "ROTATOR_CLI_TIMEOUT", value_parser = duration)]
    pub timeout: Option<Duration>,

    /// First wait (at most this long) until the server reports SERVING.
    #[arg(long, value_parser = duration)]
    pub wait_ready: Option<Duration>,

    /// human or json.
    #[arg(long, value_enum, default_value = "human")]
    pub output: Output,
}

impl ClientArgs {
    /// The deadline of a call that answers once.
    fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(30))
    }
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
    /// The tenant's clients with what the service knows of each (ListClients), a page at a time.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Clients a page (1 to 100) [default: the server's, 50].
        #[arg(long, default_value_t = 0)]
        page_size: i32,
        /// Where the previous page ended (its next_page_token).
        #[arg(long, default_value = "")]
        page_token: String,
        /// Every page, from --page-token on.
        #[arg(long)]
        all: bool,
    },
    /// Rotate many clients, named or picked by a selector (RotateSecrets): one line per client
    /// as it finishes, then the summary.
    Batch {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        batch: BatchArgs,
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
            | Self::List { client, .. }
            | Self::Batch { client, .. }
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

pub use crate::grpc::code_name;

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

/// What a command answered, and its exit code (0 unless a batch had failures).
struct Answer {
    value: Value,
    exit: u8,
}

impl Answer {
    fn done(value: Value) -> Self {
        Self { value, exit: 0 }
    }
}

/// Runs one operator command; prints its answer and returns the exit code.
pub async fn run(operation: Operation) -> u8 {
    let output = operation.client().output;
    let answered = async {
        let channel = connect::ready(operation.client()).await?;
        commands::execute(operation, channel).await
    };
    match answered.await {
        Ok(answer) => {
            println!("{}", render::render(output, &answer.value));
            answer.exit
        }
        Err(status) => report(output, &status),
    }
}

fn secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_owned()))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|_| "expected a duration such as 500ms, 5s or 2m".into())
}
