//! The OpenAPI 3.1 document of the whole API, generated from the handlers and types.

use std::sync::Arc;

use axum::{Json, extract::State};
use courier_core::domain::rules;
use courier_core::settings::JobLimits;
use serde_json::{Value, json};
use utoipa::{Modify, OpenApi};

use crate::{error::Problem, requests::*, routes::*, state::AppState, views::*};
use courier_core::JobState;
use courier_core::domain::{FieldError, Method};
use courier_core::schedule::{CatchupPolicy, Overlap};

#[derive(OpenApi)]
#[openapi(
    info(title = "Courier", description = "A self-hosted HTTP job scheduler."),
    paths(create_job, create_batch, get_job, list_executions, list_jobs, cancel_job, retry_job, report_progress,
          list_queues, get_queue, get_queue_settings, patch_queue_settings, pause_queue, resume_queue,
          list_flow_keys, get_flow_key, put_flow_key, delete_flow_key, create_schedule, put_schedule, patch_schedule, get_schedule,
          list_schedules, delete_schedule, pause_schedule, resume_schedule, trigger_schedule,
          backfill_schedule, list_runs, bulk_retry, bulk_cancel, list_audit, queue_throughput, metrics,
          sign_in, get_session, sign_out, healthz, readyz),
    components(schemas(JobRequest, TargetRequest, BackoffRequest, Method, JobState, BatchRequest, BatchAccepted,
                       JobView, TargetView, BackoffView, LastOutcome, CallbackRequest, CallbackView,
                       CallbackRef, ProgressView, ProgressRequest, JobPage, ExecutionView, ExecutionList,
                       QueueView, QueueList, Problem, FieldError, ReadyChecks, OccurrenceView,
                       ScheduleRequest, CatchupRequest, SchedulePatch, PauseRequest, BackfillRequest,
                       ScheduleView, CatchupView, JobTemplateView, ScheduleList, RunView, RunPage,
                       Overlap, CatchupPolicy, QueueSettingsPatch, RateRequest, FlowKeyRequest,
                       QueueSettingsView, RateView, FlowKeyView, FlowKeyQueueView, FlowKeyList, FlowKeyLimitsView,
                       BulkRequest, BulkFilterRequest, BulkResult, AuditView, AuditPage, MinuteView,
                       ThroughputView, SessionView, SignInRequest)),
    tags((name = "jobs"), (name = "queues"), (name = "flow-keys"), (name = "schedules"), (name = "audit"), (name = "dashboard"), (name = "health")),
    modifiers(&ApiKeys)
)]
pub struct ApiDoc;

/// Every `/v1` operation needs a bearer API key and may answer 401, 403 and 429.
struct ApiKeys;

impl Modify for ApiKeys {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Content, RefOr, ResponseBuilder,
            security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `courier-api keys create`"))
                    .build(),
            ),
        );
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "Problem",
                        )))),
                    )
                    .build(),
            )
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            // A progress report carries its attempt's token instead (its own responses
            // say so).
            if !path.starts_with("/v1/") || path.ends_with("/progress") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new(
                    "api_key",
                    Vec::<String>::new(),
                )]);
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    problem("No API key, or an unknown or revoked one"),
                );
                responses
                    .entry("403".into())
                    .or_insert_with(|| problem("The key's scope or queues do not allow this"));
                responses.insert(
                    "429".into(),
                    problem("The key is over its rate limit; see Retry-After"),
                );
            }
        }
    }
}

/// `GET /openapi.json`: the document made at start-up for this server's settings.
pub async fn serve(State(state): State<AppState>) -> Json<Arc<Value>> {
    Json(Arc::clone(&state.document))
}

/// The document for these limits: every bound and pattern the parsing enforces declared
/// from the same constants ([`crate::requests::declared`]), and links from a created job
/// to the operations on it, so that clients (and fuzzers) can follow the `id` a
/// `POST /v1/jobs` returns. Links are added to the JSON because utoipa 5 writes a link's
/// `operationId` as `operation_id`.
pub fn document(limits: &JobLimits) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    for declared in crate::requests::declared(limits) {
        let schema = doc
            .pointer_mut(&format!("/components/schemas/{}", declared.schema))
            .unwrap_or_else(|| panic!("no schema {} in the document", declared.schema));
        let target =
            declared
                .field
                .split('.')
                .filter(|f| !f.is_empty())
                .fold(schema, |at, field| {
                    at.pointer_mut(&format!("/properties/{field}"))
                        .unwrap_or_else(|| {
                            panic!("no field {} in {}", declared.field, declared.schema)
                        })
                });
        apply(target, &declared.rule);
    }
    declare_parameters(&mut doc);
    declare_operations(&mut doc);
    forbid_nul(&mut doc);
    let links: serde_json::Map<_, _> = ["get_job", "list_executions", "cancel_job", "retry_job"]
        .into_iter()
        .map(|operation| {
            (
                operation.to_owned(),
                serde_json::json!({"operationId": operation, "parameters": {"id": "$response.body#/id"}}),
            )
        })
        .collect();
    for status in ["200", "201"] {
        if let Some(response) = doc
            .pointer_mut(&format!("/paths/~1v1~1jobs/post/responses/{status}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            response.insert("links".into(), links.clone().into());
        }
    }
    doc
}

