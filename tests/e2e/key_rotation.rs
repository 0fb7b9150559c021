//! Key rotation through the real binary: a Private Key JWT client is rotated by RotateSecret,
//! its new key verified at Auth0 (the emulator) and handed to consumers through Vault, the old
//! key retired by CompleteRotation, ten times over. A consumer that signs a client assertion
//! every 10 ms with whatever Vault holds (and with the key it was set up with before the first
//! rotation) never fails, and Auth0's limits (2 attached, 4 in all), which the emulator
//! enforces, are never reached. Schedules and batches take key clients too.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secret_rotator::{
    emulator::{
        ASSERTION_TYPE, CONSUMER_API, RunningEmulator, SEED_PRIVATE_KEY_PEM, pkjwt_client,
        random_client_id,
    },
    proto::{
        CancelRotationRequest, ClientSelector, CredentialKind, ListClientsRequest,
        ListRotationsRequest, RotateSecretsRequest, client_outcome::Outcome,
    },
    rotation::{KeyBits, KeyPair},
};
use serde_json::json;

use crate::{
    helpers::{ALL_SCOPES, Stack, StackOptions, eventually, vault_path},
    staged::complete,
    support::Bao,
};

/// A consumer of a key client: every 10 ms it signs a client assertion with whatever Vault
/// holds and asks Auth0 for a token, counting the attempts and the failures.
pub struct Consumer {
    tried: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Runs `attempt` (whether Auth0 authenticated the client) every 10 ms.
    pub fn start<F, Fut>(attempt: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let (tried, failed, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn({
            let (tried, failed, stop) = (tried.clone(), failed.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    tried.fetch_add(1, Ordering::SeqCst);
                    if !attempt().await {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        Self {
            tried,
            failed,
            stop,
            task,
        }
    }

    /// Returns once the consumer tried five more times (it read Vault again since).
    pub async fn tries_again(&self) {
        let seen = self.tried.load(Ordering::SeqCst);
        eventually("the consumer to try again", Duration::from_secs(10), || {
            let tried = self.tried.load(Ordering::SeqCst);
            async move { (tried >= seen + 5).then_some(()) }
        })
        .await;
    }

    /// Stops it after a last few tries: how many it made, and how many failed.
    pub async fn stop(self) -> (u64, u64) {
        self.tries_again().await;
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.tried.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// The service's grant with the credential scopes key rotations need.
pub fn key_scopes() -> Vec<&'static str> {
    let mut scopes = ALL_SCOPES.to_vec();
    scopes.extend(secret_rotator::auth0::CREDENTIAL_SCOPES);
    scopes
}

/// A stack whose service may rotate keys, with `extra_args`.
pub async fn key_stack(extra_args: Vec<String>) -> Stack {
    Stack::start_with(StackOptions {
        m2m_scopes: key_scopes(),
        extra_args,
        ..StackOptions::default()
    })
    .await
}

/// One client-credentials request signed with the key Vault holds (the seed key before the
/// service's first rotation): whether Auth0 authenticated the client.
pub async fn authenticate(
    bao: &Bao,
    emulator: &RunningEmulator,
    http: &reqwest::Client,
    client_id: &str,
) -> bool {
    let key = bao.kv_data(&vault_path(client_id)).await;
    let (pem, alg) = match key.as_ref().and_then(|k| k["private_key"].as_str()) {
        Some(pem) => {
            let alg = match key.as_ref().unwrap()["algorithm"].as_str() {
                Some("RS384") => Algorithm::RS384,
                Some("PS256") => Algorithm::PS256,
                _ => Algorithm::RS256,
            };
            (pem.to_owned(), alg)
        }
        None => (SEED_PRIVATE_KEY_PEM.to_owned(), Algorithm::RS256),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": client_id, "sub": client_id,
        "aud": format!("https://{}/", emulator.domain()),
        "iat": now, "exp": now + 60, "jti": uuid::Uuid::new_v4().to_string(),
    });
    let assertion = jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    http.post(format!("{}/oauth/token", emulator.base_url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
            ("audience", CONSUMER_API),
        ])
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn a_private_key_jwt_client_is_rotated_and_its_consumer_never_fails() {
    let stack = Arc::new(key_stack(Vec::new()).await);
    let id = stack.seed(pkjwt_client(&random_client_id()));
    let consumer = Consumer::start({
        let (stack, id, http) = (stack.clone(), id.clone(), reqwest::Client::new());
        move || {
            let (stack, id, http) = (stack.clone(), id.clone(), http.clone());
            async move { authenticate(&stack.bao, &stack.emulator, &http, &id).await }
        }
    });
    let mut client = stack.client().await;
    let mut answers = Vec::new();
    for round in 0..10 {
        let answer = stack.rotate_ok(&id).await;
        assert!(!answer.rotation_id.is_empty());
        assert_eq!(answer.credential_kind(), CredentialKind::PrivateKeyJwt);
        assert!(
            answer.promote_after.is_some(),
            "when the old key is retired at the latest"
        );
        let held = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
        assert_eq!(held["key_id"], answer.key_id.as_str());
        assert_eq!(held["credential_id"], answer.credential_id.as_str());
        assert!(
            held["private_key"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let attached: Vec<_> = stack
            .emulator
            .credentials(&id)
            .into_iter()
            .filter(|c| c.attached_to.is_some())
            .collect();
        assert_eq!(
            attached.len(),
            2,
            "round {round}: both keys during the overlap"
        );
        assert!(
            attached
                .iter()
                .any(|c| c.kid.as_deref() == held["key_id"].as_str())
        );
        let overlap = stack
            .status(&id)
            .await
            .key_overlap
            .expect("the overlap is shown");
        assert_eq!(overlap.rotation_id, answer.rotation_id);
        assert_eq!(overlap.credential_id, answer.credential_id);
        assert_eq!(overlap.credential_kind(), CredentialKind::PrivateKeyJwt);
        assert!(overlap.retire_after.is_some());
        // ListClients shows both attached keys, the new one in use.
        let listed = client
            .list_clients(ListClientsRequest {
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let summary = listed
            .clients
            .iter()
            .find(|c| c.client_id == id)
            .expect("listed");
        assert!(summary.rotatable);
        assert_eq!(summary.authentication_method, "private_key_jwt");
        assert_eq!(summary.credentials.len(), 2, "{summary:?}");
        let in_use: Vec<_> = summary.credentials.iter().filter(|c| c.in_use).collect();
        assert_eq!(in_use.len(), 1, "{summary:?}");
        assert_eq!(in_use[0].credential_id, answer.credential_id);
        assert_eq!(in_use[0].key_id, answer.key_id);
        assert_eq!(in_use[0].alg, "RS256");
        assert!(in_use[0].created_at.is_some());
        assert!(summary.credential_age.is_some());
        // The first rotation replaced a key made elsewhere, which Vault never held: there is
        // no old key to give consumers back, so it cannot be cancelled.
        if round == 0 {
            let refused = client
                .cancel_rotation(CancelRotationRequest {
                    client_id: id.clone(),
                    rotation_id: answer.rotation_id.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
            assert!(
                refused.message().contains("no old key to go back to"),
                "{refused:?}"
            );
        }
        // The consumer reads Vault every 10 ms: let it pick the new key up before the old
        // one is retired.
        consumer.tries_again().await;
        let retired = client
            .complete_rotation(complete(&id, &answer.rotation_id))
            .await
            .expect("the old key is retired")
            .into_inner();
        assert_eq!(
            retired.credential_id, answer.credential_id,
            "the key consumers use"
        );
        assert!(
            stack.status(&id).await.key_overlap.is_none(),
            "the overlap is over"
        );
        let left = stack.emulator.credentials(&id);
        assert_eq!(
            left.len(),
            1,
            "round {round}: the old credential is deleted"
        );
        let held = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
        assert!(held.get("previous_private_key").is_none());
        answers.push(answer);
    }
    // ListRotations says what each rotation made, newest first.
    let history = client
        .list_rotations(ListRotationsRequest {
            client_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .rotations;
    let made: Vec<_> = history
        .iter()
        .map(|r| {
            (
                r.rotation_id.as_str(),
                r.credential_kind(),
                r.credential_id.as_str(),
                r.key_id.as_str(),
                r.outcome.as_str(),
            )
        })
        .collect();
    let expected: Vec<_> = answers
        .iter()
        .rev()
        .map(|a| {
            (
                a.rotation_id.as_str(),
                CredentialKind::PrivateKeyJwt,
                a.credential_id.as_str(),
                a.key_id.as_str(),
                "retired",
            )
        })
        .collect();
    assert_eq!(made, expected);
    let (tried, failed) = consumer.stop().await;
    assert!(tried >= 20, "{tried} attempts");
    assert_eq!(failed, 0, "{failed} of {tried} authentications failed");
    assert!(stack.emulator.stats().key_authentications >= tried);
}

/// A schedule rule rotates a key client like any other, and with `before_expiry` again as soon
/// as the key it registered (valid for an hour) expires within two hours: each rotation's old
/// key retired after its overlap, each audited as the scheduler's with the reason.
#[tokio::test]
async fn a_schedule_rotates_a_key_before_its_credential_expires() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    let id = random_client_id();
    std::fs::write(
        &schedule,
        format!(
            "[[rule]]\nlabel = \"keys\"\nclients = [\"{id}\"]\nmax_age = \"30d\"\nbefore_expiry = \"2h\"\n"
        ),
    )
    .unwrap();
    let args = [
        "--schedule-file",
        &schedule.display().to_string(),
        "--schedule-interval",
        "200ms",
        "--staged-distribute-for",
        "1s",
        "--key-lifetime",
        "1h",
        // The client is added after the service started: found at the catalogue's refresh.
        "--catalog-refresh",
        "1s",
    ]
    .map(String::from)
    .to_vec();
    let stack = key_stack(args).await;
    stack.seed(pkjwt_client(&id));
    let client = stack.client().await;
    let history = eventually(
        "two scheduled key rotations",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let rotations = client
                    .list_rotations(ListRotationsRequest { client_id: id })
                    .await
                    .ok()?
                    .into_inner()
                    .rotations;
                (rotations
                    .iter()
                    .filter(|r| !r.credential_id.is_empty())
                    .count()
                    >= 2)
                    .then_some(rotations)
            }
        },
    )
    .await;
    let made: Vec<_> = history
        .iter()
        .filter(|r| !r.credential_id.is_empty())
        .collect();
    for r in &made {
        assert_eq!(r.rotated_by, "scheduler", "{r:?}");
        assert_eq!(r.credential_kind(), CredentialKind::PrivateKeyJwt);
    }
    // The newest was due by its predecessor's expiry; the first by having none on record.
    assert!(
        made[0].reason.contains("credential expires"),
        "{:?}",
        made[0]
    );
    // The rule's max_age as the schedule file spells it.
    assert!(made[1].reason.ends_with("due every 30d"), "{:?}", made[1]);
    // Never more than two attached, and unused credentials are cleaned up.
    let pool = stack.emulator.credentials(&id);
    assert!(pool.len() <= 3, "{pool:?}");
    assert!(pool.iter().filter(|c| c.attached_to.is_some()).count() <= 2);
}

/// A batch's selector picks key clients too, and each gets a key rotation: a new credential,
/// attached beside the old one, the answer naming it.
#[tokio::test]
async fn a_batch_selects_key_clients_and_rotates_their_keys() {
    let stack = key_stack(Vec::new()).await;
    let tag = &random_client_id()[..12];
    let ids: Vec<String> = (0..3)
        .map(|n| stack.seed(pkjwt_client(&format!("KeyBatch{n}{tag}"))))
        .collect();
    let (outcomes, summary) = crate::batch::run(
        &stack,
        RotateSecretsRequest {
            selector: Some(ClientSelector {
                clients: vec![format!("KeyBatch*{tag}")],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (summary.total, summary.rotated, summary.failed),
        (3, 3, 0),
        "{summary:?}"
    );
    for outcome in outcomes {
        assert!(ids.contains(&outcome.client_id));
        let Some(Outcome::Rotated(answer)) = outcome.outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(answer.credential_kind(), CredentialKind::PrivateKeyJwt);
        let attached: Vec<_> = stack
            .emulator
            .credentials(&outcome.client_id)
            .into_iter()
            .filter(|c| c.attached_to.is_some())
            .map(|c| c.id)
            .collect();
        assert_eq!(attached.len(), 2);
        assert!(attached.contains(&answer.credential_id));
    }
}

/// A client with two keys attached, neither of them one Vault holds, has its keys managed by
/// someone else: rotating would need one detached that a consumer may use. Refused, naming
/// it, and nothing changes at Auth0 or in Vault.
#[tokio::test]
async fn a_client_whose_two_keys_are_managed_elsewhere_is_refused_and_left_alone() {
    let stack = key_stack(Vec::new()).await;
    let other = KeyPair::generate(KeyBits::B2048).unwrap();
    let mut client = pkjwt_client(&random_client_id());
    client.doc["client_authentication_methods"]["private_key_jwt"]["credentials"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "credential_type": "public_key", "name": "Another team's key", "alg": "RS256",
            "pem": other.public_pem(),
        }));
    let id = stack.seed(client);
    let before = stack.emulator.credentials(&id);
    assert_eq!(before.iter().filter(|c| c.attached_to.is_some()).count(), 2);

    let refused = stack
        .client()
        .await
        .rotate_secret(crate::helpers::rotate(&id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains(&before[0].id)
            && refused.message().contains("managed elsewhere"),
        "{refused:?}"
    );
    let after = stack.emulator.credentials(&id);
    assert_eq!(
        after
            .iter()
            .map(|c| (&c.id, &c.attached_to))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|c| (&c.id, &c.attached_to))
            .collect::<Vec<_>>(),
        "nothing changed at Auth0"
    );
    assert!(
        stack.bao.kv_data(&vault_path(&id)).await.is_none(),
        "nor in Vault"
    );
}
