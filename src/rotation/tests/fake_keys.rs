//! The in-memory Auth0's key credentials: a pool per client, attachments, and assertions
//! checked against the attached keys.

use std::sync::atomic::Ordering;

use secrecy::{ExposeSecret, SecretString};

use super::fakes::FakeAuth0;
use crate::rotation::{
    Attachments, AuthMethod, ClientId, CredentialId, CredentialInfo, CredentialIssuer, IssuerError,
    NewCredential, OwnCredential, public_pem_kid,
};

/// A key client's credentials: the pool (with each public key) and the attachments.
#[derive(Debug, Clone, Default)]
pub struct FakeKeys {
    pub pool: Vec<(CredentialInfo, String)>,
    pub attached: Attachments,
}

impl FakeKeys {
    /// The client as Auth0 describes it: its attachments, and the client credentials grant.
    pub fn client_doc(&self, id: &str) -> serde_json::Value {
        let mut methods = serde_json::Map::new();
        for (method, ids) in &self.attached {
            let credentials: Vec<_> = ids
                .iter()
                .map(|id| serde_json::json!({"id": id.as_str()}))
                .collect();
            methods.insert(
                method.as_str().into(),
                serde_json::json!({"credentials": credentials}),
            );
        }
        serde_json::json!({
            "client_id": id,
            "grant_types": ["client_credentials"],
            "client_authentication_methods": methods,
        })
    }

    pub fn attached_to(&self, method: AuthMethod) -> Vec<CredentialId> {
        self.attached
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, ids)| ids.clone())
            .unwrap_or_default()
    }
}

impl CredentialIssuer for FakeAuth0 {
    async fn credentials(&self, id: &ClientId) -> Result<Vec<CredentialInfo>, IssuerError> {
        self.credential_call()?;
        let keyed = self.keyed.lock().unwrap();
        let keys = keyed.get(id.as_str()).ok_or(IssuerError::ClientNotFound)?;
        Ok(keys.pool.iter().map(|(info, _)| info.clone()).collect())
    }

    async fn create_credential(
        &self,
        id: &ClientId,
        credential: &NewCredential,
    ) -> Result<CredentialInfo, IssuerError> {
        self.credential_call()?;
        let mut keyed = self.keyed.lock().unwrap();
        let keys = keyed
            .get_mut(id.as_str())
            .ok_or(IssuerError::ClientNotFound)?;
        if keys.pool.len() >= 4 {
            return Err(IssuerError::Protocol(
                "A client can have a maximum of 4 credentials.".into(),
            ));
        }
        let n = self.credential_calls.load(Ordering::SeqCst);
        let info = CredentialInfo {
            id: CredentialId::parse(&format!("cred_fake{n}")).unwrap(),
            name: Some(credential.name.clone()),
            credential_type: credential.method.credential_type().into(),
            kid: public_pem_kid(&credential.pem),
            alg: Some(credential.alg.unwrap_or_default().as_str().into()),
            thumbprint_sha256: None,
            created_at: Some(jiff::Timestamp::now().to_string()),
            expires_at: credential
                .expires_at
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(|t| t.to_string()),
        };
        keys.pool.push((info.clone(), credential.pem.clone()));
        Ok(info)
    }

    async fn attach(&self, id: &ClientId, attachments: &Attachments) -> Result<(), IssuerError> {
        self.credential_call()?;
        let mut keyed = self.keyed.lock().unwrap();
        let keys = keyed
            .get_mut(id.as_str())
            .ok_or(IssuerError::ClientNotFound)?;
        for (_, ids) in attachments {
            assert!(
                ids.len() <= 2,
                "Array is too long ({}), maximum 2",
                ids.len()
            );
            for cred in ids {
                if !keys.pool.iter().any(|(info, _)| info.id == *cred) {
                    return Err(IssuerError::Protocol(format!(
                        "The credential {cred} does not exist"
                    )));
                }
            }
        }
        keys.attached = attachments.clone();
        Ok(())
    }

    async fn delete_credential(
        &self,
        id: &ClientId,
        cred: &CredentialId,
    ) -> Result<(), IssuerError> {
        self.credential_call()?;
        let mut keyed = self.keyed.lock().unwrap();
        let keys = keyed
            .get_mut(id.as_str())
            .ok_or(IssuerError::ClientNotFound)?;
        assert!(
            !keys.attached.iter().any(|(_, ids)| ids.contains(cred)),
            "an attached credential cannot be deleted"
        );
        keys.pool.retain(|(info, _)| info.id != *cred);
        Ok(())
    }

    async fn authenticates(
        &self,
        id: &ClientId,
        assertion: &SecretString,
    ) -> Result<bool, IssuerError> {
        self.credential_call()?;
        if self.refuse_assertions.load(Ordering::SeqCst) {
            return Ok(false);
        }
        Ok(self.signed_by_attached(id, assertion.expose_secret()))
    }

    fn domain(&self) -> &str {
        "tenant.example.com"
    }

    /// As Auth0: the service's secret is its live one; any key attached to its client (the
    /// own client here is "own") unless assertions are refused.
    async fn proves(&self, credential: &OwnCredential) -> Result<bool, IssuerError> {
        if self.refuse_assertions.load(Ordering::SeqCst) {
            return Ok(false);
        }
        Ok(match credential {
            OwnCredential::Secret(secret) => {
                self.live("own").as_deref() == Some(secret.expose_secret())
            }
            OwnCredential::Key { .. } => true,
        })
    }
}

impl FakeAuth0 {
    /// Whether one of the client's attached Private Key JWT keys signed `jwt`.
    pub fn signed_by_attached(&self, id: &ClientId, jwt: &str) -> bool {
        let keys = self.keys(id.as_str());
        let Ok(header) = jsonwebtoken::decode_header(jwt) else {
            return false;
        };
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&["https://tenant.example.com/"]);
        keys.attached_to(AuthMethod::PrivateKeyJwt)
            .iter()
            .any(|cred| {
                keys.pool.iter().any(|(info, pem)| {
                    info.id == *cred
                        && jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_ok_and(
                            |key| {
                                jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation)
                                    .is_ok()
                            },
                        )
                })
            })
    }
}
