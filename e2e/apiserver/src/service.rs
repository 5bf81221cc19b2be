//! HTTP request handling: token check, faults, routing, and the request log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::discovery;
use crate::error::ApiError;
use crate::faults::{FailRule, RequestRecord, StallRule};
use crate::patch::PatchType;
use crate::registry::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::server::ApiServer;
use crate::table::{self, IncludeObject};
use crate::verbs::{self, ListParams, Target};
use crate::watch::{self, WatchParams};

/// Response body type of every handler.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// Largest request body accepted, the real server's limit for JSON bodies.
const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Prefix of the control endpoints, which are neither logged nor faulted.
const CONTROL_PREFIX: &str = "/_gangway/";

/// Handles one request.
pub async fn handle(server: ApiServer, request: Request<Incoming>) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();

    if let Some(control_path) = path.strip_prefix(CONTROL_PREFIX) {
        let control_path = control_path.to_string();
        return match control(&server, &method, &control_path, request).await {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
    }

    let user_agent = header_text(&request, header::USER_AGENT, "");
    let (user, response) = match bearer_user(&server, &request) {
        Ok(user) => (
            user,
            handle_api(&server, &method, &path, &query, request).await,
        ),
        Err(error) => (None, Err(error)),
    };
    let response = response.unwrap_or_else(|error| {
        if error.status_code().is_server_error() && !matches!(error, ApiError::Injected { .. }) {
            tracing::warn!(%method, %path, %error, "request failed");
        }
        error_response(&error)
    });
    tracing::debug!(%method, %path, %query, status = response.status().as_u16(), "handled request");
    server.shared.faults.record(RequestRecord {
        method: method.to_string(),
        path,
        query,
        status: response.status().as_u16(),
        user: user.unwrap_or_default(),
        user_agent,
    });
    response
}

/// Returns the user named by the bearer token: `None` for a request without one, and
/// 401 Unauthorized for a token this server did not issue.
///
/// Requests without a token are served, because kubectl (client-go) sends credentials
/// only over TLS and this server speaks plain HTTP.
fn bearer_user(
    server: &ApiServer,
    request: &Request<Incoming>,
) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    server
        .user_of(token.trim())
        .map(Some)
        .ok_or(ApiError::Unauthorized)
}

async fn handle_api(
    server: &ApiServer,
    method: &Method,
    path: &str,
    query: &str,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let verdict = server.shared.faults.check(method, path);
    if let Some(delay) = verdict.stall {
        tokio::time::sleep(delay).await;
    }
    if let Some(failure) = verdict.failure {
        return Err(failure);
    }

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let segments: Vec<&str> = match segments.split_last() {
        Some((&"", rest)) => rest.to_vec(),
        _ => segments,
    };
    let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();

    match segments.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => Ok(text_response(StatusCode::OK, "ok")),
        ["version"] => Ok(json_response(StatusCode::OK, &discovery::version())),
        ["api"] => Ok(json_response(
            StatusCode::OK,
            &discovery::core_versions(&server.address().to_string()),
        )),
        ["apis"] => Ok(json_response(StatusCode::OK, &discovery::group_list())),
        ["apis", group] => discovery::group(group)
            .map(|document| json_response(StatusCode::OK, &document))
            .ok_or(ApiError::PathNotFound),
        ["api", version] => found(discovery::resource_list("", version)),
        ["apis", group, version] => found(discovery::resource_list(group, version)),
        ["openapi", "v3"] => Ok(json_response(StatusCode::OK, &discovery::openapi_index())),
        ["openapi", "v3", "api", version] => found(discovery::openapi_document("", version)),
        ["openapi", "v3", "apis", group, version] => {
            found(discovery::openapi_document(group, version))
        }
        ["api", version, rest @ ..] => {
            let route = route_resource("", version, rest)?;
            handle_resource(server, method, route, &params, request).await
        }
        ["apis", group, version, rest @ ..] => {
            let route = route_resource(group, version, rest)?;
            handle_resource(server, method, route, &params, request).await
        }
        _ => Err(ApiError::PathNotFound),
    }
}

fn found(document: Option<Value>) -> Result<Response<ResponseBody>, ApiError> {
    document
        .map(|document| json_response(StatusCode::OK, &document))
        .ok_or(ApiError::PathNotFound)
}

/// A request on a resource, parsed from the path after the group version.
struct ResourceRoute<'a> {
    resource: &'static ResourceType,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    status: bool,
    /// The path had the legacy `/watch/` segment.
    legacy_watch: bool,
}

