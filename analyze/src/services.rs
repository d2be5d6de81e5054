//! The services file (`--services FILE.yaml`) and the rules that group processes into services.
//!
//! ```yaml
//! latency_objective_ms: 500        # default objective for every service (optional)
//! services:
//!   - name: api                    # required
//!     comm: python3                # any of: comm, exe, cmdline (regex), port, ports, cgroup (regex)
//!     port: 18081                  # all given criteria must match
//!     latency_objective_ms: 800    # per service (optional)
//!   - name: web
//!     exe: /usr/sbin/nginx
//! ```
//! Rules are tried in order; the first that matches a process names it. Several rules may give
//! the same name: their processes are merged into one service.

use std::path::Path;

use regex::Regex;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::AnalyzeError;

/// Default latency objective, ms (99% of requests faster than this).
pub const DEFAULT_OBJECTIVE_MS: f64 = 500.0;

/// A regular expression that fails deserialization (with the YAML location) when invalid.
#[derive(Clone, Debug)]
pub struct Pattern(pub Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s)
            .map(Pattern)
            .map_err(|e| de::Error::custom(format!("invalid regular expression {s:?}: {e}")))
    }
}

/// One rule of the services file.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    /// The service name given to matching processes.
    pub name: String,
    /// Kernel command name, exact.
    pub comm: Option<String>,
    /// Executable path, exact, or its file name.
    pub exe: Option<String>,
    /// Regular expression searched in the command line (arguments joined by spaces).
    pub cmdline: Option<Pattern>,
    /// A port the process listens on.
    pub port: Option<u16>,
    /// Ports, any of which the process listens on.
    pub ports: Option<Vec<u16>>,
    /// Regular expression searched in the cgroup path.
    pub cgroup: Option<Pattern>,
    /// Latency objective for this service, ms.
    pub latency_objective_ms: Option<f64>,
}

/// The services file.
#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    /// Default latency objective, ms.
    pub latency_objective_ms: Option<f64>,
    /// Rules, tried in order.
    #[serde(default)]
    pub services: Vec<ServiceRule>,
}

/// What a rule is matched against.
#[derive(Clone, Copy, Debug)]
pub struct ProcessFacts<'a> {
    /// comm.
    pub comm: &'a str,
    /// exe path.
    pub exe: &'a str,
    /// Command line, arguments joined by spaces.
    pub cmdline: &'a str,
    /// cgroup path.
    pub cgroup: &'a str,
    /// Listening ports (sorted).
    pub ports: &'a [u16],
}

impl ServiceRule {
    fn has_criteria(&self) -> bool {
        self.comm.is_some()
            || self.exe.is_some()
            || self.cmdline.is_some()
            || self.port.is_some()
            || self.ports.is_some()
            || self.cgroup.is_some()
    }

    /// Whether the process matches every criterion given.
    pub fn matches(&self, p: &ProcessFacts<'_>) -> bool {
        if let Some(c) = &self.comm {
            if c != p.comm {
                return false;
            }
        }
        if let Some(e) = &self.exe {
            let base = p.exe.rsplit('/').next().unwrap_or(p.exe);
            if e != p.exe && e != base {
                return false;
            }
        }
        if let Some(re) = &self.cmdline {
            if !re.0.is_match(p.cmdline) {
                return false;
            }
        }
        if let Some(port) = self.port {
            if !p.ports.contains(&port) {
                return false;
            }
        }
        if let Some(ports) = &self.ports {
            if !ports.iter().any(|x| p.ports.contains(x)) {
                return false;
            }
        }
        if let Some(re) = &self.cgroup {
            if !re.0.is_match(p.cgroup) {
                return false;
            }
        }
        true
    }
}

impl ServicesFile {
    /// Reads and validates a services file; errors name the file, the line and what was
    /// expected.
    pub fn load(path: &Path) -> Result<Self, AnalyzeError> {
        Self::parse(&crate::config_file::read(path)?, path)
    }

    /// Parses a services file's text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AnalyzeError> {
        let bad = |line: Option<usize>, column: Option<usize>, message: String| {
            crate::config_file::error(path, line, column, message)
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let file: ServicesFile = serde_yaml_ng::from_str(text)
            .map_err(|e| crate::config_file::yaml_error(path, &e, 0, 0))?;
        let check_objective = |v: Option<f64>, what: &str| match v {
            Some(x) if !(x.is_finite() && x > 0.0) => Err(format!(
                "{what}: expected a positive number of milliseconds, found {x}"
            )),
            _ => Ok(()),
        };
        check_objective(file.latency_objective_ms, "latency_objective_ms")
            .map_err(|m| bad(find_line(text, "latency_objective_ms"), None, m))?;
        for (i, rule) in file.services.iter().enumerate() {
            let line = rule_line(text, i);
            if rule.name.trim().is_empty() {
                return Err(bad(
                    line,
                    None,
                    format!("services[{i}]: expected a non-empty name"),
                ));
            }
            if !rule.has_criteria() {
                return Err(bad(
                    line,
                    None,
                    format!(
                        "services[{i}] ({}): expected at least one of comm, exe, cmdline, port, \
                         ports, cgroup",
                        rule.name
                    ),
                ));
            }
            check_objective(
                rule.latency_objective_ms,
                &format!("services[{i}] ({}): latency_objective_ms", rule.name),
            )
            .map_err(|m| bad(line, None, m))?;
        }
        Ok(file)
    }

