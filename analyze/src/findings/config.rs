//! The thresholds of the findings engine: Coroot's inspection defaults (TCP connection
//! failures > 0, DNS p95 > 100 ms, NXDOMAIN > 0, DNS server errors > 0, OOM kills > 0,
//! restarts > 1), overridable in a YAML file (`--findings-config FILE`):
//!
//! ```yaml
//! bucket_s: 1                 # width of the time buckets (at least the report's)
//! episode_gap_s: 5            # failures closer than this are one episode
//! connection_failures:
//!   min: 1                    # failed connects to a service in an episode (Coroot: > 0)
//!   critical: 10
//! retransmits:
//!   min_per_bucket: 2         # a bucket is anomalous with this many data retransmits...
//!   min_rate: 0.02            # ...and this many per request of the edge in the bucket
//!   min_total: 10             # a window needs this many in all
//!   gap_buckets: 4            # anomalous buckets this close are one window
//! resets:
//!   min: 1
//! errors:                     # a service's served errors rising (chains)
//!   min_errors: 5
//!   min_rate: 0.05
//!   ratio: 2.0                # during / before
//! latency:                    # a service's served latency rising (chains)
//!   ratio: 2.0                # p99 during / before
//!   min_ms: 10                # and at least this p99 during
//! dns:
//!   p95_ms: 100
//!   nxdomain_min: 1
//!   server_errors_min: 1
//!   timeouts_min: 1
//! oom_kills_min: 1
//! restarts_min: 2             # Coroot: restarts > 1
//! log_errors:                 # a service's error-level log events rising (Coroot: > 0)
//!   min_per_bucket: 1         # a bucket is anomalous with this many error events...
//!   ratio: 2.0                # ...and more than this times its lower quartile per bucket
//!   min_total: 1              # a window needs this many in all
//!   critical: 100             # critical from this many in a window
//! ```
//!
//! Every key is optional; an unknown key or a value of the wrong type is an error naming the
//! file, the line and what was expected.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::AnalyzeError;

/// Thresholds of connection failure findings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionFailures {
    /// Failed connects to a service in an episode for a finding.
    pub min: u64,
    /// From this many, the finding is critical.
    pub critical: u64,
}

impl Default for ConnectionFailures {
    fn default() -> Self {
        Self {
            min: 1,
            critical: 10,
        }
    }
}

/// Thresholds of retransmit findings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retransmits {
    /// Data retransmits in a bucket for it to be anomalous.
    pub min_per_bucket: u64,
    /// And per request of the edge in the bucket.
    pub min_rate: f64,
    /// Retransmits in a window for a finding.
    pub min_total: u64,
    /// Anomalous buckets at most this many apart are one window.
    pub gap_buckets: u64,
}

impl Default for Retransmits {
    fn default() -> Self {
        Self {
            min_per_bucket: 2,
            min_rate: 0.02,
            min_total: 10,
            gap_buckets: 4,
        }
    }
}

/// Thresholds of reset findings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Resets {
    /// Resets on an edge in a window for a finding.
    pub min: u64,
}

impl Default for Resets {
    fn default() -> Self {
        Self { min: 1 }
    }
}

/// When a service's served errors count as risen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Errors {
    /// Errors in the window.
    pub min_errors: u64,
    /// Error rate in the window.
    pub min_rate: f64,
    /// Error rate in the window over the rate outside it.
    pub ratio: f64,
}

impl Default for Errors {
    fn default() -> Self {
        Self {
            min_errors: 5,
            min_rate: 0.05,
            ratio: 2.0,
        }
    }
}

/// When a service's served latency counts as risen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    /// p99 in the window over p99 outside it.
    pub ratio: f64,
    /// And at least this p99 in the window, ms.
    pub min_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            ratio: 2.0,
            min_ms: 10.0,
        }
    }
}

/// Thresholds of DNS findings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Dns {
    /// p95 latency of a name at a resolver, ms.
    pub p95_ms: f64,
    /// NXDOMAIN answers.
    pub nxdomain_min: u64,
    /// Server errors (SERVFAIL, REFUSED...).
    pub server_errors_min: u64,
    /// Queries never answered.
    pub timeouts_min: u64,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            p95_ms: 100.0,
            nxdomain_min: 1,
            server_errors_min: 1,
            timeouts_min: 1,
        }
    }
}

/// When a service's error-level log events count as risen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogErrors {
    /// Error events in a bucket for it to be anomalous.
    pub min_per_bucket: u64,
    /// And more than this times the lower quartile of the service's error events per bucket
    /// over the capture (its baseline).
    pub ratio: f64,
    /// Error events in a window for a finding.
    pub min_total: u64,
    /// Error events in a window for a critical finding.
    pub critical: u64,
}

impl Default for LogErrors {
    fn default() -> Self {
        Self {
            min_per_bucket: 1,
            ratio: 2.0,
            min_total: 1,
            critical: 100,
        }
    }
}

