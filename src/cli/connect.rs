//! Reaching the server: the channel (plaintext or TLS, never a guess), health, and requests
//! with the deadline and the bearer token.

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::ClientArgs;

/// A channel to the server, once it reports SERVING when `--wait-ready` asks for that.
pub(super) async fn ready(args: &ClientArgs) -> Result<Channel, Status> {
    let channel = connect(args).await?;
    if let Some(limit) = args.wait_ready {
        wait_ready(&channel, limit).await?;
    }
    Ok(channel)
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

pub(super) async fn serving(channel: &Channel) -> Result<bool, Status> {
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
pub(super) fn request<T>(
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
