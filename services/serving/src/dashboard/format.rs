//! Numbers as the pages write them: dollars with separators, short axis labels, percentages.
//! Negative numbers take a real minus sign (U+2212), as screen readers say "minus".

/// Digits of a whole number with thousands separators: `51,525`.
fn grouped(whole: u64) -> String {
    let digits = whole.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        n => n,
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..head.min(digits.len())]);
    for group in digits.as_bytes()[head.min(digits.len())..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

fn sign(value: f64) -> &'static str {
    if value < 0.0 && value.round() != 0.0 {
        "\u{2212}"
    } else {
        ""
    }
}

/// A count or any number rounded to a whole: `51,525`.
pub fn count(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    format!("{}{}", sign(value), grouped(value.abs().round() as u64))
}

/// Dollars rounded to the dollar: `$12,346`, `−$800`.
pub fn money(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    format!("{}${}", sign(value), grouped(value.abs().round() as u64))
}

/// Dollars with an explicit sign: `+$1,200`, `−$800`, `$0`.
pub fn signed_money(value: f64) -> String {
    if value.round() > 0.0 {
        format!("+{}", money(value))
    } else {
        money(value)
    }
}

/// A short number for an axis: `800`, `1.5k`, `45k`, `1.2M`.
pub fn short(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 999_500.0 {
        (value / 1e6, "M")
    } else if magnitude >= 1_000.0 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if scaled.fract().abs() < 0.05 || scaled.abs() >= 100.0 {
        format!("{}", scaled.abs().round())
    } else {
        format!("{:.1}", scaled.abs())
    };
    format!(
        "{}{text}{suffix}",
        if value < 0.0 { "\u{2212}" } else { "" }
    )
}

/// Dollars for an axis: `$800`, `$1.5k`, `$45k`.
pub fn money_short(value: f64) -> String {
    let text = short(value);
    match text.strip_prefix('\u{2212}') {
        Some(rest) => format!("\u{2212}${rest}"),
        None => format!("${text}"),
    }
}

/// A fraction as a percentage: `percent(0.125, 1)` is `12.5%`.
pub fn percent(fraction: f64, decimals: usize) -> String {
    if !fraction.is_finite() {
        return "n/a".into();
    }
    let text = format!("{:.*}", decimals, (fraction * 100.0).abs());
    let negative = fraction < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0');
    format!("{}{text}%", if negative { "\u{2212}" } else { "" })
}

/// A number with at most `decimals` decimals, trailing zeros dropped: `0.1`, `−0.083`.
pub fn decimal(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    let text = format!("{:.*}", decimals, value.abs());
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    let negative = value < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0');
    format!("{}{text}", if negative { "\u{2212}" } else { "" })
}

/// Miles: `84,000 mi`.
pub fn miles(value: f64) -> String {
    format!("{} mi", count(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(count(51_525.0), "51,525");
        assert_eq!(count(999.0), "999");
        assert_eq!(money(12_345.6), "$12,346");
        assert_eq!(money(-800.0), "\u{2212}$800");
        assert_eq!(money(-0.2), "$0");
        assert_eq!(signed_money(1200.0), "+$1,200");
        assert_eq!(signed_money(-1200.0), "\u{2212}$1,200");
        assert_eq!(money_short(45_000.0), "$45k");
        assert_eq!(money_short(1_500.0), "$1.5k");
        assert_eq!(money_short(800.0), "$800");
        assert_eq!(money_short(-2_500.0), "\u{2212}$2.5k");
        assert_eq!(short(1_200_000.0), "1.2M");
        assert_eq!(percent(0.125, 1), "12.5%");
        assert_eq!(percent(-0.0001, 1), "0.0%");
        assert_eq!(miles(84_000.0), "84,000 mi");
        assert_eq!(decimal(0.100000001, 3), "0.1");
        assert_eq!(decimal(-0.0834, 3), "\u{2212}0.083");
        assert_eq!(decimal(0.892, 3), "0.892");
        assert_eq!(decimal(400.0, 3), "400");
        assert_eq!(money(f64::NAN), "n/a");
    }
}
