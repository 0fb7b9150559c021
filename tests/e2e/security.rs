//! Who may rotate what (issue #4): TLS and mutual TLS, bearer tokens, the policy and its
//! reloads, limits. Every refusal is checked to reach neither Auth0 nor Vault.

use std::time::Duration;

use secret_rotator::{
    emulator::{random_client_id, regular_client},
    proto::{RotateSecretRequest, secret_rotation_service_client::SecretRotationServiceClient},
};
use tonic::{Code, Request, transport::Channel};
use tonic_types::StatusExt;

use rcgen::SanType;

use crate::{
    helpers::{
        ServiceProcess, Stack, StackOptions, assert_status, authed, eventually, rotate,
        slow_answer, vault_path,
    },
    pki::{AUDIENCE, BOT, Ca, JwtSigner, Pki},
};

pub(crate) const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://corp.example/ns/platform/sa/rotation-bot"]
clients = ["*"]
rpcs = ["RotateSecret", "GetRotationStatus"]

[[allow]]
callers = ["jwt:automation@corp.example"]
clients = ["Allowed*"]
rpcs = ["RotateSecret"]

[[allow]]
callers = ["dns:legacy-batch.corp.example"]
clients = ["Allowed*"]
rpcs = ["RotateSecret"]
"#;

pub(crate) const AUTOMATION: &str = "automation@corp.example";

pub(crate) fn with_token(client_id: &str, token: &str) -> Request<RotateSecretRequest> {
    authed(rotate(client_id), token)
}

pub(crate) fn allowed_id() -> String {
    format!("Allowed{}", &random_client_id()[..25])
}

pub(crate) async fn secure_stack(extra: &[&str]) -> (Stack, Pki) {
    let pki = Pki::new(POLICY);
    let bot = pki.ca.client(BOT, false);
    let mut args = pki.args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let stack = Stack::start_with(StackOptions {
        extra_args: args,
        tls: Some(pki.mtls(&bot)),
        ..StackOptions::default()
    })
    .await;
    (stack, pki)
}

/// A call over a fresh connection with `tls`; a refused handshake counts as a failed call.
pub(crate) async fn call_with(
    stack: &Stack,
    tls: tonic::transport::ClientTlsConfig,
    id: &str,
) -> Result<(), tonic::Status> {
    call_over(stack, Some(tls), id).await
}

