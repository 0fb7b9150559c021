//! Settings are refused with a reason, and defaults follow from the domain.

use super::*;
use crate::auth0::Credentials;

fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
    parse_for("acme.eu.auth0.com", extra)
}

fn parse_for(domain: &str, extra: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec![
        "secret-rotator",
        "serve",
        "--auth0-domain",
        domain,
        "--vault-addr",
        "http://127.0.0.1:8200",
        "--vault-token",
        "t",
        "--insecure",
        "true",
        "--listen-addr",
        "127.0.0.1:50051",
    ];
    argv.extend_from_slice(extra);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("argv parses").command else {
        panic!("serve");
    };
    args.into_config()
}

#[test]
fn credentials_are_either_m2m_or_token() {
    assert_eq!(parse(&[]).unwrap_err(), ConfigError::Auth0Credentials);
    assert_eq!(
        parse(&["--auth0-client-id", "abc"]).unwrap_err(),
        ConfigError::Auth0Credentials
    );
    let both = [
        "--auth0-client-id",
        "abc",
        "--auth0-client-secret",
        "s",
        "--auth0-management-token",
        "t",
    ];
    assert_eq!(parse(&both).unwrap_err(), ConfigError::Auth0Credentials);
    assert!(parse(&["--auth0-management-token", "t"]).is_ok());
}

#[test]
fn the_services_own_credential_has_exactly_one_source_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, include_str!("../emulator/credentials/seed-key.pem")).unwrap();
    let (secret, key) = (secret.to_str().unwrap(), key.to_str().unwrap());
    let with = |more: &[&str]| {
        let mut argv = vec!["--auth0-client-id", "abc"];
        argv.extend_from_slice(more);
        parse(&argv)
    };
    let source = |config: Config| match config.auth0.credentials {
        Credentials::ClientCredentials { source, .. } => source,
        Credentials::StaticToken(_) => panic!("client credentials"),
    };
    assert!(matches!(
        source(with(&["--auth0-client-secret-file", secret]).unwrap()),
        crate::auth0::CredentialSource::SecretFile(_)
    ));
    assert!(matches!(
        source(
            with(&[
                "--auth0-client-assertion-key-file",
                key,
                "--auth0-client-assertion-key-id",
                "k1"
            ])
            .unwrap()
        ),
        crate::auth0::CredentialSource::KeyFile {
            key_id: Some(_),
            ..
        }
    ));
    assert!(matches!(
        source(with(&["--auth0-credentials-vault-path", "auth0/clients/abc"]).unwrap()),
        crate::auth0::CredentialSource::Vault(p) if p == "auth0/clients/abc"
    ));
    // Two sources, or none.
    assert_eq!(
        with(&[
            "--auth0-client-secret",
            "s",
            "--auth0-client-secret-file",
            secret
        ])
        .unwrap_err(),
        ConfigError::Auth0Credentials
    );
    // A bad one: said in one line.
    let refused = |more: &[&str]| with(more).unwrap_err().to_string();
    assert!(
        refused(&["--auth0-client-assertion-key-file", secret])
            .contains("is not an RSA private key")
    );
    assert!(
        refused(&["--auth0-client-assertion-key-file", "/nonexistent"]).contains("cannot be read")
    );
    assert!(
        refused(&[
            "--auth0-client-assertion-key-file",
            key,
            "--auth0-client-assertion-alg",
            "HS256"
        ])
        .contains("RS256, RS384 or PS256")
    );
    assert!(
        refused(&["--auth0-client-secret-file", "/nonexistent"])
            .contains("AUTH0_CLIENT_SECRET_FILE")
    );
    assert!(refused(&["--auth0-credentials-vault-path", "a/../b"]).contains("KV path"));
}

