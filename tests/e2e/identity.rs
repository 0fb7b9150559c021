//! Typed identities and what belongs to them: no source of identity can pose as another
//! (a token as a certificate, a certificate as a token), and idempotency keys belong to the
//! caller that sent them.

use rcgen::SanType;
use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::{RotateSecretRequest, secret_rotation_service_client::SecretRotationServiceClient},
};
use tonic::{Code, Request};

use crate::{
    helpers::{assert_status, rotate},
    pki::{AUDIENCE, BOT},
    security::{AUTOMATION, allowed_id, call_with, secure_stack, with_token},
};

#[tokio::test]
async fn one_source_of_identity_cannot_pose_as_another() {
    let (stack, pki) = secure_stack(&[]).await;
    let anything = stack.seed(regular_client(&random_client_id(), "Any app"));
    let allowed = stack.seed(regular_client(&allowed_id(), "Allowed app"));
    let before = stack.emulator.stats();

    // A token whose sub is the bot's SPIFFE ID is jwt:spiffe://..., not the bot.
    let mut client =
        SecretRotationServiceClient::new(stack.channel(Some(pki.tls())).await.unwrap());
    let posing = pki.signer.token(BOT, AUDIENCE, 300);
    let status = client
        .rotate_secret(with_token(&anything, &posing))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        &format!("jwt:{BOT} may not call RotateSecret"),
    );

    // A certificate whose DNS name is spelled like the automation's token subject is
    // dns:automation@corp.example, not jwt:automation@corp.example.
    let spelled = pki.ca.leaf(
        vec![SanType::DnsName(AUTOMATION.try_into().unwrap())],
        false,
    );
    let status = call_with(&stack, pki.mtls(&spelled), &allowed)
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        "dns:automation@corp.example may not call",
    );
    assert_eq!(stack.emulator.stats(), before, "a poser reached Auth0");

    // The DNS identity the policy names, typed, is allowed.
    let batch = pki.ca.leaf(
        vec![SanType::DnsName(
            "legacy-batch.corp.example".try_into().unwrap(),
        )],
        false,
    );
    call_with(&stack, pki.mtls(&batch), &allowed)
        .await
        .expect("dns:legacy-batch.corp.example may rotate Allowed*");
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_caller_that_sent_them() {
    let (stack, pki) = secure_stack(&[]).await;
    let allowed = stack.seed(regular_client(&allowed_id(), "Allowed app"));
    let keyed = |token: Option<&str>| {
        let mut request = Request::new(RotateSecretRequest {
            idempotency_key: "deploy-42".into(),
            ..rotate(&allowed)
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    let token = pki.signer.token(AUTOMATION, AUDIENCE, 300);
    let mut by_token =
        SecretRotationServiceClient::new(stack.channel(Some(pki.tls())).await.unwrap());
    let mut by_bot = stack.client().await;

    let first = by_token
        .rotate_secret(keyed(Some(&token)))
        .await
        .unwrap()
        .into_inner();
    // The bot's equal string is its own key: it rotates, and learns nothing of the other's.
    let bots = by_bot
        .rotate_secret(keyed(None))
        .await
        .unwrap()
        .into_inner();
    assert!(!bots.replayed);
    assert_ne!(bots.rotation_id, first.rotation_id);
    assert_eq!(stack.emulator.stats().rotations, 2);
    // Each caller's retry replays its own answer.
    let again = by_token
        .rotate_secret(keyed(Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.rotation_id, first.rotation_id);
    let bots_again = by_bot
        .rotate_secret(keyed(None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bots_again.rotation_id, bots.rotation_id);
    assert_eq!(stack.emulator.stats().rotations, 2);
}

#[tokio::test]
async fn policy_globs_do_not_stretch_to_look_alike_identities() {
    let (stack, pki) = secure_stack(&[]).await;
    let id = stack.seed(regular_client(&random_client_id(), "Any app"));
    let before = stack.emulator.stats();
    for look_alike in [
        // Another trust domain that starts like the bot's.
        "spiffe://corp.example.evil/ns/platform/sa/rotation-bot",
        // A deeper path under the bot's.
        "spiffe://corp.example/ns/platform/sa/rotation-bot/extra",
        // Case matters.
        "spiffe://corp.example/ns/platform/sa/Rotation-bot",
    ] {
        let cert = pki.ca.client(look_alike, false);
        let status = call_with(&stack, pki.mtls(&cert), &id).await.unwrap_err();
        assert_status(&status, Code::PermissionDenied, look_alike);
    }
    // `Allowed*` does not match a client id that merely contains it.
    let token = pki.signer.token(AUTOMATION, AUDIENCE, 300);
    let mut client =
        SecretRotationServiceClient::new(stack.channel(Some(pki.tls())).await.unwrap());
    let contains = stack.seed(regular_client(
        &format!("NotAllowed{}", &random_client_id()[..20]),
        "x",
    ));
    let status = client
        .rotate_secret(with_token(&contains, &token))
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, "may not call RotateSecret");
    assert_eq!(stack.emulator.stats(), before, "a look-alike reached Auth0");
}

#[tokio::test]
async fn a_bearer_token_to_a_service_without_a_jwks_is_told_so() {
    let pki = crate::pki::Pki::new(crate::security::POLICY);
    // Mutual TLS only: the flags without the JWKS and its claims.
    let args: Vec<String> = pki
        .args()
        .chunks(2)
        .filter(|pair| !pair[0].starts_with("--jwks") && !pair[0].starts_with("--jwt"))
        .flatten()
        .cloned()
        .collect();
    let bot = pki.ca.client(BOT, false);
    let stack = crate::helpers::Stack::start_with(crate::helpers::StackOptions {
        extra_args: args,
        tls: Some(pki.mtls(&bot)),
        ..crate::helpers::StackOptions::default()
    })
    .await;
    let id = stack.seed(regular_client(&allowed_id(), "Allowed app"));
    let mut client =
        SecretRotationServiceClient::new(stack.channel(Some(pki.tls())).await.unwrap());
    let token = pki.signer.token(AUTOMATION, AUDIENCE, 300);
    let status = client
        .rotate_secret(with_token(&id, &token))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::Unauthenticated,
        "this service checks none (it has no JWKS",
    );
}
