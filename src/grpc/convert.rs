//! Domain values to API messages. Field-for-field: the proto mirrors Auth0's Client object
//! minus its secret material (the model never holds that in the first place).

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prost_types::{ListValue, Struct, Timestamp, Value as PbValue, value::Kind};
use serde_json::Value;

use crate::{
    proto as pb,
    rotation::{
        AttachedCredential, AuthMethod, Cancelled, Drift, HistoryEntry, Inventory, PageCursor,
        RolledBackRotation, Rotation, RotationError, RotationMetadata, RotationStatus, Step,
        StoredSecret, Strategy, Validated, ValidationError, client as a, secret_based,
    },
};

fn credential_kind(method: AuthMethod) -> pb::CredentialKind {
    match method {
        AuthMethod::PrivateKeyJwt => pb::CredentialKind::PrivateKeyJwt,
        AuthMethod::SelfSignedTls | AuthMethod::CaSignedTls => {
            pb::CredentialKind::SelfSignedTlsClientAuth
        }
    }
}

/// What a rotation replaced, and for a key the credential consumers use now: kind, id, key id.
fn credential(r: &Rotation) -> (pb::CredentialKind, String, String) {
    match &r.credential {
        Some(c) => (
            credential_kind(c.method),
            c.credential_id.to_string(),
            c.key_id.clone(),
        ),
        // A key rotation answered from before the credential was recorded.
        None if r.metadata.strategy == Strategy::Key => (
            pb::CredentialKind::Unspecified,
            String::new(),
            String::new(),
        ),
        None => (
            pb::CredentialKind::ClientSecret,
            String::new(),
            String::new(),
        ),
    }
}

impl From<Rotation> for pb::RotateSecretResponse {
    fn from(r: Rotation) -> Self {
        let (kind, credential_id, key_id) = credential(&r);
        Self {
            credential_kind: kind as i32,
            credential_id,
            key_id,
            client: Some((*r.client).into()),
            vault_secret: Some(r.stored.into()),
            rotated_at: Some(Timestamp::from(r.metadata.rotated_at)),
            rotation_id: r.metadata.rotation_id.to_string(),
            recovered: r.metadata.recovered,
            replayed: r.replayed,
            strategy: strategy(r.metadata.strategy) as i32,
            promote_after: r.promote_after.map(Timestamp::from),
        }
    }
}

impl From<Rotation> for pb::CompleteRotationResponse {
    fn from(r: Rotation) -> Self {
        let (kind, credential_id, key_id) = credential(&r);
        Self {
            credential_kind: kind as i32,
            credential_id,
            key_id,
            // A replayed answer has no fresh description of the client.
            client: (!r.replayed).then(|| (*r.client).into()),
            vault_secret: Some(r.stored.into()),
            rotated_at: Some(Timestamp::from(r.metadata.rotated_at)),
            rotation_id: r.metadata.rotation_id.to_string(),
            recovered: r.metadata.recovered,
            replayed: r.replayed,
        }
    }
}

impl From<Cancelled> for pb::CancelRotationResponse {
    fn from(c: Cancelled) -> Self {
        Self {
            rotation_id: c.rotation_id.to_string(),
            vault_secret: Some(c.stored.into()),
        }
    }
}

impl From<RolledBackRotation> for pb::RollbackRotationResponse {
    fn from(r: RolledBackRotation) -> Self {
        Self {
            rotation_id: r.rotation_id.to_string(),
            vault_secret: Some(r.stored.into()),
            rolled_back_at: Some(r.at.into()),
            replayed: r.replayed,
        }
    }
}

/// A request's strategy; UNSPECIFIED is immediate.
fn strategy_from(raw: i32) -> Result<Strategy, RotationError> {
    match pb::RotationStrategy::try_from(raw) {
        Ok(pb::RotationStrategy::Unspecified | pb::RotationStrategy::Immediate) => {
            Ok(Strategy::Immediate)
        }
        Ok(pb::RotationStrategy::Staged) => Ok(Strategy::Staged),
        Err(_) => Err(ValidationError::Strategy.into()),
    }
}

/// A request's `strategy` and `distribute_for`, as RotateSecret and RotateSecrets carry them.
pub(super) fn staging(
    strategy: i32,
    distribute_for: Option<prost_types::Duration>,
) -> Result<(Strategy, Option<Duration>), RotationError> {
    Ok((
        strategy_from(strategy)?,
        distribute_for.map(duration_from).transpose()?,
    ))
}