    /// The name given by the first matching rule.
    pub fn name_for(&self, p: &ProcessFacts<'_>) -> Option<&str> {
        self.services
            .iter()
            .find(|r| r.matches(p))
            .map(|r| r.name.as_str())
    }

    /// The latency objective of `service`, ms.
    pub fn objective_ms(&self, service: &str) -> f64 {
        self.services
            .iter()
            .filter(|r| r.name == service)
            .find_map(|r| r.latency_objective_ms)
            .or(self.latency_objective_ms)
            .unwrap_or(DEFAULT_OBJECTIVE_MS)
    }
}

/// 1-based line of the first line containing `key:`.
fn find_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.trim_start().starts_with(&format!("{key}:")))
        .map(|i| i + 1)
}

/// 1-based line where the `i`-th list item under `services:` starts (best effort).
fn rule_line(text: &str, i: usize) -> Option<usize> {
    let start = text
        .lines()
        .position(|l| l.trim_start().starts_with("services:"))?;
    text.lines()
        .enumerate()
        .skip(start + 1)
        .filter(|(_, l)| l.trim_start().starts_with("- "))
        .nth(i)
        .map(|(n, _)| n + 1)
}

/// The systemd unit named by a cgroup path, for units that are services of their own
/// (`/system.slice/nginx.service` → `nginx`); not user managers, sessions or init.
pub fn unit_of_cgroup(cgroup: &str) -> Option<&str> {
    let last = cgroup.trim_end_matches('/').rsplit('/').next()?;
    let unit = last.strip_suffix(".service")?;
    if unit.is_empty() || unit.starts_with("user@") || unit.starts_with("user-runtime-dir@") {
        return None;
    }
    Some(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(comm: &'a str, exe: &'a str, ports: &'a [u16]) -> ProcessFacts<'a> {
        ProcessFacts {
            comm,
            exe,
            cmdline: "python3 -m http.server 18081",
            cgroup: "/",
            ports,
        }
    }

    #[test]
    fn rules_match_all_criteria_in_order() {
        let f = ServicesFile::parse(
            "latency_objective_ms: 300\nservices:\n  - name: api\n    comm: python3\n    port: 18081\n    latency_objective_ms: 900\n  - name: py\n    exe: python3\n",
            Path::new("s.yaml"),
        )
        .expect("valid");
        assert_eq!(
            f.name_for(&facts("python3", "/usr/bin/python3", &[18081])),
            Some("api")
        );
        assert_eq!(
            f.name_for(&facts("python3", "/usr/bin/python3", &[18082])),
            Some("py")
        );
        assert_eq!(f.name_for(&facts("nginx", "/usr/sbin/nginx", &[80])), None);
        assert_eq!(f.objective_ms("api"), 900.0);
        assert_eq!(f.objective_ms("py"), 300.0);
        let re = ServicesFile::parse(
            "services:\n  - name: srv\n    cmdline: 'http\\.server +1808[12]'\n",
            Path::new("s.yaml"),
        )
        .expect("valid");
        assert_eq!(
            re.name_for(&facts("python3", "/usr/bin/python3", &[])),
            Some("srv")
        );
    }

    fn err(text: &str) -> String {
        ServicesFile::parse(text, Path::new("conf/services.yaml"))
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn malformed_files_say_where_and_what() {
        let e = err("services:\n  - name: api\n    prot: 80\n");
        assert!(e.starts_with("conf/services.yaml:3:"), "{e}");
        assert!(
            e.contains("unknown field `prot`") && e.contains("expected one of"),
            "{e}"
        );

        let e = err("services:\n  - name: api\n    port: eighty\n");
        assert!(e.starts_with("conf/services.yaml:3:"), "{e}");
        assert!(e.contains("u16") || e.contains("integer"), "{e}");

        let e = err("services:\n  - name: api\n    port: 80\n  - name: x\n    cmdline: '(['\n");
        assert!(
            e.starts_with("conf/services.yaml:4:") || e.starts_with("conf/services.yaml:5:"),
            "{e}"
        );
        assert!(e.contains("invalid regular expression"), "{e}");

        let e = err("services:\n  - name: api\n    port: 80\n  - name: lonely\n");
        assert!(e.starts_with("conf/services.yaml:4:"), "{e}");
        assert!(e.contains("expected at least one of"), "{e}");

        let e = err("services: [\n");
        assert!(e.starts_with("conf/services.yaml:"), "{e}");

        let e = err("services:\n  - name: api\n    port: 1\n    latency_objective_ms: -5\n");
        assert!(e.contains("expected a positive number"), "{e}");
    }

    #[test]
    fn units_from_cgroups() {
        assert_eq!(unit_of_cgroup("/system.slice/nginx.service"), Some("nginx"));
        assert_eq!(
            unit_of_cgroup("/user.slice/user-0.slice/user@0.service"),
            None
        );
        assert_eq!(
            unit_of_cgroup("/user.slice/user-0.slice/session-3.scope"),
            None
        );
        assert_eq!(unit_of_cgroup("/"), None);
    }
}
