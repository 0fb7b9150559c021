//! Schedules, against real OpenBao, the emulator and the real binary: two replicas rotate each
//! due client once per max_age (never twice for one due time), as the scheduler; a dry-run rule
//! reports and rotates nothing until a reload makes it live; a window that is closed defers the
//! rotation to its opening; ListClients shows when each client is due; a broken schedule is
//! refused at start and at reload.

use std::{collections::HashMap, time::Duration};

use secret_rotator::{
    emulator::{fleet_clients, random_client_id, regular_client},
    proto::{ListRotationsRequest, RotationRecord},
};

use crate::helpers::{ServiceProcess, bare_stack, eventually, grpcurl_at};

/// Time of a record as seconds since the epoch (protobuf Timestamp).
fn at(t: &Option<prost_types::Timestamp>) -> f64 {
    let t = t.as_ref().expect("a time");
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

pub(crate) async fn history(service: &ServiceProcess, client_id: &str) -> Vec<RotationRecord> {
    service
        .client()
        .await
        .list_rotations(ListRotationsRequest {
            client_id: client_id.into(),
        })
        .await
        .expect("ListRotations")
        .into_inner()
        .rotations
}

/// WARN and ERROR lines of a JSON log.
fn complaints(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        // Insecure mode says so once, by design.
        .filter(|l| !l.contains("WITHOUT TLS"))
        .collect()
}

#[tokio::test]
async fn two_replicas_rotate_each_due_client_once_per_max_age_as_the_scheduler() {
    let (bao, emulator, m2m) = bare_stack().await;
    let fleet = fleet_clients(12);
    for client in fleet.clone() {
        emulator.add_client(client);
    }
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        r#"
[[rule]]
label = "fleet-auto"
clients = ["Fleet*"]
app_types = ["non_interactive"]
metadata = { rotation = "auto" }
max_age = "3s"
"#,
    )
    .unwrap();
    let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
    env.extend([
        ("ROTATOR_SCHEDULE_FILE", schedule.display().to_string()),
        ("ROTATOR_SCHEDULE_INTERVAL", "100ms".into()),
        // A replica killed mid-rotation is healed within seconds.
        ("ROTATOR_DEADLINE", "2s".into()),
        ("ROTATOR_MAX_DEADLINE", "2s".into()),
        ("AUTH0_TIMEOUT", "1s".into()),
        ("ROTATOR_LEASE_TTL", "4s".into()),
        ("ROTATOR_RECONCILE_INTERVAL", "200ms".into()),
    ]);
    let named = |name: &str| {
        let mut env = env.clone();
        env.push(("ROTATOR_REPLICA_ID", name.to_owned()));
        env
    };
    let (env_a, env_b) = (named("replica-a"), named("replica-b"));
    let (a, b) = tokio::join!(ServiceProcess::start(&env_a), ServiceProcess::start(&env_b));

    let ids: Vec<String> = fleet
        .iter()
        .map(|c| c.doc["client_id"].as_str().unwrap().to_owned())
        .collect();
    // Fleet clients i % 4 == 3 are manual, i % 10 == 9 authenticate with private_key_jwt.
    let picked = |i: usize| i % 4 != 3 && i % 10 != 9;
    let governed: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| picked(*i))
        .map(|(_, id)| id)
        .collect();
    let others: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !picked(*i))
        .map(|(_, id)| id)
        .collect();
    assert_eq!(governed.len(), 8);
    let rotated_at_least = |n: u64| {
        let done = governed
            .iter()
            .all(|id| emulator.client(id).unwrap().rotations >= n);
        async move { done.then_some(()) }
    };

    // The first rotations at once (no rotation on record), by the replica holding the
    // scheduler lease; the other one rotates nothing.
    eventually(
        "a scheduled rotation of every governed client",
        Duration::from_secs(60),
        || rotated_at_least(1),
    )
    .await;
    // The lease rides on the replicas' shared record.
    let replicas = bao
        .kv_data("secret-rotator/replicas")
        .await
        .expect("the replicas' record");
    let holder = replicas["scheduler"]["holder"]
        .as_str()
        .expect("the scheduler lease")
        .to_owned();
    let (mut scheduler, mut standby) = match holder.as_str() {
        "replica-a" => (a, b),
        "replica-b" => (b, a),
        other => panic!("held by {other}"),
    };
    assert_eq!(
        standby
            .output()
            .matches("\"message\":\"rotation stored\"")
            .count(),
        0,
        "only the scheduler rotates"
    );

    // The scheduler dies mid-run; the other takes its lease over and goes on, and no due
    // client is rotated twice or lost.
    scheduler.signal("-KILL");
    scheduler.wait_exit().await;
    let killed = scheduler.output();
    eventually(
        "three scheduled rotations of every governed client",
        Duration::from_secs(90),
        || rotated_at_least(3),
    )
    .await;
    let replicas = bao.kv_data("secret-rotator/replicas").await.unwrap();
    assert_ne!(
        replicas["scheduler"]["holder"].as_str(),
        Some(holder.as_str()),
        "taken over"
    );
    standby.signal("-TERM");
    assert!(standby.wait_exit().await.success());

    // Read the records with a third process, after both replicas stopped.
    let reader = ServiceProcess::start(&ServiceProcess::env_for(&bao, &emulator, &m2m)).await;
    let mut by_replica: HashMap<&str, usize> = HashMap::new();
    for id in &governed {
        let auth0 = emulator.client(id).unwrap();
        let all = history(&reader, id).await;
        for r in &all {
            assert_eq!(r.rotated_by, "scheduler", "{id}: {r:?}");
            assert!(r.reason.contains("fleet-auto"), "{r:?}");
        }
        // A rotation the kill cut off after Auth0 rotated was healed (recovered); one cut off
        // before it stored nothing.
        let records: Vec<_> = all.into_iter().filter(|r| r.stored_at.is_some()).collect();
        assert_eq!(
            records.len() as u64,
            auth0.rotations,
            "{id}: every rotation Auth0 made is on record, none lost: {records:?}"
        );
        for r in &records {
            assert!(
                ["ok", "recovered"].contains(&r.outcome.as_str()),
                "{id}: {r:?}"
            );
        }
        // Newest first: each rotation started no sooner than max_age after the one before
        // was stored. A due client rotated twice would show two rotations moments apart.
        for pair in records.windows(2) {
            let gap = at(&pair[0].started_at) - at(&pair[1].stored_at);
            assert!(
                gap >= 2.95,
                "{id}: rotated again after {gap:.3} s: {pair:?}"
            );
        }
        let held = bao.kv_data(&crate::helpers::vault_path(id)).await.unwrap();
        assert_eq!(
            held["client_secret"],
            auth0.client_secret.unwrap().as_str(),
            "{id}: Vault holds Auth0's secret"
        );
    }
    for id in &others {
        assert_eq!(
            emulator.client(id).unwrap().rotations,
            0,
            "{id} is no rule's"
        );
    }
    for (name, log) in [("killed", killed), ("survivor", standby.output())] {
        // The survivor heals what the kill cut off, and says so; nothing else is a complaint.
        let complaints: Vec<&str> = complaints(&log)
            .into_iter()
            .filter(|l| !l.contains("healing a rotation left open"))
            .collect();
        assert!(complaints.is_empty(), "{name}: {complaints:?}");
        *by_replica.entry(name).or_default() +=
            log.matches("\"message\":\"rotation stored\"").count();
    }
    // Each replica rotated in its turn: the once-only guarantee was exercised across the
    // takeover.
    assert!(
        by_replica.values().all(|n| *n > 0),
        "rotations stored by replica: {by_replica:?}"
    );
}