/// A request's `google.protobuf.Duration`; negative or out-of-range ones are refused with the
/// range the field allows.
fn duration_from(d: prost_types::Duration) -> Result<Duration, RotationError> {
    Duration::try_from(d).map_err(|_| ValidationError::DistributeForNegative.into())
}

fn strategy(s: Strategy) -> pb::RotationStrategy {
    match s {
        Strategy::Immediate => pb::RotationStrategy::Immediate,
        Strategy::Staged => pb::RotationStrategy::Staged,
        // Keys overlap the way a staged rotation does: the new key is handed out while the
        // old one still works.
        Strategy::Key => pb::RotationStrategy::Staged,
    }
}

impl From<Validated> for pb::RotateSecretResponse {
    fn from(v: Validated) -> Self {
        Self {
            client: Some((*v.client).into()),
            vault_secret: Some(v.stored.into()),
            ..Self::default()
        }
    }
}

impl From<StoredSecret> for pb::VaultSecret {
    fn from(s: StoredSecret) -> Self {
        Self {
            mount: s.mount,
            path: s.path,
            version: i64::try_from(s.version.get()).unwrap_or(i64::MAX),
        }
    }
}

impl From<RotationStatus> for pb::GetRotationStatusResponse {
    fn from(s: RotationStatus) -> Self {
        Self {
            last_rotation: s.last.map(last_rotation),
            staged_rotation: s.staged.map(|(staged, stored)| pb::StagedRotation {
                rotation_id: staged.rotation_id.to_string(),
                stage: match &s.open_intent {
                    Some(i) if i.step == Step::Promote => pb::RotationStage::Promoting,
                    _ => pb::RotationStage::Staged,
                } as i32,
                strategy: pb::RotationStrategy::Staged as i32,
                staged_at: Some(Timestamp::from(staged.staged_at)),
                promote_after: Some(Timestamp::from(staged.promote_after)),
                vault_secret: Some(stored.into()),
                reason: staged
                    .reason
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default(),
                caller: staged.caller.unwrap_or_default(),
            }),
            open_intent: s.open_intent.map(|i| pb::OpenIntent {
                rotation_id: i.rotation_id.to_string(),
                started_at: Some(Timestamp::from(i.started_at)),
                reason: i.reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
                caller: i.caller.unwrap_or_default(),
                lease_active: s.lease_active,
            }),
            drift: drift_state(s.drift) as i32,
            key_overlap: s.overlap.map(|o| pb::KeyOverlap {
                rotation_id: o.rotation_id.to_string(),
                credential_kind: credential_kind(o.method) as i32,
                credential_id: o.credential.to_string(),
                retiring_credential_id: o.retiring.map(|c| c.to_string()).unwrap_or_default(),
                retire_after: Some(Timestamp::from(o.retire_after)),
                reason: o.reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
                caller: o.caller.unwrap_or_default(),
            }),
        }
    }
}

/// ListClients' page size: 0 is the default, more than Auth0's largest page is that page.
pub(super) fn page_size(raw: i32) -> Result<usize, RotationError> {
    match usize::try_from(raw) {
        Err(_) => Err(ValidationError::PageSize.into()),
        Ok(0) => Ok(50),
        Ok(n) => Ok(n.min(100)),
    }
}

/// A page token is `v1.` and Auth0's checkpoint, base64url: opaque to callers, and checked
/// before anything of it reaches Auth0.
pub(super) fn page_cursor(token: &str) -> Result<Option<PageCursor>, RotationError> {
    if token.is_empty() {
        return Ok(None);
    }
    let decoded = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|t| t.strip_prefix("v1.")) {
        Some(cursor) => Ok(Some(PageCursor::parse(cursor)?)),
        None => Err(ValidationError::PageToken.into()),
    }
}

fn drift_state(drift: Option<Drift>) -> pb::DriftState {
    match drift {
        None => pb::DriftState::Unspecified,
        Some(Drift::InSync) => pb::DriftState::InSync,
        Some(Drift::Drifted) => pb::DriftState::Drifted,
        Some(Drift::NotHeld) => pb::DriftState::NotHeld,
        Some(Drift::Unknown) => pb::DriftState::Unknown,
    }
}

