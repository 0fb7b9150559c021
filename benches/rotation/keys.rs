//! The key rotation part (issue #20): how long the service takes to make a key pair, and what
//! one key rotation and its retirement cost of Auth0 and Vault, measured from the caller's side
//! against a secret rotation made by the same service in the same run.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use secret_rotator::{
    emulator::{
        Emulator, EmulatorConfig, RunningEmulator, m2m_client, pkjwt_client, random_client_id,
        regular_client,
    },
    proto::{
        CompleteRotationRequest, RotateSecretRequest,
        secret_rotation_service_client::SecretRotationServiceClient,
    },
    rotation::{KeyBits, KeyPair},
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::{
    stack::{M2M_SECRET, SCOPES, Service},
    support::Bao,
};

/// What one kind of call cost, summed over the calls of a phase.
#[derive(Default)]
struct Cost {
    calls: u64,
    times: Vec<Duration>,
    management: u64,
    token: u64,
    vault: u64,
}

impl Cost {
    fn p50_ms(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort();
        t.get(t.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    fn per_call(&self, n: u64) -> f64 {
        n as f64 / self.calls.max(1) as f64
    }
}

/// Counters before a call; `add` books the difference.
struct Mark {
    at: Instant,
    management: u64,
    token: u64,
    vault: u64,
}

fn mark(emulator: &RunningEmulator, bao: &Bao) -> Mark {
    let s = emulator.stats();
    Mark {
        at: Instant::now(),
        management: s.requests - s.token_requests,
        token: s.token_requests,
        vault: bao.request_count(),
    }
}

impl Cost {
    fn add(&mut self, from: Mark, emulator: &RunningEmulator, bao: &Bao) {
        let to = mark(emulator, bao);
        self.calls += 1;
        self.times.push(from.at.elapsed());
        self.management += to.management - from.management;
        self.token += to.token - from.token;
        self.vault += to.vault - from.vault;
    }
}

/// Key generation times per size, then key rotations (and their retirements) and secret
/// rotations, one at a time, `clients` of each: the section of the report.
pub async fn run(short: bool, bao: &Bao, logs: &std::path::Path) -> String {
    let mut out = String::from("### Key rotations\n\n");
    let _ = writeln!(
        out,
        "| key size | key pairs made | p50 ms | max ms |\n|---|---|---|---|"
    );
    let sizes: [(KeyBits, u32, usize); 3] = if short {
        [
            (KeyBits::B2048, 2048, 3),
            (KeyBits::B3072, 3072, 1),
            (KeyBits::B4096, 4096, 1),
        ]
    } else {
        [
            (KeyBits::B2048, 2048, 20),
            (KeyBits::B3072, 3072, 10),
            (KeyBits::B4096, 4096, 5),
        ]
    };
    for (bits, n, count) in sizes {
        let mut times: Vec<Duration> = (0..count)
            .map(|_| {
                let at = Instant::now();
                KeyPair::generate(bits).expect("a key pair");
                at.elapsed()
            })
            .collect();
        times.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        let _ = writeln!(
            out,
            "| RSA {n} | {count} | {:.0} | {:.0} |",
            ms(&times[times.len() / 2]),
            ms(times.last().unwrap())
        );
    }

    let clients = if short { 4 } else { 40 };
    let m2m = random_client_id();
    let mut scopes = SCOPES.to_vec();
    scopes.extend(secret_rotator::auth0::CREDENTIAL_SCOPES);
    let mut emulator = Emulator::new(EmulatorConfig {
        rate_limit_burst: 1_000_000,
        rate_limit_per_second: 1_000_000,
        ..EmulatorConfig::default()
    })
    .with_client(m2m_client(&m2m, M2M_SECRET, &scopes));
    let keyed: Vec<String> = (0..clients).map(|_| random_client_id()).collect();
    let secret: Vec<String> = (0..clients).map(|_| random_client_id()).collect();
    for id in &keyed {
        emulator = emulator.with_client(pkjwt_client(id));
    }
    for id in &secret {
        emulator = emulator.with_client(regular_client(id, "Bench"));
    }
    let emulator = emulator.start(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let service = Service::start(bao, &emulator, &m2m, &[], &logs.join("keys.log")).await;
    let channel = Channel::from_shared(service.addr.clone())
        .unwrap()
        .connect()
        .await
        .expect("connect to the service");
    let mut client = SecretRotationServiceClient::new(channel);
    let rotate = |id: &str| RotateSecretRequest {
        client_id: id.to_owned(),
        ..Default::default()
    };

    let (mut secrets, mut first, mut again, mut retirements) = (
        Cost::default(),
        Cost::default(),
        Cost::default(),
        Cost::default(),
    );
    // Alternating, so that both kinds see the same machine. Each key client is rotated twice:
    // its first rotation also asks rotate-secret, which Auth0 refuses for a client without a
    // secret (the service learns it is a key client then); later ones do not.
    for (s, k) in secret.iter().zip(&keyed) {
        for keys in [&mut first, &mut again] {
            let m = mark(&emulator, bao);
            client
                .rotate_secret(rotate(s))
                .await
                .expect("a secret rotation");
            secrets.add(m, &emulator, bao);

            let m = mark(&emulator, bao);
            let answer = client
                .rotate_secret(rotate(k))
                .await
                .expect("a key rotation")
                .into_inner();
            keys.add(m, &emulator, bao);

            let m = mark(&emulator, bao);
            client
                .complete_rotation(CompleteRotationRequest {
                    client_id: k.clone(),
                    rotation_id: answer.rotation_id,
                })
                .await
                .expect("the old key retired");
            retirements.add(m, &emulator, bao);
        }
    }
    let _ = writeln!(
        out,
        "\n{clients} clients of each kind, each rotated twice, one call at a time, alternating.\n\n\
         | call | p50 ms | ratio to a secret rotation | Management API requests per call | token requests per call | Vault requests per call |\n\
         |---|---|---|---|---|---|"
    );
    let base = secrets.p50_ms();
    for (name, c) in [
        ("RotateSecret, client secret", &secrets),
        ("RotateSecret, Private Key JWT, first", &first),
        ("RotateSecret, Private Key JWT, again", &again),
        ("CompleteRotation, retire the old key", &retirements),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.1} |",
            c.p50_ms(),
            c.p50_ms() / base,
            c.per_call(c.management),
            c.per_call(c.token),
            c.per_call(c.vault),
        );
    }
    out
}
