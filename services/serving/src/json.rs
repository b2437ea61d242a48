//! Parsing request bodies: every failure names the field at fault, quotes at most a short
//! prefix of any value, and oversized input is refused while parsing rather than after (no
//! untagged enums or buffered values, whose copies of a hostile body cost many times its size).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::api::MAX_BATCH;

/// Longest prefix of a value an error message quotes.
pub const QUOTE_CHARS: usize = 64;

/// `value` in double quotes, cut to [`QUOTE_CHARS`] characters.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Cuts every "quoted" or `quoted` span of `message` longer than [`QUOTE_CHARS`] characters.
pub fn shorten_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let mark = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let close = rest.find(mark).unwrap_or(rest.len());
        let inner = &rest[..close];
        match inner.char_indices().nth(QUOTE_CHARS) {
            Some((cut, _)) => {
                out.push_str(&inner[..cut]);
                out.push('…');
            }
            None => out.push_str(inner),
        }
        if close < rest.len() {
            out.push(mark);
            rest = &rest[close + 1..];
        } else {
            rest = "";
        }
    }
    out.push_str(rest);
    out
}

/// Why a body was refused: the field at fault (a path such as `items[3].Age`), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyError {
    pub field: Option<String>,
    pub message: String,
}

/// Parses a JSON body into `T`, naming the field at fault on failure.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    parse_seed(body, PhantomData::<T>)
}

/// [`parse`] with a seed, for shapes that depend on the service (the batch envelope).
pub fn parse_seed<'de, S: DeserializeSeed<'de> + Clone>(
    body: &'de [u8],
    seed: S,
) -> Result<S::Value, BodyError> {
    // A good body parses once, untracked; only a bad one is parsed again to name its field
    // (tracking the path costs as much as the parse itself).
    let mut de = serde_json::Deserializer::from_slice(body);
    if let Ok(value) = seed.clone().deserialize(&mut de) {
        if de.end().is_ok() {
            return Ok(value);
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let value = seed.deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    let error = match value {
        Ok(v) => match de.end() {
            Ok(()) => return Ok(v),
            Err(e) => e,
        },
        Err(e) => e,
    };
    let path = track.path().to_string();
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    let message = shorten_quoted(message);
    // serde reports a missing, repeated or unknown field at its parent (or as `?`); name the
    // field itself.
    let named = ["missing field `", "duplicate field `", "unknown field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .filter(|name| path.rsplit('.').next() != Some(*name));
    let path = match path.as_str() {
        "?" => ".".to_owned(),
        p => p.strip_suffix(".?").unwrap_or(p).to_owned(),
    };
    let field = match (named, path.as_str()) {
        (Some(name), ".") => Some(name.to_owned()),
        (Some(name), parent) => Some(format!("{parent}.{name}")),
        // Not JSON at all, or broken before any field began.
        (None, ".") if error.is_syntax() || error.is_eof() => {
            return Err(BodyError {
                field: None,
                message: format!("the body is not valid JSON: {message}"),
            })
        }
        (None, ".") => Some("(body)".to_owned()),
        (None, p) => Some(p.to_owned()),
    };
    Err(BodyError { field, message })
}

/// An integer, written as JSON Schema counts one: `3` or `3.0`, not `3.5`.
pub fn integer<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Integer;
    impl Visitor<'_> for Integer {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // Beyond 2^53 an f64 no longer tells integers apart; no field here goes near that.
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(E::custom(format!("expected an integer, got {v}")))
            }
        }
    }
    deserializer.deserialize_any(Integer)
}

/// A yes/no: `true`/`false`, or `1`/`0` as the public datasets write it.
pub fn flag<'de, D: de::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Flag;
    impl Visitor<'_> for Flag {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true, false, 0 or 1")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
            self.visit_f64(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
            self.visit_f64(v as f64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
            if v == 0.0 || v == 1.0 {
                Ok(v == 1.0)
            } else {
                Err(E::custom(format!("expected true, false, 0 or 1, got {v}")))
            }
        }
    }
    deserializer.deserialize_any(Flag)
}

/// A string of at most `max` characters, checked before it is copied.
pub fn bounded_text<'de, D: de::Deserializer<'de>>(
    deserializer: D,
    max: usize,
) -> Result<String, D::Error> {
    struct Text(usize);
    impl Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a string of at most {} characters", self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            let n = v.chars().count();
            if n > self.0 {
                Err(E::custom(format!(
                    "must be at most {} characters, got {n}",
                    self.0
                )))
            } else {
                Ok(v.to_owned())
            }
        }
    }
    deserializer.deserialize_str(Text(max))
}

/// The body of `/predict_batch`: `{"items": [...]}` with 1 to [`MAX_BATCH`] items, or the same
/// list under the service's old name for it (e.g. `customers`). The count is checked as the
/// list is read, so a huge list is refused at its 1001st item.
pub struct BatchSeed<T> {
    pub alias: Option<&'static str>,
    pub item: PhantomData<T>,
}

// Not derived: that would require `T: Clone`.
impl<T> Clone for BatchSeed<T> {
    fn clone(&self) -> Self {
        Self::new(self.alias)
    }
}

