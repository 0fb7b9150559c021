//! Who may call which RPC for which clients: a TOML file of allow rules, default deny.
//!
//! ```toml
//! [[allow]]
//! callers = ["spiffe://corp.example/ns/platform/sa/rotation-bot"]
//! clients = ["*"]
//! rpcs = ["RotateSecret", "GetRotationStatus"]
//! ```
//!
//! Callers are typed identities (`spiffe://...`, `dns:<name>`, `jwt:<sub>`; see `identity`): a
//! pattern that does not start with its kind is refused at load. Patterns are globs: `*`
//! matches within one `/`-separated segment, `**` across segments, `?` one character, `[...]`
//! a class. Everything else matches itself, case-sensitively.

use std::fmt;

use super::identity;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// The RPCs a policy speaks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Rpc {
    RotateSecret,
    GetRotationStatus,
    /// Promoting and cancelling a staged rotation: granted separately, since promotion
    /// changes the secret Auth0 accepts.
    CompleteRotation,
    CancelRotation,
    /// Putting a rotation's previous secret back: granted on its own, since the secret it
    /// reinstates may be the reason for the rotation.
    RollbackRotation,
    /// A client's rotation history: read-only, like GetRotationStatus.
    ListRotations,
    /// The tenant's client list: a caller sees the clients this grants it.
    ListClients,
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the policy file: {0}")]
    Read(std::io::Error),
    #[error("the policy is not valid TOML or has unknown keys: {0}")]
    Syntax(String),
    #[error("rule {rule}: {field} must not be empty")]
    Empty { rule: usize, field: &'static str },
    #[error("rule {rule}: pattern {pattern:?} is not a valid glob")]
    Glob { rule: usize, pattern: String },
    #[error(
        "rule {rule}: caller {pattern:?} does not say which kind of identity it is: write \
         spiffe://<trust domain>/<path> for a certificate's SPIFFE ID, dns:<name> for a \
         certificate's DNS name, or jwt:<sub> for a bearer token's subject"
    )]
    UntypedCaller { rule: usize, pattern: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    callers: Vec<String>,
    clients: Vec<String>,
    rpcs: Vec<Rpc>,
}

struct Rule {
    callers: GlobSet,
    clients: GlobSet,
    rpcs: Vec<Rpc>,
}

