//! tonic layer: request -> one domain call -> response. Validation errors and domain errors
//! become a `Status` in `status.rs` only.

mod convert;
mod status;

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    proto::{self, secret_rotation_service_server::SecretRotationService},
    rotation::{
        ClientId, Ledger, RotateCommand, RotationError, RotationService, SecretIssuer, SecretStore,
    },
};

pub struct RotationApi<I, S, L> {
    service: Arc<RotationService<I, S, L>>,
    max_deadline: Duration,
}

impl<I, S, L> RotationApi<I, S, L> {
    pub fn new(service: Arc<RotationService<I, S, L>>, max_deadline: Duration) -> Self {
        Self {
            service,
            max_deadline,
        }
    }
}

#[tonic::async_trait]
impl<I: SecretIssuer, S: SecretStore, L: Ledger> SecretRotationService for RotationApi<I, S, L> {
    async fn rotate_secret(
        &self,
        request: Request<proto::RotateSecretRequest>,
    ) -> Result<Response<proto::RotateSecretResponse>, Status> {
        let deadline = Instant::now() + deadline(request.metadata(), self.max_deadline);
        let caller = request.remote_addr().map(|a| a.to_string());
        let body = request.into_inner();
        let mut command =
            RotateCommand::parse(&body.client_id, &body.reason, &body.idempotency_key)
                .map_err(RotationError::from)?;
        command.caller = caller;
        let rotation = self.service.rotate(command, deadline).await?;
        Ok(Response::new(rotation.into()))
    }

    async fn get_rotation_status(
        &self,
        request: Request<proto::GetRotationStatusRequest>,
    ) -> Result<Response<proto::GetRotationStatusResponse>, Status> {
        let client_id =
            ClientId::parse(&request.get_ref().client_id).map_err(RotationError::from)?;
        let status = self.service.status(&client_id).await?;
        Ok(Response::new(status.into()))
    }
}

/// The caller's `grpc-timeout`, capped at the configured maximum (which is also the default).
fn deadline(metadata: &MetadataMap, max: Duration) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(max, |d| d.min(max))
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
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "99H".parse().unwrap());
        assert_eq!(
            deadline(&md, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        md.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(
            deadline(&md, Duration::from_secs(30)),
            Duration::from_secs(2)
        );
    }
}
