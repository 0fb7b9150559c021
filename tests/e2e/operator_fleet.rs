//! The operator CLI's commands for many clients against a running server: `list` (ListClients,
//! a page or every page) and `batch` (RotateSecrets by ids or a selector, a JSON line per
//! client and the summary, an exit code per kind of failure).

use std::collections::BTreeSet;

use secret_rotator::emulator::{random_client_id, regular_client};
use serde_json::Value;

use crate::operator::{Operated, cli, json};

/// Each stdout line as JSON.
fn lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_cli_lists_the_tenant_page_by_page_or_whole() {
    let operated = Operated::start().await;
    let server = &operated.server;
    for n in 0..3 {
        let id = random_client_id();
        operated
            .emulator
            .add_client(regular_client(&id, &format!("Listed app {n}")));
    }

    let first = cli(server, &["list", "--page-size", "2", "--output", "json"]).await;
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let first = json(&first);
    assert_eq!(ids(&first).len(), 2, "{first}");
    let token = first["next_page_token"].as_str().expect("a next page");
    let second = json(
        &cli(
            server,
            &[
                "list",
                "--page-size",
                "2",
                "--page-token",
                token,
                "--output",
                "json",
            ],
        )
        .await,
    );
    assert_eq!(ids(&second).len(), 2, "{second}");
    assert!(ids(&second).iter().all(|id| !ids(&first).contains(id)));

    let all = cli(
        server,
        &["list", "--all", "--page-size", "2", "--output", "json"],
    )
    .await;
    assert_eq!(all.status.code(), Some(0), "{all:?}");
    let all = json(&all);
    assert!(all["next_page_token"].is_null(), "{all}");
    let every: Vec<String> = ids(&all);
    let unique: BTreeSet<&String> = every.iter().collect();
    assert_eq!(unique.len(), every.len(), "no client twice: {every:?}");
    // The service's own application, the operated client, the key client and the three added.
    assert_eq!(every.len(), 6, "{every:?}");
    let client = |id: &str| {
        all["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {all}"))
    };
    let operated_client = client(&operated.id);
    assert_eq!(operated_client["rotatable"], true);
    assert_eq!(operated_client["credential_kind"], "client_secret");
    assert_eq!(
        client(&operated.pkjwt)["credential_kind"],
        "private_key_jwt"
    );

    let human = cli(server, &["list", "--all"]).await;
    assert_eq!(human.status.code(), Some(0));
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains(&format!("client_id: {}", operated.id)),
        "{human}"
    );
    assert!(human.contains("name: Listed app 2"), "{human}");

    // A page token the server never gave is the caller's mistake.
    let bad = cli(server, &["list", "--page-token", "%%%", "--output", "json"]).await;
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert_eq!(json(&bad)["error"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn the_cli_rotates_a_batch_printing_a_line_per_client_then_the_summary() {
    let operated = Operated::start().await;
    let (emulator, server) = (&operated.emulator, operated.server.as_str());
    let fleet: Vec<String> = (0..3).map(|_| random_client_id()).collect();
    for (n, id) in fleet.iter().enumerate() {
        emulator.add_client(regular_client(id, &format!("Fleet app {n}")));
    }

    // By ids, one of them unknown: a line each, the summary last, NOT_FOUND's exit code.
    let missing = random_client_id();
    let out = cli(
        server,
        &[
            "batch",
            &fleet[0],
            &fleet[1],
            &missing,
            "--reason",
            "cli batch",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let got = lines(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    for id in &fleet[..2] {
        let line = got.iter().find(|l| l["client_id"] == id.as_str()).unwrap();
        assert_eq!(line["rotated"]["vault"]["version"], 1, "{line}");
        assert_eq!(emulator.client(id).unwrap().rotations, 1);
    }
    let refused = got.iter().find(|l| l["client_id"] == missing.as_str());
    assert_eq!(refused.unwrap()["error"], "NOT_FOUND", "{got:?}");
    let summary = &got[3]["summary"];
    assert_eq!(summary["total"], 3, "{summary}");
    assert_eq!(summary["rotated"], 2);
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["failed_by_code"]["NOT_FOUND"], 1);

    // By a selector, with idempotency keys: every fleet client, exit 0; sent again, replayed.
    let by_name = [
        "batch",
        "--name",
        "Fleet app *",
        "--idempotency-key-prefix",
        "cli-batch-1-",
        "--output",
        "json",
    ];
    let out = cli(server, &by_name).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let summary = &lines(&out)[3]["summary"];
    assert_eq!(
        (summary["total"].clone(), summary["rotated"].clone()),
        (3.into(), 3.into())
    );
    let again = lines(&cli(server, &by_name).await);
    assert_eq!(again[3]["summary"]["replayed"], 3, "{again:?}");
    for id in &fleet {
        assert_eq!(
            emulator.client(id).unwrap().rotations,
            1 + u64::from(id != &fleet[2])
        );
    }

    // Human output: a line per client.
    let out = cli(server, &["batch", &fleet[2]]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human.starts_with(&format!("{}: rotated ", fleet[2])),
        "{human}"
    );
    assert!(human.contains("rotated: 1"), "{human}");

    // Neither ids nor a selector, or both, is refused by the server before anything is done;
    // a selector flag that does not parse by the CLI.
    for args in [
        &["batch", "--output", "json"][..],
        &["batch", &fleet[0], "--name", "Fleet*", "--output", "json"][..],
        &["batch", "--metadata", "no-value", "--output", "json"][..],
    ] {
        let out = cli(server, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(json(&out)["error"], "INVALID_ARGUMENT", "{args:?}");
    }

    let everything: String =
        String::from_utf8_lossy(&out.stdout).into_owned() + &serde_json::to_string(&again).unwrap();
    for id in &fleet {
        for secret in emulator.client(id).unwrap().issued_secrets {
            assert!(!everything.contains(&secret));
        }
    }
}
