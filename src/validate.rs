//! Field checks shared by the routes; each failure is a 422 naming the field.

use chrono::{Datelike, NaiveDate};

use crate::error::{AppError, Result};

/// A date of the years 1 to 9999. Dates are stored and compared as `YYYY-MM-DD`
/// text, which other years (`+10000-06-01`, `-0005-01-01`) do not fit: they would
/// sort among the others by their text.
pub fn calendar_date(field: &str, date: NaiveDate) -> Result<NaiveDate> {
    if (1..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(AppError::validation(
            field,
            format!("{field} must be a date from 0001-01-01 to 9999-12-31"),
        ))
    }
}

/// A required text field: trimmed, not empty, at most `max` characters, no control
/// characters.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(AppError::validation(
            field,
            format!("{field} must not be empty"),
        ));
    }
    optional_text(field, Some(value), max).map(|v| v.unwrap_or_default())
}

/// An optional text field; empty becomes `None`.
pub fn optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > max {
        return Err(AppError::validation(
            field,
            format!("{field} must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(AppError::validation(
            field,
            format!("{field} must not hold control characters"),
        ));
    }
    Ok(Some(value.to_string()))
}

/// A money amount with at most two decimals, not negative, as minor units.
pub fn money_to_cents(field: &str, amount: f64) -> Result<i64> {
    if !amount.is_finite() || amount < 0.0 {
        return Err(AppError::validation(
            field,
            format!("{field} must be a number not below 0"),
        ));
    }
    if amount > 1e13 {
        return Err(AppError::validation(field, format!("{field} is too large")));
    }
    let cents = (amount * 100.0).round();
    if (cents - amount * 100.0).abs() > 1e-6 {
        return Err(AppError::validation(
            field,
            format!("{field} must have at most two decimals"),
        ));
    }
    Ok(cents as i64)
}

/// Minor units back to the amount clients send and read.
pub fn cents_to_money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// Stock and quantities are counted to a millionth of their unit. Kept as binary
/// floating point and added up as such, 0.3 of a material less three times 0.1
/// left 0.09999999999999998, and a third order for 0.1 was refused as short.
/// Inputs are rounded to millionths, and stock is taken in whole millionths.
const MILLIONTHS: f64 = 1e6;

/// `value` in millionths of its unit, rounded (saturating far beyond any valid
/// value).
pub fn to_millionths(value: f64) -> i128 {
    (value * MILLIONTHS).round() as i128
}

/// Millionths of a unit back to the number clients send and read (never `-0`).
pub fn from_millionths(millionths: i128) -> f64 {
    millionths as f64 / MILLIONTHS + 0.0
}

/// How much `per_unit` of a material `units` need, in millionths: the exact
/// product of the two, rounded once.
pub fn needed_millionths(per_unit: f64, units: f64) -> i128 {
    let product = to_millionths(per_unit).saturating_mul(to_millionths(units));
    (product + 500_000).div_euclid(1_000_000)
}

/// A stock level: a finite number from 0 to 10^15, kept to a millionth.
pub fn non_negative(field: &str, value: f64) -> Result<f64> {
    if value.is_finite() && (0.0..=1e15).contains(&value) {
        Ok(from_millionths(to_millionths(value)))
    } else {
        Err(AppError::validation(
            field,
            format!("{field} must be a number not below 0"),
        ))
    }
}

/// A quantity above 0 and at most `max`, kept to a millionth (so at least one).
pub fn quantity(field: &str, value: f64, max: f64) -> Result<f64> {
    let kept = from_millionths(to_millionths(value));
    if value.is_finite() && kept > 0.0 && value <= max {
        Ok(kept)
    } else {
        Err(AppError::validation(
            field,
            format!("{field} must be above 0 (at least 0.000001) and at most {max}"),
        ))
    }
}

/// A loose e-mail check: something@host.tld.
pub fn optional_email(field: &str, value: Option<&str>) -> Result<Option<String>> {
    let value = optional_text(field, value, 254)?;
    if let Some(v) = &value {
        let ok = v.split_once('@').is_some_and(|(l, h)| {
            !l.is_empty() && h.contains('.') && !h.contains('@') && !v.contains(' ')
        });
        if !ok {
            return Err(AppError::validation(
                field,
                format!("{field} is not an e-mail address"),
            ));
        }
    }
    Ok(value)
}

/// Any JSON value, but an object may not name a key twice (at any depth):
/// `serde_json::Value` keeps the last of two, while typed bodies refuse them
/// (`duplicate field`), so a body read as a value would take a meaning the other
/// routes refuse.
pub struct StrictJson(pub serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_cents_exact() {
        assert_eq!(money_to_cents("price", 19.99).unwrap(), 1999);
        assert_eq!(money_to_cents("price", 0.0).unwrap(), 0);
        assert_eq!(cents_to_money(1999), 19.99);
        assert!(money_to_cents("price", 1.001).is_err());
        assert!(money_to_cents("price", -1.0).is_err());
        assert!(money_to_cents("price", f64::NAN).is_err());
        // Bounded at input, so that sums of many stay far from overflowing.
        assert!(money_to_cents("price", 1e13).is_ok());
        assert!(money_to_cents("price", 1.01e13).is_err());
        assert!(money_to_cents("price", f64::INFINITY).is_err());
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(required_text("name", "  x ", 5).unwrap(), "x");
        assert!(required_text("name", "   ", 5).is_err());
        assert!(required_text("name", "abcdef", 5).is_err());
        assert!(required_text("name", "a\u{0}b", 5).is_err());
    }
}