/// Three clients under a schedule file the test rewrites: `reported` governed by a rule that
/// is a dry run (or live, `rules(false)`), `windowed` by a rule whose window opens the day after
/// tomorrow, `ungoverned` by none.
struct Scheduled {
    emulator: secret_rotator::emulator::RunningEmulator,
    service: ServiceProcess,
    file: std::path::PathBuf,
    admin: u16,
    reported: String,
    windowed: String,
    ungoverned: String,
    /// The day the window opens (UTC).
    opens: jiff::civil::Date,
    _bao: crate::helpers::Bao,
    _dir: tempfile::TempDir,
}

impl Scheduled {
    async fn start() -> Self {
        let (bao, emulator, m2m) = bare_stack().await;
        let (reported, windowed, ungoverned) =
            (random_client_id(), random_client_id(), random_client_id());
        for id in [&reported, &windowed, &ungoverned] {
            emulator.add_client(regular_client(id, "Scheduled app"));
        }
        let opens = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date()
            .checked_add(jiff::Span::new().days(2))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("schedule.toml");
        let mut env = ServiceProcess::env_for(&bao, &emulator, &m2m);
        env.push(("ROTATOR_SCHEDULE_FILE", file.display().to_string()));
        env.push(("ROTATOR_SCHEDULE_INTERVAL", "100ms".into()));
        env.push(("ROTATOR_RELOAD_INTERVAL", "100ms".into()));
        let admin = crate::helpers::free_port();
        env.push(("ROTATOR_ADMIN_ADDR", format!("127.0.0.1:{admin}")));
        std::fs::write(&file, rules(&reported, &windowed, opens, true)).unwrap();
        Self {
            emulator,
            service: ServiceProcess::start(&env).await,
            file,
            admin,
            reported,
            windowed,
            ungoverned,
            opens,
            _bao: bao,
            _dir: dir,
        }
    }

