//! Key rotations against in-memory ports: a Private Key JWT client's new key is in Vault before
//! Auth0 knows it, both keys are attached during the overlap, a consumer signing with whatever
//! Vault holds is always accepted, and Auth0's limits (2 attached, 4 in all) are never hit.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use secrecy::ExposeSecret;

use super::{
    fakes::FakeVault,
    protocol::{Svc, command, service, service_with, soon},
};
use crate::{
    audit::Origin,
    rotation::{
        AuthMethod, ClientId, ClientState, CredentialId, IssuerError, KeyPair, Ledger,
        RotationError, StoredKey, Strategy, Transport,
    },
};

const CLIENT: &str = "kkk";
const KEY: &str = "auth0/kkk";
const MADE_ELSEWHERE: &str = include_str!("../../emulator/credentials/seed-key.pub.pem");

fn key_service() -> (Arc<Svc>, CredentialId) {
    let svc = service(FakeVault::default());
    let old = svc.pipeline().issuer.add_key_client(CLIENT, MADE_ELSEWHERE);
    (svc, old)
}

fn id() -> ClientId {
    ClientId::parse(CLIENT).unwrap()
}

fn vault(svc: &Svc) -> Option<StoredKey> {
    let keys = svc.pipeline().store.key_credentials.lock().unwrap();
    keys.get(KEY).and_then(|versions| versions.last().cloned())
}

async fn state(svc: &Svc) -> ClientState {
    svc.pipeline().ledger.read_state(&id()).await.unwrap().value
}

/// A consumer: signs an assertion with the key Vault holds now, as Auth0 would check it.
fn consumer_authenticates(svc: &Svc) -> bool {
    let Some(current) = vault(svc).and_then(|k| k.current) else {
        return false;
    };
    let key = KeyPair::from_private_pem(&current.private_key).unwrap();
    let assertion = key
        .assertion(
            CLIENT,
            "tenant.example.com",
            current.algorithm.unwrap_or_default(),
            Some(&current.key_id),
        )
        .unwrap();
    svc.pipeline()
        .issuer
        .signed_by_attached(&id(), assertion.expose_secret())
}

fn attached(svc: &Svc) -> Vec<CredentialId> {
    svc.pipeline()
        .issuer
        .keys(CLIENT)
        .attached_to(AuthMethod::PrivateKeyJwt)
}

/// A rotation cut off after its new key was attached: the verification's answer is lost and
/// the record's close fails, so the intent stays open.
async fn cut_off_after_attaching(svc: &Arc<Svc>) {
    svc.pipeline().issuer.fail_credential_call(
        4,
        IssuerError::Unavailable {
            how: Transport::TimedOut,
            at: Box::default(),
        },
    );
    svc.pipeline()
        .ledger
        .fail_state_write
        .store(3, Ordering::SeqCst);
    assert!(svc.rotate(command(CLIENT), soon(10_000)).await.is_err());
}

fn origin() -> Origin {
    Origin::default()
}

#[tokio::test]
async fn a_key_is_rotated_with_overlap_and_the_old_one_retired() {
    let (svc, old) = key_service();
    let rotation = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    assert_eq!(rotation.metadata.strategy, Strategy::Key);
    assert!(rotation.promote_after.is_some(), "the overlap's end");

    // Both keys attached; Vault switched to the new one; consumers are served by it.
    let both = attached(&svc);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], old);
    let held = vault(&svc).unwrap();
    let current = held.current.as_ref().unwrap();
    assert_eq!(current.credential_id, both[1]);
    assert!(
        held.next.is_none() && held.previous.is_none(),
        "the old key was made elsewhere"
    );
    assert!(consumer_authenticates(&svc));
    let record = state(&svc).await;
    assert!(record.is_closed());
    let overlap = record.overlap.clone().unwrap();
    assert_eq!(overlap.retiring.as_ref(), Some(&old));

    // During the overlap no other rotation starts.
    let refused = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(refused, RotationError::OverlapPending { .. }),
        "{refused:?}"
    );

    // CompleteRotation retires the old key: detached, deleted.
    svc.complete(id(), rotation.metadata.rotation_id, origin(), soon(10_000))
        .await
        .unwrap();
    assert_eq!(attached(&svc), vec![current.credential_id.clone()]);
    assert_eq!(svc.pipeline().issuer.keys(CLIENT).pool.len(), 1);
    assert!(state(&svc).await.overlap.is_none());
    assert!(consumer_authenticates(&svc));

    // The history says what was rotated and which credential consumers use (ListRotations).
    let history = svc.history(&id()).await.unwrap();
    assert_eq!(
        history[0].outcome, "overlap_pending",
        "the refused second request"
    );
    let entry = history
        .iter()
        .find(|e| e.rotation_id == rotation.metadata.rotation_id)
        .unwrap();
    assert_eq!(entry.strategy, Strategy::Key);
    assert_eq!(entry.method, Some(AuthMethod::PrivateKeyJwt));
    assert_eq!(entry.credential_id.as_ref(), Some(&current.credential_id));
    assert_eq!(entry.key_id.as_ref(), Some(&current.key_id));
    assert_eq!(entry.outcome, "retired");
}

