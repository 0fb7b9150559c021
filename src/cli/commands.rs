//! The commands that send one request and print one answer (all but `batch`).

use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};
use tonic::{Status, transport::Channel};

use super::{
    Answer, Operation,
    connect::{request, serving},
    render::{drift_name, proto_duration, rotated, strategy_name, summary, vault},
};
use crate::proto::{
    CancelRotationRequest, CompleteRotationRequest, GetRotationStatusRequest, ListClientsRequest,
    ListRotationsRequest, RollbackRotationRequest, RotateSecretRequest, RotationStrategy,
    secret_rotation_service_client::SecretRotationServiceClient,
};

/// Runs `operation` against the server behind `channel`: its answer as JSON.
pub(super) async fn execute(operation: Operation, channel: Channel) -> Result<Answer, Status> {
    let args = operation.client();
    let mut client = SecretRotationServiceClient::new(channel.clone());
    let timeout = args.timeout();
    let token = args.token.clone();
    Ok(Answer::done(match operation {
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
                        distribute_for: distribute_for.map(proto_duration),
                    },
                )?)
                .await?
                .into_inner();
            let mut rotated = rotated(&answer);
            rotated["dry_run"] = json!(dry_run);
            rotated
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
                "drift": drift_name(status.drift),
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
        Operation::List {
            client: _,
            page_size,
            page_token,
            all,
        } => {
            list(
                &mut client,
                timeout,
                token.as_ref(),
                page_size,
                page_token,
                all,
            )
            .await?
        }
        Operation::Batch {
            client: args,
            batch,
        } => {
            let (timeout, output) = (args.timeout, args.output);
            return super::batch::run(&mut client, timeout, token.as_ref(), output, batch).await;
        }
    }))
}

/// A page of the tenant's clients (`--page-token` where the last one ended), or every page.
async fn list(
    client: &mut SecretRotationServiceClient<Channel>,
    timeout: Duration,
    token: Option<&SecretString>,
    page_size: i32,
    mut page_token: String,
    all: bool,
) -> Result<Value, Status> {
    let mut clients = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = ListClientsRequest {
            page_size,
            page_token: page_token.clone(),
        };
        let answer = client
            .list_clients(request(timeout, token, page)?)
            .await?
            .into_inner();
        clients.extend(answer.clients.iter().map(summary));
        let next = answer.next_page_token;
        // A server that hands the same page out again would keep --all going for ever.
        if !all || next.is_empty() || !seen.insert(next.clone()) {
            let next = (!next.is_empty() && !all).then_some(next);
            return Ok(json!({ "clients": clients, "next_page_token": next }));
        }
        page_token = next;
    }
}