/// A call over a fresh connection, TLS or plaintext.
async fn call_over(
    stack: &Stack,
    tls: Option<tonic::transport::ClientTlsConfig>,
    id: &str,
) -> Result<(), tonic::Status> {
    let channel: Channel = stack
        .channel(tls)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    SecretRotationServiceClient::new(channel)
        .rotate_secret(rotate(id))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn mutual_tls_identifies_callers_and_refuses_untrusted_certificates() {
    let (stack, pki) = secure_stack(&[]).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));

    // A valid certificate of the trusted CA, with the bot's SPIFFE ID.
    let bot = pki.ca.client(BOT, false);
    call_with(&stack, pki.mtls(&bot), &id)
        .await
        .expect("the bot may rotate");
    let data = stack.bao.kv_data(&vault_path(&id)).await.unwrap();
    assert_eq!(
        data["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );
    let before = stack.emulator.stats();

    // No certificate and no token: no identity.
    let status = call_with(&stack, pki.tls(), &id).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("client certificate or a bearer token"),
        "{}",
        status.message()
    );

    // A certificate from another CA, and an expired one: the handshake is refused.
    let stranger = Ca::new("another CA").client(BOT, false);
    assert!(
        call_with(&stack, pki.mtls(&stranger), &id).await.is_err(),
        "untrusted CA accepted"
    );
    let expired = pki.ca.client(BOT, true);
    assert!(
        call_with(&stack, pki.mtls(&expired), &id).await.is_err(),
        "expired certificate accepted"
    );

    // A trusted certificate whose identity the policy does not know.
    let intern = pki
        .ca
        .client("spiffe://corp.example/ns/sandbox/sa/intern", false);
    let status = call_with(&stack, pki.mtls(&intern), &id).await.unwrap_err();
    assert_status(&status, Code::PermissionDenied, "sandbox/sa/intern");

    // Plaintext is not served at all.
    assert!(call_over(&stack, None, &id).await.is_err());

    // A certificate for servers only (extended key usage), and a CA certificate used as a
    // client's: the handshake is refused.
    let server_only = pki
        .ca
        .leaf_with(vec![SanType::URI(BOT.try_into().unwrap())], false, |p| {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        });
    assert!(
        call_with(&stack, pki.mtls(&server_only), &id)
            .await
            .is_err(),
        "a server-only certificate was accepted from a client"
    );
    let ca_as_leaf = pki
        .ca
        .leaf_with(vec![SanType::URI(BOT.try_into().unwrap())], false, |p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        });
    assert!(
        call_with(&stack, pki.mtls(&ca_as_leaf), &id).await.is_err(),
        "a CA certificate was accepted as a client's"
    );

    // An X.509-SVID has exactly one URI SAN, and it is a SPIFFE ID.
    let two_ids = pki.ca.leaf(
        vec![
            SanType::URI(
                "spiffe://corp.example/ns/sandbox/sa/intern"
                    .try_into()
                    .unwrap(),
            ),
            SanType::URI(BOT.try_into().unwrap()),
        ],
        false,
    );
    let status = call_with(&stack, pki.mtls(&two_ids), &id)
        .await
        .unwrap_err();
    assert_status(&status, Code::Unauthenticated, "2 URI SANs");
    for not_spiffe in [
        "https://corp.example/ns/platform/sa/rotation-bot",
        "spiffe://Corp.Example/ns/platform/sa/rotation-bot",
        "spiffe://corp.example/ns/platform/../platform/sa/rotation-bot",
    ] {
        let cert = pki
            .ca
            .leaf(vec![SanType::URI(not_spiffe.try_into().unwrap())], false);
        let status = call_with(&stack, pki.mtls(&cert), &id).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, "not a SPIFFE ID");
    }

    assert_eq!(
        stack.emulator.stats(),
        before,
        "a refused caller reached Auth0"
    );
    assert_eq!(
        stack.bao.kv_metadata(&vault_path(&id)).await.unwrap()["current_version"],
        1
    );
}

