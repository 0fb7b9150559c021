//! Webhook notifications: what rotations did, POSTed as CloudEvents 1.0 (structured mode) and
//! signed as Standard Webhooks specifies (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), so receivers can check
//! the sender and reject replays. The protocol records each notification in the client's
//! ledger record; [`dispatch`] delivers them and removes the delivered ones: at least once,
//! retried with backoff, across restarts. Never a secret.

mod settings;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::hmac;
use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, warn};
use uuid::Uuid;

pub use settings::Settings;

use crate::rotation::{ClientId, Ledger, Notification, RotationService, SecretIssuer, SecretStore};

/// The first retry after a failed delivery, doubling up to the last.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook could not be reached: {0}")]
    Unreachable(String),
    #[error("the webhook answered {0}")]
    Refused(u16),
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Sends notifications to one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Webhook {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: Settings,
    key: hmac::Key,
}

impl Webhook {
    pub fn new(settings: &Settings) -> Result<Self, WebhookError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirect would send the notification somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("secret-rotator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, settings.key.expose_secret());
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                settings: settings.clone(),
                key,
            }),
        })
    }

    /// One delivery attempt: any 2xx is delivered.
    pub async fn deliver(&self, notification: &Notification) -> Result<(), WebhookError> {
        let body = self.cloud_event(notification).to_string();
        let id = notification.id.to_string();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let signature = self.sign(&id, timestamp, &body);
        let answer = self
            .inner
            .http
            .post(self.inner.settings.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/cloudevents+json",
            )
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| WebhookError::Unreachable(without_url(e).to_string()))?;
        match answer.status() {
            s if s.is_success() => Ok(()),
            s => Err(WebhookError::Refused(s.as_u16())),
        }
    }

    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let signed = format!("{id}.{timestamp}.{body}");
        let tag = hmac::sign(&self.inner.key, signed.as_bytes());
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    /// The CloudEvents 1.0 structured-mode envelope; absent facts are left out.
    fn cloud_event(&self, n: &Notification) -> Value {
        let mut data = json!({
            "client_id": n.client_id.as_str(),
            "rotation_id": n.rotation_id.map(|id| id.to_string()),
            "strategy": n.strategy.map(|s| s.as_str()),
            "vault": n.stored.as_ref().map(|s| json!({
                "mount": s.mount, "path": s.path, "version": s.version.get(),
            })),
            "caller": n.caller,
            "reason": n.reason.as_ref().map(|r| r.as_str()),
            "promote_after": n.promote_after.map(rfc3339),
            "outcome": n.outcome,
        });
        if let Value::Object(fields) = &mut data {
            fields.retain(|_, v| !v.is_null());
        }
        json!({
            "specversion": "1.0",
            "id": n.id.to_string(),
            "source": self.inner.settings.source,
            "type": n.kind.as_str(),
            "subject": n.client_id.as_str(),
            "time": rfc3339(n.at),
            "datacontenttype": "application/json",
            "data": data,
        })
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// reqwest's errors name the URL, which may carry a token in its path or query.
fn without_url(e: reqwest::Error) -> reqwest::Error {
    e.without_url()
}

/// Delivers the notifications of every client `clients` names, for ever: each client's pending
/// ones in order, then removes the delivered ones from its record. A client whose delivery
/// failed is tried again with backoff (1 s doubling to 5 min), without sending again what was
/// delivered.
pub async fn dispatch<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: Arc<RotationService<I, S, L>>,
    webhook: Webhook,
    mut clients: mpsc::UnboundedReceiver<ClientId>,
) {
    // When each client is due next, and the wait after that.
    let mut due: HashMap<ClientId, (Instant, Duration)> = HashMap::new();
    // Delivered but not yet removed from the record (the record was busy).
    let mut sent: HashMap<ClientId, HashSet<Uuid>> = HashMap::new();
    loop {
        let next = due.values().map(|(at, _)| *at).min();
        tokio::select! {
            named = clients.recv() => match named {
                Some(client_id) => {
                    due.entry(client_id).or_insert((Instant::now(), FIRST_RETRY));
                }
                None => return,
            },
            () = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                let ready: Vec<ClientId> = due
                    .iter()
                    .filter(|(_, (at, _))| *at <= now)
                    .map(|(c, _)| c.clone())
                    .collect();
                for client_id in ready {
                    let (_, wait) = due.remove(&client_id).unwrap_or((now, FIRST_RETRY));
                    let done = sent.entry(client_id.clone()).or_default();
                    if !deliver_pending(&service, &webhook, &client_id, done).await {
                        due.insert(client_id, (Instant::now() + wait, (wait * 2).min(LAST_RETRY)));
                    } else {
                        sent.remove(&client_id);
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Sends what `client_id`'s record holds and `sent` does not, then removes everything sent
/// from the record. True when nothing is left to do.
async fn deliver_pending<I: SecretIssuer, S: SecretStore, L: Ledger>(
    service: &RotationService<I, S, L>,
    webhook: &Webhook,
    client_id: &ClientId,
    sent: &mut HashSet<Uuid>,
) -> bool {
    let pending = match service.pending_notifications(client_id).await {
        Ok(pending) => pending,
        Err(e) => {
            warn!(%client_id, error = %e, "cannot read the notifications to deliver; will retry");
            return false;
        }
    };
    let mut complete = true;
    let unsent: Vec<&Notification> = pending.iter().filter(|n| !sent.contains(&n.id)).collect();
    for notification in unsent {
        match webhook.deliver(notification).await {
            Ok(()) => {
                debug!(%client_id, id = %notification.id, kind = notification.kind.as_str(), "notification delivered");
                sent.insert(notification.id);
            }
            Err(e) => {
                warn!(%client_id, id = %notification.id, kind = notification.kind.as_str(), error = %e, "notification not delivered; will retry");
                complete = false;
                break;
            }
        }
    }
    if sent.is_empty() {
        return complete;
    }
    let delivered: Vec<Uuid> = sent.iter().copied().collect();
    match service.acknowledge(client_id, &delivered).await {
        Ok(true) => {
            debug!(%client_id, delivered = delivered.len(), "notifications delivered");
            sent.clear();
            complete
        }
        // A rotation holds the record; removing them waits for it.
        Ok(false) => false,
        Err(e) => {
            warn!(%client_id, error = %e, "cannot remove delivered notifications; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;

    use super::*;
    use crate::rotation::{NotificationKind, Reason};

    fn webhook(key: Vec<u8>) -> Webhook {
        Webhook::new(&Settings {
            url: "http://127.0.0.1:9/hook".parse().unwrap(),
            key: Arc::new(SecretBox::new(Box::new(key))),
            source: "/secret-rotator/acme.auth0.com".into(),
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference implementations.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = webhook(key).sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn events_are_cloudevents_without_absent_facts() {
        let client_id = ClientId::parse("abc").unwrap();
        let n = Notification {
            caller: Some("jwt:ops".into()),
            reason: Reason::parse("leak").unwrap(),
            ..Notification::new(NotificationKind::Failed, &client_id, None)
        };
        let event = webhook(vec![1; 32]).cloud_event(&n);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "rotation.failed");
        assert_eq!(event["subject"], "abc");
        assert_eq!(event["id"], n.id.to_string());
        assert_eq!(event["source"], "/secret-rotator/acme.auth0.com");
        assert_eq!(
            event["data"],
            json!({"client_id": "abc", "caller": "jwt:ops", "reason": "leak"})
        );
    }
}