/// A parsed, valid policy. Rules only allow; anything no rule allows is denied.
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.message().to_owned()))?;
        let rules = file
            .allow
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let n = i + 1;
                if rule.rpcs.is_empty() {
                    return Err(PolicyError::Empty {
                        rule: n,
                        field: "rpcs",
                    });
                }
                let callers = globs(n, "callers", &rule.callers)?;
                if let Some(untyped) = rule.callers.iter().find(|c| !identity::is_typed(c)) {
                    return Err(PolicyError::UntypedCaller {
                        rule: n,
                        pattern: untyped.clone(),
                    });
                }
                Ok(Rule {
                    callers,
                    clients: globs(n, "clients", &rule.clients)?,
                    rpcs: rule.rpcs,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        Self::parse(&std::fs::read_to_string(path).map_err(PolicyError::Read)?)
    }

    pub fn allows(&self, caller: &str, rpc: Rpc, client_id: &str) -> bool {
        self.rules.iter().any(|r| {
            r.rpcs.contains(&rpc) && r.callers.is_match(caller) && r.clients.is_match(client_id)
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

fn globs(rule: usize, field: &'static str, patterns: &[String]) -> Result<GlobSet, PolicyError> {
    if patterns.is_empty() {
        return Err(PolicyError::Empty { rule, field });
    }
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        if pattern.is_empty() {
            return Err(PolicyError::Empty { rule, field });
        }
        let glob: Glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|_| PolicyError::Glob {
                rule,
                pattern: pattern.clone(),
            })?;
        set.add(glob);
    }
    set.build().map_err(|_| PolicyError::Glob {
        rule,
        pattern: patterns.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        # The platform bot rotates anything.
        [[allow]]
        callers = ["spiffe://corp.example/ns/platform/sa/rotation-bot"]
        clients = ["*"]
        rpcs = ["RotateSecret", "GetRotationStatus"]

        # Any workload of the billing namespace, only billing's clients.
        [[allow]]
        callers = ["spiffe://corp.example/ns/billing/sa/*"]
        clients = ["Billing*", "tpc_billing_?"]
        rpcs = ["RotateSecret"]

        # Auditors (JWT subjects) may only look.
        [[allow]]
        callers = ["jwt:auditor-*@corp.example", "spiffe://corp.example/ns/audit/**"]
        clients = ["*"]
        rpcs = ["GetRotationStatus", "ListRotations"]

        # The on-call may finish, cancel and undo rotations of the platform's clients.
        [[allow]]
        callers = ["jwt:oncall@corp.example"]
        clients = ["Platform*"]
        rpcs = ["CompleteRotation", "CancelRotation", "RollbackRotation"]
    "#;

    #[test]
    fn allow_deny_matrix() {
        let p = Policy::parse(POLICY).unwrap();
        use Rpc::*;
        let bot = "spiffe://corp.example/ns/platform/sa/rotation-bot";
        let billing = "spiffe://corp.example/ns/billing/sa/payments";
        let cases = [
            (bot, RotateSecret, "AnyClient000", true),
            (bot, GetRotationStatus, "AnyClient000", true),
            (billing, RotateSecret, "BillingApi01", true),
            (billing, RotateSecret, "Billing", true),
            (billing, RotateSecret, "tpc_billing_7", true),
            (billing, RotateSecret, "tpc_billing_77", false),
            (billing, RotateSecret, "OtherApp0001", false),
            (billing, RotateSecret, "billingApi01", false), // case-sensitive
            (billing, GetRotationStatus, "BillingApi01", false), // rpc not granted
            // `*` does not cross a `/`: a deeper path is another caller.
            (
                "spiffe://corp.example/ns/billing/sa/x/y",
                RotateSecret,
                "BillingApi01",
                false,
            ),
            (
                "spiffe://corp.example/ns/billing/sa/",
                RotateSecret,
                "BillingApi01",
                true,
            ),
            (
                "spiffe://corp.example/ns/billing",
                RotateSecret,
                "BillingApi01",
                false,
            ),
            // A look-alike trust domain.
            (
                "spiffe://corp.example.evil/ns/platform/sa/rotation-bot",
                RotateSecret,
                "A",
                false,
            ),
            (&format!("{bot}/extra"), RotateSecret, "A", false),
            (
                "jwt:auditor-jane@corp.example",
                GetRotationStatus,
                "A",
                true,
            ),
            ("jwt:auditor-jane@corp.example", RotateSecret, "A", false),
            ("jwt:auditor-jane@corp.example", ListRotations, "A", true),
            // History is granted by name: the bot's rule does not list it.
            (bot, ListRotations, "A", false),
            // The kind is part of the identity: another source cannot pose as this one.
            ("auditor-jane@corp.example", GetRotationStatus, "A", false),
            (
                "dns:auditor-jane@corp.example",
                GetRotationStatus,
                "A",
                false,
            ),
            (&format!("jwt:{bot}"), RotateSecret, "A", false),
            (
                "spiffe://corp.example/ns/audit/sa/reader",
                GetRotationStatus,
                "A",
                true,
            ),
            (
                "spiffe://corp.example/ns/audit/sa/reader",
                RotateSecret,
                "A",
                false,
            ),
            // Undoing a rotation is granted by name only: rotating, completing or
            // cancelling does not imply it.
            (bot, RollbackRotation, "AnyClient000", false),
            (billing, RollbackRotation, "BillingApi01", false),
            (
                "jwt:oncall@corp.example",
                RollbackRotation,
                "PlatformApi1",
                true,
            ),
            (
                "jwt:oncall@corp.example",
                RollbackRotation,
                "BillingApi01",
                false,
            ),
            (
                "jwt:oncall@corp.example",
                CancelRotation,
                "PlatformApi1",
                true,
            ),
            ("", RotateSecret, "A", false),
            ("nobody", GetRotationStatus, "A", false),
        ];
        for (caller, rpc, client, want) in cases {
            assert_eq!(
                p.allows(caller, rpc, client),
                want,
                "{caller} {rpc} {client}"
            );
        }
    }

    #[test]
    fn the_documented_example_is_a_valid_policy_that_means_what_it_says() {
        let security = include_str!("../../docs/security.md");
        let start = security.find("```toml\n").expect("a TOML example") + "```toml\n".len();
        let example = &security[start..start + security[start..].find("```").unwrap()];
        let p = Policy::parse(example).expect("the documented policy parses");
        assert_eq!(p.rule_count(), 4);
        let bot = "spiffe://corp.example/ns/platform/sa/rotation-bot";
        assert!(p.allows(bot, Rpc::RotateSecret, "anything"));
        assert!(p.allows(
            "spiffe://corp.example/ns/billing/sa/api",
            Rpc::RotateSecret,
            "BillingWeb"
        ));
        assert!(!p.allows(
            "spiffe://corp.example/ns/billing/sa/api",
            Rpc::RotateSecret,
            "Payroll"
        ));
        let automation = "jwt:release-automation@corp.example";
        assert!(p.allows(
            automation,
            Rpc::RotateSecret,
            "Dm0WebApp4Rotation00000000000001"
        ));
        assert!(!p.allows(
            automation,
            Rpc::RotateSecret,
            "Dm0WebApp4Rotation00000000000002"
        ));
        let auditor = "spiffe://corp.example/ns/audit/sa/reader";
        assert!(p.allows(auditor, Rpc::GetRotationStatus, "x"));
        assert!(!p.allows(auditor, Rpc::RotateSecret, "x"));
    }

    #[test]
    fn the_kubernetes_configmap_holds_a_valid_policy() {
        let manifest = include_str!("../../deploy/kubernetes/configmap-policy.yaml");
        let start = manifest.find("policy.toml: |").expect("the policy key") + 14;
        let toml: String = manifest[start..]
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let p = Policy::parse(&toml).expect("the ConfigMap's policy parses");
        let bot = "spiffe://corp.example/ns/platform/sa/rotation-bot";
        assert!(p.allows(bot, Rpc::CompleteRotation, "anything"));
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let p = Policy::parse("").unwrap();
        assert!(!p.allows("anyone", Rpc::GetRotationStatus, "A"));
    }

    #[test]
    fn broken_policies_are_refused_with_a_reason() {
        let cases = [
            (
                "[[allow]]\ncallers = [\"a\"]\nclients = [\"*\"]\nrpcs = [\"DeleteEverything\"]",
                "TOML",
            ),
            (
                "[[allow]]\ncallers = []\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]",
                "callers",
            ),
            (
                "[[allow]]\ncallers = [\"jwt:a[\"]\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]",
                "glob",
            ),
            (
                "[[allow]]\ncallers = [\"release@corp.example\"]\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]",
                "or jwt:<sub> for a bearer token's subject",
            ),
            (
                "[[allow]]\ncallers = [\"*\"]\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]",
                "does not say which kind of identity",
            ),
            (
                "[[allow]]\ncallers = [\"a\"]\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]\nextra = 1",
                "TOML",
            ),
            ("not toml at all [", "TOML"),
            (
                "[[allow]]\ncallers = [\"\"]\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]",
                "callers",
            ),
        ];
        for (text, want) in cases {
            let err = Policy::parse(text).err().expect("refused").to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}

#[cfg(test)]
mod hostile {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_policy_text_never_panics(text in "\\PC{0,400}") {
            let _ = Policy::parse(&text);
        }

        #[test]
        fn arbitrary_patterns_never_panic_and_a_literal_matches_only_itself(
            pattern in "jwt:[a-z:/._*?\\[\\]-]{1,30}",
            caller in "jwt:[a-z:/._-]{1,30}",
        ) {
            let text = format!(
                "[[allow]]\ncallers = [{pattern:?}]\nclients = [\"*\"]\nrpcs = [\"RotateSecret\"]\n"
            );
            if let Ok(p) = Policy::parse(&text) {
                let literal = !pattern.contains(['*', '?', '[', ']']);
                if literal {
                    prop_assert_eq!(p.allows(&caller, Rpc::RotateSecret, "A"), caller == pattern);
                }
            }
        }
    }
}
