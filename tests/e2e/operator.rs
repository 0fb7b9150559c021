//! The operator CLI (`secret-rotator rotate|status|complete|cancel|rollback|history|health`) against a running
//! server: JSON and human output, and an exit code per kind of failure.

use std::process::Output;

use secret_rotator::emulator::{pkjwt_client, random_client_id, regular_client};
use serde_json::Value;

use crate::helpers::{ServiceProcess, bare_stack};

/// Runs the binary with `args` against `server`.
pub(crate) async fn cli(server: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-rotator"))
        .args(args)
        .env("ROTATOR_SERVER", server)
        .output()
        .await
        .expect("run the CLI")
}

pub(crate) fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn the_cli_rotates_stages_cancels_and_completes_printing_no_secret() {
    let operated = Operated::start().await;
    let (emulator, server, id) = (
        &operated.emulator,
        operated.server.clone(),
        operated.id.clone(),
    );

    let health = cli(&server, &["health", "--wait-ready", "10s"]).await;
    assert_eq!(health.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&health.stdout).contains("status: SERVING"));

    let rotated = cli(
        &server,
        &["rotate", &id, "--reason", "cli test", "--output", "json"],
    )
    .await;
    assert_eq!(rotated.status.code(), Some(0), "{rotated:?}");
    let rotated = json(&rotated);
    assert_eq!(rotated["client_id"], id.as_str());
    assert_eq!(rotated["vault"]["version"], 1);
    let live = emulator.live_secret(&id).unwrap();

    let staged = json(
        &cli(
            &server,
            &[
                "rotate",
                &id,
                "--staged",
                "--distribute-for",
                "10m",
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(staged["strategy"], "staged");
    let rotation_id = staged["rotation_id"].as_str().unwrap().to_owned();
    let status = json(&cli(&server, &["status", &id, "--output", "json"]).await);
    assert_eq!(
        status["staged_rotation"]["rotation_id"],
        rotation_id.as_str()
    );

    let cancelled = cli(&server, &["cancel", &id, &rotation_id]).await;
    assert_eq!(cancelled.status.code(), Some(0), "{cancelled:?}");
    assert!(
        String::from_utf8_lossy(&cancelled.stdout).contains(&format!("cancelled: {rotation_id}"))
    );
    let staged = json(&cli(&server, &["rotate", &id, "--staged", "--output", "json"]).await);
    let rotation_id = staged["rotation_id"].as_str().unwrap().to_owned();
    let completed = json(
        &cli(
            &server,
            &["complete", &id, &rotation_id, "--output", "json"],
        )
        .await,
    );
    assert_eq!(completed["rotation_id"], rotation_id.as_str());
    assert_ne!(emulator.live_secret(&id).unwrap(), live);

    // The promoted secret breaks someone: rolled back, the one before is in force again.
    let rolled_back = cli(
        &server,
        &["rollback", &id, &rotation_id, "--output", "json"],
    )
    .await;
    assert_eq!(rolled_back.status.code(), Some(0), "{rolled_back:?}");
    let rolled_back = json(&rolled_back);
    assert_eq!(rolled_back["rolled_back"], rotation_id.as_str());
    assert_eq!(rolled_back["replayed"], false);
    assert_eq!(emulator.live_secret(&id).unwrap(), live);
    let again = cli(&server, &["rollback", &id, &rotation_id]).await;
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("replayed: true"));
    let unknown = cli(
        &server,
        &["rollback", &id, &uuid::Uuid::new_v4().to_string()],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(3), "NOT_FOUND: {unknown:?}");

    // Its history, newest first: the rollback's subject promoted, the first stage cancelled.
    let history = json(&cli(&server, &["history", &id, "--output", "json"]).await);
    let rotations = history["rotations"].as_array().expect("a list");
    let outcomes: Vec<&str> = rotations
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        rotations[0]["rotation_id"],
        rotation_id.as_str(),
        "{history}"
    );
    assert!(outcomes.contains(&"cancelled"), "{outcomes:?}");
    assert!(outcomes.contains(&"ok"), "{outcomes:?}");
    let human = cli(&server, &["history", &id]).await;
    assert_eq!(human.status.code(), Some(0), "{human:?}");
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(human.starts_with("rotations:\n  -\n"), "{human}");
    assert!(
        human.contains(&format!("rotation_id: {rotation_id}")),
        "{human}"
    );

    // Nothing the CLI printed holds a secret.
    let everything = format!("{rotated}{status}{completed}{staged}{rolled_back}{history}{human}");
    for secret in emulator.client(&id).unwrap().issued_secrets {
        assert!(!everything.contains(&secret));
    }
}