fn last_rotation((metadata, stored): (RotationMetadata, StoredSecret)) -> pb::LastRotation {
    pb::LastRotation {
        rotation_id: metadata.rotation_id.to_string(),
        rotated_at: Some(Timestamp::from(metadata.rotated_at)),
        vault_secret: Some(stored.into()),
        reason: metadata
            .reason
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        recovered: metadata.recovered,
        rotated_by: metadata.caller.unwrap_or_default(),
        strategy: strategy(metadata.strategy) as i32,
    }
}

fn attached_credential(c: AttachedCredential) -> pb::AttachedCredential {
    let (created, expires) = (c.info.created(), c.info.expires());
    pb::AttachedCredential {
        key_id: c.info.kid.or(c.info.thumbprint_sha256).unwrap_or_default(),
        credential_id: c.info.id.to_string(),
        credential_type: c.info.credential_type,
        name: c.info.name.unwrap_or_default(),
        alg: c.info.alg.unwrap_or_default(),
        created_at: created.map(Timestamp::from),
        expires_at: expires.map(Timestamp::from),
        in_use: c.in_use,
    }
}

fn page_token(cursor: Option<PageCursor>) -> String {
    cursor.map_or_else(String::new, |c| {
        URL_SAFE_NO_PAD.encode(format!("v1.{}", c.as_str()))
    })
}

impl From<Inventory> for pb::ListClientsResponse {
    fn from(page: Inventory) -> Self {
        Self {
            clients: page
                .entries
                .into_iter()
                .map(|e| {
                    let secret = secret_based(&e.client);
                    pb::ClientSummary {
                        client_id: e.client_id.as_str().to_owned(),
                        name: e.client.name.0.unwrap_or_default(),
                        app_type: e.client.app_type.0.unwrap_or_default(),
                        authentication_method: match e.method {
                            Some(method) => method.as_str().to_owned(),
                            None => e
                                .client
                                .token_endpoint_auth_method
                                .0
                                .clone()
                                .unwrap_or_default(),
                        },
                        credential_kind: match e.method {
                            Some(AuthMethod::CaSignedTls) => pb::CredentialKind::Unspecified,
                            Some(method) => credential_kind(method),
                            None if secret => pb::CredentialKind::ClientSecret,
                            None => pb::CredentialKind::Unspecified,
                        } as i32,
                        credentials: e.credentials.into_iter().map(attached_credential).collect(),
                        credential_age: e
                            .credential_age
                            .and_then(|a| prost_types::Duration::try_from(a).ok()),
                        rotatable: e.rotatable,
                        last_rotation: e.last.map(last_rotation),
                        last_rotation_age: e
                            .age
                            .and_then(|a| prost_types::Duration::try_from(a).ok()),
                        next_rotation_at: e
                            .next_rotation
                            .as_ref()
                            .map(|n| prost_types::Timestamp::from(n.at)),
                        schedule_rule: e
                            .next_rotation
                            .as_ref()
                            .map(|n| n.rule.clone())
                            .unwrap_or_default(),
                        schedule_dry_run: e.next_rotation.is_some_and(|n| n.dry_run),
                        drift: drift_state(e.drift) as i32,
                        client_metadata: e
                            .client
                            .client_metadata
                            .0
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                            .collect(),
                    }
                })
                .collect(),
            next_page_token: page_token(page.next),
        }
    }
}

impl From<HistoryEntry> for pb::RotationRecord {
    fn from(e: HistoryEntry) -> Self {
        Self {
            rotation_id: e.rotation_id.to_string(),
            strategy: strategy(e.strategy) as i32,
            started_at: Some(Timestamp::from(e.started_at)),
            stored_at: e.stored_at.map(Timestamp::from),
            rotated_by: e.caller.unwrap_or_default(),
            reason: e.reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            recovered: e.recovered,
            kv_version: e
                .kv_version
                .map_or(0, |v| i64::try_from(v.get()).unwrap_or(i64::MAX)),
            outcome: e.outcome,
            credential_kind: match (e.strategy, e.method) {
                (_, Some(method)) => credential_kind(method),
                (Strategy::Key, None) => pb::CredentialKind::Unspecified,
                _ => pb::CredentialKind::ClientSecret,
            } as i32,
            credential_id: e.credential_id.map(|c| c.to_string()).unwrap_or_default(),
            key_id: e.key_id.unwrap_or_default(),
        }
    }
}

fn list<T, U: From<T>>(l: a::Lenient<Vec<T>>) -> Vec<U> {
    l.or_default().into_iter().map(U::from).collect()
}

