//! Timestamps as Harbor decodes them: RFC3339 for the Open API (Go's `time.Time`; an empty
//! string would fail the whole decode), `YYYY-MM-DD HH:MM:SS` for the Dragonfly 1.x API.

/// Unix milliseconds → `2024-03-01T10:00:01Z`.
pub fn rfc3339(millis: u64) -> String {
    let (date, time) = civil(millis);
    format!("{date}T{time}Z")
}

/// Unix milliseconds → `2024-03-01 10:00:01` (UTC), as Dragonfly 1.x wrote it.
pub fn legacy(millis: u64) -> String {
    let (date, time) = civil(millis);
    format!("{date} {time}")
}

fn civil(millis: u64) -> (String, String) {
    let secs = millis / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{h:02}:{m:02}:{s:02}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2024-03-01T10:00:01Z, the fixtures' instant (a leap year, just after February).
        assert_eq!(rfc3339(1_709_287_201_999), "2024-03-01T10:00:01Z");
        assert_eq!(legacy(1_709_287_201_000), "2024-03-01 10:00:01");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00Z");
    }
}
