//! The service's front: a Lambda function URL with `AuthType: AWS_IAM`. The caller is the
//! IAM principal in the request context, which SigV4 makes unforgeable; a request without
//! one is refused. Nothing here names a caller otherwise: the local stack's binary
//! (`pii-vault-service-local`, crates/local-tools) puts its identity into the request
//! context before [`handle`], and the deployed binary does not contain it
//! (`scripts/check-bootstrap.py` fails an artifact that does).
//!
//! One route: `POST /` with a JSON [`Request`]; the answer is a JSON [`Response`], or an
//! [`ErrorBody`] (`{"error": {"code", "message"}}`) with the HTTP status of its code.

use aws_lambda_events::lambda_function_urls::{LambdaFunctionUrlRequest, LambdaFunctionUrlResponse};
use base64::Engine;

use crate::audit::{Action, Journal, RequestRow};
use crate::operation::authorize;
use crate::principal::assumes;
use crate::{RequestContext, ServiceError, VaultService};
use login_etl_core::error::report;
use pii_vault_protocol::{ErrorBody, Outcome, Request, Response};

/// Who may call, from the service's environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// IAM role ARN of the staff (`STAFF_ROLE_ARN`): find, reveal, forget, audit.
    pub staff_role: Option<String>,
    /// IAM role ARN of the key administrator (`KEY_ADMIN_ROLE_ARN`): the admin operations.
    pub key_admin_role: Option<String>,
}

impl Access {
    pub fn from_env() -> Access {
        let var = |name| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Access { staff_role: var("STAFF_ROLE_ARN"), key_admin_role: var("KEY_ADMIN_ROLE_ARN") }
    }

    /// The proven caller and what it may do, or why not.
    pub fn context(
        &self,
        request: &LambdaFunctionUrlRequest,
        request_id: &str,
    ) -> Result<RequestContext, ServiceError> {
        let caller = request
            .request_context
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone())
            .filter(|arn| !arn.is_empty())
            .ok_or(ServiceError::NoIdentity)?;
        let in_role = |role: &Option<String>| role.as_deref().is_some_and(|role| assumes(&caller, role));
        let (staff, key_admin) = (in_role(&self.staff_role), in_role(&self.key_admin_role));
        Ok(RequestContext { caller, request_id: request_id.to_owned(), staff, key_admin })
    }
}

/// One function-URL invocation.
pub async fn handle(
    service: &VaultService,
    access: &Access,
    request: LambdaFunctionUrlRequest,
    request_id: &str,
) -> LambdaFunctionUrlResponse {
    let result = answer(service, access, request, request_id).await;
    println!("{}", metrics_line(&result, chrono::Utc::now().timestamp_millis()));
    match result {
        Ok(response) => json_response(200, &serde_json::to_value(response).unwrap_or_default()),
        Err(error) => {
            tracing::warn!(code = error.code().as_str(), error = %report(&error), "request refused or failed");
            let body = ErrorBody::new(error.code(), report(&error));
            json_response(error.http_status(), &serde_json::to_value(body).unwrap_or_default())
        }
    }
}

/// The largest body the service reads; a larger one is refused unread. The largest
/// legitimate request (a replay of 100 ids of 128 characters, with a reason of 500) is
/// under 16 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Identity, then the caller's role, then the request's form; whatever is refused on the
/// way is recorded (op, size, keyed hash of the body; never the body) before it is
/// answered. A well-formed request from a caller in a role goes on to the one path of
/// `operation.rs`, which records it with its fields.
async fn answer(
    service: &VaultService,
    access: &Access,
    request: LambdaFunctionUrlRequest,
    request_id: &str,
) -> Result<Response, ServiceError> {
    let identity = access.context(&request, request_id);
    let envelope = Envelope::of(request);
    let context = match identity {
        Ok(context) => context,
        Err(error) => {
            // Knocking without an identity is on the record too (one caller for all).
            let anonymous = RequestContext {
                caller: "(no IAM identity)".into(),
                request_id: request_id.to_owned(),
                staff: false,
                key_admin: false,
            };
            return Err(refuse(service, &anonymous, &envelope, error).await);
        }
    };
    // Authorize first: a caller in no role may do nothing, whatever it sent; a caller in a
    // role may not ask for an operation of the other (refused here, so within the limit of
    // refusal rows; the operation's path checks the role again).
    let parsed = if context.staff || context.key_admin {
        envelope.request().and_then(|request| authorize(&context, envelope.action()).map(|()| request))
    } else {
        let action = match envelope.action() {
            Action::Request => "call the vault service",
            action => action.as_str(),
        };
        Err(ServiceError::NotAllowed { caller: context.caller.clone(), action })
    };
    match parsed {
        Ok(request) => Box::pin(service.handle(&context, request)).await,
        Err(error) => Err(refuse(service, &context, &envelope, error).await),
    }
}

