//! The binary's command line: help, and refusing bad settings with one clear line.

use std::process::Command;

/// The settings issues #2 and #4 ask for, each with an environment variable.
const SETTINGS: [&str; 22] = [
    "ROTATOR_LISTEN_ADDR",
    "AUTH0_DOMAIN",
    "AUTH0_CLIENT_ID",
    "AUTH0_CLIENT_SECRET",
    "AUTH0_MANAGEMENT_TOKEN",
    "AUTH0_BASE_URL",
    "AUTH0_AUDIENCE",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_NAMESPACE",
    "VAULT_CACERT",
    "ROTATOR_VAULT_MOUNT",
    "ROTATOR_VAULT_PATH",
    "ROTATOR_INSECURE",
    "ROTATOR_TLS_CERT",
    "ROTATOR_TLS_KEY",
    "ROTATOR_TLS_CLIENT_CA",
    "ROTATOR_JWKS_FILE",
    "ROTATOR_JWKS_URL",
    "ROTATOR_POLICY_FILE",
    "AUTH0_CACERT",
    "ROTATOR_AUDIT_LOG",
];

/// The binary, with none of its settings inherited from the test's environment.
fn rotator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secret-rotator"));
    for var in SETTINGS {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn serve_help_lists_every_setting_with_env_and_default_but_no_secret_value() {
    let out = rotator()
        .args(["serve", "--help"])
        .env("AUTH0_CLIENT_SECRET", "help-must-not-show-this")
        .env("VAULT_TOKEN", "nor-this-token")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for env in SETTINGS {
        assert!(
            help.contains(&format!("env: {env}")),
            "{env} missing from --help:\n{help}"
        );
    }
    for default in [
        "0.0.0.0:50051",
        "[default: secret]",
        "auth0/clients/{client_id}",
    ] {
        assert!(help.contains(default), "{default} missing from --help");
    }
    assert!(!help.contains("help-must-not-show-this") && !help.contains("nor-this-token"));
}

#[test]
fn a_bad_setting_is_one_clear_line_and_a_non_zero_exit() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("AUTH0_DOMAIN", "https://acme.auth0.com")],
            "AUTH0_DOMAIN",
        ),
        // A value clap refuses is named by the variable the user set, and not echoed.
        (
            &[("ROTATOR_DEADLINE", "ten-seconds-please")],
            "ROTATOR_DEADLINE (--deadline) is invalid: expected a duration",
        ),
        (&[("ROTATOR_VAULT_PATH", "auth0/shared")], "{client_id}"),
        (
            &[("AUTH0_MANAGEMENT_TOKEN", "also-a-token")],
            "AUTH0_MANAGEMENT_TOKEN",
        ),
    ];
    for (overrides, expect) in cases {
        let mut cmd = rotator();
        cmd.arg("serve")
            .env("AUTH0_DOMAIN", "acme.eu.auth0.com")
            .env("AUTH0_CLIENT_ID", "abc")
            .env("AUTH0_CLIENT_SECRET", "very-secret-value")
            .env("VAULT_ADDR", "http://127.0.0.1:1")
            .env("VAULT_TOKEN", "vault-token-value");
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{overrides:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(expect), "{overrides:?}: {err}");
        for secret in [
            "very-secret-value",
            "vault-token-value",
            "also-a-token",
            "ten-seconds-please",
        ] {
            assert!(!err.contains(secret), "a secret was echoed: {err}");
        }
    }
}

#[test]
fn a_missing_setting_is_refused() {
    let out = rotator().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing: --auth0-domain (AUTH0_DOMAIN)"),
        "{err}"
    );
}

#[test]
fn insecure_mode_refuses_a_non_loopback_address_and_secure_mode_needs_tls() {
    let base = |cmd: &mut Command| {
        cmd.arg("serve")
            .env("AUTH0_DOMAIN", "acme.eu.auth0.com")
            .env("AUTH0_MANAGEMENT_TOKEN", "token-value")
            .env("VAULT_ADDR", "http://127.0.0.1:1")
            .env("VAULT_TOKEN", "vault-token-value");
    };
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("ROTATOR_INSECURE", "true"),
                ("ROTATOR_LISTEN_ADDR", "0.0.0.0:50051"),
            ],
            "loopback",
        ),
        (
            &[
                ("ROTATOR_INSECURE", "true"),
                ("ROTATOR_LISTEN_ADDR", "[::]:50051"),
            ],
            "loopback",
        ),
        (&[("ROTATOR_INSECURE", "false")], "ROTATOR_TLS_CERT"),
        (&[], "ROTATOR_TLS_CERT"),
    ];
    for (overrides, expect) in cases {
        let mut cmd = rotator();
        base(&mut cmd);
        for (k, v) in overrides {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{overrides:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expect), "{overrides:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