    fn rules(&self, dry_run: bool) -> String {
        rules(&self.reported, &self.windowed, self.opens, dry_run)
    }
}

/// `reported`'s rule (a dry run, or live) and `windowed`'s, whose window is the day `opens`.
fn rules(reported: &str, windowed: &str, opens: jiff::civil::Date, dry_run: bool) -> String {
    let day = format!("{:?}", opens.weekday());
    format!(
        r#"
[[rule]]
label = "report-only"
clients = ["{reported}"]
max_age = "1h"
dry_run = {dry_run}

[[rule]]
label = "windowed"
clients = ["{windowed}"]
max_age = "1h"
window = {{ days = ["{day}"], time_zone = "UTC" }}
"#
    )
}

#[tokio::test]
async fn a_dry_run_rule_reports_its_due_clients_and_list_clients_shows_when_each_is_due() {
    let s = Scheduled::start().await;
    let reported = &s.reported;
    eventually("the dry run's report", Duration::from_secs(30), || {
        let log = s.service.output();
        let found = log.lines().any(|l| {
            l.contains("schedule dry run: would rotate this client now") && l.contains(reported)
        });
        async move { found.then_some(()) }
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "secret_rotator_schedule_due_clients{rule=\"report-only\",dry_run=\"true\"} 1"
        ),
        "{metrics}"
    );
    assert_eq!(
        s.emulator.client(reported).unwrap().rotations,
        0,
        "a dry run"
    );

    // ListClients, through grpcurl: when each is due and by which rule.
    let listed = grpcurl_at(s.service.addr, "ListClients", r#"{"page_size": 50}"#)
        .await
        .unwrap();
    let entry = |id: &str| {
        listed["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["clientId"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed: {listed}"))
    };
    let dry = entry(reported);
    assert_eq!(dry["scheduleRule"], "report-only");
    assert_eq!(dry["scheduleDryRun"], true);
    let due: jiff::Timestamp = dry["nextRotationAt"].as_str().unwrap().parse().unwrap();
    assert!(due <= jiff::Timestamp::now(), "due now: {dry}");
    let deferred = entry(&s.windowed);
    assert_eq!(deferred["scheduleRule"], "windowed");
    assert_eq!(
        deferred["nextRotationAt"].as_str().unwrap(),
        format!("{}T00:00:00Z", s.opens),
        "the window's opening: {deferred}"
    );
    let none = entry(&s.ungoverned);
    assert!(
        none.get("nextRotationAt").is_none() && none.get("scheduleRule").is_none(),
        "{none}"
    );
}

