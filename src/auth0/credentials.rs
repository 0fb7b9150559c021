//! A client's key credentials through the Management API ([`CredentialIssuer`]):
//! `GET`/`POST /api/v2/clients/{id}/credentials`, `DELETE .../credentials/{credential}`,
//! attachment by `PATCH /api/v2/clients/{id}` `client_authentication_methods`, and whether a
//! key authenticates (a client-credentials request at `/oauth/token` with a client assertion).

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Auth0Client, SendError,
    errors::{ambiguous, api_error, reached, transport_error},
};
use crate::rotation::{
    Attachments, ClientId, CredentialId, CredentialInfo, CredentialIssuer, IssuerError,
    NewCredential, OwnCredential, Transport,
};

pub const CREATE_CREDENTIALS_SCOPE: &str = "create:client_credentials";
pub const READ_CREDENTIALS_SCOPE: &str = "read:client_credentials";
pub const UPDATE_CREDENTIALS_SCOPE: &str = "update:client_credentials";
pub const DELETE_CREDENTIALS_SCOPE: &str = "delete:client_credentials";
/// What rotating keys and certificates needs of the service's grant (secrets need none of it).
pub const CREDENTIAL_SCOPES: [&str; 4] = [
    CREATE_CREDENTIALS_SCOPE,
    READ_CREDENTIALS_SCOPE,
    UPDATE_CREDENTIALS_SCOPE,
    DELETE_CREDENTIALS_SCOPE,
];
pub(super) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A credential in Auth0's answers; key material (a `pem`) is never read.
#[derive(Deserialize)]
struct CredentialBody {
    id: String,
    name: Option<String>,
    credential_type: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    thumbprint_sha256: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
}

impl TryFrom<CredentialBody> for CredentialInfo {
    type Error = IssuerError;

    fn try_from(body: CredentialBody) -> Result<Self, IssuerError> {
        Ok(CredentialInfo {
            id: CredentialId::parse(&body.id).map_err(|_| {
                IssuerError::Protocol("Auth0 answered a credential id of an unknown form".into())
            })?,
            name: body.name,
            credential_type: body.credential_type.unwrap_or_default(),
            kid: body.kid,
            alg: body.alg,
            thumbprint_sha256: body.thumbprint_sha256,
            created_at: body.created_at,
            expires_at: body.expires_at,
        })
    }
}

fn credential_url(
    client: &Auth0Client,
    client_id: &ClientId,
    id: Option<&CredentialId>,
) -> reqwest::Url {
    let mut segments = vec!["api", "v2", "clients", client_id.as_str(), "credentials"];
    segments.extend(id.map(CredentialId::as_str));
    client.url(&segments)
}

/// A request that may have changed something at Auth0: its failures after it left hide the
/// outcome.
async fn changing(
    client: &Auth0Client,
    method: Method,
    url: &reqwest::Url,
    operation: &'static str,
    body: Option<Vec<u8>>,
    scope: &'static str,
) -> Result<reqwest::Response, IssuerError> {
    let response = client
        .send_with(method, url, operation, body)
        .await
        .map_err(|e| match e {
            SendError::Token(e) => e,
            SendError::Transport(e) => ambiguous(transport_error(e)),
        })?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(ambiguous(api_error(response, scope, false).await))
}

impl CredentialIssuer for Auth0Client {
    async fn credentials(&self, client_id: &ClientId) -> Result<Vec<CredentialInfo>, IssuerError> {
        let url = credential_url(self, client_id, None);
        let response = self
            .get(&url, "list-credentials", READ_CREDENTIALS_SCOPE)
            .await?;
        let listed: Vec<CredentialBody> = response.json().await.map_err(|_| {
            IssuerError::Protocol("the credential list is not the expected JSON".into())
        })?;
        listed.into_iter().map(CredentialInfo::try_from).collect()
    }

    async fn create_credential(
        &self,
        client_id: &ClientId,
        credential: &NewCredential,
    ) -> Result<CredentialInfo, IssuerError> {
        let mut body = json!({
            "credential_type": credential.method.credential_type(),
            "name": credential.name,
            "pem": credential.pem,
        });
        if let Some(alg) = credential.alg {
            body["alg"] = Value::String(alg.as_str().into());
        }
        if let Some(at) = credential.expires_at {
            body["expires_at"] = Value::String(humantime::format_rfc3339_millis(at).to_string());
        }
        let url = credential_url(self, client_id, None);
        let body = serde_json::to_vec(&body)
            .map_err(|_| IssuerError::Protocol("the credential could not be encoded".into()))?;
        let response = changing(
            self,
            Method::POST,
            &url,
            "create-credential",
            Some(body),
            CREATE_CREDENTIALS_SCOPE,
        )
        .await?;
        let created: CredentialBody = response
            .json()
            .await
            .map_err(|_| IssuerError::OutcomeUnknown(Transport::Unreadable))?;
        created.try_into()
    }