#[tokio::test]
async fn ten_rotations_never_reach_auth0s_limits_and_consumers_never_fail() {
    let (svc, _) = key_service();
    for n in 0..10 {
        let rotation = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
        assert!(consumer_authenticates(&svc), "rotation {n}, overlap");
        if n > 0 {
            assert!(
                vault(&svc).unwrap().previous.is_some(),
                "the replaced key is kept"
            );
        }
        svc.complete(id(), rotation.metadata.rotation_id, origin(), soon(10_000))
            .await
            .unwrap();
        assert!(consumer_authenticates(&svc), "rotation {n}, retired");
        let keys = svc.pipeline().issuer.keys(CLIENT);
        assert_eq!(keys.pool.len(), 1, "rotation {n}");
        assert!(vault(&svc).unwrap().previous.is_none());
    }
}

#[tokio::test]
async fn a_key_auth0_does_not_accept_is_withdrawn_before_consumers_switch() {
    let (svc, old) = key_service();
    svc.pipeline()
        .issuer
        .refuse_assertions
        .store(true, Ordering::SeqCst);
    let err = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::KeyNotVerified { .. }),
        "{err:?}"
    );
    assert_eq!(attached(&svc), vec![old]);
    assert_eq!(
        svc.pipeline().issuer.keys(CLIENT).pool.len(),
        1,
        "the new credential is deleted"
    );
    let held = vault(&svc).unwrap();
    assert!(held.next.is_none() && held.current.is_none());
    assert!(state(&svc).await.is_closed());
}

#[tokio::test]
async fn a_failure_after_the_new_key_was_attached_is_withdrawn_at_once() {
    let (svc, old) = key_service();
    // The plan's list, the registration and the attachment pass; the verification (the
    // fourth credential call) fails.
    svc.pipeline().issuer.fail_credential_call(
        4,
        IssuerError::Unavailable {
            how: Transport::TimedOut,
            at: Box::default(),
        },
    );
    let err = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::Issuer(IssuerError::Unavailable { .. })),
        "{err:?}"
    );
    assert_eq!(attached(&svc), vec![old], "the new credential was detached");
    assert_eq!(svc.pipeline().issuer.keys(CLIENT).pool.len(), 1);
    assert!(vault(&svc).unwrap().next.is_none());
    assert!(state(&svc).await.is_closed());
}

#[tokio::test]
async fn keys_attached_by_someone_else_are_not_touched() {
    let (svc, old) = key_service();
    let other = CredentialId::parse("cred_someone0else").unwrap();
    {
        let mut keyed = svc.pipeline().issuer.keyed.lock().unwrap();
        let keys = keyed.get_mut(CLIENT).unwrap();
        let mut info = keys.pool[0].0.clone();
        info.id = other.clone();
        keys.pool.push((info, MADE_ELSEWHERE.to_owned()));
        keys.attached = vec![(AuthMethod::PrivateKeyJwt, vec![old.clone(), other.clone()])];
    }
    let err = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap_err();
    match err {
        RotationError::KeysManagedElsewhere { credential, .. } => assert_eq!(credential, old),
        e => panic!("{e:?}"),
    }
    assert_eq!(attached(&svc), vec![old, other]);
    assert!(vault(&svc).is_none(), "nothing written");
    // Its history entry still says it was a key rotation, though it made no credential.
    let entry = &svc.history(&id()).await.unwrap()[0];
    assert_eq!(
        (entry.strategy, entry.method, entry.credential_id.as_ref()),
        (Strategy::Key, Some(AuthMethod::PrivateKeyJwt), None)
    );
    assert_eq!(entry.outcome, "keys_managed_elsewhere");
}