#[tokio::test]
async fn a_broken_reload_keeps_the_schedule_and_a_fixed_one_makes_the_rule_live() {
    let s = Scheduled::start().await;
    let reported = &s.reported;
    std::fs::write(&s.file, "[[rule]]\nmax_age = \"soon\"\n").unwrap();
    eventually(
        "the broken schedule refused",
        Duration::from_secs(30),
        || {
            let refused = s.service.output().contains("schedule NOT reloaded");
            async move { refused.then_some(()) }
        },
    )
    .await;
    assert_eq!(
        s.emulator.client(reported).unwrap().rotations,
        0,
        "still a dry run"
    );
    std::fs::write(&s.file, s.rules(false)).unwrap();
    eventually(
        "the rule, now live, to rotate",
        Duration::from_secs(30),
        || {
            let rotations = s.emulator.client(reported).unwrap().rotations;
            async move { (rotations == 1).then_some(()) }
        },
    )
    .await;
    let records = history(&s.service, reported).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].rotated_by, "scheduler");
    assert!(records[0].reason.contains("report-only"), "{records:?}");
    assert_eq!(
        s.emulator.client(&s.windowed).unwrap().rotations,
        0,
        "its window is closed"
    );
    assert_eq!(s.emulator.client(&s.ungoverned).unwrap().rotations, 0);
    let audit = s.service.output();
    assert!(
        audit.lines().any(|l| l.contains("\"target\":\"audit\"")
            && l.contains(reported)
            && l.contains("\"caller\":\"scheduler\"")),
        "audited as the scheduler"
    );
}

#[test]
fn a_broken_schedule_is_refused_at_start_with_the_rule_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = dir.path().join("schedule.toml");
    std::fs::write(
        &schedule,
        "[[rule]]\nlabel = \"nightly\"\nmax_age = \"1d\"\nwindow = { hours = \"22:00\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secret-rotator"))
        .arg("serve")
        .env("AUTH0_DOMAIN", "acme.eu.auth0.com")
        .env("AUTH0_MANAGEMENT_TOKEN", "token-value")
        .env("VAULT_ADDR", "http://127.0.0.1:1")
        .env("VAULT_TOKEN", "vault-token-value")
        .env("ROTATOR_INSECURE", "true")
        .env("ROTATOR_LISTEN_ADDR", "127.0.0.1:0")
        .env("ROTATOR_SCHEDULE_FILE", &schedule)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("ROTATOR_SCHEDULE_FILE: rule 1 (nightly): window: hours must be HH:MM-HH:MM"),
        "{err}"
    );
}

/// The documented example (docs/schedules.md) loads, and its first rule governs the local
/// stack's demo web apps and nothing else the stack seeds.
#[test]
fn the_documented_schedule_selects_the_local_stacks_web_apps() {
    let docs = include_str!("../../docs/schedules.md");
    let start = docs.find("```toml\n").expect("an example") + "```toml\n".len();
    let example = &docs[start..start + docs[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("schedule.toml");
    std::fs::write(&file, example).unwrap();
    let schedule = secret_rotator::config::load_schedule(&file).expect("the example loads");
    let governed: Vec<String> = secret_rotator::emulator::demo_clients()
        .into_iter()
        .filter_map(|seeded| {
            let client: secret_rotator::rotation::Client =
                serde_json::from_value(serde_json::Value::Object(seeded.doc)).ok()?;
            let id =
                secret_rotator::rotation::ClientId::parse(client.client_id.0.as_deref()?).ok()?;
            Some(format!("{id} {}", schedule.rule_for(&id, &client)?.label))
        })
        .collect();
    assert_eq!(
        governed,
        [
            "Dm0WebApp4Rotation00000000000001 web-apps",
            "Dm0WebApp4Rotation00000000000002 web-apps"
        ]
    );
}
