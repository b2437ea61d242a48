//! `/model`: the served model's held-out metrics against the median-price baseline, where it
//! came from, and its errors by price band.

use maud::{html, Markup, Render};
use serde_json::Value;
use serving::axum::extract::State;
use serving::axum::http::StatusCode;
use serving::axum::response::Response;
use serving::dashboard::chart::{BarList, BarRow};
use serving::dashboard::format::{count, decimal, money, percent, signed_money};
use serving::dashboard::{self, figure, key_figure, Pages, Unavailable};

use serving::loaded::Loaded;

use super::data::Evaluation;
use crate::model::Model;
use crate::CarVision;

/// One row of the metrics table.
struct Metric {
    key: &'static str,
    name: &'static str,
    what: &'static str,
    higher_is_better: bool,
    show: fn(f64) -> String,
}

const METRICS: [Metric; 4] = [
    Metric {
        key: "rmse",
        name: "RMSE",
        what: "root mean squared error, in dollars",
        higher_is_better: false,
        show: money,
    },
    Metric {
        key: "mae",
        name: "MAE",
        what: "mean absolute error, in dollars",
        higher_is_better: false,
        show: money,
    },
    Metric {
        key: "r2",
        name: "R²",
        what: "share of the price variance explained; 1 is perfect, 0 no better than the mean",
        higher_is_better: true,
        show: |v| decimal(v, 3),
    },
    Metric {
        key: "mape",
        name: "MAPE",
        what: "mean absolute error over the price",
        higher_is_better: false,
        show: |v| percent(v / 100.0, 1),
    },
];

pub async fn page(
    State(pages): State<Pages<CarVision>>,
) -> Result<Response, Unavailable<CarVision>> {
    let view = dashboard::view(&pages)?;
    let model = &view.model;
    let metrics = &model.metrics;
    let evaluation = view.dashboard.evaluation();
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let main = html! {
        p.lead {
            "How the model the API serves did on the " (count(evaluation.test_rows as f64))
            " listings held out of its training, against always guessing the median training price."
        }
        dl.figures {
            (key_figure("rmse", "RMSE", &money(number(&metrics["rmse"])), number(&metrics["rmse"]),
                Some(&format!("baseline {}", money(number(&metrics["baseline"]["rmse"]))))))
            (key_figure("r2", "R²", &decimal(number(&metrics["r2"]), 3), number(&metrics["r2"]),
                Some(&format!("baseline {}", decimal(number(&metrics["baseline"]["r2"]), 3)))))
            (key_figure("test_rows", "Held-out listings", &count(evaluation.test_rows as f64), evaluation.test_rows as f64, None))
        }
        div.grid-2 {
            (metrics_table(metrics))
            (provenance(model))
            (errors_by_band(evaluation))
            (bias_by_band(evaluation))
        }
        (consistency(metrics, evaluation))
    };
    Ok(dashboard::respond(
        StatusCode::OK,
        dashboard::page::<CarVision>("/model", "The served model", Some(model), main),
    ))
}

