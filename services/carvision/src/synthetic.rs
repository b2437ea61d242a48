//! A synthetic `vehicles_us.csv`: the public file's columns, blanks and outliers, priced by
//! age, mileage, condition and equipment from the cars of [`crate::catalogue`].

use std::io::Write;

use serving::synth::{
    self,
    rand::Rng,
    rand_distr::{Distribution, Gamma, LogNormal},
};

use crate::catalogue::CARS;
use crate::features::COLUMNS;
use crate::listing::COLORS;

/// Writes `rows` listings, deterministic from `seed`.
pub fn write(rows: usize, seed: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut rng = synth::rng(seed);
    let age_dist = Gamma::new(2.2f64, 3.7)?;
    let price_noise = LogNormal::new(0.0f64, 0.2)?;
    let mileage_noise = LogNormal::new(0.0f64, 0.35)?;
    let listed = Gamma::new(1.6f64, 24.0)?;
    writeln!(out, "{}", COLUMNS.join(","))?;
    for _ in 0..rows {
        let car = &CARS[rng.gen_range(0..CARS.len())];
        let age = age_dist.sample(&mut rng).min(55.0).floor();
        let model_year = 2019.0 - age;
        let odometer = (age.max(0.3) * 11_500.0 * mileage_noise.sample(&mut rng)
            + rng.gen_range(0.0..4_000.0))
        .round();
        let condition = match age {
            a if a < 1.0 && synth::chance(&mut rng, 0.3) => "new",
            a if a < 4.0 && synth::chance(&mut rng, 0.25) => "like new",
            _ => synth::pick(
                &mut rng,
                &[
                    ("excellent", 0.48),
                    ("good", 0.43),
                    ("fair", 0.07),
                    ("salvage", 0.02),
                ],
            ),
        };
        let condition_factor = match condition {
            "new" => 1.2,
            "like new" => 1.1,
            "excellent" => 1.0,
            "good" => 0.86,
            "fair" => 0.5,
            _ => 0.3,
        };
        let fuel = if car.body == "truck" || car.body == "pickup" {
            *synth::pick(
                &mut rng,
                &[("gas", 0.78), ("diesel", 0.21), ("other", 0.01)],
            )
        } else {
            *synth::pick(
                &mut rng,
                &[
                    ("gas", 0.96),
                    ("hybrid", 0.025),
                    ("electric", 0.005),
                    ("diesel", 0.005),
                    ("other", 0.005),
                ],
            )
        };
        let four_wd = synth::chance(&mut rng, car.four_wd);
        let transmission = *synth::pick(
            &mut rng,
            &[("automatic", 0.91), ("manual", 0.055), ("other", 0.035)],
        );
        let mut price = car.new_price
            * 0.86f64.powf(age)
            * condition_factor
            * (-odometer / 300_000.0).exp()
            * if four_wd { 1.1 } else { 1.0 }
            * if fuel == "diesel" { 1.3 } else { 1.0 }
            * if transmission == "manual" { 0.93 } else { 1.0 }
            * price_noise.sample(&mut rng);
        price = price.max(800.0).round();
        // The public file's outliers: placeholder prices and extra digits.
        if synth::chance(&mut rng, 0.01) {
            price = 1.0;
        } else if synth::chance(&mut rng, 0.002) {
            price *= 100.0;
        }
        let blank_or = |rng: &mut synth::SynthRng, p: f64, text: String| {
            if synth::chance(rng, p) {
                String::new()
            } else {
                text
            }
        };
        let year_cell = blank_or(&mut rng, 0.07, format!("{model_year:.1}"));
        let cylinders_cell = blank_or(&mut rng, 0.10, format!("{:.1}", car.cylinders));
        let odometer_cell = blank_or(&mut rng, 0.15, format!("{odometer:.1}"));
        let color = COLORS[rng.gen_range(0..COLORS.len())];
        let color_cell = blank_or(&mut rng, 0.18, color.to_owned());
        let day = rng.gen_range(0..365);
        writeln!(
            out,
            "{price},{year_cell},{},{condition},{cylinders_cell},{fuel},{odometer_cell},{transmission},{},{color_cell},{},{},{}",
            car.model,
            car.body,
            if four_wd { "1.0" } else { "" },
            date_after_2018_05_01(day),
            listed.sample(&mut rng).round() as u32,
        )?;
    }
    Ok(())
}

/// `YYYY-MM-DD`, `day` days after 2018-05-01 (the public file's listing window).
fn date_after_2018_05_01(day: u32) -> String {
    const MONTHS: [(u32, u32, u32); 12] = [
        (2018, 5, 31),
        (2018, 6, 30),
        (2018, 7, 31),
        (2018, 8, 31),
        (2018, 9, 30),
        (2018, 10, 31),
        (2018, 11, 30),
        (2018, 12, 31),
        (2019, 1, 31),
        (2019, 2, 28),
        (2019, 3, 31),
        (2019, 4, 30),
    ];
    let mut left = day % 365;
    for (year, month, len) in MONTHS {
        if left < len {
            return format!("{year}-{month:02}-{:02}", left + 1);
        }
        left -= len;
    }
    unreachable!("the months add up to 365 days")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_the_listing_year() {
        assert_eq!(date_after_2018_05_01(0), "2018-05-01");
        assert_eq!(date_after_2018_05_01(31), "2018-06-01");
        assert_eq!(date_after_2018_05_01(364), "2019-04-30");
    }
}