fn msg<T, U: From<T>>(o: a::Lenient<T>) -> Option<U> {
    o.into_inner().map(U::from)
}

impl From<a::Client> for pb::Client {
    fn from(c: a::Client) -> Self {
        Self {
            client_id: c.client_id.or_default(),
            tenant: c.tenant.0,
            name: c.name.0,
            description: c.description.0,
            global: c.global.0,
            app_type: c.app_type.0,
            logo_uri: c.logo_uri.0,
            is_first_party: c.is_first_party.0,
            oidc_conformant: c.oidc_conformant.0,
            callbacks: c.callbacks.or_default(),
            allowed_origins: c.allowed_origins.or_default(),
            web_origins: c.web_origins.or_default(),
            client_aliases: c.client_aliases.or_default(),
            allowed_clients: c.allowed_clients.or_default(),
            allowed_logout_urls: c.allowed_logout_urls.or_default(),
            session_transfer: msg(c.session_transfer),
            oidc_logout: msg(c.oidc_logout).or_else(|| msg(c.oidc_backchannel_logout)),
            grant_types: c.grant_types.or_default(),
            jwt_configuration: msg(c.jwt_configuration),
            signing_keys: list(c.signing_keys),
            encryption_key: msg(c.encryption_key),
            sso: c.sso.0,
            sso_disabled: c.sso_disabled.0,
            cross_origin_authentication: c.cross_origin_authentication.0.or(c.cross_origin_auth.0),
            cross_origin_loc: c.cross_origin_loc.0,
            custom_login_page_on: c.custom_login_page_on.0,
            custom_login_page: c.custom_login_page.0,
            custom_login_page_preview: c.custom_login_page_preview.0,
            form_template: c.form_template.0,
            addons: (!c.addons.0.is_empty()).then_some(pb::Addons {
                enabled: c.addons.0,
            }),
            token_endpoint_auth_method: c.token_endpoint_auth_method.0,
            is_token_endpoint_ip_header_trusted: c.is_token_endpoint_ip_header_trusted.0,
            client_metadata: c
                .client_metadata
                .or_default()
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            mobile: msg(c.mobile),
            initiate_login_uri: c.initiate_login_uri.0,
            native_social_login: msg(c.native_social_login),
            fedcm_login: msg(c.fedcm_login),
            refresh_token: msg(c.refresh_token),
            default_organization: msg(c.default_organization),
            organization_usage: c.organization_usage.0,
            organization_require_behavior: c.organization_require_behavior.0,
            organization_discovery_methods: c.organization_discovery_methods.or_default(),
            client_authentication_methods: msg(c.client_authentication_methods),
            require_pushed_authorization_requests: c.require_pushed_authorization_requests.0,
            require_proof_of_possession: c.require_proof_of_possession.0,
            signed_request_object: msg(c.signed_request_object),
            token_vault_privileged_access: msg(c.token_vault_privileged_access),
            compliance_level: c.compliance_level.0,
            skip_non_verifiable_callback_uri_confirmation_prompt: c
                .skip_non_verifiable_callback_uri_confirmation_prompt
                .0,
            token_exchange: msg(c.token_exchange),
            par_request_expiry: c.par_request_expiry.0,
            token_quota: msg(c.token_quota),
            express_configuration: msg(c.express_configuration),
            my_organization_configuration: msg(c.my_organization_configuration),
            identity_assertion_authorization_grant: msg(c.identity_assertion_authorization_grant),
            third_party_security_mode: c.third_party_security_mode.0,
            redirection_policy: c.redirection_policy.0,
            resource_server_identifier: c.resource_server_identifier.0,
            async_approval_notification_channels: c
                .async_approval_notification_channels
                .or_default(),
            external_metadata_type: c.external_metadata_type.0,
            external_metadata_created_by: c.external_metadata_created_by.0,
            external_client_id: c.external_client_id.0,
            jwks_uri: c.jwks_uri.0,
        }
    }
}

impl From<a::SessionTransfer> for pb::SessionTransfer {
    fn from(s: a::SessionTransfer) -> Self {
        Self {
            can_create_session_transfer_token: s.can_create_session_transfer_token.0,
            enforce_cascade_revocation: s.enforce_cascade_revocation.0,
            allowed_authentication_methods: s.allowed_authentication_methods.or_default(),
            enforce_device_binding: s.enforce_device_binding.0,
            allow_refresh_token: s.allow_refresh_token.0,
            enforce_online_refresh_tokens: s.enforce_online_refresh_tokens.0,
            delegation: msg(s.delegation),
        }
    }
}