fn metrics_table(metrics: &Value) -> Markup {
    let rows: Vec<BarRow> = ["rmse", "mae"]
        .iter()
        .flat_map(|key| {
            let name = if *key == "rmse" { "RMSE" } else { "MAE" };
            let model = metrics[key].as_f64().unwrap_or(f64::NAN);
            let baseline = metrics["baseline"][key].as_f64().unwrap_or(f64::NAN);
            [
                BarRow {
                    label: format!("{name}, model"),
                    value: model,
                    text: money(model),
                },
                BarRow {
                    label: format!("{name}, median baseline"),
                    value: baseline,
                    text: money(baseline),
                },
            ]
        })
        .collect();
    let chart = BarList {
        id: "errors-vs-baseline-chart".into(),
        title: "Model against the median baseline, in dollars".into(),
        description: rows
            .iter()
            .map(|r| format!("{} {}", r.label, r.text))
            .collect::<Vec<_>>()
            .join("; "),
        rows,
    };
    let table = html! {
        table #metrics {
            caption { "Held-out metrics; the better of each pair is marked" }
            thead { tr { th scope="col" { "Metric" } th.num scope="col" { "Model" } th.num scope="col" { "Median baseline" } } }
            tbody {
                @for m in &METRICS {
                    @let model = metrics[m.key].as_f64().unwrap_or(f64::NAN);
                    @let baseline = metrics["baseline"][m.key].as_f64().unwrap_or(f64::NAN);
                    @let model_better = if m.higher_is_better { model > baseline } else { model < baseline };
                    tr data-metric=(m.key) {
                        th scope="row" { (m.name) br; small { (m.what) } }
                        td.num.better[model_better] data-value=(model) { ((m.show)(model)) @if model_better { " (better)" } }
                        td.num.better[!model_better] data-value=(baseline) { ((m.show)(baseline)) @if !model_better { " (better)" } }
                    }
                }
            }
        }
    };
    let caption = html! {
        "Lower errors are better. The baseline prices every car at "
        strong { (money(metrics["baseline"]["price"].as_f64().unwrap_or(f64::NAN))) }
        ", the median of the training prices."
    };
    html! {
        figure #metrics-vs-baseline aria-labelledby="metrics-vs-baseline-heading" {
            h2 #metrics-vs-baseline-heading { "Metrics against the baseline" }
            (chart.render())
            figcaption { (caption) }
            div.table-wrap { (table) }
        }
    }
}

fn provenance(model: &Loaded<Model>) -> Markup {
    let m = &model.metrics;
    let text = |key: &str| match &m[key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    html! {
        section.card aria-labelledby="provenance-heading" {
            h2 #provenance-heading { "Version" }
            table #provenance {
                tbody {
                    tr { th scope="row" { "Model version" } td data-key="model_version" { code { (model.version) } } }
                    @match (&model.info.registry_model, &model.info.registry_version) {
                        (Some(name), Some(version)) => {
                            tr { th scope="row" { "MLflow registered model" } td data-key="registry_model" { (name) } }
                            tr { th scope="row" { "Registry version" } td data-key="registry_version" { (version) } }
                            tr { th scope="row" { "Registry alias" } td data-key="registry_alias" {
                                (model.info.registry_alias.as_deref().unwrap_or("none (not promoted)"))
                            } }
                        }
                        _ => {
                            tr { th scope="row" { "MLflow registry" } td data-key="registry_model" { "not registered (train with --register-model)" } }
                        }
                    }
                    @if let Some(run) = text("mlflow_run_id") {
                        tr { th scope="row" { "MLflow run" } td { code { (run) } } }
                    }
                    tr { th scope="row" { "Algorithm" } td { (text("model").unwrap_or_default()) } }
                    tr { th scope="row" { "Trees, depth, learning rate" } td {
                        (m["params"]["iterations"]) ", " (m["params"]["max_depth"]) ", "
                        (decimal(m["params"]["learning_rate"].as_f64().unwrap_or(f64::NAN), 4))
                    } }
                    tr { th scope="row" { "Trained on" } td {
                        code { (text("data_file").unwrap_or_else(|| "?".into())) }
                        @if let Some(sha) = text("data_sha256") { br; small { "SHA-256 " code { (sha.get(..16).unwrap_or(&sha)) "…" } } }
                    } }
                    tr { th scope="row" { "Rows read, outside the price band" } td {
                        (count(m["rows"].as_f64().unwrap_or(f64::NAN))) ", " (count(m["rows_outside_price_band"].as_f64().unwrap_or(f64::NAN)))
                    } }
                    tr { th scope="row" { "Training and held-out rows" } td {
                        (count(m["train_rows"].as_f64().unwrap_or(f64::NAN))) " and " (count(m["test_rows"].as_f64().unwrap_or(f64::NAN)))
                    } }
                    tr { th scope="row" { "Seed" } td { (model.seed) } }
                    @if let Some(seconds) = m["training_seconds"].as_f64() {
                        tr { th scope="row" { "Training time" } td { (format!("{seconds:.1} s")) } }
                    }
                }
            }
        }
    }
}