#[tokio::test]
async fn a_staged_request_for_a_key_client_rotates_its_key() {
    let (svc, _) = key_service();
    let staged = crate::rotation::RotateCommand {
        strategy: Strategy::Staged,
        distribute_for: Some(Duration::from_secs(60)),
        ..command(CLIENT)
    };
    let rotation = svc.rotate(staged, soon(10_000)).await.unwrap();
    assert_eq!(rotation.metadata.strategy, Strategy::Key);
    let overlap = state(&svc).await.overlap.unwrap();
    let asked = overlap
        .retire_after
        .duration_since(rotation.metadata.rotated_at)
        .unwrap();
    assert_eq!(
        asked,
        Duration::from_secs(60),
        "distribute_for is the overlap"
    );
}

#[tokio::test]
async fn a_switch_whose_close_failed_is_healed_forward_into_its_overlap() {
    let (svc, old) = key_service();
    // Ledger writes of a key rotation: the lease (1), the key rotation's intent (2), the close
    // (3). The close fails: Vault switched, the intent stays open.
    svc.pipeline()
        .ledger
        .fail_state_write
        .store(3, Ordering::SeqCst);
    let rotation = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    assert!(state(&svc).await.intent.is_some(), "left open");
    assert!(
        consumer_authenticates(&svc),
        "consumers already have the new key"
    );

    assert_eq!(
        crate::rotation::reconciler::heal_left_open(&svc).await,
        0,
        "none left open"
    );
    let record = state(&svc).await;
    assert!(record.is_closed());
    let overlap = record.overlap.expect("finished into its overlap");
    assert_eq!(overlap.rotation_id, rotation.metadata.rotation_id);
    assert_eq!(overlap.retiring, Some(old));
    assert_eq!(attached(&svc).len(), 2);
    assert!(consumer_authenticates(&svc));
}

#[tokio::test]
async fn a_rotation_cut_off_before_the_switch_is_withdrawn_by_the_heal() {
    let (svc, old) = key_service();
    // The verification fails and so does the ledger write that would close the withdrawal:
    // the intent stays open with the new credential already gone or still attached.
    cut_off_after_attaching(&svc).await;
    assert_eq!(
        crate::rotation::reconciler::heal_left_open(&svc).await,
        0,
        "none left open"
    );
    assert!(state(&svc).await.is_closed());
    assert_eq!(attached(&svc), vec![old]);
    assert_eq!(svc.pipeline().issuer.keys(CLIENT).pool.len(), 1);
    assert!(vault(&svc).unwrap().next.is_none());
}

#[tokio::test]
async fn a_self_signed_mtls_client_gets_a_new_certificate_beside_the_old_one() {
    let svc = service(FakeVault::default());
    let seed = KeyPair::from_private_pem(&secrecy::SecretString::from(include_str!(
        "../../emulator/credentials/seed-key.pem"
    )))
    .unwrap();
    let old_cert = seed
        .certificate(CLIENT, Duration::from_secs(86_400))
        .unwrap();
    let old = svc.pipeline().issuer.add_mtls_client(CLIENT, &old_cert.pem);

    let rotation = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    let keys = svc.pipeline().issuer.keys(CLIENT);
    let both = keys.attached_to(AuthMethod::SelfSignedTls);
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], old);
    let current = vault(&svc).unwrap().current.unwrap();
    let cert = current
        .certificate
        .as_deref()
        .expect("the certificate consumers present");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(current.algorithm, None, "mTLS signs nothing");
    // The certificate Auth0 registered is the one Vault holds, for Vault's private key.
    let registered = keys
        .pool
        .iter()
        .find(|(info, _)| info.id == both[1])
        .unwrap();
    assert_eq!(registered.1, cert);
    let key = KeyPair::from_private_pem(&current.private_key).unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
    let (_, parsed) =
        <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(
            &der.contents,
        )
        .unwrap();
    let (_, spki) = x509_parser::pem::parse_x509_pem(key.public_pem().as_bytes()).unwrap();
    assert_eq!(parsed.public_key().raw, &spki.contents[..]);

    svc.complete(id(), rotation.metadata.rotation_id, origin(), soon(10_000))
        .await
        .unwrap();
    assert_eq!(
        svc.pipeline()
            .issuer
            .keys(CLIENT)
            .attached_to(AuthMethod::SelfSignedTls),
        vec![current.credential_id]
    );
}