impl From<a::SessionTransferDelegation> for pb::SessionTransferDelegation {
    fn from(d: a::SessionTransferDelegation) -> Self {
        Self {
            allow_delegated_access: d.allow_delegated_access.0,
            enforce_device_binding: d.enforce_device_binding.0,
        }
    }
}

impl From<a::OidcLogout> for pb::OidcLogout {
    fn from(o: a::OidcLogout) -> Self {
        Self {
            backchannel_logout_urls: o.backchannel_logout_urls.or_default(),
            backchannel_logout_initiators: msg(o.backchannel_logout_initiators),
            backchannel_logout_session_metadata: msg(o.backchannel_logout_session_metadata),
        }
    }
}

impl From<a::BackchannelLogoutInitiators> for pb::BackchannelLogoutInitiators {
    fn from(i: a::BackchannelLogoutInitiators) -> Self {
        Self {
            mode: i.mode.0,
            selected_initiators: i.selected_initiators.or_default(),
        }
    }
}

impl From<a::BackchannelLogoutSessionMetadata> for pb::BackchannelLogoutSessionMetadata {
    fn from(m: a::BackchannelLogoutSessionMetadata) -> Self {
        Self {
            include: m.include.0,
        }
    }
}

impl From<a::JwtConfiguration> for pb::JwtConfiguration {
    fn from(j: a::JwtConfiguration) -> Self {
        Self {
            lifetime_in_seconds: j.lifetime_in_seconds.0,
            secret_encoded: j.secret_encoded.0,
            scopes: j.scopes.0.map(to_struct),
            alg: j.alg.0,
        }
    }
}

impl From<a::SigningKey> for pb::SigningKey {
    fn from(k: a::SigningKey) -> Self {
        Self {
            cert: k.cert.0,
            pkcs7: k.pkcs7.0,
            subject: k.subject.0,
        }
    }
}

impl From<a::EncryptionKey> for pb::EncryptionKey {
    fn from(k: a::EncryptionKey) -> Self {
        Self {
            r#pub: k.public_key.0,
            cert: k.cert.0,
            subject: k.subject.0,
        }
    }
}

impl From<a::Mobile> for pb::Mobile {
    fn from(m: a::Mobile) -> Self {
        Self {
            android: m.android.0.map(|a| pb::MobileAndroid {
                app_package_name: a.app_package_name.0,
                sha256_cert_fingerprints: a.sha256_cert_fingerprints.or_default(),
            }),
            ios: m.ios.0.map(|i| pb::MobileIos {
                team_id: i.team_id.0,
                app_bundle_identifier: i.app_bundle_identifier.0,
            }),
        }
    }
}

impl From<a::NativeSocialLogin> for pb::NativeSocialLogin {
    fn from(n: a::NativeSocialLogin) -> Self {
        let provider = |p: a::Lenient<a::Enabled>| {
            p.0.map(|p| pb::NativeSocialLoginProvider {
                enabled: p.enabled.0,
            })
        };
        Self {
            apple: provider(n.apple),
            facebook: provider(n.facebook),
            google: provider(n.google),
        }
    }
}

impl From<a::FedcmLogin> for pb::FedcmLogin {
    fn from(f: a::FedcmLogin) -> Self {
        Self {
            google: f.google.0.map(|g| pb::FedcmLoginGoogle {
                is_enabled: g.is_enabled.0,
            }),
        }
    }
}

impl From<a::RefreshToken> for pb::RefreshToken {
    fn from(r: a::RefreshToken) -> Self {
        Self {
            rotation_type: r.rotation_type.0,
            expiration_type: r.expiration_type.0,
            leeway: r.leeway.0,
            token_lifetime: r.token_lifetime.0,
            infinite_token_lifetime: r.infinite_token_lifetime.0,
            idle_token_lifetime: r.idle_token_lifetime.0,
            infinite_idle_token_lifetime: r.infinite_idle_token_lifetime.0,
            policies: list(r.policies),
        }
    }
}

impl From<a::RefreshTokenPolicy> for pb::RefreshTokenPolicy {
    fn from(p: a::RefreshTokenPolicy) -> Self {
        Self {
            audience: p.audience.0,
            scope: p.scope.or_default(),
        }
    }
}

