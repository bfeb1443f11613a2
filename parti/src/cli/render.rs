//! How a snapshot prints: tables for people, JSON for scripts.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::snapshot::{Fleet, Owner};

/// `parti status` as a table.
pub(crate) fn status(fleet: &Fleet) -> String {
    let mut out = String::new();
    let b = &fleet.buckets;
    let _ = writeln!(
        out,
        "buckets   {}, {}, {}, {}",
        b.ids, b.election, b.heartbeat, b.assignment
    );
    match &fleet.leader {
        Some(leader) => {
            let _ = writeln!(
                out,
                "leader    {} (instance {}), term {}, phase {}",
                leader.worker, leader.instance, leader.term, leader.phase
            );
        }
        None => {
            let _ = writeln!(out, "leader    none (no live lease)");
        }
    }
    let applying = fleet.workers.iter().filter(|w| w.lag > 0).count();
    let unapplied = fleet.partitions.values().filter(|o| !o.applied).count();
    let _ = writeln!(
        out,
        "version   {} published; {} workers; {} partitions assigned, {} not yet applied; {} \
         workers behind",
        fleet.published_version,
        fleet.workers.len(),
        fleet.partitions.len(),
        unapplied,
        applying
    );
    let _ = writeln!(out);
    let header = [
        "WORKER",
        "STATE",
        "PARTITIONS",
        "APPLIED",
        "PUBLISHED",
        "LAG",
        "HEARTBEAT",
        "INSTANCE",
        "IDENTITY",
        "HOST",
    ];
    let rows: Vec<[String; 10]> = fleet
        .workers
        .iter()
        .map(|w| {
            [
                w.id.clone(),
                w.state.to_owned(),
                w.partitions.to_string(),
                or_dash(w.applied_version),
                or_dash(w.record_version),
                w.lag.to_string(),
                w.heartbeat_age_secs
                    .map_or_else(|| "-".to_owned(), |age| format!("{age:.1}s ago")),
                w.instance.clone().unwrap_or_else(|| "-".into()),
                w.identity.clone().unwrap_or_else(|| "-".into()),
                w.host.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&mut out, &header, &rows);
    if !fleet.problems.is_empty() {
        let _ = writeln!(out, "\nproblems");
        for problem in &fleet.problems {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                problem.bucket, problem.key, problem.problem
            );
        }
    }
    out
}

/// `parti describe` as text; `None` when no worker is assigned the partition.
pub(crate) fn describe(partition: &str, owner: Option<&Owner>) -> Option<String> {
    let owner = owner?;
    let held = if owner.applied {
        "holds it"
    } else {
        "granted, not yet applied"
    };
    let written = owner.record_written_unix_ms;
    Some(format!(
        "partition {partition}\nowner     {} ({held})\ntoken     term {}, version {}\nsince     \
         version {} (its record last written {}, {})\n",
        owner.worker,
        owner.term,
        owner.version,
        owner.version,
        utc(written),
        ago(written)
    ))
}

/// `parti describe --json`.
#[derive(Debug, Serialize)]
pub(crate) struct Described<'a> {
    pub(crate) partition: &'a str,
    pub(crate) owner: Option<&'a Owner>,
}

/// One JSON document on one line.
pub(crate) fn json(value: &impl Serialize) -> String {
    let mut line = serde_json::to_string(value).unwrap_or_else(|e| {
        // Only maps with non-string keys fail to serialize; there are none.
        format!("{{\"error\":\"{e}\"}}")
    });
    line.push('\n');
    line
}

fn or_dash(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Columns padded to their widest cell.
fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, header.to_vec());
    for row in rows {
        line(out, row.iter().map(String::as_str).collect());
    }
}

/// `2026-11-26T11:40:02Z`, from milliseconds since the epoch.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn ago(unix_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("{:.1} s ago", now.saturating_sub(unix_ms) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_692_600_784), "2026-11-26T11:30:00Z");
    }
}