    async fn attach(
        &self,
        client_id: &ClientId,
        attachments: &Attachments,
    ) -> Result<(), IssuerError> {
        let mut methods = Map::new();
        for (method, ids) in attachments {
            let credentials: Vec<Value> =
                ids.iter().map(|id| json!({ "id": id.as_str() })).collect();
            methods.insert(
                method.as_str().into(),
                json!({ "credentials": credentials }),
            );
        }
        let body = json!({ "client_authentication_methods": methods });
        let url = self.url(&["api", "v2", "clients", client_id.as_str()]);
        let body = serde_json::to_vec(&body)
            .map_err(|_| IssuerError::Protocol("the attachment could not be encoded".into()))?;
        changing(
            self,
            Method::PATCH,
            &url,
            "attach-credentials",
            Some(body),
            UPDATE_CREDENTIALS_SCOPE,
        )
        .await
        .map(|_| ())
    }

    async fn delete_credential(
        &self,
        client_id: &ClientId,
        id: &CredentialId,
    ) -> Result<(), IssuerError> {
        let url = credential_url(self, client_id, Some(id));
        match changing(
            self,
            Method::DELETE,
            &url,
            "delete-credential",
            None,
            DELETE_CREDENTIALS_SCOPE,
        )
        .await
        {
            // Gone already: what deleting wanted.
            Err(IssuerError::ClientNotFound) => Ok(()),
            done => done.map(|_| ()),
        }
    }

    async fn authenticates(
        &self,
        client_id: &ClientId,
        assertion: &SecretString,
    ) -> Result<bool, IssuerError> {
        let url = self.url(&["oauth", "token"]);
        // The Management API is an audience the client is rarely granted: Auth0 then refuses
        // the token (403) after authenticating the client, which is all this asks.
        let audience = format!("https://{}/api/v2/", self.inner.domain);
        let request = self.inner.http.post(url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.expose_secret()),
            ("audience", audience.as_str()),
        ]);
        let response = crate::upstream::send("auth0", "verify-key", request)
            .await
            .map_err(transport_error)?;
        match response.status() {
            s if s.is_success() || s == StatusCode::FORBIDDEN => Ok(true),
            StatusCode::UNAUTHORIZED => Ok(false),
            StatusCode::TOO_MANY_REQUESTS => Err(IssuerError::RateLimited {
                retry_after: super::errors::retry_after(response.headers()),
            }),
            s if s.is_server_error() => Err(IssuerError::Unavailable {
                how: Transport::ServerError(s.as_u16()),
                at: reached(response.url(), None),
            }),
            s => Err(IssuerError::Protocol(format!(
                "Auth0's token endpoint answered {s} to a client assertion"
            ))),
        }
    }

    fn domain(&self) -> &str {
        &self.inner.domain
    }

    async fn proves(&self, credential: &OwnCredential) -> Result<bool, IssuerError> {
        self.inner
            .tokens
            .proves(&self.inner.http, &self.url(&["oauth", "token"]), credential)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_answers_are_read_without_key_material_and_checked() {
        let body = br#"{"id":"cred_e3WJsZXa3YqwGya24TM18V","name":"n","credential_type":"public_key","kid":"QTtPEeOT2gWWuID0QDg6nHgh7foYRcWkOyJ9DhNIn_A","alg":"RS256","created_at":"2023-04-18T13:44:27.616Z","updated_at":"2023-04-18T13:44:27.616Z","pem":"-----BEGIN PUBLIC KEY-----"}"#;
        let parsed: CredentialBody = serde_json::from_slice(body).unwrap();
        let info = CredentialInfo::try_from(parsed).unwrap();
        assert_eq!(info.id.as_str(), "cred_e3WJsZXa3YqwGya24TM18V");
        assert_eq!(
            info.kid.as_deref(),
            Some("QTtPEeOT2gWWuID0QDg6nHgh7foYRcWkOyJ9DhNIn_A")
        );
        assert_eq!(info.expires_at, None);
        let hostile: CredentialBody = serde_json::from_slice(br#"{"id":"../../clients"}"#).unwrap();
        assert!(matches!(
            CredentialInfo::try_from(hostile),
            Err(IssuerError::Protocol(_))
        ));
    }
}
