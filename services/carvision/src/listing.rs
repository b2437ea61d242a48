//! The API's request and answer: a used-car listing as `/predict` takes it (only `model_year`
//! and `model` required, the rest defaulting as the old API did), its categories, and the
//! price it gets.

use serde::{Deserialize, Serialize};
use serving::FieldError;
use utoipa::ToSchema;

/// A request field's allowed values as an enum, and the same values as the list the CSV
/// loader checks; a value's code (what the trees see) is its position in the list.
macro_rules! categories {
    ($(#[$doc:meta])* $name:ident, $all:ident, default $default:ident, [$($variant:ident = $text:tt),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $(
                #[serde(rename = $text)]
                #[allow(non_camel_case_types)]
                $variant,
            )+
        }
        pub const $all: &[&str] = &[$($text),+];
        impl $name {
            // Every category but `Drive` is a model feature.
            #[allow(dead_code)]
            pub(crate) fn code(self) -> f64 {
                self as usize as f64
            }
        }
        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }
    };
}

categories!(
    /// Worst to best, so the code is an ordinal the trees can split on.
    Condition, CONDITIONS, default Good,
    [Salvage = "salvage", Fair = "fair", Good = "good", Excellent = "excellent", LikeNew = "like new", New = "new"]
);
categories!(Fuel, FUELS, default Gas, [Gas = "gas", Diesel = "diesel", Hybrid = "hybrid", Electric = "electric", Other = "other"]);
categories!(Transmission, TRANSMISSIONS, default Automatic, [Automatic = "automatic", Manual = "manual", Other = "other"]);
categories!(
    BodyType, TYPES, default Sedan,
    [
        Suv = "SUV", Truck = "truck", Sedan = "sedan", Pickup = "pickup", Coupe = "coupe",
        Wagon = "wagon", MiniVan = "mini-van", Hatchback = "hatchback", Van = "van",
        Convertible = "convertible", Other = "other", Offroad = "offroad", Bus = "bus",
    ]
);
categories!(
    Color, COLORS, default White,
    [
        White = "white", Black = "black", Silver = "silver", Grey = "grey", Blue = "blue",
        Red = "red", Green = "green", Brown = "brown", Custom = "custom", Yellow = "yellow",
        Orange = "orange", Purple = "purple",
    ]
);
categories!(
    /// Which wheels drive the car, as the old API took it; the model sees four-wheel drive or not.
    Drive, DRIVES, default Fwd, [Fwd = "fwd", Rwd = "rwd", FourWd = "4wd"]
);

/// Longest `model` accepted: the public file's longest is under 40 characters.
const MAX_MODEL_CHARS: usize = 100;

fn model_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    serving::json::bounded_text(deserializer, MAX_MODEL_CHARS)
}

fn default_cylinders() -> i64 {
    4
}

/// Optional, but never `null`: the schema says so.
fn present_flag<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    serving::json::flag(deserializer).map(Some)
}

/// Newest model year accepted: next year's models are on sale this year.
pub(crate) fn newest_model_year() -> i64 {
    current_year() + 1
}

fn model_year_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1900))
        .maximum(Some(newest_model_year()))
        .description(Some("Year of the model; `2015` or `2015.0`."))
        .build()
}

fn four_wd_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    let schema = AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .enum_values(Some([0, 1])),
        )
        .description(Some(
            "Four-wheel drive: true/false, or 1/0 as the public file writes it. Must agree with `drive` when both are given.",
        ))
        .build();
    utoipa::openapi::Schema::AnyOf(schema)
}

/// A used-car listing, as the old API took it: only `model_year` and `model` are required;
/// the rest default as there. Integers may be written `6` or `6.0`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!(Listing::example()))]
pub struct Listing {
    #[serde(deserialize_with = "serving::json::integer")]
    #[schema(schema_with = model_year_schema)]
    pub model_year: i64,
    /// Brand then model, e.g. `ford f-150`; the first word is the brand.
    #[serde(deserialize_with = "model_name")]
    #[schema(min_length = 1, max_length = 100, pattern = "[A-Za-z0-9]")]
    pub model: String,
    #[serde(default)]
    #[schema(default = "good")]
    pub condition: Condition,
    #[serde(
        default = "default_cylinders",
        deserialize_with = "serving::json::integer"
    )]
    #[schema(minimum = 2, maximum = 16, default = 4)]
    pub cylinders: i64,
    #[serde(default)]
    #[schema(default = "gas")]
    pub fuel: Fuel,
    /// Miles.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2000000, default = 0)]
    pub odometer: f64,
    #[serde(default)]
    #[schema(default = "automatic")]
    pub transmission: Transmission,
    #[serde(rename = "type", default)]
    #[schema(default = "sedan")]
    pub body_type: BodyType,
    #[serde(default)]
    #[schema(default = "white")]
    pub paint_color: Color,
    /// fwd (the default), rwd or 4wd; `null` means the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<Drive>,
    #[serde(
        default,
        deserialize_with = "present_flag",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = four_wd_schema)]
    pub is_4wd: Option<bool>,
}

impl Listing {
    /// A valid listing: the OpenAPI document's example and every model's canary.
    pub fn example() -> Self {
        Listing {
            model_year: 2015,
            model: "ford f-150".into(),
            condition: Condition::Excellent,
            cylinders: 6,
            fuel: Fuel::Gas,
            odometer: 80_000.0,
            transmission: Transmission::Automatic,
            body_type: BodyType::Truck,
            paint_color: Color::White,
            drive: None,
            is_4wd: Some(true),
        }
    }

    /// Four-wheel drive, from `drive` or `is_4wd`, which must agree when both are given.
    pub fn four_wd(&self) -> Result<bool, FieldError> {
        match (self.drive, self.is_4wd) {
            (Some(drive), Some(flag)) if (drive == Drive::FourWd) != flag => Err(FieldError::new(
                "is_4wd",
                format!(
                    "is {flag} but drive is {:?}: give one, or make them agree",
                    DRIVES[drive as usize]
                ),
            )),
            (Some(drive), _) => Ok(drive == Drive::FourWd),
            (None, flag) => Ok(flag.unwrap_or(false)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PricePrediction {
    /// Estimated price in US dollars.
    pub prediction: f64,
    pub model_version: String,
}

fn current_year() -> i64 {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as f64;
    1970 + (days / 365.2425).floor() as i64
}