#[tokio::test]
async fn every_cli_failure_has_its_exit_code_and_the_servers_message() {
    let operated = Operated::start().await;
    let (server, id, pkjwt) = (
        operated.server.clone(),
        operated.id.clone(),
        operated.pkjwt.clone(),
    );
    let bare = server.trim_start_matches("http://").to_owned();
    let cases: [(&[&str], i32, &str); 7] = [
        (&["rotate", "../x"], 2, "INVALID_ARGUMENT"),
        (&["rotate", &random_client_id()], 3, "NOT_FOUND"),
        (&["rotate", &pkjwt], 4, "FAILED_PRECONDITION"),
        // An address without its scheme is the caller's mistake, not an unreachable server.
        (
            &["status", &id, "--server", &bare],
            2,
            "names no scheme: write http://",
        ),
        (
            &["status", &id, "--server", &format!("grpc://{bare}")],
            2,
            "the scheme must be http:// (plaintext) or https:// (TLS), not grpc://",
        ),
        (
            &["complete", &id, "not-a-uuid"],
            2,
            "rotation_id must be a UUID",
        ),
        (
            &["status", &id, "--server", "http://127.0.0.1:9"],
            6,
            "cannot reach",
        ),
    ];
    for (args, code, says) in cases {
        let out = cli(&server, args).await;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let refused = json(&cli(&server, &["rotate", &pkjwt, "--output", "json"]).await);
    assert_eq!(refused["error"], "FAILED_PRECONDITION");
    // With --output json a command line that does not parse is one JSON object too.
    for args in [
        &["rotate", "--output", "json", "--no-such-flag"][..],
        &["--output=json", "rotate"][..],
        &["complete", &id, "--output", "json"][..],
    ] {
        let out = cli(&server, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let refused = json(&out);
        assert_eq!(refused["error"], "INVALID_ARGUMENT", "{args:?}: {refused}");
        assert!(refused["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

/// A service with a client to operate on (`id`) and a private_key_jwt one (`pkjwt`), and the
/// `--server` that reaches it.
pub(crate) struct Operated {
    pub emulator: secret_rotator::emulator::RunningEmulator,
    pub server: String,
    pub id: String,
    pub pkjwt: String,
    _service: ServiceProcess,
    _bao: crate::helpers::Bao,
}

impl Operated {
    pub async fn start() -> Self {
        let (bao, emulator, m2m) = bare_stack().await;
        let id = random_client_id();
        emulator.add_client(regular_client(&id, "Operated app"));
        let pkjwt = random_client_id();
        emulator.add_client(pkjwt_client(&pkjwt));
        let service = ServiceProcess::start(&ServiceProcess::env_for(&bao, &emulator, &m2m)).await;
        Self {
            server: format!("http://{}", service.addr),
            emulator,
            id,
            pkjwt,
            _service: service,
            _bao: bao,
        }
    }
}

#[tokio::test]
async fn the_cli_speaks_tls_with_a_certificate_or_a_bearer_token() {
    use crate::pki::{AUDIENCE, BOT, Pki};

    let (bao, emulator, m2m) = bare_stack().await;
    let id = crate::security::allowed_id();
    emulator.add_client(regular_client(&id, "Allowed app"));
    let pki = Pki::new(crate::security::POLICY);
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend(pki.env());
    let service = ServiceProcess::start_tls(&env, Some(pki.tls())).await;
    let server = format!("https://localhost:{}", service.addr.port());
    let ca = pki.path("ca.pem").display().to_string();

    let (cert, key) = pki.ca.client(BOT, false);
    pki.write("bot.pem", &cert);
    pki.write("bot.key", &key);
    let by_certificate = cli(
        &server,
        &[
            "rotate",
            &id,
            "--server-ca",
            &ca,
            "--client-cert",
            &pki.path("bot.pem").display().to_string(),
            "--client-key",
            &pki.path("bot.key").display().to_string(),
        ],
    )
    .await;
    assert_eq!(by_certificate.status.code(), Some(0), "{by_certificate:?}");

    let token = pki.signer.token(crate::security::AUTOMATION, AUDIENCE, 300);
    let by_token = tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-rotator"))
        .args(["status", &id, "--server", &server, "--server-ca", &ca])
        .env("ROTATOR_TOKEN", &token)
        .output()
        .await
        .unwrap();
    // The automation may rotate Allowed* but not read status: the server said so.
    assert_eq!(by_token.status.code(), Some(5), "{by_token:?}");
    assert!(
        String::from_utf8_lossy(&by_token.stderr)
            .contains("jwt:automation@corp.example may not call GetRotationStatus")
    );

    let nobody = cli(&server, &["rotate", &id, "--server-ca", &ca]).await;
    assert_eq!(nobody.status.code(), Some(5), "{nobody:?}");
    assert!(!String::from_utf8_lossy(&nobody.stderr).contains(&token));
}