impl From<a::DefaultOrganization> for pb::DefaultOrganization {
    fn from(d: a::DefaultOrganization) -> Self {
        Self {
            organization_id: d.organization_id.0,
            flows: d.flows.or_default(),
        }
    }
}

impl From<a::ClientAuthenticationMethods> for pb::ClientAuthenticationMethods {
    fn from(m: a::ClientAuthenticationMethods) -> Self {
        Self {
            private_key_jwt: msg(m.private_key_jwt),
            tls_client_auth: msg(m.tls_client_auth),
            self_signed_tls_client_auth: msg(m.self_signed_tls_client_auth),
        }
    }
}

impl From<a::AuthenticationMethod> for pb::AuthenticationMethod {
    fn from(m: a::AuthenticationMethod) -> Self {
        Self {
            credentials: list(m.credentials),
        }
    }
}

impl From<a::Credential> for pb::Credential {
    fn from(c: a::Credential) -> Self {
        Self {
            id: c.id.0,
            name: c.name.0,
            kid: c.kid.0,
            credential_type: c.credential_type.0,
            alg: c.alg.0,
            created_at: c.created_at.0,
            updated_at: c.updated_at.0,
        }
    }
}

impl From<a::SignedRequestObject> for pb::SignedRequestObject {
    fn from(s: a::SignedRequestObject) -> Self {
        Self {
            required: s.required.0,
            credentials: list(s.credentials),
        }
    }
}

impl From<a::TokenVaultPrivilegedAccess> for pb::TokenVaultPrivilegedAccess {
    fn from(t: a::TokenVaultPrivilegedAccess) -> Self {
        Self {
            credentials: list(t.credentials),
            ip_allowlist: t.ip_allowlist.or_default(),
            grants: t
                .grants
                .or_default()
                .into_iter()
                .map(|g| pb::TokenVaultGrant {
                    connection: g.connection.0,
                    scopes: g.scopes.or_default(),
                })
                .collect(),
        }
    }
}

impl From<a::TokenExchange> for pb::TokenExchange {
    fn from(t: a::TokenExchange) -> Self {
        Self {
            allow_any_profile_of_type: t.allow_any_profile_of_type.or_default(),
        }
    }
}

impl From<a::TokenQuota> for pb::TokenQuota {
    fn from(t: a::TokenQuota) -> Self {
        Self {
            client_credentials: t
                .client_credentials
                .0
                .map(|c| pb::TokenQuotaClientCredentials {
                    enforce: c.enforce.0,
                    per_day: c.per_day.0,
                    per_hour: c.per_hour.0,
                }),
        }
    }
}

impl From<a::ExpressConfiguration> for pb::ExpressConfiguration {
    fn from(e: a::ExpressConfiguration) -> Self {
        Self {
            initiate_login_uri_template: e.initiate_login_uri_template.0,
            user_attribute_profile_id: e.user_attribute_profile_id.0,
            connection_profile_id: e.connection_profile_id.0,
            enable_client: e.enable_client.0,
            enable_organization: e.enable_organization.0,
            okta_oin_client_id: e.okta_oin_client_id.0,
            admin_login_domain: e.admin_login_domain.0,
            linked_clients: e
                .linked_clients
                .or_default()
                .into_iter()
                .map(|l| pb::LinkedClient {
                    client_id: l.client_id.0,
                })
                .collect(),
            oin_submission_id: e.oin_submission_id.0,
        }
    }
}

impl From<a::MyOrganizationConfiguration> for pb::MyOrganizationConfiguration {
    fn from(m: a::MyOrganizationConfiguration) -> Self {
        Self {
            connection_profile_id: m.connection_profile_id.0,
            user_attribute_profile_id: m.user_attribute_profile_id.0,
            allowed_strategies: m.allowed_strategies.or_default(),
            connection_deletion_behavior: m.connection_deletion_behavior.0,
            invitation_landing_client_id: m.invitation_landing_client_id.0,
        }
    }
}

impl From<a::IdentityAssertionAuthorizationGrant> for pb::IdentityAssertionAuthorizationGrant {
    fn from(g: a::IdentityAssertionAuthorizationGrant) -> Self {
        Self { active: g.active.0 }
    }
}

fn to_struct(map: serde_json::Map<String, Value>) -> Struct {
    Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    PbValue { kind: Some(kind) }
}
