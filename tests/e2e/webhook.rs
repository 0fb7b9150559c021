//! Signed notifications: a receiver that checks every Standard Webhooks signature gets a
//! CloudEvent for each step, also when it was down while the service that recorded the event
//! was killed and another process delivered it after the restart.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::STANDARD};
use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::GetRotationStatusRequest,
};
use serde_json::Value;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use crate::{
    helpers::{ServiceProcess, bare_stack, eventually, rotate, rotate_staged},
    staged::complete,
};

/// A webhook receiver: checks each signature, refuses everything while `down`.
struct Receiver {
    key: Vec<u8>,
    down: AtomicBool,
    attempts: AtomicU64,
    /// Every correctly signed event received, as parsed.
    events: Mutex<Vec<Value>>,
    /// Signatures that did not verify, or stale timestamps.
    forged: AtomicU64,
}

impl Receiver {
    fn verified(&self, request: &Request) -> Option<Value> {
        let header = |name: &str| request.headers.get(name)?.to_str().ok().map(str::to_owned);
        let (id, timestamp, signature) = (
            header("webhook-id")?,
            header("webhook-timestamp")?,
            header("webhook-signature")?,
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let sent: u64 = timestamp.parse().ok()?;
        if now.abs_diff(sent) > 300 {
            return None;
        }
        let body = std::str::from_utf8(&request.body).ok()?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let expected = STANDARD.encode(hmac::sign(
            &key,
            format!("{id}.{timestamp}.{body}").as_bytes(),
        ));
        let valid = signature
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()));
        let event: Value = serde_json::from_str(body).ok()?;
        (valid && event["id"] == id.as_str()).then_some(event)
    }

    fn received(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Correctly signed events of `kind` about `client_id`, once each (receivers drop repeats
    /// by id).
    fn of(&self, kind: &str, client_id: &str) -> Vec<Value> {
        let mut seen = HashSet::new();
        self.received()
            .into_iter()
            .filter(|e| e["type"] == kind && e["subject"] == client_id)
            .filter(|e| seen.insert(e["id"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}

struct Shared(Arc<Receiver>);

impl Respond for Shared {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        if self.0.down.load(Ordering::SeqCst) {
            return ResponseTemplate::new(503);
        }
        match self.0.verified(request) {
            Some(event) => {
                self.0.events.lock().unwrap().push(event);
                ResponseTemplate::new(204)
            }
            None => {
                self.0.forged.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(401)
            }
        }
    }
}

#[tokio::test]
async fn notifications_are_signed_and_survive_a_restart_while_the_receiver_is_down() {
    let (bao, emulator, m2m) = bare_stack().await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "Notified app"));
    let key = vec![42u8; 32];
    let receiver = Arc::new(Receiver {
        key: key.clone(),
        down: AtomicBool::new(true),
        attempts: AtomicU64::new(0),
        events: Mutex::new(Vec::new()),
        forged: AtomicU64::new(0),
    });
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Shared(Arc::clone(&receiver)))
        .mount(&server)
        .await;
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        (
            "ROTATOR_WEBHOOK_URL",
            format!("{}/hooks/rotations", server.uri()),
        ),
        (
            "ROTATOR_WEBHOOK_SECRET",
            format!("whsec_{}", STANDARD.encode(&key)),
        ),
        ("ROTATOR_RECONCILE_INTERVAL", "500ms".to_owned()),
    ]);

    // The receiver is down: the first process records the event and keeps failing to deliver.
    let mut first = ServiceProcess::start(&env).await;
    first
        .client()
        .await
        .rotate_secret(rotate(&id))
        .await
        .unwrap();
    let ledger = format!("secret-rotator/clients/{id}");
    let pending = bao.kv_data(&ledger).await.unwrap()["notifications"].clone();
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    eventually("a delivery attempt", Duration::from_secs(10), || async {
        (receiver.attempts.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    first.signal("-KILL");
    first.wait_exit().await;

    // Back up, and another process delivers what the dead one recorded.
    receiver.down.store(false, Ordering::SeqCst);
    let second = ServiceProcess::start(&env).await;
    eventually(
        "the delivery after the restart",
        Duration::from_secs(30),
        || async { (receiver.of("rotation.completed", &id).len() == 1).then_some(()) },
    )
    .await;
    let completed = &receiver.of("rotation.completed", &id)[0];
    assert_eq!(completed["specversion"], "1.0");
    assert_eq!(completed["data"]["strategy"], "immediate");
    assert_eq!(completed["data"]["vault"]["version"], 1);
    eventually(
        "the record to be emptied",
        Duration::from_secs(10),
        || async {
            let data = bao.kv_data(&ledger).await?;
            data.get("notifications").is_none().then_some(())
        },
    )
    .await;

    // A staged rotation, promoted on request, then rolled back; then drift from the dashboard.
    let mut client = second.client().await;
    let staged = client
        .rotate_secret(rotate_staged(&id))
        .await
        .unwrap()
        .into_inner();
    client
        .complete_rotation(complete(&id, &staged.rotation_id))
        .await
        .unwrap();
    // Undone: the secret before it is in force again.
    client
        .rollback_rotation(crate::rollback::rollback(&id, &staged.rotation_id))
        .await
        .unwrap();
    emulator.rotate_outside(&id);
    client
        .get_rotation_status(GetRotationStatusRequest {
            client_id: id.clone(),
            check_drift: true,
        })
        .await
        .unwrap();
    let later = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = receiver.of("rotation.staged", &id).len() == 1
            && receiver.of("rotation.completed", &id).len() == 2
            && receiver.of("rotation.rolled_back", &id).len() == 1
            && receiver.of("drift.detected", &id).len() == 1;
        if done {
            break;
        }
        if tokio::time::Instant::now() > later {
            let kinds: Vec<Value> = receiver
                .received()
                .iter()
                .map(|e| e["type"].clone())
                .collect();
            let record = bao.kv_data(&ledger).await;
            panic!(
                "the later events did not all arrive within 30 s: received {kinds:?}; record {record:?}; log:\n{}",
                second.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let staged_event = &receiver.of("rotation.staged", &id)[0];
    assert_eq!(
        staged_event["data"]["rotation_id"],
        staged.rotation_id.as_str()
    );
    assert!(staged_event["data"]["promote_after"].is_string());
    let rolled_back = &receiver.of("rotation.rolled_back", &id)[0];
    assert_eq!(
        rolled_back["data"]["rotation_id"],
        staged.rotation_id.as_str()
    );
    assert!(
        rolled_back["data"]["vault"]["version"].is_number(),
        "{rolled_back}"
    );
    assert_eq!(receiver.forged.load(Ordering::SeqCst), 0);

    // Never a secret: none that the client ever had is in any body.
    let bodies = serde_json::to_string(&receiver.received()).unwrap();
    for secret in emulator.client(&id).unwrap().issued_secrets {
        assert!(
            !bodies.contains(&secret),
            "a secret was sent to the webhook"
        );
    }
}