fn bands_table(e: &Evaluation) -> Markup {
    html! {
        table #residuals {
            thead { tr {
                th scope="col" { "Actual price" } th.num scope="col" { "Held-out listings" }
                th.num scope="col" { "MAE" } th.num scope="col" { "Mean error" } th.num scope="col" { "MAPE" }
            } }
            tbody {
                @for b in &e.bands {
                    tr {
                        th scope="row" { (b.label) } td.num { (count(b.count as f64)) }
                        td.num { (money(b.mae)) } td.num { (signed_money(b.bias)) } td.num { (percent(b.mape, 1)) }
                    }
                }
            }
        }
    }
}

fn errors_by_band(e: &Evaluation) -> Markup {
    let chart = BarList {
        id: "mae-by-band-chart".into(),
        title: "Mean absolute error by price band".into(),
        description: e
            .bands
            .iter()
            .map(|b| {
                format!(
                    "{}: {} ({} listings)",
                    b.label,
                    money(b.mae),
                    count(b.count as f64)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        rows: e
            .bands
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| BarRow {
                label: b.label.into(),
                value: b.mae,
                text: format!("{} · {}", money(b.mae), percent(b.mape, 0)),
            })
            .collect(),
    };
    let caption = html! {
        "Held-out listings grouped by their actual price; beside each error, the same as a share of the price (MAPE)."
    };
    figure(
        "residuals-by-band",
        "Errors by price band",
        chart.render(),
        caption,
        bands_table(e),
    )
}

fn bias_by_band(e: &Evaluation) -> Markup {
    let chart = BarList {
        id: "bias-by-band-chart".into(),
        title: "Mean error (predicted minus actual) by price band".into(),
        description: e
            .bands
            .iter()
            .map(|b| format!("{}: {}", b.label, signed_money(b.bias)))
            .collect::<Vec<_>>()
            .join("; "),
        rows: e
            .bands
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| BarRow {
                label: b.label.into(),
                value: b.bias,
                text: signed_money(b.bias),
            })
            .collect(),
    };
    let drawn = || e.bands.iter().filter(|b| b.count > 0);
    let high = drawn().max_by(|a, b| a.bias.total_cmp(&b.bias));
    let low = drawn().min_by(|a, b| a.bias.total_cmp(&b.bias));
    let caption = html! {
        "Predicted minus actual price, averaged over each band: right of the line (+) the model prices the band too high, left (−) too low."
        @if let (Some(high), Some(low)) = (high, low) {
            " Most overpriced: " strong { (high.label) } " (" (signed_money(high.bias)) "); most underpriced: "
            strong { (low.label) } " (" (signed_money(low.bias)) ")."
        }
    };
    figure(
        "bias-by-band",
        "Residuals by price band",
        chart.render(),
        caption,
        html! {
            table {
                thead { tr { th scope="col" { "Actual price" } th.num scope="col" { "Held-out listings" } th.num scope="col" { "Mean error" } } }
                tbody {
                    @for b in &e.bands {
                        tr { th scope="row" { (b.label) } td.num { (count(b.count as f64)) } td.num { (signed_money(b.bias)) } }
                    }
                }
            }
        },
    )
}

/// The recorded metrics should be what the stored data and the served model give again.
fn consistency(metrics: &Value, e: &Evaluation) -> Markup {
    let recorded = metrics["rmse"].as_f64().unwrap_or(f64::NAN);
    let same = (e.metrics.rmse - recorded).abs() <= 1e-6 * recorded.abs().max(1.0);
    html! {
        @if same {
            p.lead #consistency data-value=(e.metrics.rmse) {
                "The errors by band are recomputed from the stored training data and the served model: they give the recorded RMSE again ("
                (money(e.metrics.rmse)) " on " (count(e.test_rows as f64)) " listings)."
            }
        } @else {
            div.notice #consistency role="note" data-value=(e.metrics.rmse) {
                p {
                    "Recomputed from the stored data, the held-out RMSE is " (money(e.metrics.rmse))
                    ", not the recorded " (money(recorded)) ": the model was trained by a different build, so the errors by band may not match its metrics."
                }
            }
        }
    }
}
