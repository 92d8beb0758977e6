//! Timestamps in responses, as chrono writes them (RFC 3339, UTC as `Z`, as many
//! fractional digits as the value needs: none, 3, 6 or 9), written in one piece.
//!
//! chrono's own `Serialize` hands serde_json a `Display` that it writes a few
//! characters at a time, each piece escaped on its own: for a page of records with
//! two timestamps each, that was a fifth of the router's instructions per request
//! (callgrind, `GET /api/products`, 20 rows). `to_rfc3339_opts` into a `String`
//! halved that, and still cost about 1,100 instructions per timestamp (its
//! formatting machinery and an allocation); the digits are written here into a
//! buffer on the stack instead, two at a time. Years outside 0..=9999 and leap
//! seconds, which chrono writes in its own ways, go through chrono.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// `#[serde(serialize_with = "crate::http::timestamp::rfc3339")]`
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut text = Text([0; 32]);
    match write_rfc3339(at, &mut text) {
        Some(text) => serializer.serialize_str(text),
        None => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// Where a timestamp is written: aligned, so that the check that it is text
/// reads it a word at a time.
#[repr(align(16))]
struct Text([u8; 32]);

/// "00" to "99", two digits at a time.
const PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// `value`'s last `digits` digits, at `at`.
fn put(buffer: &mut [u8; 32], at: usize, value: u32, digits: usize) {
    let (mut value, mut end) = (value, at + digits);
    while end >= at + 2 {
        let pair = (value % 100) as usize * 2;
        buffer[end - 2] = PAIRS[pair];
        buffer[end - 1] = PAIRS[pair + 1];
        value /= 100;
        end -= 2;
    }
    if end > at {
        buffer[at] = b'0' + (value % 10) as u8;
    }
}

/// `at` as `YYYY-MM-DDTHH:MM:SS[.fff[fff[fff]]]Z` in `text`, or `None` for what
/// chrono writes differently (a year outside 0..=9999, a leap second).
fn write_rfc3339<'b>(at: &DateTime<Utc>, text: &'b mut Text) -> Option<&'b str> {
    let (date, time) = (at.date_naive(), at.time());
    let nanos = time.nanosecond();
    let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
    if nanos >= 1_000_000_000 {
        return None;
    }
    let buffer = &mut text.0;
    put(buffer, 0, year, 4);
    put(buffer, 5, date.month(), 2);
    put(buffer, 8, date.day(), 2);
    put(buffer, 11, time.hour(), 2);
    put(buffer, 14, time.minute(), 2);
    put(buffer, 17, time.second(), 2);
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    let mut end = 19;
    if digits > 0 {
        put(buffer, 20, fraction, digits);
        buffer[19] = b'.';
        end = 20 + digits;
    }
    for (i, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buffer[i] = separator;
    }
    buffer[end] = b'Z';
    std::str::from_utf8(&text.0[..=end]).ok()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, TimeZone, Utc};

    #[derive(serde::Serialize)]
    struct Both {
        #[serde(serialize_with = "super::rfc3339")]
        ours: DateTime<Utc>,
        chrono: DateTime<Utc>,
    }

    fn assert_same(at: DateTime<Utc>) {
        let json = serde_json::to_value(Both {
            ours: at,
            chrono: at,
        })
        .unwrap();
        assert_eq!(json["ours"], json["chrono"], "{at:?}");
    }

    #[test]
    fn it_writes_what_chrono_writes() {
        let base = Utc.with_ymd_and_hms(2026, 12, 2, 13, 0, 24).unwrap();
        let nanos = [
            0,
            1,
            10,
            1_000,
            1_000_000,
            10_000_000,
            241_815_000,
            241_815_123,
            500_000_000,
            999_999_999,
        ];
        for n in nanos {
            assert_same(base + chrono::Duration::nanoseconds(n));
        }
        for (y, mo, d, h, mi, s) in [
            (0, 1, 1, 0, 0, 0),
            (1, 1, 1, 0, 0, 0),
            (999, 9, 9, 9, 9, 9),
            (2024, 2, 29, 23, 59, 59),
            (9999, 12, 31, 23, 59, 59),
            // chrono's own ways: a sign and more digits for these years.
            (-1, 12, 31, 23, 59, 59),
            (10000, 1, 1, 0, 0, 0),
        ] {
            assert_same(Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap());
        }
        // A leap second, which chrono writes as second 60.
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .unwrap()
            .and_utc();
        assert_same(leap);
        assert_same(Utc::now());
    }

    #[test]
    fn it_writes_what_chrono_writes_across_the_calendar() {
        // A fixed walk over years 0..=9999 and every precision, so that each run
        // checks the same values.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let first = Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap().timestamp();
        let last = Utc
            .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let seconds = first + (state % (last - first + 1) as u64) as i64;
            let nanos = match state % 4 {
                0 => 0,
                1 => (state >> 8) as u32 % 1_000 * 1_000_000,
                2 => (state >> 8) as u32 % 1_000_000 * 1_000,
                _ => (state >> 8) as u32 % 1_000_000_000,
            };
            assert_same(DateTime::from_timestamp(seconds, nanos).unwrap());
        }
    }
}