#[tokio::test]
async fn bearer_tokens_are_checked_for_signature_algorithm_audience_and_expiry() {
    let (stack, pki) = secure_stack(&[]).await;
    let allowed = stack.seed(regular_client(&allowed_id(), "Allowed app"));
    let other = stack.seed(regular_client(&random_client_id(), "Other app"));
    let mut client =
        SecretRotationServiceClient::new(stack.channel(Some(pki.tls())).await.unwrap());

    let good = pki.signer.token(AUTOMATION, AUDIENCE, 300);
    client
        .rotate_secret(with_token(&allowed, &good))
        .await
        .expect("a valid token rotates an allowed client");
    // Clock skew within the leeway (30 s) is tolerated.
    let skewed = pki
        .signer
        .token_with(AUTOMATION, AUDIENCE, 300, Some(10), None);
    client
        .rotate_secret(with_token(&allowed, &skewed))
        .await
        .expect("nbf 10 s ahead is within the leeway");
    let before = stack.emulator.stats();

    let status = client
        .rotate_secret(with_token(&other, &good))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let forger = JwtSigner::new("test-key");
    let cases = [
        (
            "wrong audience",
            pki.signer.token(AUTOMATION, "another-service", 300),
            "audience",
        ),
        (
            "expired",
            pki.signer.token(AUTOMATION, AUDIENCE, -600),
            "expired",
        ),
        (
            "bad signature",
            forger.token(AUTOMATION, AUDIENCE, 300),
            "signature",
        ),
        (
            "alg none",
            pki.signer.unsigned_token(AUTOMATION),
            "bearer token",
        ),
        (
            "HMAC with the public key",
            pki.signer.hmac_with_public_key(AUTOMATION),
            "algorithm",
        ),
        ("garbage", "not.a.jwt".to_owned(), "bearer token"),
        (
            "valid only in an hour (nbf)",
            pki.signer
                .token_with(AUTOMATION, AUDIENCE, 7200, Some(3600), None),
            "not valid yet",
        ),
        (
            "a critical header extension (crit)",
            pki.signer.token_with(
                AUTOMATION,
                AUDIENCE,
                300,
                None,
                Some(vec!["exp".to_owned()]),
            ),
            "critical header extensions",
        ),
    ];
    for (what, token, expect) in cases {
        let status = client
            .rotate_secret(with_token(&allowed, &token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().contains(expect),
            "{what}: {}",
            status.message()
        );
        assert!(
            !status.message().contains(&token),
            "{what}: the token was echoed"
        );
    }
    assert_eq!(
        stack.emulator.stats(),
        before,
        "a refused token reached Auth0"
    );
}

#[tokio::test]
async fn the_policy_reloads_on_change_and_sighup_and_a_broken_one_is_ignored() {
    let (bao, emulator, m2m) = crate::helpers::bare_stack().await;
    let pki = Pki::new(POLICY);
    let bot = pki.ca.client(BOT, false);
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(pki.env());
    let service = ServiceProcess::start_tls(&env, Some(pki.mtls(&bot))).await;
    let id = random_client_id();
    emulator.add_client(regular_client(&id, "App"));
    let mut client = service.client().await;
    client
        .rotate_secret(rotate(&id))
        .await
        .expect("allowed at first");

    let code = |c: &SecretRotationServiceClient<Channel>| {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            c.rotate_secret(rotate(&id))
                .await
                .map(|_| Code::Ok)
                .unwrap_or_else(|s| s.code())
        }
    };
    // A good new policy, without the bot: it takes effect.
    pki.write("policy.toml", "allow = []\n");
    eventually(
        "the new policy to deny the bot",
        Duration::from_secs(20),
        || async { (code(&client).await == Code::PermissionDenied).then_some(()) },
    )
    .await;
    // A broken policy: refused with a log line, the previous one stays in force.
    pki.write("policy.toml", "[[allow]]\ncallers = [\"a[\"]\n");
    let refused = tokio::time::timeout(Duration::from_secs(20), async {
        while !service
            .output()
            .contains("authorization policy NOT reloaded")
        {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(
        refused.is_ok(),
        "the broken policy was not refused; the service said:\n{}",
        tail(&service.output())
    );
    assert_eq!(
        code(&client).await,
        Code::PermissionDenied,
        "still the previous policy"
    );
    // SIGHUP reloads on demand.
    pki.write("policy.toml", POLICY);
    service.signal("-HUP");
    eventually(
        "SIGHUP to reload the policy",
        Duration::from_secs(20),
        || async { service.output().contains("SIGHUP received").then_some(()) },
    )
    .await;
    eventually(
        "the bot to be allowed again",
        Duration::from_secs(20),
        || async { (code(&client).await == Code::Ok).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_new_server_certificate_is_picked_up_without_a_restart() {
    let (stack, pki) = secure_stack(&[]).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let bot = pki.ca.client(BOT, false);
    // The next certificate comes from a new CA, which this client alone trusts.
    let next_ca = Ca::new("next CA");
    let trusts_next = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(next_ca.pem()))
        .identity(tonic::transport::Identity::from_pem(&bot.0, &bot.1))
        .domain_name("localhost");
    assert!(
        call_with(&stack, trusts_next.clone(), &id).await.is_err(),
        "not yet"
    );

    let (cert, key) = next_ca.server();
    pki.write("server.key", &key);
    pki.write("server.pem", &cert);
    eventually(
        "the new certificate to be served",
        Duration::from_secs(20),
        || async { call_with(&stack, trusts_next.clone(), &id).await.ok() },
    )
    .await;
}

#[tokio::test]
async fn each_caller_has_a_rotation_rate_limit() {
    let (stack, pki) = secure_stack(&[
        "--caller-rotations-per-minute",
        "1",
        "--caller-rotation-burst",
        "2",
    ])
    .await;
    let bot = pki.ca.client(BOT, false);
    let mut codes = Vec::new();
    let mut retry = None;
    for _ in 0..3 {
        let id = stack.seed(regular_client(&random_client_id(), "App"));
        match call_with(&stack, pki.mtls(&bot), &id).await {
            Ok(()) => codes.push(Code::Ok),
            Err(status) => {
                retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
                codes.push(status.code());
            }
        }
    }
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::ResourceExhausted]);
    let retry = retry.expect("RetryInfo");
    assert!(
        retry > Duration::from_secs(1) && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    assert_eq!(stack.emulator.stats().rotations, 2);

    // Another caller has its own budget.
    let good = pki.signer.token(AUTOMATION, AUDIENCE, 300);
    let id = stack.seed(regular_client(&allowed_id(), "Allowed"));
    let mut client =
        SecretRotationServiceClient::new(stack.channel(Some(pki.tls())).await.unwrap());
    client
        .rotate_secret(with_token(&id, &good))
        .await
        .expect("own budget");
}

#[tokio::test]
async fn concurrent_rotations_are_capped_and_requests_are_small() {
    let stack = Stack::start_with(StackOptions {
        extra_args: ["--max-concurrent-rotations", "1"]
            .map(String::from)
            .to_vec(),
        ..StackOptions::default()
    })
    .await;
    let first = stack.seed(regular_client(&random_client_id(), "First"));
    let second = stack.seed(regular_client(&random_client_id(), "Second"));
    // The first rotation holds its slot for two seconds, waiting for Auth0's answer.
    stack.emulator.inject(slow_answer(2_000));
    let mut client = stack.client().await;
    let running = tokio::spawn({
        let mut client = client.clone();
        async move { client.rotate_secret(rotate(&first)).await }
    });
    eventually(
        "the first rotation to start",
        Duration::from_secs(10),
        || async { (stack.emulator.stats().rotations == 1).then_some(()) },
    )
    .await;
    let mut waiting = Request::new(rotate(&second));
    waiting.set_timeout(Duration::from_millis(500));
    let status = client.rotate_secret(waiting).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, "too many rotations");
    running.await.unwrap().expect("the first one finishes");
    assert_eq!(stack.emulator.stats().rotations, 1);

    let huge = RotateSecretRequest {
        client_id: "a".repeat(8 * 1024),
        ..Default::default()
    };
    let status = client.rotate_secret(huge).await.unwrap_err();
    assert_status(
        &status,
        Code::OutOfRange,
        "larger than ROTATOR_MAX_REQUEST_BYTES (4096 bytes); nothing was rotated",
    );
    assert_eq!(stack.emulator.stats().rotate_requests, 1);
}

#[tokio::test]
async fn upstream_certificates_are_verified_against_the_configured_cas() {
    let pki = Pki::new(POLICY);
    // The emulator serves HTTPS as "localhost" with a certificate of the test CA.
    let emulator_tls = secret_rotator::auth::TlsFiles {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: None,
    }
    .load()
    .unwrap();
    let trusting = |bao: &crate::helpers::Bao, vault: bool, auth0: bool| {
        let mut args = Vec::new();
        if vault {
            args.extend([
                "--vault-cacert".to_owned(),
                bao.ca_file().display().to_string(),
            ]);
        }
        if auth0 {
            args.extend([
                "--auth0-cacert".to_owned(),
                pki.path("ca.pem").display().to_string(),
            ]);
        }
        StackOptions {
            extra_args: args,
            emulator_tls: Some(emulator_tls.clone()),
            wait_serving: vault && auth0,
            ..StackOptions::default()
        }
    };

    // Both CAs configured: the service is SERVING and rotates.
    let bao = crate::helpers::Bao::start_tls().await;
    let options = trusting(&bao, true, true);
    let stack = Stack::start_on(bao, options).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    stack.rotate_ok(&id).await;
    assert_eq!(
        stack.bao.kv_data(&vault_path(&id)).await.unwrap()["client_secret"],
        stack.emulator.live_secret(&id).unwrap().as_str()
    );

    // Vault's CA unknown: refused before Auth0 is touched.
    let bao = crate::helpers::Bao::start_tls().await;
    let options = trusting(&bao, false, true);
    let stack = Stack::start_on(bao, options).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = stack.rotate_refused(&id).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(stack.emulator.stats().rotate_requests, 0);

    // Auth0's CA unknown: no request ever reaches it.
    let bao = crate::helpers::Bao::start_tls().await;
    let options = trusting(&bao, true, false);
    let stack = Stack::start_on(bao, options).await;
    let id = stack.seed(regular_client(&random_client_id(), "App"));
    let status = stack.rotate_refused(&id).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        stack.emulator.stats().requests,
        0,
        "an unverified Auth0 got a request"
    );
    assert!(stack.bao.kv_data(&vault_path(&id)).await.is_none());
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