fn route_resource<'a>(
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Result<ResourceRoute<'a>, ApiError> {
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let lookup =
        |plural: &str| registry::lookup(group, version, plural).ok_or(ApiError::PathNotFound);
    let namespaced = |plural: &str| lookup(plural).ok().filter(|resource| resource.namespaced);

    let (resource, namespace, tail): (&'static ResourceType, Option<&'a str>, &[&'a str]) =
        match rest {
            ["namespaces", namespace, plural, tail @ ..] if namespaced(plural).is_some() => (
                namespaced(plural).expect("checked by the guard"),
                Some(*namespace),
                tail,
            ),
            [plural, tail @ ..] => (lookup(plural)?, None, tail),
            [] => return Err(ApiError::PathNotFound),
        };
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, subresource] => (Some(*name), Some(*subresource)),
        _ => return Err(ApiError::PathNotFound),
    };
    let status = match subresource {
        None => false,
        Some("status") if resource.status_subresource => true,
        Some(_) => return Err(ApiError::PathNotFound),
    };
    // A namespaced resource addressed without a namespace can only be listed or
    // watched across all namespaces.
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::PathNotFound);
    }
    if legacy_watch && status {
        return Err(ApiError::PathNotFound);
    }
    Ok(ResourceRoute {
        resource,
        namespace,
        name,
        status,
        legacy_watch,
    })
}

fn parse_selectors(
    params: &HashMap<String, String>,
    resource: &ResourceType,
) -> Result<Selectors, ApiError> {
    let bad_request =
        |error: crate::selector::SelectorError| ApiError::BadRequest(error.to_string());
    let labels = match params.get("labelSelector") {
        Some(text) => LabelSelector::parse(text).map_err(bad_request)?,
        None => LabelSelector::default(),
    };
    let fields = match params.get("fieldSelector") {
        Some(text) => FieldSelector::parse(text, resource).map_err(bad_request)?,
        None => FieldSelector::default(),
    };
    Ok(Selectors { labels, fields })
}

fn flag(params: &HashMap<String, String>, name: &str) -> Option<bool> {
    params
        .get(name)
        .map(|value| matches!(value.as_str(), "true" | "1"))
}

async fn handle_resource(
    server: &ApiServer,
    method: &Method,
    route: ResourceRoute<'_>,
    params: &HashMap<String, String>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    // NOTE: fieldValidation is accepted and ignored: unknown fields are stored as sent,
    // where the real server with fieldValidation=Strict rejects them.
    let target = Target {
        resource: route.resource,
        namespace: route.namespace,
        status: route.status,
    };
    let dry_run = params.get("dryRun").is_some_and(|value| value == "All");
    let accept = header_text(&request, header::ACCEPT, "");
    let table = table::accepts_table(&accept)
        .then(|| {
            IncludeObject::parse(params.get("includeObject").map(String::as_str)).ok_or_else(|| {
                ApiError::BadRequest("includeObject must be None, Metadata or Object".into())
            })
        })
        .transpose()?;

    match *method {
        Method::GET if route.legacy_watch || flag(params, "watch") == Some(true) => {
            watch_resource(server, route, params, table)
        }
        Method::GET => {
            let store = server.lock_store();
            match route.name {
                Some(name) => {
                    let object = verbs::get(&store, target, name)?;
                    drop(store);
                    let body = match table {
                        Some(include) => {
                            let metadata = json!({"resourceVersion": crate::object::resource_version(&object)});
                            table::render(route.resource, &[object], include, metadata)
                        }
                        None => object,
                    };
                    Ok(json_response(StatusCode::OK, &body))
                }
                None => {
                    let list_params = ListParams {
                        selectors: parse_selectors(params, route.resource)?,
                        limit: match params.get("limit") {
                            Some(text) => text.parse().map_err(|_| {
                                ApiError::BadRequest(format!("invalid limit {text:?}"))
                            })?,
                            None => 0,
                        },
                        continue_token: params
                            .get("continue")
                            .filter(|token| !token.is_empty())
                            .cloned(),
                        resource_version: params.get("resourceVersion").cloned(),
                        resource_version_match: params.get("resourceVersionMatch").cloned(),
                    };
                    let page = verbs::list(&store, target, &list_params)?;
                    drop(store);
                    let body = match table {
                        Some(include) => table::render(
                            route.resource,
                            &page.items,
                            include,
                            page.list_metadata(),
                        ),
                        None => page.to_list(route.resource),
                    };
                    Ok(json_response(StatusCode::OK, &body))
                }
            }
        }
        Method::POST if route.name.is_none() => {
            if route.resource.namespaced && route.namespace.is_none() {
                return Err(ApiError::MethodNotAllowed);
            }
            let body = read_json(request).await?;
            let created = verbs::create(&mut server.lock_store(), target, body, dry_run)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        Method::PUT => {
            let name = route.name.ok_or(ApiError::MethodNotAllowed)?;
            let body = read_json(request).await?;
            let updated = verbs::update(&mut server.lock_store(), target, name, body, dry_run)?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        Method::PATCH => {
            let name = route.name.ok_or(ApiError::MethodNotAllowed)?;
            let content_type = header_text(&request, header::CONTENT_TYPE, "");
            let patch_type = PatchType::from_content_type(&content_type)?;
            let body = read_body(request).await?;
            let mut store = server.lock_store();
            let existed = verbs::get(&store, target, name).is_ok();
            let patched = verbs::patch(&mut store, target, name, patch_type, &body, dry_run)?;
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &patched))
        }
        Method::DELETE if !route.status => {
            let body = read_body(request).await?;
            let options: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).map_err(|error| {
                    ApiError::BadRequest(format!("invalid DeleteOptions: {error}"))
                })?
            };
            let mut store = server.lock_store();
            let result = match route.name {
                Some(name) => verbs::delete(&mut store, target, name, &options, dry_run)?,
                None => {
                    let selectors = parse_selectors(params, route.resource)?;
                    verbs::delete_collection(&mut store, target, &selectors, &options, dry_run)?
                }
            };
            Ok(json_response(StatusCode::OK, &result))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn watch_resource(
    server: &ApiServer,
    route: ResourceRoute<'_>,
    params: &HashMap<String, String>,
    table: Option<IncludeObject>,
) -> Result<Response<ResponseBody>, ApiError> {
    if route.status {
        return Err(ApiError::MethodNotAllowed);
    }
    let timeout = match params.get("timeoutSeconds") {
        Some(text) => Some(Duration::from_secs(text.parse().map_err(|_| {
            ApiError::BadRequest(format!("invalid timeoutSeconds {text:?}"))
        })?)),
        None => None,
    };
    let watch_params = WatchParams {
        namespace: route.namespace.map(str::to_string),
        name: route.name.map(str::to_string),
        selectors: parse_selectors(params, route.resource)?,
        resource_version: params.get("resourceVersion").cloned(),
        resource_version_match: params.get("resourceVersionMatch").cloned(),
        send_initial_events: flag(params, "sendInitialEvents"),
        allow_bookmarks: flag(params, "allowWatchBookmarks") == Some(true),
        timeout,
        table,
    };
    let body = watch::start(
        &server.shared.store,
        route.resource,
        watch_params,
        server.shared.config.bookmark_interval,
    )?;
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::RequestEntityTooLarge(MAX_BODY_BYTES))
        }
        Err(error) => Err(ApiError::BadRequest(format!(
            "failed to read the request body: {error}"
        ))),
    }
}