/// What arrived, before anything is believed about it.
struct Envelope {
    method: String,
    path_is_root: bool,
    /// The body as sent (base64 decoded when it is flagged so and decodes).
    body: Vec<u8>,
    base64_ok: bool,
}

impl Envelope {
    fn of(request: LambdaFunctionUrlRequest) -> Envelope {
        let method = request.request_context.http.method.unwrap_or_default();
        let path_is_root = matches!(request.raw_path.as_deref(), None | Some("/" | ""));
        let (body, base64_ok) = match (request.body, request.is_base64_encoded) {
            (Some(body), true) => match base64::engine::general_purpose::STANDARD.decode(&body) {
                Ok(decoded) => (decoded, true),
                Err(_) => (body.into_bytes(), false),
            },
            (Some(body), false) => (body.into_bytes(), true),
            (None, _) => (Vec::new(), true),
        };
        Envelope { method, path_is_root, body, base64_ok }
    }

    /// The request, or why it is not one. No message quotes the input (a malformed
    /// `find` carries a plaintext).
    fn request(&self) -> Result<Request, ServiceError> {
        let bad = |message: String| Err(ServiceError::BadRequest(message));
        if !self.method.eq_ignore_ascii_case("POST") || !self.path_is_root {
            return bad("POST a JSON request to /".into());
        }
        if self.body.len() > MAX_BODY_BYTES {
            return bad(format!("a request body is at most {MAX_BODY_BYTES} bytes"));
        }
        if !self.base64_ok {
            return bad("body is not valid base64".into());
        }
        // serde reads an internally tagged enum from an array too (`["rotate-key"]`), which
        // `action` would not see: a request is an object, and its op is read from it.
        if self.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return bad("the body is not a JSON object".into());
        }
        serde_json::from_slice(&self.body).or_else(|e| {
            bad(format!("the body is not a valid request (line {}, column {})", e.line(), e.column()))
        })
    }

    /// The operation the body names, if it is small enough to read and names one the
    /// service has; else [`Action::Request`].
    fn action(&self) -> Action {
        (self.body.len() <= MAX_BODY_BYTES)
            .then(|| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&self.body).ok())
            .flatten()
            .and_then(|object| object.get("op").and_then(|op| op.as_str()).and_then(Action::of_op))
            .unwrap_or(Action::Request)
    }

    /// How the request came, in the service's words (a method it does not know, a path it
    /// does not serve, are named as such, not echoed).
    fn summary(&self) -> String {
        const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
        let method =
            METHODS.into_iter().find(|m| m.eq_ignore_ascii_case(&self.method)).unwrap_or("another method");
        let path = if self.path_is_root { "/" } else { "another path" };
        format!("{method} {path}")
    }
}

/// Records the refusal of a request that has no row yet (within the caller's limit of
/// refusal rows, `Journal::refused`) and returns it; if it cannot be recorded, the answer
/// is `audit_unavailable` instead.
async fn refuse(
    service: &VaultService,
    context: &RequestContext,
    envelope: &Envelope,
    error: ServiceError,
) -> ServiceError {
    let digest = match service.audit_key().await {
        Ok(key) => key.request_digest(&envelope.body),
        Err(keys) => format!("unavailable ({})", keys.code().as_str()),
    };
    let detail = format!(
        "{error}; {}, body of {} bytes, hmac-sha256 {digest}",
        envelope.summary(),
        envelope.body.len()
    );
    match Journal::new(service).refused(context, &RequestRow::new(envelope.action()), &detail).await {
        Ok(()) => error,
        Err(unrecorded) => unrecorded,
    }
}

/// One CloudWatch Embedded Metric Format line per request (namespace `login-etl`,
/// dimension `Function`): values revealed (a quarantined body shown counts as one),
/// refusals, refusals for the daily budget. The alarms of `template.yaml` watch them.
pub fn metrics_line(result: &Result<Response, ServiceError>, timestamp_ms: i64) -> String {
    let revealed = match result {
        Ok(Response::Reveal { values }) => values.iter().filter(|v| v.outcome == Outcome::Revealed).count(),
        Ok(Response::QuarantineShow { outcome: Outcome::Shown, .. }) => 1,
        _ => 0,
    };
    let refused = matches!(
        result,
        Err(ServiceError::Reason(_)
            | ServiceError::NotAllowed { .. }
            | ServiceError::NoIdentity
            | ServiceError::Budget { .. }
            | ServiceError::RoleBudget { .. }
            | ServiceError::ErasureQuota { .. })
    );
    let budget = matches!(
        result,
        Err(ServiceError::Budget { .. }
            | ServiceError::RoleBudget { .. }
            | ServiceError::ErasureQuota { .. })
    );
    login_etl_core::metrics::line(
        &[("Function", "pii-vault-service")],
        &[
            ("RevealedValues", revealed as f64, "Count"),
            ("Refusals", f64::from(u8::from(refused)), "Count"),
            ("BudgetRefusals", f64::from(u8::from(budget)), "Count"),
        ],
        timestamp_ms,
    )
}

