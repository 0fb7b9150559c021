//! The schedule file (`ROTATOR_SCHEDULE_FILE`): TOML rules, checked whole at start and at each
//! reload; a file that does not load is refused with the rule and the field at fault.
//!
//! docs/schedules.md shows the form (its example is loaded by a test here). A rule
//! without `label` is named `rule <n>`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use jiff::civil::Weekday;
use serde::Deserialize;

use super::{ConfigError, duration, nonzero_duration, readable};
use crate::rotation::{Rule, Schedule, Selector, Spelled, Strategy, Window, WindowError};

/// The longest rule label (it goes into every scheduled rotation's reason).
const LABEL_MAX: usize = 64;

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Schedule rules (TOML; see docs/schedules.md), reloaded on SIGHUP and when the
    /// file changes [default: no schedule].
    #[arg(long, env = "ROTATOR_SCHEDULE_FILE")]
    pub schedule_file: Option<PathBuf>,

    /// How often the replica holding the scheduler lease looks for clients the schedule finds
    /// due (the others read the lease that often, and take it over after three).
    #[arg(long, env = "ROTATOR_SCHEDULE_INTERVAL", default_value = "1m", value_parser = duration)]
    pub schedule_interval: Duration,

    /// How often the scheduler lists the tenant's clients from Auth0 (the catalogue it keeps
    /// in Vault and selects from); a new client is scheduled within this.
    #[arg(long, env = "ROTATOR_CATALOG_REFRESH", default_value = "15m", value_parser = duration)]
    pub catalog_refresh: Duration,
}

/// Where the schedule is and how often it is applied.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    pub file: PathBuf,
    pub interval: Duration,
    pub catalog_refresh: Duration,
}

