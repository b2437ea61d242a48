//! `/openapi.json`, assembled from the service's own request and response types, so the
//! document cannot drift from what the handlers accept.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, Required,
};
use utoipa::ToSchema;

use crate::http::{BatchRequest, BatchResponse, ErrorBody, Health};
use crate::{Service, API_VERSION};

fn json_content(schema_name: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema_name)))
        .build()
}

fn response(description: &str, schema_name: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json_content(schema_name))
        .build()
}

fn post_json(summary: &str, request: &str, ok: &str) -> PathItem {
    let operation = OperationBuilder::new()
        .summary(Some(summary))
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", json_content(request))
                .build(),
        ))
        .response("200", response("The prediction", ok))
        .response(
            "422",
            response("Invalid input; `field` names the culprit", "ErrorBody"),
        )
        .response("503", response("No model is loaded", "ErrorBody"));
    PathItem::new(HttpMethod::Post, operation)
}

fn get(summary: &str, ok: Option<&str>) -> PathItem {
    let ok_response = match ok {
        Some(schema) => response("OK", schema),
        None => ResponseBuilder::new().description("OK").build(),
    };
    PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .summary(Some(summary))
            .response("200", ok_response),
    )
}

/// The OpenAPI 3.1 document of service `S`, as JSON text.
pub fn document<S: Service>() -> String {
    let request = S::Request::name();
    let response_name = S::Response::name();
    let mut health = get("Readiness: 200 when a model is loaded", Some("Health"));
    if let Some(op) = health.get.as_mut() {
        op.responses.responses.insert(
            "503".into(),
            response("No model is loaded", "Health").into(),
        );
    }
    let paths = PathsBuilder::new()
        .path("/", get("Service name, version and links", None))
        .path("/health", health)
        .path("/metrics", get("Prometheus metrics (text format)", None))
        .path("/openapi.json", get("This document", None))
        .path(
            "/predict",
            post_json("Predict one item", &request, &response_name),
        )
        .path(
            "/predict_batch",
            post_json(
                "Predict 1 to 1000 items",
                &BatchRequest::<S::Request>::name(),
                &BatchResponse::<S::Response>::name(),
            ),
        );
    let mut components = ComponentsBuilder::new()
        .schema_from::<S::Request>()
        .schema_from::<S::Response>()
        .schema_from::<BatchRequest<S::Request>>()
        .schema_from::<BatchResponse<S::Response>>()
        .schema_from::<Health>()
        .schema_from::<ErrorBody>();
    let mut nested = Vec::new();
    S::Request::schemas(&mut nested);
    S::Response::schemas(&mut nested);
    for (name, schema) in nested {
        components = components.schema(name, schema);
    }
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(S::TITLE)
                .version(API_VERSION)
                .description(Some(S::DESCRIPTION)),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build();
    doc.to_json()
        .expect("an OpenAPI document always serializes")
}
