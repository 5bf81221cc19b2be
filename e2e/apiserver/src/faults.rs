//! Fault injection (failed and stalled requests) and the request log.

use std::sync::Mutex;
use std::time::Duration;

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Selects the requests a fault applies to. Empty fields match every request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// HTTP method, such as `PUT`; case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Prefix of the request path, such as `/apis/networking.k8s.io/v1/namespaces/default/ingresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

impl RequestMatch {
    /// Matches every request.
    pub fn any() -> Self {
        RequestMatch::default()
    }

    /// Matches requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
        self
    }

    /// Matches requests whose path starts with `prefix`.
    pub fn path_prefix(mut self, prefix: &str) -> Self {
        self.path_prefix = Some(prefix.to_string());
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|expected| expected.eq_ignore_ascii_case(method.as_str()))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }
}

/// Fails the next `count` matching requests with `status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailRule {
    /// Which requests fail.
    #[serde(flatten)]
    pub matching: RequestMatch,
    /// How many requests fail.
    pub count: u32,
    /// HTTP status code, 400 to 599.
    pub status: u16,
    /// `Retry-After` header value in seconds, as a rate-limited (429) answer carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// Delays matching requests before they are handled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StallRule {
    /// Which requests stall.
    #[serde(flatten)]
    pub matching: RequestMatch,
    /// How many requests stall; `None` stalls every matching request until the faults
    /// are cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The delay, in milliseconds in JSON.
    #[serde(rename = "delayMillis", with = "millis")]
    pub delay: Duration,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// A rule that cannot be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    /// The status code is not an HTTP error code.
    #[error("invalid fault status {0}: expected a code from 400 to 599")]
    InvalidStatus(u16),
}

/// One handled API request, as the request log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string, empty when there is none.
    pub query: String,
    /// HTTP status code of the response. A watch counts as 200 when its stream starts.
    pub status: u16,
    /// User named by the bearer token, empty for requests without one (kubectl sends
    /// no token over plain HTTP).
    pub user: String,
    /// `User-Agent` header, which tells kubectl from kube-rs clients.
    pub user_agent: String,
}

enum Action {
    Fail {
        code: StatusCode,
        retry_after_seconds: Option<u64>,
    },
    Stall(Duration),
}

struct Rule {
    matching: RequestMatch,
    remaining: Option<u32>,
    action: Action,
}

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Delay before handling the request.
    pub stall: Option<Duration>,
    /// Failure to answer with instead of handling the request.
    pub failure: Option<ApiError>,
}

/// Installed fault rules and the request log.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<RequestRecord>>,
}

impl Faults {
    /// Installs a rule that fails requests.
    pub fn add_failure(&self, rule: FailRule) -> Result<(), FaultError> {
        let code = StatusCode::from_u16(rule.status)
            .ok()
            .filter(|code| code.is_client_error() || code.is_server_error())
            .ok_or(FaultError::InvalidStatus(rule.status))?;
        self.push(Rule {
            matching: rule.matching,
            remaining: Some(rule.count),
            action: Action::Fail {
                code,
                retry_after_seconds: rule.retry_after_seconds,
            },
        });
        Ok(())
    }

    /// Installs a rule that stalls requests.
    pub fn add_stall(&self, rule: StallRule) {
        self.push(Rule {
            matching: rule.matching,
            remaining: rule.count,
            action: Action::Stall(rule.delay),
        });
    }

    fn push(&self, rule: Rule) {
        self.rules
            .lock()
            .expect("fault rules lock poisoned")
            .push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules
            .lock()
            .expect("fault rules lock poisoned")
            .clear();
    }

    /// Decides the faults for one request and uses up one count of each rule applied.
    /// Stalls add up; the first matching failure rule wins.
    pub fn check(&self, method: &Method, path: &str) -> Verdict {
        let mut verdict = Verdict::default();
        let mut rules = self.rules.lock().expect("fault rules lock poisoned");
        for rule in rules.iter_mut() {
            if !rule.matching.matches(method, path) {
                continue;
            }
            match rule.action {
                Action::Stall(delay) => {
                    verdict.stall = Some(verdict.stall.unwrap_or_default() + delay);
                }
                Action::Fail {
                    code,
                    retry_after_seconds,
                } => {
                    if verdict.failure.is_some() {
                        continue;
                    }
                    verdict.failure = Some(ApiError::Injected {
                        code,
                        retry_after_seconds,
                    });
                }
            }
            if let Some(remaining) = rule.remaining.as_mut() {
                *remaining = remaining.saturating_sub(1);
            }
        }
        rules.retain(|rule| rule.remaining != Some(0));
        verdict
    }

    /// Appends to the request log.
    pub fn record(&self, record: RequestRecord) {
        self.requests
            .lock()
            .expect("request log lock poisoned")
            .push(record);
    }

    /// Returns a copy of the request log.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .expect("request log lock poisoned")
            .clone()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.requests
            .lock()
            .expect("request log lock poisoned")
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_rule_counts_down() {
        let faults = Faults::default();
        faults
            .add_failure(FailRule {
                matching: RequestMatch::any()
                    .method("put")
                    .path_prefix("/apis/coordination.k8s.io"),
                count: 2,
                status: 503,
                retry_after_seconds: None,
            })
            .unwrap();
        let lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/gangway";
        assert!(faults.check(&Method::GET, lease).failure.is_none());
        assert!(
            faults
                .check(&Method::PUT, "/api/v1/namespaces")
                .failure
                .is_none()
        );
        for _ in 0..2 {
            let failure = faults.check(&Method::PUT, lease).failure.unwrap();
            assert_eq!(failure.status_code(), 503);
        }
        assert!(faults.check(&Method::PUT, lease).failure.is_none());
    }

    #[test]
    fn stall_without_count_lasts_until_cleared() {
        let faults = Faults::default();
        faults.add_stall(StallRule {
            matching: RequestMatch::any(),
            count: None,
            delay: Duration::from_millis(20),
        });
        for _ in 0..3 {
            assert_eq!(
                faults.check(&Method::GET, "/api").stall,
                Some(Duration::from_millis(20))
            );
        }
        faults.clear();
        assert_eq!(faults.check(&Method::GET, "/api").stall, None);
    }

    #[test]
    fn rejects_non_error_status() {
        let faults = Faults::default();
        let rule = FailRule {
            matching: RequestMatch::any(),
            count: 1,
            status: 200,
            retry_after_seconds: None,
        };
        assert_eq!(
            faults.add_failure(rule),
            Err(FaultError::InvalidStatus(200))
        );
    }

    #[test]
    fn rules_parse_from_control_json() {
        let rule: FailRule = serde_json::from_str(
            r#"{"count": 1, "status": 429, "retryAfterSeconds": 2, "method": "GET", "pathPrefix": "/api"}"#,
        )
        .unwrap();
        assert_eq!(
            rule.matching,
            RequestMatch::any().method("GET").path_prefix("/api")
        );
        let stall: StallRule = serde_json::from_str(r#"{"delayMillis": 250}"#).unwrap();
        assert_eq!(stall.delay, Duration::from_millis(250));
        assert_eq!(stall.count, None);
    }
}
