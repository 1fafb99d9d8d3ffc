//! Rendering for a person or a script: D-Bus values as JSON, times, the releases table (all
//! outside text made inert first).

use cells_updater::contract::release_key;
use std::collections::HashMap;
use zbus::zvariant::{OwnedValue, Value};

pub(super) fn value_to_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Str(s) => serde_json::Value::from(s.as_str()),
        Value::ObjectPath(p) => serde_json::Value::from(p.as_str()),
        Value::Bool(b) => serde_json::Value::from(*b),
        Value::U8(n) => serde_json::Value::from(*n),
        Value::U32(n) => serde_json::Value::from(*n),
        Value::I32(n) => serde_json::Value::from(*n),
        Value::U64(n) => serde_json::Value::from(*n),
        Value::I64(n) => serde_json::Value::from(*n),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_to_json).collect()),
        Value::Value(inner) => value_to_json(inner),
        other => serde_json::Value::from(format!("{other:?}")),
    }
}

pub(super) fn props_to_json(
    props: &HashMap<String, OwnedValue>,
) -> serde_json::Map<String, serde_json::Value> {
    props
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS UTC` for µs since the epoch.
pub(super) fn format_time(us: u64) -> String {
    cells_updater::schedule::format_us(us)
}

pub(super) fn get_str(p: &HashMap<String, OwnedValue>, k: &str) -> String {
    p.get(k)
        .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
}

pub(super) fn or_dash(s: String) -> String {
    if s.is_empty() || s == "/" {
        "-".into()
    } else {
        s
    }
}

pub(super) fn bool_of(p: &HashMap<String, OwnedValue>, k: &str) -> bool {
    p.get(k)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false)
}

pub(super) fn u64_of(p: &HashMap<String, OwnedValue>, k: &str) -> u64 {
    p.get(k).and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// Prints the releases for a person: a table, each with its label and the first lines of
/// its changelog (all made inert: the update server wrote them).
pub(super) fn print_releases(releases: &[HashMap<String, OwnedValue>]) {
    if releases.is_empty() {
        println!("The update server offers no release for this installation.");
        return;
    }
    println!(
        "{:<14} {:<8} {:<14} {:>10}  LABEL",
        "VERSION", "ALLOWED", "REASON", "SIZE MiB"
    );
    for r in releases {
        let inert = |k: &str, max| cells_updater::text::one_line(&get_str(r, k), max);
        let mut reason = or_dash(inert(release_key::REASON, 40));
        if let Some(at) = r
            .get(release_key::ELIGIBLE_AT)
            .and_then(|v| i64::try_from(v).ok())
        {
            reason = format!(
                "{reason} (eligible {})",
                format_time(at.max(0) as u64 * 1_000_000)
            );
        }
        println!(
            "{:<14} {:<8} {:<14} {:>10.1}  {}",
            inert(release_key::VERSION, 40),
            if bool_of(r, release_key::ALLOWED) {
                "yes"
            } else {
                "no"
            },
            reason,
            u64_of(r, release_key::SIZE) as f64 / 1048576.0,
            inert(release_key::LABEL, 80)
        );
        let log = cells_updater::text::multi_line(&get_str(r, release_key::CHANGE_LOG));
        for line in log.lines().filter(|l| !l.trim().is_empty()).take(2) {
            println!("    {}", cells_updater::text::one_line(line.trim(), 96));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "never");
        assert_eq!(
            format_time(1_740_420_600_000_000),
            "2025-02-24 18:10:00 UTC"
        );
        assert_eq!(format_time(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
    }
}