#[test]
fn defaults_derive_from_the_domain() {
    let cfg = parse(&["--auth0-client-id", "abc", "--auth0-client-secret", "s"]).unwrap();
    assert_eq!(cfg.auth0.base_url.as_str(), "https://acme.eu.auth0.com/");
    match cfg.auth0.credentials {
        Credentials::ClientCredentials { audience, .. } => {
            assert_eq!(audience, "https://acme.eu.auth0.com/api/v2/")
        }
        other => panic!("unexpected credentials {other:?}"),
    }
    assert_eq!(cfg.vault.mount, "secret");
    assert!(cfg.security.tls.is_none());
}

#[test]
fn bad_domain_and_path_are_refused() {
    let token = ["--auth0-management-token", "t"];
    for domain in ["https://acme.auth0.com", "acme.auth0.com/x", "", "a..b"] {
        assert_eq!(
            parse_for(domain, &token).unwrap_err(),
            ConfigError::Auth0Domain,
            "{domain:?}"
        );
    }
    let shared = [
        "--auth0-management-token",
        "t",
        "--vault-path",
        "auth0/shared",
    ];
    assert!(matches!(
        parse(&shared).unwrap_err(),
        ConfigError::VaultPath(_)
    ));
}

/// The configuration table (docs/configuration.md) names every setting with its environment
/// variable and its flag, so that it cannot fall behind `serve --help`.
#[test]
fn the_docs_list_every_setting_with_its_flag() {
    use clap::CommandFactory;
    let docs = include_str!("../../docs/configuration.md");
    let table: Vec<&str> = docs
        .lines()
        .skip_while(|l| !l.starts_with("## Settings"))
        .take_while(|l| !l.starts_with("## ") || l.starts_with("## Settings"))
        .filter(|l| l.starts_with("| `"))
        .collect();
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve");
    let mut missing = Vec::new();
    for arg in serve.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let env = format!("`{}`", env.to_string_lossy());
        let flag = format!("`--{long}`");
        if !table
            .iter()
            .any(|row| row.contains(&env) && row.contains(&flag))
        {
            missing.push(format!("{env} {flag}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md's table: {missing:?}"
    );
}

#[test]
fn traces_are_off_without_an_endpoint_and_their_settings_are_checked() {
    let token = ["--auth0-management-token", "t"];
    assert!(parse(&token).unwrap().log.traces.is_none());
    let with = |extra: &[&str]| {
        let mut argv = token.to_vec();
        argv.extend_from_slice(extra);
        parse(&argv)
    };
    let cfg = with(&[
        "--otlp-endpoint",
        "http://collector:4317/",
        "--otel-traces-sampler",
        "parentbased_traceidratio",
        "--otel-traces-sampler-arg",
        "0.25",
        "--otel-resource-attributes",
        "deployment.environment.name=prod, team=platform%20ops",
    ])
    .unwrap();
    let traces = cfg.log.traces.expect("traces on");
    assert_eq!(traces.endpoint, "http://collector:4317");
    assert_eq!(traces.service_name, "secret-rotator");
    assert_eq!(
        traces.sampler,
        crate::telemetry::Sampler::ParentBasedTraceIdRatio(0.25)
    );
    assert_eq!(
        traces.resource,
        [
            ("deployment.environment.name".to_owned(), "prod".to_owned()),
            ("team".to_owned(), "platform ops".to_owned()),
        ]
    );
    let refused = |extra: &[&str], says: &str| {
        let mut argv = vec!["--otlp-endpoint", "http://collector:4317"];
        argv.extend_from_slice(extra);
        match with(&argv) {
            Err(ConfigError::Traces(message)) => assert!(message.contains(says), "{message}"),
            other => panic!("{extra:?} accepted: {other:?}"),
        }
    };
    refused(
        &[
            "--otel-traces-sampler",
            "traceidratio",
            "--otel-traces-sampler-arg",
            "1.5",
        ],
        "OTEL_TRACES_SAMPLER_ARG",
    );
    refused(
        &["--otel-resource-attributes", "novalue"],
        "OTEL_RESOURCE_ATTRIBUTES",
    );
    refused(
        &["--otel-resource-attributes", "=x"],
        "OTEL_RESOURCE_ATTRIBUTES",
    );
    refused(
        &["--otel-traces-sampler", "xray"],
        "OTEL_TRACES_SAMPLER must be",
    );
    // Empty counts as unset (OpenTelemetry's rule for its variables).
    let cfg = with(&[
        "--otlp-endpoint",
        "http://c:4317",
        "--otel-service-name",
        " ",
    ])
    .unwrap();
    assert_eq!(cfg.log.traces.unwrap().service_name, "secret-rotator");
    assert!(with(&["--otlp-endpoint", ""]).unwrap().log.traces.is_none());
    for endpoint in [
        "http://collector:4317/v1/traces",
        "ftp://collector",
        "http://u:p@collector:4317",
    ] {
        match with(&["--otlp-endpoint", endpoint]) {
            Err(ConfigError::Traces(m)) => assert!(m.contains("OTEL_EXPORTER_OTLP_ENDPOINT")),
            other => panic!("{endpoint} accepted: {other:?}"),
        }
    }
}

#[test]
fn key_rotations_keys_are_configured_and_checked() {
    let token = ["--auth0-management-token", "t"];
    let cfg = parse(&token).unwrap();
    assert_eq!(cfg.rotation.keys.bits.get(), 2048);
    assert_eq!(cfg.rotation.keys.credential_lifetime, None);
    assert_eq!(
        cfg.rotation.keys.certificate_lifetime,
        Duration::from_secs(365 * 86_400)
    );
    let mut args = token.to_vec();
    args.extend(["--key-bits", "4096", "--key-lifetime", "90d"]);
    let cfg = parse(&args).unwrap();
    assert_eq!(cfg.rotation.keys.bits.get(), 4096);
    assert_eq!(
        cfg.rotation.keys.credential_lifetime,
        Some(Duration::from_secs(90 * 86_400))
    );
    let mut args = token.to_vec();
    args.extend(["--key-bits", "1024"]);
    assert!(matches!(parse(&args), Err(ConfigError::KeyBits)));
}

#[test]
fn the_plans_rate_limits_are_read_per_group_and_refused_with_the_reason() {
    use crate::auth0::{Limit, Limits};
    let limits = |extra: &[&str]| {
        let mut args = vec!["--auth0-client-id", "abc", "--auth0-client-secret", "s"];
        args.extend_from_slice(extra);
        parse(&args).map(|c| c.auth0.budget.limits)
    };
    assert_eq!(limits(&[]).unwrap(), Limits::Learnt);
    assert_eq!(
        limits(&[
            "--auth0-rate-limits",
            "clients-read=100/min burst 5, other=150/min burst 10"
        ])
        .unwrap(),
        Limits::PerGroup {
            clients_read: Some(Limit {
                burst: Some(5),
                per_second: 100.0 / 60.0
            }),
            other: Some(Limit {
                burst: Some(10),
                per_second: 2.5
            }),
        }
    );
    assert_eq!(
        limits(&["--auth0-rate-limits", "all=16/s burst 50"]).unwrap(),
        Limits::OneBucket(Some(Limit {
            burst: Some(50),
            per_second: 16.0
        }))
    );
    // The older setting is one bucket at that rate.
    assert_eq!(
        limits(&["--auth0-rate-limit-per-second", "2"]).unwrap(),
        Limits::OneBucket(Some(Limit {
            burst: None,
            per_second: 2.0
        }))
    );
    for (spec, says) in [
        ("reads=5/s", "unknown group `reads`"),
        ("all=16/s, other=2/s", "cannot be given with"),
        ("other=2/hour", "not N/s or N/min"),
        ("other=0/s", "more than zero"),
        ("other=2/s burst", "not N/s or N/min"),
        ("other=2/s, other=3/s", "given twice"),
    ] {
        let error = limits(&["--auth0-rate-limits", spec])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("AUTH0_RATE_LIMITS: "), "{error}");
        assert!(error.contains(says), "{spec}: {error}");
    }
    let both = limits(&[
        "--auth0-rate-limits",
        "all=2/s",
        "--auth0-rate-limit-per-second",
        "2",
    ]);
    assert!(both.unwrap_err().to_string().contains("not both"));
}