impl<T> BatchSeed<T> {
    pub fn new(alias: Option<&'static str>) -> Self {
        Self {
            alias,
            item: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for BatchSeed<T> {
    type Value = Vec<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BatchSeed<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.alias {
            Some(alias) => write!(f, "an object with `items` or `{alias}`"),
            None => f.write_str("an object with `items`"),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
        let mut items: Option<(&'static str, Vec<T>)> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let name = if key == "items" {
                "items"
            } else if Some(key.as_ref()) == self.alias {
                self.alias.unwrap_or("items")
            } else {
                return Err(de::Error::custom(match self.alias {
                    Some(alias) => format!("unknown field `{key}`, expected `items` or `{alias}`"),
                    None => format!("unknown field `{key}`, expected `items`"),
                }));
            };
            if let Some((previous, _)) = &items {
                return Err(if *previous == name {
                    de::Error::duplicate_field(name)
                } else {
                    de::Error::custom(format!("give `items` or `{name}`, not both"))
                });
            }
            items = Some((name, map.next_value_seed(BoundedList(PhantomData))?));
        }
        items
            .map(|(_, list)| list)
            .ok_or_else(|| de::Error::missing_field("items"))
    }
}

struct BoundedList<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for BoundedList<T> {
    type Value = Vec<T>;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<T>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedList<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of 1 to {MAX_BATCH} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH));
        while let Some(item) = seq.next_element()? {
            if items.len() == MAX_BATCH {
                return Err(de::Error::custom(format!(
                    "must hold 1 to {MAX_BATCH} items, got more"
                )));
            }
            items.push(item);
        }
        if items.is_empty() {
            return Err(de::Error::custom(format!(
                "must hold 1 to {MAX_BATCH} items, got 0"
            )));
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        #[serde(deserialize_with = "integer")]
        age: i64,
        #[serde(default, deserialize_with = "flag")]
        yes: bool,
    }

    fn batch(body: &str) -> Result<Vec<Item>, BodyError> {
        parse_seed(body.as_bytes(), BatchSeed::<Item>::new(Some("customers")))
    }

    fn field(body: &str) -> (Option<String>, String) {
        let e = parse::<Item>(body.as_bytes()).unwrap_err();
        (e.field, e.message)
    }

    #[test]
    fn integers_as_json_schema_counts_them() {
        assert_eq!(parse::<Item>(br#"{"age": 3.0}"#).unwrap().age, 3);
        assert_eq!(field(r#"{"age": 3.5}"#).0.as_deref(), Some("age"));
        assert_eq!(field(r#"{"age": "3"}"#).0.as_deref(), Some("age"));
    }

    #[test]
    fn every_error_names_its_field() {
        assert_eq!(field(r#"{"age": 1e999}"#).0.as_deref(), Some("age"));
        let (name, message) = field(r#"{"age": 1, "age": 2}"#);
        assert_eq!(name.as_deref(), Some("age"), "{message}");
        assert_eq!(field(r#"{}"#).0.as_deref(), Some("age"));
        assert_eq!(field(r#"{"age": 1, "no": 2}"#).0.as_deref(), Some("no"));
        assert_eq!(field(r#"{not json"#).0, None);
        assert_eq!(field(r#"[]"#).0.as_deref(), Some("(body)"));
    }

    #[test]
    fn a_huge_bad_value_is_quoted_short() {
        let long = "x".repeat(2_000_000);
        let (name, message) = field(&format!(r#"{{"age": "{long}"}}"#));
        assert_eq!(name.as_deref(), Some("age"));
        assert!(message.len() < 200, "{} bytes", message.len());
        assert!(
            message.contains(&format!("{}…", "x".repeat(QUOTE_CHARS))),
            "{message}"
        );
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote(&"é".repeat(100)).chars().count(), QUOTE_CHARS + 3);
    }

    #[test]
    fn flags_take_booleans_and_zero_or_one_only() {
        assert!(parse::<Item>(br#"{"age": 1, "yes": 1}"#).unwrap().yes);
        assert!(!parse::<Item>(br#"{"age": 1, "yes": false}"#).unwrap().yes);
        assert_eq!(field(r#"{"age": 1, "yes": 2}"#).0.as_deref(), Some("yes"));
        let zeros = format!(r#"{{"age": 1, "yes": [{}0]}}"#, "0,".repeat(100_000));
        assert_eq!(field(&zeros).0.as_deref(), Some("yes"));
    }

    #[test]
    fn batches_take_items_or_the_alias_within_bounds() {
        assert_eq!(batch(r#"{"items": [{"age": 1}]}"#).unwrap().len(), 1);
        assert_eq!(
            batch(r#"{"customers": [{"age": 1}, {"age": 2}]}"#)
                .unwrap()
                .len(),
            2
        );
        let e = batch(r#"{"items": []}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("items"), "{e:?}");
        let e = batch(r#"{"items": [{"age": 1}], "customers": [{"age": 1}]}"#).unwrap_err();
        assert!(e.message.contains("not both"), "{e:?}");
        let e = batch(r#"{"customers": [{"age": 1}, {"age": "x"}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("customers[1].age"));
        assert_eq!(batch("{}").unwrap_err().field.as_deref(), Some("items"));
        let many = format!(
            r#"{{"items": [{}{{"age": 1}}]}}"#,
            r#"{"age": 1},"#.repeat(MAX_BATCH)
        );
        let e = batch(&many).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("items"), "{e:?}");
        let plain = parse_seed(br#"{"customers": []}"#, BatchSeed::<Item>::new(None)).unwrap_err();
        assert_eq!(plain.field.as_deref(), Some("customers"));
    }
}
