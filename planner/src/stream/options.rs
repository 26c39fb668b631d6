//! The `WITH (...)` options of `CREATE STREAM`, parsed and checked with messages that say what
//! to change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::log::{CleanupPolicy, StreamLogConfig};
use crate::error::{Error, Result};

/// Most partitions a stream may have (LogCore's bound).
pub const PARTITIONS_MAX: u32 = 4096;

/// Stream settings as persisted in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    pub partitions: u32,
    /// Column whose value (as text) is the record key and picks the partition.
    pub partition_key: Option<String>,
    pub retention_secs: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub cleanup: Cleanup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    Delete,
    Compact,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            partitions: 1,
            partition_key: None,
            retention_secs: None,
            retention_bytes: None,
            cleanup: Cleanup::Delete,
        }
    }
}

impl StreamOptions {
    /// Parses `(name, value)` pairs; values are the literal text (quotes removed).
    pub fn parse(options: &[(String, String)], columns: &[String]) -> Result<Self> {
        let mut o = StreamOptions::default();
        for (name, value) in options {
            match name.as_str() {
                "partitions" => {
                    let n: u32 = value.trim().parse().map_err(|_| {
                        Error::InvalidParameter(format!(
                            "partitions must be a whole number between 1 and {PARTITIONS_MAX}, got '{value}'"
                        ))
                    })?;
                    if n == 0 || n > PARTITIONS_MAX {
                        return Err(Error::InvalidParameter(format!(
                            "partitions must be between 1 and {PARTITIONS_MAX}, got {n}"
                        )));
                    }
                    o.partitions = n;
                }
                "partition_key" => {
                    let col = value.trim().to_string();
                    if !columns.contains(&col) {
                        return Err(Error::InvalidParameter(format!(
                            "partition_key '{col}' is not a column of the stream (columns: {})",
                            columns.join(", ")
                        )));
                    }
                    o.partition_key = Some(col);
                }
                "retention" => o.retention_secs = Some(parse_duration(value)?.as_secs()),
                "retention_bytes" => {
                    let n = parse_bytes(value)?;
                    if n == 0 {
                        return Err(Error::InvalidParameter(
                            "retention_bytes must be positive".into(),
                        ));
                    }
                    o.retention_bytes = Some(n);
                }
                "cleanup" => {
                    o.cleanup = match value.trim().to_ascii_lowercase().as_str() {
                        "delete" => Cleanup::Delete,
                        "compact" => Cleanup::Compact,
                        other => {
                            return Err(Error::InvalidParameter(format!(
                                "cleanup must be 'delete' or 'compact', got '{other}'"
                            )))
                        }
                    }
                }
                other => {
                    return Err(Error::InvalidParameter(format!(
                        "unknown stream option \"{other}\"; valid options are partitions, \
                         partition_key, retention, retention_bytes, cleanup"
                    )))
                }
            }
        }
        Ok(o)
    }

    /// The log settings for these options.
    pub fn log_config(&self) -> StreamLogConfig {
        StreamLogConfig {
            partitions: self.partitions,
            retention: self.retention_secs.map(Duration::from_secs),
            retention_bytes: self.retention_bytes,
            cleanup: match self.cleanup {
                Cleanup::Delete => CleanupPolicy::Delete,
                Cleanup::Compact => CleanupPolicy::Compact,
            },
        }
    }
}

/// Parses `'7 days'`, `'12 hours'`, `'30 min'`, `'1 week'`, `'90 s'` or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::InvalidParameter(format!(
            "retention must look like '7 days', '12 hours', '30 minutes' or '90 seconds', got '{text}'"
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs_per = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(Error::InvalidParameter("retention must be positive".into()));
    }
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// Parses a byte count: `1048576`, `'64MB'`, `'1 GB'`, `'10kB'`.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let bad = || {
        Error::InvalidParameter(format!(
            "retention_bytes must be a byte count like 1073741824 or '1GB', got '{text}'"
        ))
    };
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        "tb" | "t" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_options() {
        let cols = vec!["k".to_string(), "v".to_string()];
        let o = StreamOptions::parse(
            &[
                ("partitions".into(), "8".into()),
                ("partition_key".into(), "k".into()),
                ("retention".into(), "7 days".into()),
                ("retention_bytes".into(), "1GB".into()),
                ("cleanup".into(), "compact".into()),
            ],
            &cols,
        )
        .expect("valid");
        assert_eq!(o.partitions, 8);
        assert_eq!(o.retention_secs, Some(7 * 86_400));
        assert_eq!(o.retention_bytes, Some(1 << 30));
        assert_eq!(o.cleanup, Cleanup::Compact);
        assert!(StreamOptions::parse(&[("partitions".into(), "0".into())], &cols).is_err());
        assert!(StreamOptions::parse(&[("partition_key".into(), "x".into())], &cols).is_err());
        assert!(
            StreamOptions::parse(&[("retention".into(), "7 fortnights".into())], &cols).is_err()
        );
        assert!(StreamOptions::parse(&[("colour".into(), "red".into())], &cols).is_err());
    }
}