/// Writes `rule` into the schema `at` (a field's, or a whole type's).
fn apply(at: &mut Value, rule: &Rule) {
    let object = at.as_object_mut().expect("a schema is an object");
    let mut set = |key: &str, value: Value| {
        object.insert(key.to_owned(), value);
    };
    match rule {
        Rule::Int(range) => {
            set("minimum", range.min.into());
            set("maximum", range.max.into());
        }
        Rule::Number {
            min,
            exclusive,
            max,
        } => {
            set(
                if *exclusive {
                    "exclusiveMinimum"
                } else {
                    "minimum"
                },
                json!(min),
            );
            set("maximum", json!(max));
        }
        Rule::Name(name) => set("pattern", name.pattern().into()),
        Rule::Pattern(pattern) => set("pattern", pattern.clone().into()),
        Rule::MaxChars(max) => set("maxLength", (*max).into()),
        Rule::Items(range) => {
            set("minItems", range.min.into());
            set("maxItems", range.max.into());
        }
        Rule::MaxProperties(max) => set("maxProperties", (*max).into()),
        Rule::OneOf(values) => {
            let mut values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
            values.push(Value::Null);
            set("enum", values.into());
        }
        Rule::DateTime => set("format", "date-time".into()),
        Rule::EachItem(rule) => apply(sub_schema(object, "items"), rule),
        Rule::Keys(rule) => apply(sub_schema(object, "propertyNames"), rule),
        Rule::Values(rule) => apply(sub_schema(object, "additionalProperties"), rule),
        Rule::All(rules) => rules.iter().for_each(|rule| apply(at, rule)),
        Rule::Schema(extra) if object.contains_key("$ref") || object.contains_key("oneOf") => {
            // A reference or a choice is narrowed beside it, where every tool reads it.
            *at = json!({"allOf": [at.take(), extra]});
        }
        Rule::Schema(extra) => {
            // Beside what is there: a property's constraints go into its own schema, a
            // whole type's next to its own keywords (`allOf` keeps both).
            let extra = extra.as_object().expect("a schema is an object");
            for (key, value) in extra {
                match (object.get_mut(key), value) {
                    (Some(Value::Object(mine)), Value::Object(theirs)) if key == "properties" => {
                        for (field, schema) in theirs {
                            mine.insert(field.clone(), schema.clone());
                        }
                    }
                    (Some(_), _) => {
                        let all = object
                            .entry("allOf")
                            .or_insert_with(|| Value::Array(Vec::new()));
                        all.as_array_mut()
                            .expect("allOf is a list")
                            .push(json!({ key: value }));
                    }
                    (None, _) => {
                        object.insert(key.clone(), value.clone());
                    }
                }
            }
        }
    }
}

/// The schema under `key` of `object`, made when missing.
fn sub_schema<'a>(object: &'a mut serde_json::Map<String, Value>, key: &str) -> &'a mut Value {
    let sub = object
        .entry(key)
        .or_insert_with(|| json!({"type": "string"}));
    if sub.is_boolean() {
        *sub = json!({});
    }
    sub
}