/// Reads a JSON or YAML request body.
async fn read_json(request: Request<Incoming>) -> Result<Value, ApiError> {
    let content_type = header_text(&request, header::CONTENT_TYPE, "application/json");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    // TODO: decode protobuf bodies, so that kubectl's generator commands (`kubectl
    // create namespace`, `kubectl create secret`), which send protobuf, work too.
    let yaml = match media_type {
        "" | "application/json" | "*/*" => false,
        "application/yaml" => true,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "application/json, application/yaml".into(),
            ));
        }
    };
    let body = read_body(request).await?;
    if yaml {
        return crate::patch::parse_apply_body(&body);
    }
    serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "failed to decode the request body as JSON: {error}"
        ))
    })
}

/// Handles a control request under `/_gangway/`.
async fn control(
    server: &ApiServer,
    method: &Method,
    path: &str,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, ApiError> {
    let body = read_body(request).await?;
    let decode = |what: &str| -> Result<Value, ApiError> {
        if body.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::BadRequest(format!("invalid {what} body: {error}")))
    };
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    match (method.as_str(), path) {
        ("GET", "requests") => ok(json!(server.requests())),
        ("DELETE", "requests") => {
            server.clear_requests();
            ok(json!({}))
        }
        ("DELETE", "faults") => {
            server.clear_faults();
            ok(json!({}))
        }
        ("POST", "faults/drop-watches") => ok(json!({"dropped": server.drop_watches()})),
        ("POST", "faults/compact") => ok(json!({"resourceVersion": server.compact().to_string()})),
        ("POST", "faults/fail") => {
            let rule: FailRule = serde_json::from_value(decode("fail rule")?)
                .map_err(|error| ApiError::BadRequest(format!("invalid fail rule: {error}")))?;
            server
                .fail_requests(rule)
                .map_err(|error| ApiError::BadRequest(error.to_string()))?;
            ok(json!({}))
        }
        ("POST", "faults/stall") => {
            let rule: StallRule = serde_json::from_value(decode("stall rule")?)
                .map_err(|error| ApiError::BadRequest(format!("invalid stall rule: {error}")))?;
            server.stall_requests(rule);
            ok(json!({}))
        }
        ("POST", "faults/restart") => {
            let down_millis = decode("restart")?["downMillis"].as_u64().unwrap_or(0);
            // Stopping waits for in-flight requests, this one included, so the restart
            // runs on another task after this response is sent.
            server.request_restart(Duration::from_millis(down_millis));
            Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({"downMillis": down_millis}),
            ))
        }
        _ => Err(ApiError::PathNotFound),
    }
}

/// Returns a header as text, or `default` when it is missing or not visible ASCII.
fn header_text(request: &Request<Incoming>, name: header::HeaderName, default: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or(default)
        .to_string()
}

fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let bytes = serde_json::to_vec(body).expect("a JSON value always serializes");
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<ResponseBody> {
    let mut response = json_response(error.status_code(), &error.to_status());
    if let Some(seconds) = error.retry_after_seconds() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
