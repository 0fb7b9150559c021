//! Client authentication by credential at `/oauth/token`: a Private Key JWT client assertion
//! signed with an attached key, or a self-signed certificate an mTLS edge forwards.

use std::{collections::HashMap, time::SystemTime};

use axum::{
    http::{HeaderMap, StatusCode},
    response::Response,
};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

use super::{ASSERTION_TYPE, Pem, b64url, parse_pem};
use crate::emulator::{Inner, routes::json_response};

/// Clock skew allowed for `iat`, `nbf` and `exp`; the longest assertion lifetime.
const SKEW: u64 = 10;
const LIFETIME_MAX: u64 = 300;
const ASSERTION_MAX_BYTES: usize = 2048;

fn refused(description: &str) -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_client", "error_description": description}),
    )
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    jti: Option<String>,
    iat: Option<u64>,
    exp: Option<u64>,
}

impl Inner {
    /// A Private Key JWT client authentication: the client whose attached key signed the
    /// assertion, or the 401 answer.
    pub(in crate::emulator) fn assertion_client(
        &mut self,
        params: &HashMap<String, String>,
    ) -> Result<String, Response> {
        if params.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
            return Err(json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": format!("client_assertion_type must be {ASSERTION_TYPE}")}),
            ));
        }
        let assertion = params
            .get("client_assertion")
            .map(String::as_str)
            .unwrap_or("");
        if assertion.len() > ASSERTION_MAX_BYTES {
            return Err(refused("The client assertion is longer than 2048 bytes"));
        }
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| refused("The client assertion is not a JWT"))?;
        let alg = match header.alg {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::PS256 => "PS256",
            _ => {
                return Err(refused(
                    "The client assertion's alg is not RS256, RS384 or PS256",
                ));
            }
        };
        // Whose assertion it claims to be, before any key is tried.
        let claimed: Claims = assertion
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .ok_or_else(|| refused("The client assertion's claims cannot be read"))?;
        let client_id = claimed.iss.clone().unwrap_or_default();
        if params.get("client_id").is_some_and(|id| *id != client_id) {
            return Err(refused("client_id is not the client assertion's iss"));
        }
        let audience = format!("https://{}/", self.config.domain);
        let client = self
            .clients
            .get(&client_id)
            .ok_or_else(|| refused("Unknown client"))?;
        let keys: Vec<(Vec<u8>, Vec<u8>)> = client
            .attached("private_key_jwt")
            .into_iter()
            .filter(|c| c.alg.as_deref() == Some(alg))
            .filter(|c| header.kid.is_none() || c.kid == header.kid)
            .filter_map(|c| c.rsa.clone())
            .collect();
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&audience]);
        validation.set_issuer(&[&client_id]);
        validation.sub = Some(client_id.clone());
        validation.leeway = SKEW;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let verified = keys.iter().find_map(|(n, e)| {
            let key = DecodingKey::from_rsa_raw_components(n, e);
            jsonwebtoken::decode::<Claims>(assertion, &key, &validation).ok()
        });
        let Some(claims) = verified.map(|t| t.claims) else {
            return Err(refused(
                "The client assertion is not signed by a credential attached to the client, or its iss, sub, aud or exp is wrong",
            ));
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let exp = claims.exp.unwrap_or_default();
        let start = claims.iat.unwrap_or(now);
        if start > now + SKEW || exp.saturating_sub(start) > LIFETIME_MAX {
            return Err(refused(
                "The client assertion's lifetime is longer than 5 minutes",
            ));
        }
        let jti = claims.jti.unwrap_or_default();
        if jti.is_empty() || jti.len() > 64 || claims.sub.is_some_and(|s| s.len() > 64) {
            return Err(refused(
                "The client assertion needs a jti of at most 64 characters",
            ));
        }
        if !self.assertion_ids.insert(format!("{client_id}:{jti}")) {
            return Err(refused("The client assertion's jti was used before"));
        }
        Ok(client_id)
    }

    /// A self-signed mTLS client authentication: the certificate the edge forwards
    /// (`client-certificate`, URL-encoded PEM, with `client-certificate-ca-verified: FAILED`)
    /// must be one attached to the client's `self_signed_tls_client_auth`.
    pub(in crate::emulator) fn certificate_client(
        &self,
        headers: &HeaderMap,
        client_id: &str,
    ) -> Result<String, Response> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if header("client-certificate-ca-verified") != Some("FAILED") {
            return Err(refused("Only self-signed client certificates are emulated"));
        }
        let pem: String =
            percent_encoding::percent_decode_str(header("client-certificate").unwrap_or(""))
                .decode_utf8_lossy()
                .into_owned();
        let Ok(Pem::Certificate(der)) = parse_pem(&pem) else {
            return Err(refused("The client certificate cannot be read"));
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let presented = b64url(digest.as_ref());
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| refused("Unknown client"))?;
        let known = client
            .attached("self_signed_tls_client_auth")
            .iter()
            .any(|c| c.thumbprint_sha256.as_deref() == Some(presented.as_str()));
        if known {
            Ok(client_id.to_owned())
        } else {
            Err(refused(
                "The client certificate is not attached to the client",
            ))
        }
    }
}
