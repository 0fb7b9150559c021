//! Bearer tokens: JWTs checked against a JWKS (a file, or a URL refreshed periodically) for
//! signature, algorithm, issuer, audience, expiry and not-before (with a small leeway for clock
//! skew); a token naming critical header extensions (`crit`) is refused, as RFC 7515 §4.1.11
//! requires of a recipient that understands none. Only asymmetric algorithms are accepted,
//! and only those the key allows, so neither `alg: none` nor HMAC-with-the-public-key works.

use std::{future::Future, path::PathBuf, pin::Pin, time::Duration};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::reload::{Refresh, Reloadable, Trigger};

/// Where the JWKS comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    File(PathBuf),
    Url(Url),
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS: {0}")]
    Read(String),
    #[error("the JWKS is not a JSON Web Key Set")]
    Malformed,
    #[error("the JWKS holds no usable public signing key")]
    NoKeys,
}

/// Why a token was refused. Shown to the caller: none of these carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    #[error("the bearer token's algorithm is not accepted")]
    Algorithm,
    #[error("no key of the JWKS matches the bearer token")]
    UnknownKey,
    #[error("the bearer token's signature is invalid")]
    Signature,
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token is not valid yet (nbf)")]
    NotYetValid,
    #[error(
        "the bearer token names critical header extensions (crit) the service does not understand"
    )]
    Critical,
    #[error("the bearer token is for another audience")]
    Audience,
    #[error("the bearer token is from another issuer")]
    Issuer,
    #[error("the bearer token lacks a required claim (sub, exp, iss, aud)")]
    Claims,
}

/// A public signing key of the JWKS, with the algorithms it may verify.
pub struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

pub struct JwtVerifier {
    issuer: String,
    audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    leeway: Duration,
    keys: Reloadable<Vec<Key>, JwksError>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// Loads the JWKS once; fails when it cannot. A file is loaded again when it changes, a
    /// URL every `refresh`.
    pub async fn new(
        source: JwksSource,
        issuer: String,
        audience: String,
        leeway: Duration,
        refresh: Duration,
        http: reqwest::Client,
    ) -> Result<Self, JwksError> {
        let trigger = match &source {
            JwksSource::File(path) => Trigger::Files(vec![path.clone()]),
            JwksSource::Url(_) => Trigger::Every(refresh),
        };
        let keys = Reloadable::new("JWKS", trigger, move || {
            let (source, http) = (source.clone(), http.clone());
            async move { parse_jwks(&fetch(&source, &http).await?) }
        })
        .await?;
        Ok(Self {
            issuer,
            audience,
            leeway,
            keys,
        })
    }

    /// The token's subject, once everything checks out.
    pub fn verify(&self, token: &SecretString) -> Result<String, TokenError> {
        let token = token.expose_secret();
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenError::Critical);
        }
        let keys = self.keys.get();
        let candidates: Vec<&Key> = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey);
        }
        let usable: Vec<&Key> = candidates
            .into_iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .collect();
        if usable.is_empty() {
            return Err(TokenError::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        let mut last = TokenError::Signature;
        for key in usable {
            match decode::<Claims>(token, &key.key, &validation) {
                Ok(data) if !data.claims.sub.is_empty() => return Ok(data.claims.sub),
                Ok(_) => return Err(TokenError::Claims),
                Err(e) => last = token_error(e.kind()),
            }
        }
        Err(last)
    }
}

/// The watcher keeps the keys current.
impl Refresh for JwtVerifier {
    fn refresh_now(&self, forced: bool) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.keys.refresh_now(forced)
    }
}

async fn fetch(source: &JwksSource, http: &reqwest::Client) -> Result<String, JwksError> {
    match source {
        JwksSource::File(path) => {
            std::fs::read_to_string(path).map_err(|e| JwksError::Read(e.to_string()))
        }
        // The URL is public (a JWKS is); it says which fetch failed.
        JwksSource::Url(url) => http
            .get(url.clone())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| JwksError::Read(format!("{url}: {}", e.without_url())))?
            .text()
            .await
            .map_err(|e| JwksError::Read(format!("{url}: {}", e.without_url()))),
    }
}

fn token_error(kind: &jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidAudience => TokenError::Audience,
        K::InvalidIssuer => TokenError::Issuer,
        K::MissingRequiredClaim(_) | K::InvalidSubject => TokenError::Claims,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => TokenError::Algorithm,
        K::InvalidSignature => TokenError::Signature,
        _ => TokenError::Malformed,
    }
}

/// Public signing keys only: symmetric ("oct") keys and encryption keys are skipped.
fn parse_jwks(text: &str) -> Result<Vec<Key>, JwksError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|_| JwksError::Malformed)?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let by_type = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => return None,
                },
                AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                _ => return None,
            };
            let algorithms = match jwk.common.key_algorithm {
                None => by_type,
                Some(named) => {
                    let alg = signing_algorithm(named)?;
                    by_type.contains(&alg).then(|| vec![alg])?
                }
            };
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some(Key {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoKeys);
    }
    Ok(keys)
}

fn signing_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
