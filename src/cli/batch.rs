//! `batch`: RotateSecrets, by client ids or a selector. Each client's outcome is printed as it
//! arrives (one JSON object a line with `--output json`), then the summary; the exit code is 0
//! when every client was rotated, else the failures' kind when they share one, else 1.

use std::{collections::BTreeSet, time::Duration};

use clap::Args;
use secrecy::SecretString;
use serde_json::json;
use tonic::{Code, Status, transport::Channel};

use super::{
    Answer, Output, code_name,
    connect::request,
    duration, exit_code,
    render::{proto_duration, render, rotated},
};
use crate::proto::{
    ClientOutcome, ClientSelector, RotateSecretsRequest, RotationStrategy, client_outcome,
    rotate_secrets_response::Event, secret_rotation_service_client::SecretRotationServiceClient,
};

/// A batch runs within Auth0's rate limit: far longer than one rotation may.
const BATCH_TIMEOUT: Duration = Duration::from_secs(3600);

/// Which clients a batch rotates, and how.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The clients to rotate (at most 1000); or pick them with --client, --app-type, --name
    /// and --metadata (every one given must match).
    pub client_ids: Vec<String>,
    /// A client id glob (* within a segment, ? one character); repeatable.
    #[arg(long = "client", value_name = "GLOB")]
    pub clients: Vec<String>,
    /// An Auth0 app_type (regular_web, non_interactive, ...); repeatable.
    #[arg(long = "app-type", value_name = "APP_TYPE")]
    pub app_types: Vec<String>,
    /// A glob on the application's name.
    #[arg(long, value_name = "GLOB", default_value = "")]
    pub name: String,
    /// key=value: a client_metadata member that must hold this value; repeatable.
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = key_value)]
    pub metadata: Vec<(String, String)>,
    /// Why, recorded with every rotation.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Each client's idempotency key is this followed by its client id: the same batch sent
    /// again replays what was done.
    #[arg(long, default_value = "")]
    pub idempotency_key_prefix: String,
    /// Stage each next secret in Vault first; promote after --distribute-for.
    #[arg(long)]
    pub staged: bool,
    /// How long staged secrets are distributed before promotion [default: the server's].
    #[arg(long, value_parser = duration)]
    pub distribute_for: Option<Duration>,
    /// Rotations at once (1 to 32) [default: the server's, 4].
    #[arg(long, default_value_t = 0)]
    pub max_concurrency: i32,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected key=value".into())
}

impl BatchArgs {
    fn request(self) -> RotateSecretsRequest {
        let picks = !(self.clients.is_empty()
            && self.app_types.is_empty()
            && self.name.is_empty()
            && self.metadata.is_empty());
        let selector = picks.then(|| ClientSelector {
            clients: self.clients,
            app_types: self.app_types,
            name: self.name,
            metadata: self.metadata.into_iter().collect(),
        });
        let strategy = match self.staged {
            true => RotationStrategy::Staged,
            false => RotationStrategy::Immediate,
        };
        RotateSecretsRequest {
            client_ids: self.client_ids,
            selector,
            strategy: strategy as i32,
            distribute_for: self.distribute_for.map(proto_duration),
            reason: self.reason,
            idempotency_key_prefix: self.idempotency_key_prefix,
            max_concurrency: self.max_concurrency,
        }
    }
}

/// Sends the batch and prints each client's outcome as it comes; answers the summary.
pub(super) async fn run(
    client: &mut SecretRotationServiceClient<Channel>,
    timeout: Option<Duration>,
    token: Option<&SecretString>,
    output: Output,
    args: BatchArgs,
) -> Result<Answer, Status> {
    let timeout = timeout.unwrap_or(BATCH_TIMEOUT);
    let mut stream = client
        .rotate_secrets(request(timeout, token, args.request())?)
        .await?
        .into_inner();
    let mut failed = BTreeSet::new();
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::Client(outcome)) => {
                if let Some(client_outcome::Outcome::Error(e)) = &outcome.outcome {
                    failed.insert(exit_code(Code::from_i32(e.code)));
                }
                println!("{}", line(output, &outcome));
            }
            Some(Event::Summary(summary)) => {
                let by_code: std::collections::BTreeMap<_, _> =
                    summary.failed_by_code.into_iter().collect();
                let value = json!({ "summary": {
                    "total": summary.total,
                    "rotated": summary.rotated,
                    "replayed": summary.replayed,
                    "failed": summary.failed,
                    "failed_by_code": by_code,
                }});
                let exit = match failed.len() {
                    0 => 0,
                    1 => failed.pop_first().unwrap_or(1),
                    _ => 1,
                };
                return Ok(Answer { value, exit });
            }
            None => {}
        }
    }
    Err(Status::unavailable(
        "the batch's stream ended before its summary: see each client's status",
    ))
}

/// One client's outcome: its rotation, or why not.
fn line(output: Output, outcome: &ClientOutcome) -> String {
    let id = &outcome.client_id;
    let (value, human) = match &outcome.outcome {
        Some(client_outcome::Outcome::Rotated(answer)) => {
            let what = match answer.replayed {
                true => "replayed",
                false => "rotated",
            };
            let version = answer.vault_secret.as_ref().map_or(0, |v| v.version);
            (
                json!({ "client_id": id, "rotated": rotated(answer) }),
                format!(
                    "{id}: {what} {} (Vault version {version})",
                    answer.rotation_id
                ),
            )
        }
        Some(client_outcome::Outcome::Error(e)) => {
            let code = code_name(Code::from_i32(e.code));
            (
                json!({ "client_id": id, "error": code, "message": e.message }),
                format!("{id}: {code}: {}", e.message),
            )
        }
        None => (json!({ "client_id": id }), format!("{id}: no outcome")),
    };
    match output {
        Output::Json => render(output, &value),
        Output::Human => human,
    }
}