impl ScheduleArgs {
    /// `None` without a file; the file must load now, as it must at every reload.
    pub fn into_settings(self) -> Result<Option<ScheduleSettings>, ConfigError> {
        let Some(file) = self.schedule_file else {
            return Ok(None);
        };
        readable("ROTATOR_SCHEDULE_FILE", Some(&file))?;
        nonzero_duration(self.schedule_interval, "ROTATOR_SCHEDULE_INTERVAL")?;
        nonzero_duration(self.catalog_refresh, "ROTATOR_CATALOG_REFRESH")?;
        load(&file).map_err(|e| ConfigError::Schedule(e.to_string()))?;
        Ok(Some(ScheduleSettings {
            file,
            interval: self.schedule_interval,
            catalog_refresh: self.catalog_refresh,
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cannot read the schedule file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("the schedule is not valid TOML or has unknown keys: {0}")]
    Syntax(String),
    #[error("rule {rule} ({label}): {problem}")]
    Rule {
        rule: usize,
        label: String,
        problem: String,
    },
    #[error("rules {0} and {1} have the same label {2:?}")]
    SameLabel(usize, usize, String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    label: Option<String>,
    #[serde(default)]
    clients: Vec<String>,
    #[serde(default)]
    app_types: Vec<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    max_age: String,
    before_expiry: Option<String>,
    #[serde(default)]
    strategy: StrategyFile,
    window: Option<WindowFile>,
    jitter: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StrategyFile {
    #[default]
    Immediate,
    Staged,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    days: Option<Vec<String>>,
    hours: Option<String>,
    time_zone: Option<String>,
}

/// Reads and checks the schedule file.
pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ScheduleError::Read(path.to_owned(), e))?;
    parse(&text)
}

/// Checks a schedule: every rule whole, labels unique.
pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
    let file: File = toml::from_str(text).map_err(|e| ScheduleError::Syntax(e.message().into()))?;
    let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
    for (n, raw) in file.rule.into_iter().enumerate() {
        let number = n + 1;
        let label = raw
            .label
            .clone()
            .unwrap_or_else(|| format!("rule {number}"));
        let rule = raw
            .into_rule(label.clone())
            .map_err(|problem| ScheduleError::Rule {
                rule: number,
                label: label.clone(),
                problem,
            })?;
        if let Some(earlier) = rules.iter().position(|r| r.label == rule.label) {
            return Err(ScheduleError::SameLabel(earlier + 1, number, label));
        }
        rules.push(rule);
    }
    Ok(Schedule { rules })
}

impl RuleFile {
    fn into_rule(self, label: String) -> Result<Rule, String> {
        if label.trim().is_empty()
            || label.chars().count() > LABEL_MAX
            || label.chars().any(char::is_control)
        {
            return Err(format!(
                "label must be 1 to {LABEL_MAX} characters without control characters"
            ));
        }
        if self.clients.iter().any(String::is_empty) {
            return Err("clients must not hold an empty pattern".into());
        }
        let selector = Selector::parse(&self.clients, &self.app_types, &self.name, self.metadata)
            .map_err(|_| "clients and name must be valid globs".to_owned())?;
        let max_age = period("max_age", &self.max_age)?;
        if max_age < Duration::from_secs(1) {
            return Err("max_age must be at least 1s".into());
        }
        let jitter = match &self.jitter {
            None => Duration::ZERO,
            Some(j) => period("jitter", j)?,
        };
        if jitter >= max_age {
            return Err("jitter must be shorter than max_age".into());
        }
        let before_expiry = match &self.before_expiry {
            None => None,
            Some(b) => match period("before_expiry", b)? {
                d if d < Duration::from_secs(1) => {
                    return Err("before_expiry must be at least 1s".into());
                }
                d => Some(d),
            },
        };
        let window = self.window.map(WindowFile::into_window).transpose()?;
        Ok(Rule {
            label,
            selector,
            max_age: Spelled::parse(&self.max_age).map_err(|e| e.to_string())?,
            before_expiry,
            strategy: match self.strategy {
                StrategyFile::Immediate => Strategy::Immediate,
                StrategyFile::Staged => Strategy::Staged,
            },
            window,
            jitter,
            dry_run: self.dry_run,
        })
    }
}

const WEEK: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

impl WindowFile {
    fn into_window(self) -> Result<Window, String> {
        let days = match self.days {
            None => WEEK.to_vec(),
            Some(days) => days
                .iter()
                .map(|d| {
                    weekday(d).ok_or_else(|| {
                        format!(
                            "window: unknown day {d:?}: use Mon, Tue, Wed, Thu, Fri, Sat or Sun"
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let time_zone = self.time_zone.as_deref().unwrap_or("UTC");
        Window::new(&days, self.hours.as_deref(), time_zone)
            .map_err(|e: WindowError| format!("window: {e}"))
    }
}

/// `Mon` or `Monday`, in any case.
fn weekday(name: &str) -> Option<Weekday> {
    let name = name.to_ascii_lowercase();
    WEEK.into_iter().find(|day| {
        let full = format!("{day:?}").to_ascii_lowercase();
        name == full || name == full[..3]
    })
}

fn period(field: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|_| format!("{field} must be a duration such as 90d, 12h or 30m, not {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file in docs/schedules.md.
    fn docs_example() -> &'static str {
        let section = include_str!("../../docs/schedules.md");
        let start = section.find("```toml\n").expect("an example") + "```toml\n".len();
        &section[start..start + section[start..].find("```").unwrap()]
    }

    #[test]
    fn the_documented_example_loads_with_its_defaults() {
        let schedule = parse(docs_example()).unwrap();
        let [first, keys, second] = &schedule.rules[..] else {
            panic!("three rules")
        };
        assert_eq!(keys.label, "signing-keys");
        assert_eq!(keys.before_expiry, Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(first.before_expiry, None);
        assert_eq!(first.label, "web-apps");
        assert_eq!(first.max_age.get(), Duration::from_secs(90 * 86_400));
        assert_eq!(first.max_age.to_string(), "90d", "printed as configured");
        assert_eq!(first.strategy, Strategy::Staged);
        assert_eq!(first.jitter, Duration::from_secs(3600));
        assert!(first.window.is_some() && !first.dry_run);
        assert_eq!(second.label, "legacy");
        assert_eq!(second.strategy, Strategy::Immediate);
        assert_eq!(second.jitter, Duration::ZERO);
        assert!(second.window.is_none() && second.dry_run);
    }

    #[test]
    fn a_broken_rule_is_refused_with_its_number_and_what_is_wrong() {
        let cases = [
            (
                r#"max_age = "soon""#,
                "rule 1 (rule 1): max_age must be a duration",
            ),
            ("clients = [\"*\"]", "max_age"),
            (
                "max_age = \"1h\"\njitter = \"2h\"",
                "jitter must be shorter than max_age",
            ),
            ("max_age = \"1h\"\nstrategy = \"gradual\"", "not valid TOML"),
            ("max_age = \"1h\"\nmax_agee = \"2h\"", "unknown"),
            (
                "max_age = \"1h\"\nwindow = { days = [\"Funday\"] }",
                "unknown day \"Funday\"",
            ),
            (
                "max_age = \"1h\"\nwindow = { hours = \"9-5\" }",
                "hours must be HH:MM-HH:MM",
            ),
            (
                "max_age = \"1h\"\nwindow = { time_zone = \"Berlin\" }",
                "unknown time zone",
            ),
            ("max_age = \"1h\"\nclients = [\"[a\"]", "valid globs"),
            (
                "max_age = \"1h\"\nbefore_expiry = \"two weeks\"",
                "before_expiry must be a duration",
            ),
            (
                "max_age = \"1h\"\nbefore_expiry = \"0s\"",
                "before_expiry must be at least 1s",
            ),
        ];
        for (rule, expected) in cases {
            let refused = parse(&format!("[[rule]]\n{rule}")).unwrap_err().to_string();
            assert!(refused.contains(expected), "{rule}: {refused}");
        }
        let twice =
            "[[rule]]\nlabel = \"a\"\nmax_age = \"1h\"\n[[rule]]\nlabel = \"a\"\nmax_age = \"2h\"";
        let refused = parse(twice).unwrap_err().to_string();
        assert!(
            refused.contains("rules 1 and 2 have the same label"),
            "{refused}"
        );
    }

    #[test]
    fn an_empty_file_is_an_empty_schedule() {
        assert!(parse("").unwrap().rules.is_empty());
    }
}
