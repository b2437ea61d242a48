//! Checks on a request beyond what its types enforce, and the error that names the field.

use crate::json;

/// A request field that failed validation, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Checks `min <= value <= max`, naming the field otherwise.
pub fn check_range(field: &str, value: f64, min: f64, max: f64) -> Result<(), FieldError> {
    if !value.is_finite() {
        return Err(FieldError::new(
            field,
            format!("must be a finite number, got {value}"),
        ));
    }
    if value < min || value > max {
        return Err(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Checks `value >= 0` and finite.
pub fn check_non_negative(field: &str, value: f64) -> Result<(), FieldError> {
    check_range(field, value, 0.0, f64::MAX)
        .map_err(|_| FieldError::new(field, format!("must be a finite number >= 0, got {value}")))
}

/// Checks that `value` is one of `allowed`.
pub fn check_one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), FieldError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be one of {}, got {}",
                allowed.join(" | "),
                json::quote(value)
            ),
        ))
    }
}
