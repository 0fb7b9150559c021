//! How answers are printed: `key: value` lines for people, one JSON object for scripts.

use serde_json::{Value, json};

use super::Output;
use crate::proto::{
    ClientSummary, CredentialKind, DriftState, RotateSecretResponse, RotationStrategy, VaultSecret,
};

pub(super) fn vault(v: Option<&VaultSecret>) -> Value {
    v.map_or(
        Value::Null,
        |v| json!({ "mount": v.mount, "path": v.path, "version": v.version }),
    )
}

pub(super) fn strategy_name(raw: i32) -> &'static str {
    match RotationStrategy::try_from(raw) {
        Ok(RotationStrategy::Staged) => "staged",
        _ => "immediate",
    }
}

/// `key: value` lines, nested objects indented; or the JSON itself.
pub(super) fn render(output: Output, answer: &Value) -> String {
    fn lines(value: &Value, indent: usize, out: &mut Vec<String>) {
        let Value::Object(fields) = value else { return };
        for (key, value) in fields {
            let pad = "  ".repeat(indent);
            match value {
                Value::Null => {}
                Value::Object(o) if o.is_empty() => {}
                Value::Array(items) if items.is_empty() => {}
                Value::Object(_) => {
                    out.push(format!("{pad}{key}:"));
                    lines(value, indent + 1, out);
                }
                Value::Array(items) if items.iter().all(Value::is_object) => {
                    out.push(format!("{pad}{key}:"));
                    for item in items {
                        out.push(format!("{pad}  -"));
                        lines(item, indent + 2, out);
                    }
                }
                Value::String(s) if s.is_empty() => {}
                Value::String(s) => out.push(format!("{pad}{key}: {s}")),
                other => out.push(format!("{pad}{key}: {other}")),
            }
        }
    }
    match output {
        Output::Json => answer.to_string(),
        Output::Human => {
            let mut out = Vec::new();
            lines(answer, 0, &mut out);
            out.join("\n")
        }
    }
}

/// A RotateSecret answer (also each client a batch rotated).
pub(super) fn rotated(answer: &RotateSecretResponse) -> Value {
    json!({
        "client_id": answer.client.as_ref().map(|c| c.client_id.clone()),
        "client_name": answer.client.as_ref().map(|c| c.name.clone()),
        "rotation_id": answer.rotation_id,
        "strategy": strategy_name(answer.strategy),
        "vault": vault(answer.vault_secret.as_ref()),
        "rotated_at": answer.rotated_at.map(|t| t.to_string()),
        "promote_after": answer.promote_after.map(|t| t.to_string()),
        "recovered": answer.recovered,
        "replayed": answer.replayed,
    })
}

/// One client of a ListClients page.
pub(super) fn summary(c: &ClientSummary) -> Value {
    let credentials: Vec<Value> = c
        .credentials
        .iter()
        .map(|k| {
            json!({
                "credential_id": k.credential_id,
                "credential_type": k.credential_type,
                "name": k.name,
                "key_id": k.key_id,
                "alg": k.alg,
                "created_at": k.created_at.map(|t| t.to_string()),
                "expires_at": k.expires_at.map(|t| t.to_string()),
                "in_use": k.in_use,
            })
        })
        .collect();
    let metadata: std::collections::BTreeMap<&String, &String> = c.client_metadata.iter().collect();
    json!({
        "client_id": c.client_id,
        "name": c.name,
        "app_type": c.app_type,
        "authentication_method": c.authentication_method,
        "rotatable": c.rotatable,
        "credential_kind": match CredentialKind::try_from(c.credential_kind) {
            Ok(CredentialKind::ClientSecret) => Some("client_secret"),
            Ok(CredentialKind::PrivateKeyJwt) => Some("private_key_jwt"),
            Ok(CredentialKind::SelfSignedTlsClientAuth) => Some("self_signed_tls_client_auth"),
            Ok(CredentialKind::Unspecified) | Err(_) => None,
        },
        "last_rotation": c.last_rotation.as_ref().map(|l| json!({
            "rotation_id": l.rotation_id,
            "rotated_at": l.rotated_at.map(|t| t.to_string()),
            "strategy": strategy_name(l.strategy),
            "rotated_by": l.rotated_by,
            "reason": l.reason,
        })),
        "last_rotation_age_seconds": c.last_rotation_age.map(|d| d.seconds),
        "credential_age_seconds": c.credential_age.map(|d| d.seconds),
        "next_rotation_at": c.next_rotation_at.map(|t| t.to_string()),
        "schedule_rule": c.schedule_rule,
        "schedule_dry_run": c.schedule_dry_run.then_some(true),
        "drift": drift_name(c.drift),
        "credentials": credentials,
        "client_metadata": (!metadata.is_empty()).then_some(metadata),
    })
}

pub(super) fn drift_name(raw: i32) -> Option<&'static str> {
    match DriftState::try_from(raw) {
        Ok(DriftState::InSync) => Some("in_sync"),
        Ok(DriftState::Drifted) => Some("drifted"),
        Ok(DriftState::NotHeld) => Some("not_held"),
        Ok(DriftState::Unknown) => Some("unknown"),
        Ok(DriftState::Unspecified) | Err(_) => None,
    }
}

pub(super) fn proto_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
