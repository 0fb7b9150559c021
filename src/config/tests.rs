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

/// The README's configuration table names every setting with its environment variable and its
/// flag, so that it cannot fall behind `serve --help`.
#[test]
fn the_readme_lists_every_setting_with_its_flag() {
    use clap::CommandFactory;
    let readme = include_str!("../../README.md");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Configuration"))
        .take_while(|l| !l.starts_with("## ") || l.starts_with("## Configuration"))
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
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
}
