//! The CarVision Dashboard, rendered in-process: every page answers, and the numbers it shows
//! are those of the training data, recomputed here from the CSV by hand.

use std::collections::HashMap;
use std::path::Path;

use carvision::CarVision;
use serde_json::{json, Value};
use serving_testkit as testkit;

/// The listings of the generated file priced within the training band, read by hand.
struct Rows {
    price: Vec<f64>,
    year: Vec<Option<u16>>,
    brand: Vec<String>,
}

fn read_rows(csv: &Path) -> Rows {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut rows = Rows {
        price: Vec::new(),
        year: Vec::new(),
        brand: Vec::new(),
    };
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let price: f64 = cells[0].parse().unwrap();
        if !(500.0..=100_000.0).contains(&price) {
            continue;
        }
        rows.price.push(price);
        rows.year
            .push(cells[1].parse::<f64>().ok().map(|y| y as u16));
        rows.brand
            .push(cells[2].split(' ').next().unwrap().to_owned());
    }
    rows
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The number a page gives under `data-key="key"`.
fn figure(html: &str, key: &str) -> f64 {
    let at = html
        .find(&format!(r#"data-key="{key}""#))
        .unwrap_or_else(|| panic!("no figure {key}"));
    value_after(&html[at..])
}

/// The first `data-value` at or after the start of `html`.
fn value_after(html: &str) -> f64 {
    let start = html.find(r#"data-value=""#).expect("a data-value") + 12;
    let end = start + html[start..].find('"').unwrap();
    html[start..end].parse().unwrap()
}

/// The number an element with `id` gives.
fn by_id(html: &str, id: &str) -> f64 {
    let at = html
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no element {id}"));
    let tag_start = html[..at].rfind('<').unwrap();
    value_after(&html[tag_start..])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn get(app: &serving::axum::Router, uri: &str) -> (u16, String) {
    let (status, body) = testkit::call(app, "GET", uri, None).await;
    let text = match body {
        Value::String(s) => s,
        other => other.to_string(),
    };
    (status.as_u16(), text)
}

#[tokio::test]
async fn the_overview_shows_the_training_data() {
    let (dir, pages, _) = testkit::trained_dashboard::<CarVision>(4000);
    let rows = read_rows(&dir.path().join("data.csv"));
    let (status, html) = get(&pages, "/").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.starts_with("<!DOCTYPE html>"));

    assert_eq!(figure(&html, "listings"), rows.price.len() as f64);
    assert!(close(figure(&html, "median_price"), median(&rows.price)));
    let mean = rows.price.iter().sum::<f64>() / rows.price.len() as f64;
    assert!(close(figure(&html, "mean_price"), mean));
    let sd = (rows.price.iter().map(|p| (p - mean).powi(2)).sum::<f64>()
        / (rows.price.len() - 1) as f64)
        .sqrt();
    assert!(close(figure(&html, "price_volatility"), sd / mean));
    // The synthetic listings are all posted in 2018 or 2019, so ages sit in 0..=60.
    assert!((0.0..=60.0).contains(&figure(&html, "median_age")));

    // The most listed brand leads the top-10 table, with its count.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for b in &rows.brand {
        *counts.entry(b).or_default() += 1;
    }
    let (top, n) = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .unwrap();
    let table = &html[html.find(r#"id="top-brands""#).unwrap()..];
    let first_row = &table[table.find("<tbody>").unwrap()..];
    assert!(
        first_row.starts_with(&format!(
            r#"<tbody><tr><th scope="row">{top}</th><td class="num">{}</td>"#,
            group(*n)
        )),
        "{}",
        &first_row[..200]
    );

    // Segments split at the quartiles: a quarter, a half and a quarter of the listings.
    let segment = |name: &str| {
        let at = html.find(&format!(r#"data-segment="{name}""#)).unwrap();
        value_after(&html[at..])
    };
    let total = rows.price.len() as f64;
    assert_eq!(
        segment("Economy") + segment("Mid") + segment("Premium"),
        total
    );
    assert!((segment("Economy") / total - 0.25).abs() < 0.02);
    assert!((segment("Premium") / total - 0.25).abs() < 0.02);

    // Listings by model year: the table has each year's count.
    let year = rows.year.iter().flatten().copied().max().unwrap();
    let in_year = rows.year.iter().filter(|y| **y == Some(year)).count();
    assert!(
        html.contains(&format!(
            r#"<th scope="row">{year}</th><td class="num">{}</td>"#,
            group(in_year)
        )),
        "year {year}"
    );
    // Every chart is an image with a name and a description, and has its table.
    assert_eq!(html.matches(r#"role="img""#).count(), 4);
    assert_eq!(html.matches("<desc ").count(), 4);
    assert_eq!(html.matches("<table").count(), 4);
}

fn group(n: usize) -> String {
    serving::dashboard::format::count(n as f64)
}

#[tokio::test]
async fn market_filters_apply_to_every_chart_and_bad_ones_are_named_beside_their_field() {
    let (dir, pages, _) = testkit::trained_dashboard::<CarVision>(4000);
    let rows = read_rows(&dir.path().join("data.csv"));
    let (status, all) = get(&pages, "/market").await;
    assert_eq!(status, 200);
    assert_eq!(by_id(&all, "matching"), rows.price.len() as f64);

    let uri = "/market?min_price=5000&max_price=40000&from_year=2008&to_year=2016&brand=ford&brand=toyota";
    let (status, html) = get(&pages, uri).await;
    assert_eq!(status, 200);
    let kept: Vec<f64> = (0..rows.price.len())
        .filter(|&i| {
            (5000.0..=40000.0).contains(&rows.price[i])
                && rows.year[i].is_some_and(|y| (2008..=2016).contains(&y))
                && (rows.brand[i] == "ford" || rows.brand[i] == "toyota")
        })
        .map(|i| rows.price[i])
        .collect();
    assert!(kept.len() > 50, "{}", kept.len());
    assert_eq!(by_id(&html, "matching"), kept.len() as f64);
    assert!(close(figure(&html, "median_price"), median(&kept)));
    // The form shows the filters as given: the address is the view.
    assert!(html.contains(r#"name="min_price" type="number" inputmode="decimal" min="0" max="100000" step="1" value="5000""#));
    assert!(html.contains(r#"value="ford" checked"#));
    assert!(!html.contains(r#"value="honda" checked"#));
    // Every chart changed with the filters.
    for chart in [
        "median-by-year-chart",
        "depreciation-chart",
        "mileage-chart",
        "condition-chart",
    ] {
        let svg = |page: &str| {
            let at = page.find(&format!(r#"id="{chart}-title""#)).unwrap();
            page[at..at + page[at..].find("</svg>").unwrap()].to_owned()
        };
        assert_ne!(svg(&all), svg(&html), "{chart} ignores the filters");
    }
    // Only model years 2008 to 2016 are in the table behind the year chart.
    let table = &html[html.find(r#"id="median-by-year""#).unwrap()..];
    let table = &table[table.find("<tbody>").unwrap()..table.find("</tbody>").unwrap()];
    assert!(
        table.contains(r#"<th scope="row">2016</th>"#)
            && !table.contains(r#"<th scope="row">2017</th>"#)
    );

    // Bad filters: the page still answers, each message sits beside its field, and the
    // filters that could be read still apply.
    let (status, html) = get(
        &pages,
        "/market?min_price=cheap&from_year=2012&to_year=1990&brand=zeppelin",
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let beside = |field: &str, phrase: &str| {
        let input = html.find(&format!(r#"id="{field}""#)).unwrap();
        let error = html
            .find(&format!(r#"id="{field}-error""#))
            .unwrap_or_else(|| panic!("no error for {field}"));
        assert!(
            error > input && error - input < 600,
            "{field}: the message is not beside it"
        );
        assert!(
            html[error..error + 300].contains(phrase),
            "{field}: {}",
            &html[error..error + 300]
        );
    };
    beside("min_price", "whole dollars");
    beside("to_year", "must be 2012 or later");
    beside("brands", "zeppelin");
    assert!(html.contains(r#"aria-invalid="true""#));
    assert!(
        html.contains(r##"<a href="#min_price">"##),
        "the summary links to the field"
    );
    let from_2012 = rows
        .year
        .iter()
        .filter(|y| y.is_some_and(|y| y >= 2012))
        .count();
    assert_eq!(by_id(&html, "matching"), from_2012 as f64);

    let (status, html) = get(&pages, "/market?max_price=600").await;
    assert_eq!(status, 200);
    let cheap = rows.price.iter().filter(|p| **p <= 600.0).count();
    assert_eq!(by_id(&html, "matching"), cheap as f64);
    if cheap == 0 {
        assert!(html.contains("No listing matches"));
    }

    // A price past the dearest listing is refused beside its field, not shown as a
    // saturated number, and every listing still matches.
    let (status, html) = get(&pages, "/market?min_price=1e308").await;
    assert_eq!(status, 200, "{html}");
    let error = html.find(r#"id="min_price-error""#).expect("an error");
    assert!(
        html[error..error + 300].contains("the dearest listing is $"),
        "{}",
        &html[error..error + 300]
    );
    assert!(!html.contains("18,446,744"), "a saturated price is shown");
    assert_eq!(by_id(&html, "matching"), rows.price.len() as f64);
}

#[tokio::test]
async fn the_model_page_shows_the_metrics_the_version_and_recomputes_the_residuals() {
    let (dir, pages, api) = testkit::trained_dashboard::<CarVision>(4000);
    let metrics: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("model/current/metrics.json")).unwrap(),
    )
    .unwrap();
    let (status, html) = get(&pages, "/model").await;
    assert_eq!(status, 200);
    for key in ["rmse", "mae", "r2", "mape"] {
        let row = &html[html.find(&format!(r#"data-metric="{key}""#)).unwrap()..];
        let model = value_after(row);
        let baseline = value_after(&row[row.find("data-value").unwrap() + 12..]);
        assert_eq!(model, metrics[key].as_f64().unwrap(), "{key}");
        assert_eq!(
            baseline,
            metrics["baseline"][key].as_f64().unwrap(),
            "{key}"
        );
    }
    // The residuals come from predicting the held-out rows again: the same RMSE.
    assert!(close(
        by_id(&html, "consistency"),
        metrics["rmse"].as_f64().unwrap()
    ));
    assert!(html.contains("they give the recorded RMSE again"));
    let (_, health) = testkit::call(&api, "GET", "/health", None).await;
    let version = health["model_version"].as_str().unwrap();
    assert!(html.contains(&format!(
        r#"<td data-key="model_version"><code>{version}</code>"#
    )));
    assert!(html.contains("not registered"));
    assert!(html.contains(r#"id="residuals""#));
    assert_eq!(html.matches(r#"role="img""#).count(), 3);
}

#[tokio::test]
async fn the_predictor_asks_the_api_s_model_and_explains_the_price() {
    let (_dir, pages, api) = testkit::trained_dashboard::<CarVision>(4000);
    let (status, html) = get(&pages, "/predict").await;
    assert_eq!(status, 200);
    // Every field of the API, each with its label; the model with suggestions from the data.
    for name in [
        "model_year",
        "model",
        "condition",
        "cylinders",
        "fuel",
        "odometer",
        "transmission",
        "type",
        "paint_color",
        "drive",
    ] {
        assert!(
            html.contains(&format!(r#"<label for="{name}">"#)),
            "{name} has no label"
        );
        assert!(
            html.contains(&format!(r#"id="{name}" name="{name}""#)),
            "{name}"
        );
    }
    assert!(html.contains(r#"list="models""#));
    assert!(html.contains(r#"<option value="ford f-150"></option>"#));
    assert!(
        !html.contains(r#"id="predicted-price""#),
        "nothing asked yet"
    );

    let listing = json!({
        "model_year": 2013, "model": "toyota camry", "condition": "like new", "cylinders": 4,
        "fuel": "gas", "odometer": 64000, "transmission": "automatic", "type": "sedan",
        "paint_color": "silver", "drive": "fwd"
    });
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(listing.as_object().unwrap().iter().map(|(k, v)| {
            let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (k.clone(), value)
        }))
        .finish();
    let (status, html) = get(&pages, &format!("/predict?{query}")).await;
    assert_eq!(status, 200, "{html}");
    let (_, answer) = testkit::call(&api, "POST", "/predict", Some(listing.to_string())).await;
    let shown = by_id(&html, "predicted-price");
    assert_eq!(
        shown,
        answer["prediction"].as_f64().unwrap(),
        "the API's answer"
    );
    assert!(html.contains(answer["model_version"].as_str().unwrap()));

    // The contributions add up to the estimate, from the model's average.
    let table = &html[html.find(r#"id="contributions""#).unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let values: Vec<f64> = table
        .match_indices("data-value=\"")
        .map(|(at, _)| value_after(&table[at..]))
        .collect();
    assert_eq!(values.len(), 1 + 11 + 1, "start, each feature, estimate");
    let sum: f64 = values[..12].iter().sum();
    assert!((sum - values[12]).abs() < 0.01, "{sum} vs {}", values[12]);
    assert!(
        (values[12] - shown).abs() < 0.01,
        "{} vs {shown}",
        values[12]
    );
    assert!(table.contains("Model year 2013"));
    // Placed among similar listings.
    let share = by_id(&html, "placement");
    assert!((0.0..=1.0).contains(&share));
    assert!(html.contains("toyota camry listings of model years 2011 to 2015"));
}

#[tokio::test]
async fn a_bad_value_in_the_predictor_is_named_beside_its_field_with_the_api_s_message() {
    let (_dir, pages, api) = testkit::trained_dashboard::<CarVision>(1500);
    let cases = [
        (
            "model_year=1800&model=ford+f-150",
            "model_year",
            "must be between 1900 and",
        ),
        (
            "model_year=soon&model=ford+f-150",
            "model_year",
            "must be a number",
        ),
        (
            "model_year=2015&model=++",
            "model",
            "enter the make and model",
        ),
        (
            "model_year=2015&model=ford+f-150&odometer=-5",
            "odometer",
            "must be between 0 and",
        ),
        (
            "model_year=2015&model=ford+f-150&cylinders=6.5",
            "cylinders",
            "integer",
        ),
        (
            "model_year=2015&model=ford+f-150&condition=mint",
            "condition",
            "expected one of",
        ),
    ];
    for (query, field, phrase) in cases {
        let (status, html) = get(&pages, &format!("/predict?{query}")).await;
        assert_eq!(status, 200, "{query}: {html}");
        let input = html.find(&format!(r#"id="{field}""#)).unwrap();
        let error = html
            .find(&format!(r#"id="{field}-error""#))
            .unwrap_or_else(|| panic!("{query}: no error beside {field}"));
        assert!(
            error > input && error - input < 1500,
            "{query}: not beside the field"
        );
        let message = &html[error..error + html[error..].find("</span>").unwrap()];
        assert!(message.contains(phrase), "{query}: {message}");
        assert!(!html.contains(r#"id="predicted-price""#), "{query}");
        // What was typed is kept for correcting.
        assert!(html.contains(r#"name="model_year""#));
    }
    // The API agrees the first one is out of range.
    let (status, answer) = testkit::call(
        &api,
        "POST",
        "/predict",
        Some(json!({"model_year": 1800, "model": "ford f-150"}).to_string()),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(answer["field"], "model_year");
}

#[tokio::test]
async fn health_errors_and_headers_of_the_dashboard_port() {
    let (_dir, pages, _) = testkit::trained_dashboard::<CarVision>(1500);
    let (status, health) = testkit::call(&pages, "GET", "/health", None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["dashboard"], "CarVision Dashboard");
    assert!(health["model_version"].is_string());
    // Streamlit's health path, which the old dashboard's probes ask.
    assert_eq!(get(&pages, "/_stcore/health").await, (200, "ok".to_owned()));

    let (status, html) = get(&pages, "/no-such-page").await;
    assert_eq!(status, 404);
    assert!(
        html.contains("Page not found") && html.contains("<nav"),
        "{html}"
    );
    let (status, html) = testkit::call(&pages, "POST", "/", Some("{}".into())).await;
    assert_eq!(status, 405);
    assert!(
        html.as_str().is_some_and(|h| h.contains("<!DOCTYPE html>")),
        "{html}"
    );

    use tower::ServiceExt;
    let request = serving::axum::http::Request::get("/")
        .body(serving::axum::body::Body::empty())
        .unwrap();
    let response = pages.clone().oneshot(request).await.unwrap();
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    // The stylesheet is the binary's own; nothing on the pages comes from elsewhere.
    let (status, css) = get(&pages, "/assets/dashboard.css").await;
    assert_eq!(status, 200);
    assert!(css.contains(":focus-visible"));
    for page in ["/", "/market", "/model", "/predict"] {
        let (_, html) = get(&pages, page).await;
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("http://www.w3.org/2000/svg").count(),
            "{page} links elsewhere"
        );
        assert!(!html.contains("https://"), "{page} links elsewhere");
        assert!(!html.contains("<script"), "{page} runs a script");
        assert!(html.contains(r##"<a class="skip" href="#main">"##));
    }
}

#[tokio::test]
async fn without_a_model_or_its_data_the_dashboard_says_why_and_the_api_keeps_serving() {
    use serving::http::AppState;
    let pages = serving::dashboard::router(AppState::<CarVision>::with_dashboard(None));
    let (status, health) = testkit::call(&pages, "GET", "/health", None).await;
    assert_eq!(status, 503);
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(get(&pages, "/_stcore/health").await.0, 503);
    assert!(
        health["reason"]
            .as_str()
            .unwrap()
            .contains("no model is loaded"),
        "{health}"
    );
    let (status, html) = get(&pages, "/market").await;
    assert_eq!(status, 503);
    assert!(html.contains("no model is loaded"), "{html}");

    // A model version without the dashboard's data (trained by an older build).
    let dir = tempfile::tempdir().unwrap();
    testkit::train_into::<CarVision>(dir.path(), 1000, 3);
    let model_dir = dir.path().join("model");
    let stored = serving::artifact::read_current(&model_dir)
        .unwrap()
        .unwrap();
    let artifact: serving::artifact::Artifact<Value> =
        serde_json::from_slice(&stored.model_bytes).unwrap();
    let mut metrics = stored.metrics.clone();
    metrics.as_object_mut().unwrap().remove("version_files");
    let stripped = tempfile::tempdir().unwrap();
    serving::artifact::save(stripped.path(), &artifact, &metrics, &[]).unwrap();
    let model = serving::model::load::<CarVision>(stripped.path())
        .unwrap()
        .unwrap();
    let state = AppState::<CarVision>::with_dashboard(Some(model));
    let pages = serving::dashboard::router(state.clone());
    let api = serving::router(state);
    let (status, health) = testkit::call(&pages, "GET", "/health", None).await;
    assert_eq!(status, 503);
    assert!(
        health["reason"].as_str().unwrap().contains("retrain"),
        "{health}"
    );
    let (status, _) = testkit::call(&api, "GET", "/health", None).await;
    assert_eq!(status, 200, "the API serves the model all the same");
}
