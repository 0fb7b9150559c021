//! What a rotation costs the systems it shares (issue #8): Vault is shared infrastructure, so
//! the requests each rotation makes there are counted, from OpenBao's own audit log.

use std::time::Duration;

use secret_rotator::emulator::{random_client_id, regular_client};

use crate::helpers::{Bao, Stack, StackOptions, eventually};

#[tokio::test]
async fn a_rotation_makes_four_vault_requests_and_a_status_one() {
    let stack = Stack::start_on(Bao::start_audited().await, StackOptions::default()).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    // The reconciler's start-up pass finds no records; the next one is 30 s away.
    eventually(
        "the start-up reconciler pass",
        Duration::from_secs(10),
        || async {
            let listed = stack.bao.requests().iter().any(|(op, _)| op == "list");
            listed.then_some(())
        },
    )
    .await;
    // The first rotation of a client on this replica reads its record; later ones do not.
    stack.rotate_ok(&id).await;
    let before = stack.bao.requests().len();
    stack.rotate_ok(&id).await;
    let ledger = format!("secret/data/secret-rotator/clients/{id}");
    let secret = format!("secret/data/auth0/clients/{id}");
    let made: Vec<(String, String)> = stack.bao.requests()[before..].to_vec();
    assert_eq!(
        made,
        [
            ("update".to_owned(), ledger.clone()),
            ("read".to_owned(), secret.clone()),
            ("update".to_owned(), secret),
            ("update".to_owned(), ledger.clone()),
        ],
        "lease and intent, the key's secret (to keep as the previous one), the secret, close"
    );

    let before = stack.bao.requests().len();
    let status = stack.status(&id).await;
    assert_eq!(
        status.last_rotation.unwrap().vault_secret.unwrap().version,
        2
    );
    assert_eq!(
        stack.bao.requests()[before..],
        [("read".to_owned(), ledger)],
        "GetRotationStatus reads the ledger record only"
    );
}