/// The path and query parameters' rules: names in paths, pages, a job list's filter.
fn declare_parameters(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_owned();
                let place = parameter["in"].as_str().unwrap_or_default().to_owned();
                let rule = match (place.as_str(), name.as_str()) {
                    ("path", "name") if path.starts_with("/v1/queues/") => {
                        Rule::Name(rules::QUEUE_NAME)
                    }
                    ("path", "name") if path.starts_with("/v1/schedules/") => {
                        Rule::Name(rules::SCHEDULE_NAME)
                    }
                    ("path", "key") => Rule::Name(rules::FLOW_KEY),
                    ("header", "Idempotency-Key") => {
                        Rule::Pattern(format!("^[!-~]{{1,{}}}$", rules::MAX_IDEMPOTENCY_KEY))
                    }
                    ("query", "limit") => Rule::Int(rules::PAGE_LIMIT),
                    ("query", "queue") => Rule::Name(rules::QUEUE_NAME),
                    ("query", "q") => Rule::MaxChars(rules::MAX_QUERY_TEXT),
                    ("query", "created_after" | "created_before") => Rule::DateTime,
                    ("query", "label") => Rule::EachItem(Box::new(Rule::Pattern(
                        crate::requests::LABEL_FILTER.into(),
                    ))),
                    // A cursor is the key of the last item of a page.
                    ("query", "cursor") => match path.as_str() {
                        "/v1/jobs" => Rule::Schema(json!({"format": "uuid"})),
                        "/v1/audit" => Rule::Pattern("^[1-9][0-9]{0,17}$".into()),
                        "/v1/schedules" => Rule::Name(rules::SCHEDULE_NAME),
                        _ => Rule::DateTime,
                    },
                    _ => continue,
                };
                if let Some(schema) = parameter.get_mut("schema") {
                    apply(schema, &rule);
                }
            }
        }
    }
}

/// What an operation takes beyond its body's type: a bulk action's states, and the name
/// `POST /v1/schedules` needs (`PUT` takes it from the path).
fn declare_operations(doc: &mut Value) {
    use courier_core::repo::bulk::BulkAction;
    for (path, action) in [
        ("/v1/jobs/bulk/retry", BulkAction::Retry),
        ("/v1/jobs/bulk/cancel", BulkAction::Cancel),
    ] {
        let states: Vec<Value> = action
            .states()
            .iter()
            .map(|s| json!(s.as_str()))
            .chain([Value::Null])
            .collect();
        body_schema(
            doc,
            path,
            "post",
            json!({
                "properties": {"filter": {"properties": {"state": {"enum": states}}}}
            }),
        );
    }
    body_schema(
        doc,
        "/v1/schedules",
        "post",
        json!({"required": ["name"], "properties": {"name": {"type": "string"}}}),
    );
}

/// Narrows the JSON body of `method path` with `extra`, beside its type's schema.
fn body_schema(doc: &mut Value, path: &str, method: &str, extra: Value) {
    let pointer = format!(
        "/paths/{}/{method}/requestBody/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    );
    let schema = doc
        .pointer_mut(&pointer)
        .unwrap_or_else(|| panic!("no JSON body for {method} {path}"));
    *schema = json!({"allOf": [schema.take(), extra]});
}

/// No string a request sends may hold U+0000 (PostgreSQL's text cannot store it):
/// every string of a request body's schemas and of the parameters, unless a pattern,
/// format or list of values already says what it holds.
fn forbid_nul(doc: &mut Value) {
    const NO_NUL: &str = "^[^\\u0000]*$";
    fn walk(schema: &mut Value, found: &mut Vec<String>) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if let Some(name) = object
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
        {
            found.push(name.to_owned());
        }
        let is_string = match object.get("type") {
            Some(Value::String(t)) => t == "string",
            Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
            _ => false,
        };
        if is_string
            && !["pattern", "format", "enum"]
                .iter()
                .any(|k| object.contains_key(*k))
        {
            object.insert("pattern".into(), NO_NUL.into());
        }
        for (key, sub) in object.iter_mut() {
            match key.as_str() {
                "properties" => sub
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|p| p.values_mut())
                    .for_each(|s| walk(s, found)),
                "allOf" | "oneOf" | "anyOf" => sub
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .for_each(|s| walk(s, found)),
                "items" | "additionalProperties" | "propertyNames" => walk(sub, found),
                _ => {}
            }
        }
    }
    let mut pending = Vec::new();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|i| i.values_mut())
        {
            for parameter in operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(schema) = parameter.get_mut("schema") {
                    walk(schema, &mut pending);
                }
            }
            if let Some(content) = operation
                .pointer_mut("/requestBody/content")
                .and_then(Value::as_object_mut)
            {
                for media in content.values_mut() {
                    if let Some(schema) = media.get_mut("schema") {
                        walk(schema, &mut pending);
                    }
                }
            }
        }
    }
    let mut done = std::collections::HashSet::new();
    while let Some(name) = pending.pop() {
        if done.insert(name.clone())
            && let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}"))
        {
            walk(schema, &mut pending);
        }
    }
}
