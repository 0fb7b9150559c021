//! RotateSecrets: the request checked and translated (clients named or selected, each
//! authorized on its own), the domain's rotations streamed back as they finish, then a summary.

use std::{collections::BTreeMap, sync::Arc};

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use super::{Call, RotationApi, convert, within_deadline};
use crate::{
    auth::Rpc,
    proto,
    rotation::{
        BatchClients, BatchCommand, ClientId, Ledger, Rotation, RotationError, SecretIssuer,
        SecretStore, Selector, batch,
    },
};

pub(super) type Stream = ReceiverStream<Result<proto::RotateSecretsResponse, Status>>;

impl<I: SecretIssuer, S: SecretStore, L: Ledger> RotationApi<I, S, L> {
    pub(super) async fn batch(
        &self,
        call: &Call,
        request: Request<proto::RotateSecretsRequest>,
    ) -> Result<Response<Stream>, Status> {
        let (origin, caller) = self.authenticate(call, &request, "")?;
        let deadline = self.deadline_of(&request);
        let body = request.into_inner();
        let selector = body
            .selector
            .map(|s| {
                Selector::parse(
                    &s.clients,
                    &s.app_types,
                    &s.name,
                    s.metadata.into_iter().collect::<BTreeMap<_, _>>(),
                )
            })
            .transpose()
            .map_err(RotationError::from)?;
        let mut batch = BatchCommand::parse(
            &body.client_ids,
            selector,
            &body.reason,
            &body.idempotency_key_prefix,
            body.max_concurrency,
        )
        .map_err(RotationError::from)?;
        (batch.strategy, batch.distribute_for) =
            convert::staging(body.strategy, body.distribute_for)?;
        // Checked as RotateSecret checks it, once for all.
        self.service
            .distribute_for(batch.strategy, batch.distribute_for)
            .map_err(RotationError::from)?;
        // One admission for the batch: Auth0's rate limit paces its rotations.
        self.gate
            .admit_rotation(&caller)
            .map_err(|e| self.refuse(&origin, "", e))?;
        let clients = match &batch.clients {
            BatchClients::Named(named) => named.clone(),
            BatchClients::Selected(selector) => {
                // Only the clients the caller may rotate, as ListClients shows only those it may
                // list: a wide selector must not enumerate the rest.
                let visible = |id: &ClientId| {
                    self.gate
                        .authorize(&caller, Rpc::RotateSecret, id.as_str())
                        .is_ok()
                };
                within_deadline(deadline, batch::select(&self.service, selector, visible)).await?
            }
        };

        let mut refused = Vec::new();
        let mut commands = Vec::new();
        for client_id in clients {
            if let Err(e) = self
                .gate
                .authorize(&caller, Rpc::RotateSecret, client_id.as_str())
            {
                // Audited like any refusal, but not counted against the caller's address: a
                // batch over a wide selector is not an attack.
                self.refusals
                    .denied(&origin, client_id.as_str(), e.kind().as_str());
                refused.push((client_id, Status::from(e)));
                continue;
            }
            commands.push(batch.command(client_id, origin.clone()));
        }
        let concurrency = batch.concurrency;

        let (answers, stream) = mpsc::channel(16);
        let service = Arc::clone(&self.service);
        // Nobody waits on each rotation: the longest deadline a caller could ask for.
        let each = self.deadlines.max;
        let span = Span::current();
        let trace_id = call.trace_id.clone();
        tokio::spawn(
            super::status::TRACE_ID.scope(
                trace_id,
                async move {
                    let mut summary = Summary::new(refused.len() + commands.len());
                    for (client_id, status) in refused {
                        summary.send(&answers, client_id, Err(status)).await;
                    }
                    let (done, finished) = mpsc::channel(concurrency);
                    // Batches are background work: they leave callers Auth0's reserve.
                    let run = batch::rotate_many(&service, commands, concurrency, each, done);
                    let forward = async {
                        // Owned here: dropped when the caller hangs up, which stops new rotations.
                        let mut finished = finished;
                        loop {
                            tokio::select! {
                                // The caller hung up: closing `finished` stops new rotations.
                                () = answers.closed() => return,
                                next = finished.recv() => match next {
                                    Some((client_id, result)) => {
                                        let result = result.map_err(Status::from);
                                        summary.send(&answers, client_id, result).await;
                                    }
                                    None => return,
                                },
                            }
                        }
                    };
                    tokio::join!(run, forward);
                    let _ = answers.send(Ok(summary.message())).await;
                }
                .instrument(span),
            ),
        );
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// What a batch did so far.
struct Summary(proto::BatchSummary);

impl Summary {
    fn new(total: usize) -> Self {
        Self(proto::BatchSummary {
            total: i32::try_from(total).unwrap_or(i32::MAX),
            ..Default::default()
        })
    }

    /// Counts one client's outcome and streams it (a caller who hung up is not told).
    async fn send(
        &mut self,
        answers: &mpsc::Sender<Result<proto::RotateSecretsResponse, Status>>,
        client_id: ClientId,
        result: Result<Rotation, Status>,
    ) {
        use proto::client_outcome::Outcome;
        let outcome = match result {
            Ok(rotation) => {
                self.0.rotated += 1;
                self.0.replayed += i32::from(rotation.replayed);
                Outcome::Rotated(rotation.into())
            }
            Err(status) => {
                self.0.failed += 1;
                *self
                    .0
                    .failed_by_code
                    .entry(super::status::code_name(status.code()))
                    .or_default() += 1;
                Outcome::Error(rpc_status(&status))
            }
        };
        let message = proto::RotateSecretsResponse {
            event: Some(proto::rotate_secrets_response::Event::Client(
                proto::ClientOutcome {
                    client_id: client_id.as_str().to_owned(),
                    outcome: Some(outcome),
                },
            )),
        };
        let _ = answers.send(Ok(message)).await;
    }

    fn message(self) -> proto::RotateSecretsResponse {
        proto::RotateSecretsResponse {
            event: Some(proto::rotate_secrets_response::Event::Summary(self.0)),
        }
    }
}

/// A status as google.rpc.Status, with its details (RetryInfo and the like).
fn rpc_status(status: &Status) -> tonic_types::pb::Status {
    tonic_types::pb::Status::decode(status.details())
        .ok()
        .filter(|s| s.code == status.code() as i32)
        .unwrap_or_else(|| tonic_types::pb::Status {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        })
}