fn json_response(status: u16, body: &serde_json::Value) -> LambdaFunctionUrlResponse {
    let mut response = LambdaFunctionUrlResponse::default();
    response.status_code = i64::from(status);
    response.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response.body = Some(body.to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_emits_its_metrics_in_embedded_metric_format() {
        let budget: Result<Response, ServiceError> = Err(ServiceError::Budget { budget: 3, used: 3 });
        let line: serde_json::Value =
            serde_json::from_str(&metrics_line(&budget, 1_700_000_000_000)).expect("json");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "login-etl");
        assert_eq!((line["BudgetRefusals"].as_f64(), line["Refusals"].as_f64()), (Some(1.0), Some(1.0)));
        let revealed = Ok(Response::Reveal {
            values: vec![pii_vault_protocol::Revealed {
                field: login_etl_core::crypto::PiiField::Ip,
                mask: "m".into(),
                outcome: Outcome::Revealed,
                value: Some(pii_vault_protocol::Plaintext::new("10.0.0.1")),
            }],
        });
        let text = metrics_line(&revealed, 0);
        assert!(!text.contains("10.0.0.1"), "no value in metrics");
        let line: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            (line["RevealedValues"].as_f64(), line["BudgetRefusals"].as_f64()),
            (Some(1.0), Some(0.0))
        );
    }

    fn request_from(user_arn: Option<&str>) -> LambdaFunctionUrlRequest {
        let mut event = serde_json::json!({
            "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {},
            "requestContext": {"requestId": "r", "timeEpoch": 0,
                               "http": {"method": "POST", "path": "/"}},
            "body": "{}", "isBase64Encoded": false,
        });
        if let Some(arn) = user_arn {
            event["requestContext"]["authorizer"] = serde_json::json!({"iam": {"userArn": arn}});
        }
        serde_json::from_value(event).expect("function URL event")
    }

    fn envelope(body: &str) -> Envelope {
        let mut request = request_from(None);
        request.body = Some(body.to_owned());
        Envelope::of(request)
    }

    #[test]
    fn a_request_is_recorded_under_the_action_its_op_names_and_nothing_else() {
        for body in [
            r#"{"op": "find", "field": "ip", "value": "10.0.0.1"}"#,
            r#"{"op": "audit"}"#,
            r#"{"op": "init-keys"}"#,
            r#"{"op": "rotate-key"}"#,
            r#"{"op": "reencrypt", "batch_size": 10}"#,
            r#"{"op": "quarantine-list"}"#,
            r#"{"op": "quarantine-show", "message_id": "m"}"#,
            r#"{"op": "quarantine-import-dlq"}"#,
            r#"{"op": "quarantine-purge"}"#,
        ] {
            let envelope = envelope(body);
            assert!(envelope.request().is_ok(), "{body}");
            let op: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(Some(envelope.action().as_str()), op["op"].as_str(), "{body}");
        }
        for body in [r#"{"op": "dump-vault"}"#, "not json", r#"{"op": 7}"#, r#"["find"]"#] {
            assert_eq!(envelope(body).action(), Action::Request, "{body}");
        }
        let huge = format!(r#"{{"op": "find", "value": "{}"}}"#, "1".repeat(MAX_BODY_BYTES));
        assert_eq!(envelope(&huge).action(), Action::Request, "a body over the limit is not read");
        assert!(matches!(envelope(&huge).request(), Err(ServiceError::BadRequest(_))));
    }

    #[test]
    fn no_identity_is_refused_and_a_proven_one_has_its_roles_only() {
        let access = Access {
            staff_role: Some("arn:aws:iam::123456789012:role/staff".into()),
            key_admin_role: Some("arn:aws:iam::123456789012:role/keys".into()),
        };
        assert!(matches!(access.context(&request_from(None), "r"), Err(ServiceError::NoIdentity)));
        let staff =
            access.context(&request_from(Some("arn:aws:sts::123456789012:assumed-role/staff/a")), "r");
        let staff = staff.expect("staff");
        assert!(staff.staff && !staff.key_admin);
        let admin = access.context(&request_from(Some("arn:aws:sts::123456789012:assumed-role/keys/b")), "r");
        assert!(admin.expect("admin").key_admin);
        let stranger =
            access.context(&request_from(Some("arn:aws:sts::123456789012:assumed-role/other/c")), "r");
        let stranger = stranger.expect("a caller, with no rights");
        assert!(!stranger.staff && !stranger.key_admin);
    }
}