/// Every threshold of the findings engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FindingsConfig {
    /// Width of a time bucket, s (at least the report's bucket).
    pub bucket_s: f64,
    /// Failures closer than this are one episode, s.
    pub episode_gap_s: f64,
    /// Connection failures.
    pub connection_failures: ConnectionFailures,
    /// Retransmits.
    pub retransmits: Retransmits,
    /// Resets.
    pub resets: Resets,
    /// Served errors rising.
    pub errors: Errors,
    /// Served latency rising.
    pub latency: Latency,
    /// DNS.
    pub dns: Dns,
    /// OOM kills of a service for a finding.
    pub oom_kills_min: u64,
    /// Restarts of a service for a warning (fewer: info).
    pub restarts_min: u64,
    /// Error-level log events rising.
    pub log_errors: LogErrors,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        Self {
            bucket_s: 1.0,
            episode_gap_s: 5.0,
            connection_failures: ConnectionFailures::default(),
            retransmits: Retransmits::default(),
            resets: Resets::default(),
            errors: Errors::default(),
            latency: Latency::default(),
            dns: Dns::default(),
            oom_kills_min: 1,
            restarts_min: 2,
            log_errors: LogErrors::default(),
        }
    }
}

impl FindingsConfig {
    /// Reads and validates a findings file.
    pub fn load(path: &Path) -> Result<Self, AnalyzeError> {
        Self::parse(&crate::config_file::read(path)?, path)
    }

    /// Parses a findings file's text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AnalyzeError> {
        let bad = |line: Option<usize>, column: Option<usize>, message: String| {
            crate::config_file::error(path, line, column, message)
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let c: FindingsConfig = serde_yaml_ng::from_str(text)
            .map_err(|e| crate::config_file::yaml_error(path, &e, 0, 0))?;
        let positive = |v: f64, key: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(
                    crate::config_file::find_line(text, key, 0),
                    None,
                    format!("{key}: expected a positive number, found {v}"),
                ))
            }
        };
        positive(c.bucket_s, "bucket_s")?;
        positive(c.episode_gap_s, "episode_gap_s")?;
        positive(c.errors.ratio, "ratio")?;
        positive(c.latency.ratio, "ratio")?;
        positive(c.dns.p95_ms, "p95_ms")?;
        positive(c.log_errors.ratio, "ratio")?;
        for (v, key) in [
            (c.retransmits.min_rate, "min_rate"),
            (c.errors.min_rate, "min_rate"),
            (c.latency.min_ms, "min_ms"),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    crate::config_file::find_line(text, key, 0),
                    None,
                    format!("{key}: expected a number at least 0, found {v}"),
                ));
            }
        }
        Ok(c)
    }

    /// The bucket width, ns, for a report whose buckets are `report_bucket_ns` wide: at
    /// least the configured width, a whole multiple of the report's.
    pub(crate) fn bucket_ns(&self, report_bucket_ns: u64) -> u64 {
        let want = (self.bucket_s * 1e9) as u64;
        let unit = report_bucket_ns.max(1);
        want.div_ceil(unit).max(1) * unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match FindingsConfig::parse(text, Path::new("f.yaml")) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = FindingsConfig::parse("", Path::new("f.yaml")).expect("empty is fine");
        assert_eq!(c, FindingsConfig::default());
        let c = FindingsConfig::parse(
            "retransmits:\n  min_total: 3\ndns:\n  p95_ms: 50\n",
            Path::new("f.yaml"),
        )
        .expect("valid");
        assert_eq!(c.retransmits.min_total, 3);
        assert_eq!(c.retransmits.min_per_bucket, 2);
        assert_eq!(c.dns.p95_ms, 50.0);
        assert_eq!(c.connection_failures.min, 1);
        let c = FindingsConfig::parse("log_errors:\n  min_total: 3\n", Path::new("f.yaml"))
            .expect("valid");
        assert_eq!(c.log_errors.min_total, 3);
        assert_eq!(c.log_errors.ratio, 2.0);
        let e = err("log_errors:\n  ratio: 0\n");
        assert!(e.contains("expected a positive number"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_expectation() {
        let e = err("retransmits:\n  min_totl: 3\n");
        assert!(e.starts_with("f.yaml:2:"), "{e}");
        assert!(e.contains("unknown field `min_totl`"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
        let e = err("dns:\n  p95_ms: fast\n");
        assert!(e.starts_with("f.yaml:2:"), "{e}");
        let e = err("bucket_s: 1\nepisode_gap_s: -1\n");
        assert!(e.starts_with("f.yaml:2"), "{e}");
        assert!(e.contains("expected a positive number"), "{e}");
    }

    #[test]
    fn buckets_are_whole_report_buckets() {
        let c = FindingsConfig::default();
        assert_eq!(c.bucket_ns(250_000_000), 1_000_000_000);
        assert_eq!(c.bucket_ns(5_000_000_000), 5_000_000_000);
        assert_eq!(c.bucket_ns(300_000_000), 1_200_000_000);
    }
}
