//! ListClients through the real grpcurl against the emulator's client list: every client once
//! across pages, rotatable or not, each rotated one with its last rotation and age; nothing
//! secret asked of Auth0 or answered; bad paging refused before Auth0 is asked. And the
//! periodic drift scan, whose findings ListClients shows.

use std::{collections::HashSet, time::Duration};

use secret_rotator::{
    emulator::{fleet_clients, random_client_id, regular_client},
    proto::{ClientSummary, DriftState, ListClientsRequest},
};

use crate::helpers::{Stack, StackOptions, eventually};

const FLEET: usize = 120;

#[tokio::test]
async fn list_clients_pages_through_the_tenant_with_last_rotations() {
    let stack = Stack::start().await;
    for client in fleet_clients(FLEET) {
        stack.seed(client);
    }
    let rotated = [
        "Fleet000000000000000000000000001",
        "Fleet000000000000000000000000042",
    ];
    for id in rotated {
        stack.rotate_ok(id).await;
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = stack
            .grpcurl(
                "ListClients",
                &format!(r#"{{"page_size": 50, "page_token": "{token}"}}"#),
            )
            .await
            .unwrap();
        pages += 1;
        seen.extend(page["clients"].as_array().cloned().unwrap_or_default());
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    // The fleet and the service's own application, each once.
    assert_eq!(seen.len(), FLEET + 1);
    let ids: HashSet<&str> = seen
        .iter()
        .map(|c| c["clientId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), seen.len(), "no client twice");
    assert_eq!(pages, 3);

    let of = |id: &str| seen.iter().find(|c| c["clientId"] == id).unwrap();
    for id in rotated {
        let client = of(id);
        assert_eq!(client["rotatable"], true);
        assert_eq!(
            client["lastRotation"]["vaultSecret"]["version"], "1",
            "{client}"
        );
        assert_eq!(client["lastRotation"]["rotatedBy"], "anonymous");
        assert!(client["lastRotationAge"].is_string(), "{client}");
        assert_eq!(client["clientMetadata"]["rotation"], "auto");
        assert_eq!(client["appType"], "non_interactive");
    }
    let untouched = of("Fleet000000000000000000000000004");
    assert!(untouched.get("lastRotation").is_none());
    assert_eq!(untouched["authenticationMethod"], "client_secret_post");
    // A Private Key JWT client is rotatable too (its key). This grant may not read credentials
    // (read:client_credentials), so its attached credential shows by id only.
    let keyed = of("Fleet000000000000000000000000009");
    assert_eq!(keyed["rotatable"], true, "{keyed}");
    assert_eq!(keyed["authenticationMethod"], "private_key_jwt");
    assert_eq!(keyed["credentialKind"], "CREDENTIAL_KIND_PRIVATE_KEY_JWT");
    let attached = keyed["credentials"].as_array().expect("its credential");
    assert_eq!(attached.len(), 1, "{keyed}");
    assert!(
        attached[0]["credentialId"]
            .as_str()
            .unwrap()
            .starts_with("cred_")
    );
    assert_eq!(attached[0]["inUse"], true);
    assert!(attached[0].get("keyId").is_none(), "not readable: {keyed}");
    assert_eq!(untouched["credentialKind"], "CREDENTIAL_KIND_CLIENT_SECRET");
    assert_eq!(
        of("Fleet000000000000000000000000007")["appType"],
        "regular_web"
    );

    // Nothing secret was asked of Auth0, or answered.
    assert_eq!(stack.emulator.stats().listed_secrets, 0);
    let answer = serde_json::to_string(&seen).unwrap();
    for id in rotated {
        assert!(!answer.contains(&stack.emulator.live_secret(id).unwrap()));
    }

    // Bad paging is refused before Auth0 is asked.
    let asked = stack.emulator.stats().list_requests;
    for bad in [r#"{"page_size": -1}"#, r#"{"page_token": "not-a-token"}"#] {
        let refused = stack.grpcurl("ListClients", bad).await.unwrap_err();
        assert!(refused.contains("InvalidArgument"), "{bad}: {refused}");
    }
    assert_eq!(stack.emulator.stats().list_requests, asked);
}

#[tokio::test]
async fn the_drift_scan_finds_a_secret_changed_outside_the_service() {
    let stack = Stack::start_with(StackOptions {
        extra_args: vec![
            "--reconcile-interval".into(),
            "1s".into(),
            "--drift-scan-interval".into(),
            "1s".into(),
        ],
        ..StackOptions::default()
    })
    .await;
    let kept = stack.seed(regular_client(&random_client_id(), "Kept in sync"));
    let changed = stack.seed(regular_client(&random_client_id(), "Rotated outside"));
    stack.rotate_ok(&kept).await;
    stack.rotate_ok(&changed).await;
    stack
        .emulator
        .rotate_outside(&changed)
        .expect("the dashboard's Rotate button");

    let drift_of = |clients: &[ClientSummary], id: &str| {
        clients
            .iter()
            .find(|c| c.client_id == id)
            .map(|c| DriftState::try_from(c.drift).unwrap())
    };
    let clients = eventually(
        "the scan to find the drift",
        Duration::from_secs(30),
        || async {
            let page = stack
                .client()
                .await
                .list_clients(ListClientsRequest {
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            // Both checked: a pass checks one client after the other, in the ledger's order.
            let checked = |id: &str| {
                drift_of(&page.clients, id).is_some_and(|d| d != DriftState::Unspecified)
            };
            (drift_of(&page.clients, &changed) == Some(DriftState::Drifted) && checked(&kept))
                .then_some(page.clients)
        },
    )
    .await;
    assert_eq!(drift_of(&clients, &kept), Some(DriftState::InSync));
    // Only clients the service rotated are compared: Vault holds nothing of the others.
    let m2m = clients
        .iter()
        .find(|c| c.client_id != kept && c.client_id != changed)
        .expect("the service's own application");
    assert_eq!(
        DriftState::try_from(m2m.drift).unwrap(),
        DriftState::Unspecified
    );
}
