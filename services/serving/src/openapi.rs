//! `/openapi.json`: the request and response schemas come from the service's own types (their
//! bounds and allowed values included), the envelopes from [`crate::api`], so the document
//! states exactly what the handlers accept and answer.

use serde_json::{json, Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::api::{ErrorBody, Health, LastReload, Links, ModelInfo, Root, API_VERSION, MAX_BATCH};
use crate::drift::{DriftReport, FeatureDrift, Thresholds};
use crate::service::Service;

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref(schema) } }
    })
}

fn error(description: &str) -> Value {
    json_response(description, "ErrorBody")
}

fn post(summary: &str, request: &str, ok: &str) -> Value {
    json!({
        "post": {
            "summary": summary,
            "requestBody": {
                "required": true,
                "content": { "application/json": { "schema": schema_ref(request) } }
            },
            "responses": {
                "200": json_response("The prediction", ok),
                "400": error("The body could not be read"),
                "408": error("The body or the whole request took too long"),
                "413": error("The body is too large"),
                "422": error("Invalid input; `field` names the culprit"),
                "431": error("The request line and headers are too large"),
                "500": error("The service failed; it is logged"),
                "503": error("No model is loaded"),
            }
        }
    })
}

fn get(summary: &str, ok: Value) -> Value {
    json!({
        "get": {
            "summary": summary,
            "responses": { "200": ok, "500": error("The service failed; it is logged") }
        }
    })
}

fn collect<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

fn batch_request(item: &str, alias: Option<&str>) -> Value {
    let list = json!({
        "type": "array",
        "items": schema_ref(item),
        "minItems": 1,
        "maxItems": MAX_BATCH,
    });
    let mut schema = json!({
        "type": "object",
        "description": format!("1 to {MAX_BATCH} items to predict."),
        "properties": { "items": list },
        "additionalProperties": false,
        "required": ["items"],
    });
    if let Some(alias) = alias {
        schema["properties"][alias] = list;
        schema["description"] = format!(
            "1 to {MAX_BATCH} items to predict, under `items` or (as older clients send them) `{alias}`."
        )
        .into();
        let object = schema.as_object_mut().expect("an object");
        object.remove("required");
        object.insert(
            "oneOf".into(),
            json!([{ "required": ["items"] }, { "required": [alias] }]),
        );
    }
    schema
}

fn batch_response(item: &str, alias: Option<&str>) -> Value {
    let mut schema = json!({
        "type": "object",
        "properties": {
            "predictions": { "type": "array", "items": schema_ref(item) },
            "count": { "type": "integer", "minimum": 1, "maximum": MAX_BATCH },
            "batch_id": { "type": "string", "format": "uuid" },
            "processing_time_seconds": { "type": "number", "minimum": 0 },
        },
        "required": ["predictions", "count", "batch_id", "processing_time_seconds"],
    });
    if let Some(alias) = alias {
        let total = format!("total_{alias}");
        schema["properties"][&total] =
            json!({ "type": "integer", "minimum": 1, "maximum": MAX_BATCH });
        schema["required"]
            .as_array_mut()
            .expect("a list")
            .push(total.into());
    }
    schema
}

/// The OpenAPI 3.1 document of service `S`, as JSON text.
pub fn document<S: Service>(title: &str) -> String {
    let request = S::Request::name().into_owned();
    let response = S::Response::name().into_owned();
    let mut schemas = Vec::new();
    collect::<S::Request>(&mut schemas);
    collect::<S::Response>(&mut schemas);
    collect::<Health>(&mut schemas);
    collect::<Root>(&mut schemas);
    collect::<Links>(&mut schemas);
    collect::<LastReload>(&mut schemas);
    collect::<ModelInfo>(&mut schemas);
    collect::<ErrorBody>(&mut schemas);
    collect::<DriftReport>(&mut schemas);
    collect::<FeatureDrift>(&mut schemas);
    collect::<Thresholds>(&mut schemas);
    let mut components: Map<String, Value> = schemas
        .into_iter()
        .map(|(name, schema)| {
            let value = serde_json::to_value(schema).expect("a schema serializes");
            (name, value)
        })
        .collect();
    if let (Some(Value::Object(extras)), Some(Value::Object(schema))) =
        (S::request_schema_extras(), components.get_mut(&request))
    {
        schema.extend(extras);
    }
    components.insert(
        "BatchRequest".into(),
        batch_request(&request, S::BATCH_ALIAS),
    );
    components.insert(
        "BatchResponse".into(),
        batch_response(&response, S::BATCH_ALIAS),
    );

    let mut health = get(
        "Readiness: 200 when a model is loaded",
        json_response("A model is loaded", "Health"),
    );
    health["get"]["responses"]["503"] = json_response("No model is loaded", "Health");
    let mut drift = get(
        "Data drift: each feature's PSI of the rows predicted on since the model was loaded against its training data, and a verdict",
        json_response("The drift report; `verdict` is `no_reference` for a model trained without a profile", "DriftReport"),
    );
    drift["get"]["responses"]["503"] = error("No model is loaded");
    let metrics_text = json!({
        "description": "Prometheus metrics",
        "content": { "application/openmetrics-text": { "schema": { "type": "string" } } }
    });
    let this_document = json!({
        "description": "This document",
        "content": { "application/json": { "schema": { "type": "object" } } }
    });
    let doc = json!({
        "openapi": "3.1.0",
        "info": { "title": title, "version": API_VERSION, "description": S::DESCRIPTION },
        "paths": {
            "/": get("Service name, version, model and links", json_response("OK", "Root")),
            "/health": health,
            "/metrics": get("Prometheus metrics (text format)", metrics_text),
            "/openapi.json": get("This document", this_document),
            "/drift": drift,
            "/predict": post("Predict one item", &request, &response),
            "/predict_batch": post(&format!("Predict 1 to {MAX_BATCH} items"), "BatchRequest", "BatchResponse"),
        },
        "components": { "schemas": components },
    });
    serde_json::to_string(&doc).expect("an OpenAPI document always serializes")
}
