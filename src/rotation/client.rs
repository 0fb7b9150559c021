//! Auth0's Client object as the Management API returns it: the vocabulary the protocol and the
//! gRPC layer share (the Auth0 adapter parses into it).
//!
//! Parsing is tolerant: every member is optional, unknown members are skipped without being
//! kept, and a member of an unexpected type reads as absent instead of failing the whole
//! object. The rotate-secret answer is the only copy of a new secret the service ever gets, so
//! a schema change at Auth0 must never turn a committed rotation into a parse error.
//! The secret itself is not part of this model: it is read separately, straight into a
//! `SecretString` (see `auth0::parse_rotation`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};
use serde_json::Value;

/// A member that reads as `None` when it is absent, `null`, or of an unexpected type.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(Self(serde_json::from_value(value).ok()))
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<T> Lenient<T> {
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

impl<T: Default> Lenient<T> {
    pub fn or_default(self) -> T {
        self.0.unwrap_or_default()
    }
}

type Opt<T> = Lenient<T>;
type List<T> = Lenient<Vec<T>>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Client {
    pub client_id: Opt<String>,
    pub tenant: Opt<String>,
    pub name: Opt<String>,
    pub description: Opt<String>,
    pub global: Opt<bool>,
    pub app_type: Opt<String>,
    pub logo_uri: Opt<String>,
    pub is_first_party: Opt<bool>,
    pub oidc_conformant: Opt<bool>,
    pub callbacks: List<String>,
    pub allowed_origins: List<String>,
    pub web_origins: List<String>,
    pub client_aliases: List<String>,
    pub allowed_clients: List<String>,
    pub allowed_logout_urls: List<String>,
    pub session_transfer: Opt<SessionTransfer>,
    pub oidc_logout: Opt<OidcLogout>,
    /// Deprecated alias of `oidc_logout`, still seen in real answers.
    pub oidc_backchannel_logout: Opt<OidcLogout>,
    pub grant_types: List<String>,
    pub jwt_configuration: Opt<JwtConfiguration>,
    pub signing_keys: List<SigningKey>,
    pub encryption_key: Opt<EncryptionKey>,
    pub sso: Opt<bool>,
    pub sso_disabled: Opt<bool>,
    pub cross_origin_authentication: Opt<bool>,
    /// Legacy name of `cross_origin_authentication`.
    pub cross_origin_auth: Opt<bool>,
    pub cross_origin_loc: Opt<String>,
    pub custom_login_page_on: Opt<bool>,
    pub custom_login_page: Opt<String>,
    pub custom_login_page_preview: Opt<String>,
    pub form_template: Opt<String>,
    pub addons: AddonNames,
    pub token_endpoint_auth_method: Opt<String>,
    pub is_token_endpoint_ip_header_trusted: Opt<bool>,
    pub client_metadata: Opt<BTreeMap<String, Value>>,
    pub mobile: Opt<Mobile>,
    pub initiate_login_uri: Opt<String>,
    pub native_social_login: Opt<NativeSocialLogin>,
    pub fedcm_login: Opt<FedcmLogin>,
    pub refresh_token: Opt<RefreshToken>,
    pub default_organization: Opt<DefaultOrganization>,
    pub organization_usage: Opt<String>,
    pub organization_require_behavior: Opt<String>,
    pub organization_discovery_methods: List<String>,
    pub client_authentication_methods: Opt<ClientAuthenticationMethods>,
    pub require_pushed_authorization_requests: Opt<bool>,
    pub require_proof_of_possession: Opt<bool>,
    pub signed_request_object: Opt<SignedRequestObject>,
    pub token_vault_privileged_access: Opt<TokenVaultPrivilegedAccess>,
    pub compliance_level: Opt<String>,
    pub skip_non_verifiable_callback_uri_confirmation_prompt: Opt<bool>,
    pub token_exchange: Opt<TokenExchange>,
    pub par_request_expiry: Opt<i32>,
    pub token_quota: Opt<TokenQuota>,
    pub express_configuration: Opt<ExpressConfiguration>,
    pub my_organization_configuration: Opt<MyOrganizationConfiguration>,
    pub identity_assertion_authorization_grant: Opt<IdentityAssertionAuthorizationGrant>,
    pub third_party_security_mode: Opt<String>,
    pub redirection_policy: Opt<String>,
    pub resource_server_identifier: Opt<String>,
    pub async_approval_notification_channels: List<String>,
    pub external_metadata_type: Opt<String>,
    pub external_metadata_created_by: Opt<String>,
    pub external_client_id: Opt<String>,
    pub jwks_uri: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionTransfer {
    pub can_create_session_transfer_token: Opt<bool>,
    pub enforce_cascade_revocation: Opt<bool>,
    pub allowed_authentication_methods: List<String>,
    pub enforce_device_binding: Opt<String>,
    pub allow_refresh_token: Opt<bool>,
    pub enforce_online_refresh_tokens: Opt<bool>,
    pub delegation: Opt<SessionTransferDelegation>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionTransferDelegation {
    pub allow_delegated_access: Opt<bool>,
    pub enforce_device_binding: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OidcLogout {
    pub backchannel_logout_urls: List<String>,
    pub backchannel_logout_initiators: Opt<BackchannelLogoutInitiators>,
    pub backchannel_logout_session_metadata: Opt<BackchannelLogoutSessionMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackchannelLogoutInitiators {
    pub mode: Opt<String>,
    pub selected_initiators: List<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackchannelLogoutSessionMetadata {
    pub include: Opt<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtConfiguration {
    pub lifetime_in_seconds: Opt<i32>,
    pub secret_encoded: Opt<bool>,
    pub scopes: Opt<serde_json::Map<String, Value>>,
    pub alg: Opt<String>,
}

/// Public parts only: a `key` member (private key PEM, seen in old create answers) is skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SigningKey {
    pub cert: Opt<String>,
    pub pkcs7: Opt<String>,
    pub subject: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EncryptionKey {
    #[serde(rename = "pub")]
    pub public_key: Opt<String>,
    pub cert: Opt<String>,
    pub subject: Opt<String>,
}

/// The names of the configured addons. Their settings hold third-party credentials, so they are
/// skipped while parsing and never held in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddonNames(pub Vec<String>);

/// Written back as `{"name": {}}`, which reads again as the same names.
impl Serialize for AddonNames {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for name in &self.0 {
            map.serialize_entry(name, &serde_json::Map::new())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for AddonNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, Visitor};
        use std::fmt;

        struct Names;
        impl<'de> Visitor<'de> for Names {
            type Value = AddonNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an addons object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AddonNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    // `null` means "not configured" (e.g. oag); anything else is a configuration.
                    if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                        names.push(name);
                    }
                }
                names.sort();
                names.dedup();
                Ok(AddonNames(names))
            }
            // Anything but an object reads as "no addons".
            fn visit_unit<E>(self) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_none<E>(self) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<AddonNames, E> {
                Ok(AddonNames::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AddonNames, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(AddonNames::default())
            }
        }
        d.deserialize_any(Names)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mobile {
    pub android: Opt<MobileAndroid>,
    pub ios: Opt<MobileIos>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MobileAndroid {
    pub app_package_name: Opt<String>,
    pub sha256_cert_fingerprints: List<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MobileIos {
    pub team_id: Opt<String>,
    pub app_bundle_identifier: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NativeSocialLogin {
    pub apple: Opt<Enabled>,
    pub facebook: Opt<Enabled>,
    pub google: Opt<Enabled>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Enabled {
    pub enabled: Opt<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FedcmLogin {
    pub google: Opt<FedcmLoginGoogle>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FedcmLoginGoogle {
    pub is_enabled: Opt<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshToken {
    pub rotation_type: Opt<String>,
    pub expiration_type: Opt<String>,
    pub leeway: Opt<i32>,
    pub token_lifetime: Opt<i32>,
    pub infinite_token_lifetime: Opt<bool>,
    pub idle_token_lifetime: Opt<i32>,
    pub infinite_idle_token_lifetime: Opt<bool>,
    pub policies: List<RefreshTokenPolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshTokenPolicy {
    pub audience: Opt<String>,
    pub scope: List<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefaultOrganization {
    pub organization_id: Opt<String>,
    pub flows: List<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientAuthenticationMethods {
    pub private_key_jwt: Opt<AuthenticationMethod>,
    pub tls_client_auth: Opt<AuthenticationMethod>,
    pub self_signed_tls_client_auth: Opt<AuthenticationMethod>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthenticationMethod {
    pub credentials: List<Credential>,
}

/// A credential reference; key material (e.g. a `pem` member) is skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credential {
    pub id: Opt<String>,
    pub name: Opt<String>,
    pub kid: Opt<String>,
    pub credential_type: Opt<String>,
    pub alg: Opt<String>,
    pub created_at: Opt<String>,
    pub updated_at: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignedRequestObject {
    pub required: Opt<bool>,
    pub credentials: List<Credential>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenVaultPrivilegedAccess {
    pub credentials: List<Credential>,
    pub ip_allowlist: List<String>,
    pub grants: List<TokenVaultGrant>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenVaultGrant {
    pub connection: Opt<String>,
    pub scopes: List<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenExchange {
    pub allow_any_profile_of_type: List<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenQuota {
    pub client_credentials: Opt<TokenQuotaClientCredentials>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenQuotaClientCredentials {
    pub enforce: Opt<bool>,
    pub per_day: Opt<i32>,
    pub per_hour: Opt<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExpressConfiguration {
    pub initiate_login_uri_template: Opt<String>,
    pub user_attribute_profile_id: Opt<String>,
    pub connection_profile_id: Opt<String>,
    pub enable_client: Opt<bool>,
    pub enable_organization: Opt<bool>,
    pub okta_oin_client_id: Opt<String>,
    pub admin_login_domain: Opt<String>,
    pub linked_clients: List<LinkedClient>,
    pub oin_submission_id: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkedClient {
    pub client_id: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MyOrganizationConfiguration {
    pub connection_profile_id: Opt<String>,
    pub user_attribute_profile_id: Opt<String>,
    pub allowed_strategies: List<String>,
    pub connection_deletion_behavior: Opt<String>,
    pub invitation_landing_client_id: Opt<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentityAssertionAuthorizationGrant {
    pub active: Opt<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_answer_parses() {
        // Shape of a real GET answer (ruby-auth0 cassette, 2021), with legacy members.
        let json = r#"{"tenant":"auth0-sdk-tests","global":false,"is_token_endpoint_ip_header_trusted":false,
          "description":"Client description","name":"TestClient","is_first_party":true,
          "sso_disabled":false,"cross_origin_auth":false,"oidc_conformant":false,
          "refresh_token":{"expiration_type":"non-expiring","leeway":0,"infinite_token_lifetime":true,
            "infinite_idle_token_lifetime":true,"token_lifetime":2592000,"idle_token_lifetime":1296000,
            "rotation_type":"non-rotating"},
          "signing_keys":[{"cert":"C","pkcs7":"P","subject":"deprecated","key":"PRIVATE"}],
          "client_id":"SftKo9ySyHnMPezQUFd0C70GBoNFM21F","callback_url_template":false,
          "client_secret":"not-read-here",
          "jwt_configuration":{"lifetime_in_seconds":36000,"secret_encoded":false},
          "grant_types":["authorization_code","implicit","refresh_token","client_credentials"],
          "addons":{"firebase":{"private_key":"FIREBASE-KEY"},"oag":null,"samlp":{}},
          "custom_login_page_on":false}"#;
        let c: Client = serde_json::from_str(json).unwrap();
        assert_eq!(
            c.client_id.0.as_deref(),
            Some("SftKo9ySyHnMPezQUFd0C70GBoNFM21F")
        );
        assert_eq!(c.cross_origin_auth.0, Some(false));
        assert_eq!(c.refresh_token.0.unwrap().token_lifetime.0, Some(2_592_000));
        assert_eq!(c.addons.0, vec!["firebase".to_owned(), "samlp".to_owned()]);
        assert_eq!(c.signing_keys.or_default()[0].cert.0.as_deref(), Some("C"));
        let debug = format!("{:?}", serde_json::from_str::<Client>(json).unwrap());
        for secret in ["PRIVATE", "FIREBASE-KEY", "not-read-here"] {
            assert!(!debug.contains(secret), "{secret} kept in the model");
        }
    }

    #[test]
    fn the_model_round_trips_without_secrets() {
        let json = r#"{"client_id":"abc","client_secret":"s","name":"n","addons":{"samlp":{"x":1}},
            "signing_keys":[{"cert":"C","key":"K"}],"jwt_configuration":{"scopes":{"a":[1]}}}"#;
        let c: Client = serde_json::from_str(json).unwrap();
        let written = serde_json::to_string(&c).unwrap();
        assert!(
            !written.contains("\"s\"") && !written.contains("\"K\""),
            "{written}"
        );
        assert_eq!(serde_json::from_str::<Client>(&written).unwrap(), c);
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let json = r#"{"client_id":"abc","name":42,"callbacks":"x","refresh_token":"weekly",
            "jwt_configuration":{"lifetime_in_seconds":"long","alg":"RS256"},
            "par_request_expiry":99999999999,"addons":"none","client_metadata":{"a":"b","n":1}}"#;
        let c: Client = serde_json::from_str(json).unwrap();
        assert_eq!(c.client_id.0.as_deref(), Some("abc"));
        assert_eq!(c.name.0, None);
        assert_eq!(c.callbacks.0, None);
        assert_eq!(c.refresh_token.0, None);
        let jwt = c.jwt_configuration.0.unwrap();
        assert_eq!(
            (jwt.lifetime_in_seconds.0, jwt.alg.0.as_deref()),
            (None, Some("RS256"))
        );
        assert_eq!(c.par_request_expiry.0, None);
        assert!(c.addons.0.is_empty());
        assert_eq!(c.client_metadata.0.unwrap().len(), 2);
    }
}
