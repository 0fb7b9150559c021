//! Client credentials as Auth0 keeps them for Private Key JWT and mTLS clients (facts and
//! sources in `docs/auth0-emulator.md`): a pool of at most 4 per client
//! (`/api/v2/clients/{id}/credentials`), attached to an authentication method through
//! `PATCH /api/v2/clients/{id}` (at most 2 per method), and the client authentications they
//! allow at `/oauth/token`: a client assertion signed with an attached key, or the certificate
//! a customer's mTLS edge forwards.

use std::time::{Duration, SystemTime};

use axum::{http::StatusCode, response::Response};
use base64::Engine;
use rand::{Rng, distr::Alphanumeric};
use serde::Deserialize;
use serde_json::{Value, json};
use x509_parser::{
    prelude::{FromDer, X509Certificate},
    public_key::{PublicKey, RSAPublicKey},
    x509::SubjectPublicKeyInfo,
};

mod authenticate;
mod routes;

pub(in crate::emulator) use routes::{create, delete, get_one, list, update};

use super::{Client, routes::api_error};

/// Credentials a client may hold, attached or not ("A client can have a maximum of 4
/// credentials.").
pub(super) const POOL_MAX: usize = 4;
/// Credentials one authentication method may have attached ("Array is too long (3), maximum 2").
pub(super) const ATTACHED_MAX: usize = 2;
/// `client_assertion_type` of a Private Key JWT client authentication.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The key the seeded Private Key JWT clients are registered with: test data, for tests that
/// sign as a client whose key was made outside the service.
pub const SEED_PRIVATE_KEY_PEM: &str = include_str!("seed-key.pem");
pub const SEED_PUBLIC_KEY_PEM: &str = include_str!("seed-key.pub.pem");

/// Each authentication method and the credential type it takes.
const METHODS: [(&str, &str); 3] = [
    ("private_key_jwt", "public_key"),
    ("self_signed_tls_client_auth", "x509_cert"),
    ("tls_client_auth", "cert_subject_dn"),
];
const ALGORITHMS: [&str; 3] = ["RS256", "RS384", "PS256"];

#[derive(Debug, Clone)]
pub(super) struct Credential {
    pub(super) id: String,
    name: Option<String>,
    pub(super) credential_type: String,
    pub(super) kid: Option<String>,
    pub(super) alg: Option<String>,
    thumbprint_sha256: Option<String>,
    subject_dn: Option<String>,
    created_at: SystemTime,
    updated_at: SystemTime,
    pub(super) expires_at: Option<SystemTime>,
    /// An RSA key's modulus and exponent, big-endian without leading zeros.
    rsa: Option<(Vec<u8>, Vec<u8>)>,
}

/// A credential as tests see it (`RunningEmulator::credentials`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CredentialInspection {
    pub id: String,
    pub credential_type: String,
    pub kid: Option<String>,
    pub alg: Option<String>,
    /// The authentication method it is attached to, if any.
    pub attached_to: Option<String>,
    pub expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCredential {
    credential_type: Option<String>,
    name: Option<String>,
    pem: Option<String>,
    alg: Option<String>,
    expires_at: Option<String>,
    parse_expiry_from_cert: Option<bool>,
    subject_dn: Option<String>,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn invalid(message: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        &format!("Payload validation error: '{message}'."),
        Some("invalid_body"),
    )
}

impl Credential {
    /// The credential as the Management API answers it; list and get answers carry
    /// `expires_at: null` when there is none, the create answer leaves it out.
    pub(super) fn json(&self, null_expiry: bool) -> Value {
        let mut body = json!({
            "id": self.id,
            "credential_type": self.credential_type,
            "created_at": time(self.created_at),
            "updated_at": time(self.updated_at),
        });
        let fields = [
            ("name", self.name.clone()),
            ("kid", self.kid.clone()),
            ("alg", self.alg.clone()),
            ("thumbprint_sha256", self.thumbprint_sha256.clone()),
            ("subject_dn", self.subject_dn.clone()),
        ];
        for (key, value) in fields {
            if let Some(value) = value {
                body[key] = Value::String(value);
            }
        }
        match self.expires_at {
            Some(at) => body["expires_at"] = Value::String(time(at)),
            None if null_expiry => body["expires_at"] = Value::Null,
            None => {}
        }
        body
    }

    fn usable(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }

    /// Parses `POST .../credentials`'s body (and a credential given inline to a new client).
    fn parse(body: &Value, now: SystemTime) -> Result<Self, Response> {
        let new: NewCredential = serde_json::from_value(body.clone()).map_err(|e| {
            invalid(
                &e.to_string()
                    .replace("unknown field", "Additional properties not allowed:"),
            )
        })?;
        let Some(credential_type) = new.credential_type else {
            return Err(invalid("Missing required property: credential_type"));
        };
        if !METHODS.iter().any(|(_, t)| *t == credential_type) {
            return Err(invalid(&format!(
                "No enum match for: \"{credential_type}\"' on property credential_type"
            )));
        }
        if new.expires_at.is_some() && new.parse_expiry_from_cert == Some(true) {
            return Err(invalid(
                "parse_expiry_from_cert and expires_at are mutually exclusive",
            ));
        }
        let mut expires_at = match &new.expires_at {
            Some(at) => Some(
                humantime::parse_rfc3339_weak(at)
                    .map_err(|_| invalid("Invalid date-time format on property expires_at"))?,
            ),
            None => None,
        };
        let mut credential = Credential {
            id: format!("cred_{}", random(22)),
            name: new.name,
            credential_type: credential_type.clone(),
            kid: None,
            alg: None,
            thumbprint_sha256: None,
            subject_dn: new.subject_dn.clone(),
            created_at: now,
            updated_at: now,
            expires_at: None,
            rsa: None,
        };
        let pem = new.pem.as_deref().map(parse_pem).transpose()?;
        match (credential_type.as_str(), pem) {
            ("public_key", Some(pem)) => {
                let alg = new.alg.unwrap_or_else(|| "RS256".into());
                if !ALGORITHMS.contains(&alg.as_str()) {
                    return Err(invalid(&format!(
                        "No enum match for: \"{alg}\"' on property alg"
                    )));
                }
                let (n, e) = pem.rsa()?;
                credential.kid = Some(thumbprint(&n, &e));
                credential.alg = Some(alg);
                credential.rsa = Some((n, e));
            }
            ("x509_cert", Some(Pem::Certificate(der))) => {
                let (_, cert) = X509Certificate::from_der(&der)
                    .map_err(|_| invalid("The pem is not a valid X.509 certificate"))?;
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
                credential.thumbprint_sha256 = Some(b64url(digest.as_ref()));
                let not_after = cert.validity().not_after.timestamp();
                expires_at =
                    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64));
            }
            ("cert_subject_dn", Some(Pem::Certificate(der))) => {
                let (_, cert) = X509Certificate::from_der(&der)
                    .map_err(|_| invalid("The pem is not a valid X.509 certificate"))?;
                credential.subject_dn = Some(cert.subject().to_string());
            }
            ("cert_subject_dn", None) if new.subject_dn.is_some() => {}
            ("x509_cert" | "cert_subject_dn", Some(_)) => {
                return Err(invalid("The pem must be an X.509 certificate"));
            }
            _ => return Err(invalid("Missing required property: pem")),
        }
        credential.expires_at = expires_at;
        Ok(credential)
    }
}

enum Pem {
    /// A public key: SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`), as DER.
    Spki(Vec<u8>),
    Pkcs1(Vec<u8>),
    Certificate(Vec<u8>),
}

fn parse_pem(text: &str) -> Result<Pem, Response> {
    let bad = || invalid("The pem is not a valid public key or X.509 certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.trim().as_bytes()).map_err(|_| bad())?;
    match pem.label.as_str() {
        "PUBLIC KEY" => Ok(Pem::Spki(pem.contents)),
        "RSA PUBLIC KEY" => Ok(Pem::Pkcs1(pem.contents)),
        "CERTIFICATE" => Ok(Pem::Certificate(pem.contents)),
        _ => Err(bad()),
    }
}

impl Pem {
    /// The RSA key's modulus and exponent, without leading zeros.
    fn rsa(&self) -> Result<(Vec<u8>, Vec<u8>), Response> {
        let bad = || invalid("The pem holds no RSA public key");
        let strip = |b: &[u8]| {
            let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
            b[start..].to_vec()
        };
        let from_key = |key: RSAPublicKey<'_>| Ok((strip(key.modulus), strip(key.exponent)));
        let from_spki = |spki: &SubjectPublicKeyInfo<'_>| match spki.parsed() {
            Ok(PublicKey::RSA(key)) => from_key(key),
            _ => Err(bad()),
        };
        match self {
            Pem::Pkcs1(der) => RSAPublicKey::from_der(der)
                .map_err(|_| bad())
                .and_then(|(_, k)| from_key(k)),
            Pem::Spki(der) => {
                let (_, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|_| bad())?;
                from_spki(&spki)
            }
            Pem::Certificate(der) => {
                let (_, cert) = X509Certificate::from_der(der).map_err(|_| bad())?;
                from_spki(cert.public_key())
            }
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7638's JWK thumbprint (SHA-256, base64url): Auth0's `kid` for a public key.
pub(super) fn thumbprint(n: &[u8], e: &[u8]) -> String {
    let jwk = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n));
    b64url(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwk.as_bytes()).as_ref())
}

fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn credential_not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "The credential does not exist",
        Some("inexistent_credential"),
    )
}

fn client_not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "The client does not exist",
        Some("inexistent_client"),
    )
}

impl Client {
    /// The method a credential is attached to, if any.
    fn attached_to(&self, credential_id: &str) -> Option<&'static str> {
        let methods = self.doc.get("client_authentication_methods")?;
        METHODS.iter().map(|(m, _)| *m).find(|method| {
            methods[*method]["credentials"]
                .as_array()
                .is_some_and(|list| list.iter().any(|c| c["id"] == credential_id))
        })
    }

    /// Credentials attached to `method` that are usable now.
    fn attached(&self, method: &str) -> Vec<&Credential> {
        let now = SystemTime::now();
        self.credentials
            .iter()
            .filter(|c| self.attached_to(&c.id) == Some(method) && c.usable(now))
            .collect()
    }

    pub(super) fn inspect_credentials(&self) -> Vec<CredentialInspection> {
        self.credentials
            .iter()
            .map(|c| CredentialInspection {
                id: c.id.clone(),
                credential_type: c.credential_type.clone(),
                kid: c.kid.clone(),
                alg: c.alg.clone(),
                attached_to: self.attached_to(&c.id).map(str::to_owned),
                expires_at: c.expires_at.map(time),
            })
            .collect()
    }

    /// A seed's inline credentials (`{credential_type, name, pem}` under a method, as
    /// `POST /api/v2/clients` takes them) go into the pool and are attached by id.
    pub(super) fn register_inline_credentials(&mut self) {
        let Some(Value::Object(methods)) = self.doc.get_mut("client_authentication_methods") else {
            return;
        };
        for method in methods.values_mut() {
            let Some(list) = method.get_mut("credentials").and_then(Value::as_array_mut) else {
                continue;
            };
            for entry in list.iter_mut() {
                if entry.get("pem").is_some() {
                    let credential = Credential::parse(entry, SystemTime::now())
                        .expect("seed credentials are valid");
                    *entry = json!({ "id": credential.id });
                    self.credentials.push(credential);
                }
            }
        }
    }
}

/// Checks `client_authentication_methods` of a PATCH against the client's pool and Auth0's
/// limits; the value to store (`{method: {credentials: [{id}]}}`), or the refusal.
pub(super) fn attachment(client: &Client, value: &Value) -> Result<Value, Response> {
    let Value::Object(methods) = value else {
        return match value {
            Value::Null => Ok(Value::Null),
            _ => Err(invalid(
                "Expected type object but found type string' on property client_authentication_methods",
            )),
        };
    };
    let mut stored = serde_json::Map::new();
    for (method, entry) in methods {
        let Some((_, wanted_type)) = METHODS.iter().find(|(m, _)| m == method) else {
            return Err(invalid(&format!(
                "Additional properties not allowed: {method}' on property client_authentication_methods"
            )));
        };
        let property = format!("client_authentication_methods.{method}.credentials");
        let Some(list) = entry.get("credentials").and_then(Value::as_array) else {
            return Err(invalid(&format!(
                "Missing required property: credentials' on property client_authentication_methods.{method}"
            )));
        };
        if list.len() > ATTACHED_MAX {
            return Err(invalid(&format!(
                "Array is too long ({}), maximum {ATTACHED_MAX}' on property {property}",
                list.len()
            )));
        }
        let mut ids = Vec::new();
        for item in list {
            let Some(id) = item.get("id").and_then(Value::as_str) else {
                return Err(invalid(&format!(
                    "Missing required property: id' on property {property}"
                )));
            };
            match client.credentials.iter().find(|c| c.id == id) {
                None => {
                    return Err(api_error(
                        StatusCode::BAD_REQUEST,
                        &format!("The credential {id} does not exist"),
                        Some("inexistent_credential"),
                    ));
                }
                Some(c) if c.credential_type != *wanted_type => {
                    return Err(api_error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "The credential {id} is not of type {wanted_type}, which {method} requires"
                        ),
                        Some("invalid_body"),
                    ));
                }
                Some(_) => ids.push(json!({ "id": id })),
            }
        }
        stored.insert(method.clone(), json!({ "credentials": ids }));
    }
    Ok(Value::Object(stored))
}