#[tokio::test]
async fn a_dry_run_of_a_key_client_checks_what_its_rotation_would_and_changes_nothing() {
    let (svc, old) = key_service();
    let validated = svc
        .validate(&command(CLIENT))
        .await
        .expect("a key rotation is possible");
    assert_eq!(validated.stored.path, KEY);
    assert_eq!(attached(&svc), vec![old.clone()]);
    assert!(vault(&svc).is_none(), "nothing written");

    // Someone else attached a second key: the dry run says so, as the rotation would.
    {
        let mut keyed = svc.pipeline().issuer.keyed.lock().unwrap();
        let keys = keyed.get_mut(CLIENT).unwrap();
        let other = CredentialId::parse("cred_someone0else").unwrap();
        let mut info = keys.pool[0].0.clone();
        info.id = other.clone();
        keys.pool.push((info, MADE_ELSEWHERE.to_owned()));
        keys.attached = vec![(AuthMethod::PrivateKeyJwt, vec![old, other])];
    }
    let err = svc.validate(&command(CLIENT)).await.unwrap_err();
    assert!(
        matches!(err, RotationError::KeysManagedElsewhere { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_immediate_request_may_name_the_overlap_of_a_key_rotation() {
    let (svc, _) = key_service();
    let asked = crate::rotation::RotateCommand {
        distribute_for: Some(Duration::from_secs(90)),
        ..command(CLIENT)
    };
    let rotation = svc.rotate(asked, soon(10_000)).await.unwrap();
    let overlap = state(&svc).await.overlap.unwrap();
    let kept = overlap
        .retire_after
        .duration_since(rotation.metadata.rotated_at)
        .unwrap();
    assert_eq!(kept, Duration::from_secs(90));
}

#[tokio::test]
async fn cancel_withdraws_a_key_rotation_cut_off_before_its_switch_and_refuses_one_after() {
    // A short lease: the replica that was cut off is taken for dead soon.
    let svc = service_with(FakeVault::default(), |s| {
        s.lease_ttl = Duration::from_millis(300);
    });
    let old = svc.pipeline().issuer.add_key_client(CLIENT, MADE_ELSEWHERE);
    // Cut off after the new key was attached (the verification's answer lost, the record's
    // close failing): the intent stays open.
    cut_off_after_attaching(&svc).await;
    let cut = svc.history(&id()).await.unwrap()[0].rotation_id;
    // CancelRotation heals it first (withdrawn) and answers that it is cancelled.
    svc.cancel(&id(), cut, &origin(), soon(10_000))
        .await
        .expect("withdrawn");
    assert_eq!(attached(&svc), vec![old.clone()]);
    assert_eq!(svc.pipeline().issuer.keys(CLIENT).pool.len(), 1);
    assert!(state(&svc).await.is_closed());

    // Once consumers switched, a key rotation cannot be withdrawn: refused, nothing changed.
    let rotation = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    let id_ = rotation.metadata.rotation_id;
    let refused = svc.cancel(&id(), id_, &origin(), soon(10_000)).await;
    assert!(
        matches!(refused, Err(RotationError::KeySwitched { .. })),
        "{refused:?}"
    );
    assert_eq!(attached(&svc).len(), 2, "both keys still attached");
    assert!(state(&svc).await.overlap.is_some());
    assert!(consumer_authenticates(&svc));
}

#[tokio::test]
async fn cancel_in_the_overlap_gives_consumers_the_old_key_back_and_retires_the_new_one() {
    let (svc, _) = key_service();
    let first = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    svc.complete(id(), first.metadata.rotation_id, origin(), soon(10_000))
        .await
        .unwrap();
    let old = vault(&svc).unwrap().current.unwrap();
    let second = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    let rotation_id = second.metadata.rotation_id;
    let new = vault(&svc).unwrap().current.unwrap();
    assert_eq!(attached(&svc).len(), 2);

    let cancelled = svc
        .cancel(&id(), rotation_id, &origin(), soon(10_000))
        .await
        .expect("reverted");
    assert_eq!(cancelled.rotation_id, rotation_id);
    // Consumers read the old key again; the new one stays attached (and in Vault as the
    // previous one) until the overlap ends, for consumers that read it just before.
    let held = vault(&svc).unwrap();
    assert_eq!(
        held.current.as_ref().unwrap().credential_id,
        old.credential_id
    );
    assert_eq!(
        held.previous.as_ref().unwrap().credential_id,
        new.credential_id
    );
    assert_eq!(attached(&svc).len(), 2);
    assert!(consumer_authenticates(&svc));
    let record = state(&svc).await;
    assert!(record.is_closed());
    let overlap = record.overlap.clone().unwrap();
    assert!(overlap.cancelled);
    assert_eq!(overlap.retiring, Some(new.credential_id.clone()));
    assert_eq!(
        record.last.unwrap().metadata.rotation_id,
        first.metadata.rotation_id,
        "the rotation in force is the one that made the old key"
    );
    assert_eq!(svc.history(&id()).await.unwrap()[0].outcome, "cancelled");

    // Asked again: the same answer, nothing changed.
    let again = svc
        .cancel(&id(), rotation_id, &origin(), soon(10_000))
        .await
        .expect("the same cancellation");
    assert_eq!(again.stored.version, cancelled.stored.version);

    // The overlap ends (the timer, or CompleteRotation now): the new key is detached and
    // deleted, the cancellation stays in the history.
    svc.complete(id(), rotation_id, origin(), soon(10_000))
        .await
        .expect("the new key retired");
    assert_eq!(attached(&svc), vec![old.credential_id.clone()]);
    assert_eq!(svc.pipeline().issuer.keys(CLIENT).pool.len(), 1);
    assert!(vault(&svc).unwrap().previous.is_none());
    assert!(consumer_authenticates(&svc));
    let record = state(&svc).await;
    assert!(record.overlap.is_none());
    assert_eq!(
        record.last.unwrap().metadata.rotation_id,
        first.metadata.rotation_id
    );
    assert_eq!(svc.history(&id()).await.unwrap()[0].outcome, "cancelled");
}

#[tokio::test]
async fn a_cancellation_in_the_overlap_cut_off_after_vault_is_finished_by_the_heal() {
    let svc = service_with(FakeVault::default(), |s| {
        s.lease_ttl = Duration::from_millis(300);
    });
    svc.pipeline().issuer.add_key_client(CLIENT, MADE_ELSEWHERE);
    let first = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    svc.complete(id(), first.metadata.rotation_id, origin(), soon(10_000))
        .await
        .unwrap();
    let old = vault(&svc).unwrap().current.unwrap();
    let second = svc.rotate(command(CLIENT), soon(10_000)).await.unwrap();
    let rotation_id = second.metadata.rotation_id;

    // Vault goes back to the old key, then the record cannot be closed: cut off.
    let ledger = &svc.pipeline().ledger;
    let close = ledger.state_writes.load(Ordering::SeqCst) + 2;
    ledger.fail_state_write.store(close, Ordering::SeqCst);
    assert!(
        svc.cancel(&id(), rotation_id, &origin(), soon(10_000))
            .await
            .is_err()
    );
    assert_eq!(
        vault(&svc).unwrap().current.unwrap().credential_id,
        old.credential_id,
        "consumers already have the old key"
    );
    assert!(consumer_authenticates(&svc));
    assert!(state(&svc).await.intent.is_some(), "left open");

    // The next step for the client heals it first, and answers it as cancelled.
    let cancelled = svc
        .cancel(&id(), rotation_id, &origin(), soon(10_000))
        .await
        .expect("cancelled");
    assert_eq!(cancelled.rotation_id, rotation_id);
    let record = state(&svc).await;
    assert!(record.is_closed());
    assert!(record.overlap.unwrap().cancelled);
    assert_eq!(
        vault(&svc).unwrap().current.unwrap().credential_id,
        old.credential_id
    );
    assert!(consumer_authenticates(&svc));
}
