//! The service's front: a Lambda function URL with `AuthType: AWS_IAM`. The caller is the
//! IAM principal in the request context, which SigV4 makes unforgeable; a request without
//! one is refused, unless the explicit local-identity setting (for the local stack, where
//! `cargo lambda watch` serves the URL without IAM) names the caller. `template.yaml`
//! never sets it, and `make lint-template` rejects a template that does.
//!
//! One route: `POST /` with a JSON [`Request`]; the answer is a JSON [`Response`], or an
//! [`ErrorBody`] (`{"error": {"code", "message"}}`) with the HTTP status of its code.

use aws_lambda_events::lambda_function_urls::{LambdaFunctionUrlRequest, LambdaFunctionUrlResponse};
use base64::Engine;

use crate::audit::{Action, Journal, RequestRow};
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
    /// `PII_VAULT_LOCAL_IDENTITY`: the caller to assume when a request carries no IAM
    /// identity (local stack only; both roles).
    pub local_identity: Option<String>,
}

impl Access {
    pub fn from_env() -> Access {
        let var = |name| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        Access {
            staff_role: var("STAFF_ROLE_ARN"),
            key_admin_role: var("KEY_ADMIN_ROLE_ARN"),
            local_identity: var("PII_VAULT_LOCAL_IDENTITY"),
        }
    }

    /// The proven caller and what it may do, or why not.
    pub fn context(
        &self,
        request: &LambdaFunctionUrlRequest,
        request_id: &str,
    ) -> Result<RequestContext, ServiceError> {
        let proven = request
            .request_context
            .authorizer
            .as_ref()
            .and_then(|a| a.iam.as_ref())
            .and_then(|iam| iam.user_arn.clone())
            .filter(|arn| !arn.is_empty());
        let (caller, local) = match (proven, &self.local_identity) {
            (Some(arn), _) => (arn, false),
            (None, Some(local)) => (local.clone(), true),
            (None, None) => return Err(ServiceError::NoIdentity),
        };
        let in_role = |role: &Option<String>| role.as_deref().is_some_and(|role| assumes(&caller, role));
        let (staff, key_admin) =
            if local { (true, true) } else { (in_role(&self.staff_role), in_role(&self.key_admin_role)) };
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

async fn answer(
    service: &VaultService,
    access: &Access,
    request: LambdaFunctionUrlRequest,
    request_id: &str,
) -> Result<Response, ServiceError> {
    let context = match access.context(&request, request_id) {
        Ok(context) => context,
        Err(error) => {
            // Knocking without an identity is on the record too.
            let anonymous = RequestContext {
                caller: "(no IAM identity)".into(),
                request_id: request_id.to_owned(),
                staff: false,
                key_admin: false,
            };
            Journal::new(service)
                .refused(&anonymous, &RequestRow::new(Action::Audit), &error.to_string())
                .await?;
            return Err(error);
        }
    };
    let method = request.request_context.http.method.as_deref().unwrap_or_default();
    let path = request.raw_path.as_deref().unwrap_or("/");
    if !method.eq_ignore_ascii_case("POST") || !matches!(path, "/" | "") {
        return Err(ServiceError::BadRequest(format!("POST a JSON request to / (got {method} {path})")));
    }
    let body = match (request.body, request.is_base64_encoded) {
        (Some(body), true) => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| ServiceError::BadRequest("body is not valid base64".into()))?,
        (Some(body), false) => body.into_bytes(),
        (None, _) => Vec::new(),
    };
    // serde's messages can quote input (PII in a find): say only where it failed.
    let request: Request = serde_json::from_slice(&body).map_err(|e| {
        ServiceError::BadRequest(format!(
            "the body is not a valid request (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Box::pin(service.handle(&context, request)).await
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

    #[test]
    fn no_identity_is_refused_unless_the_local_identity_is_set() {
        let access = Access {
            staff_role: Some("arn:aws:iam::123456789012:role/staff".into()),
            key_admin_role: Some("arn:aws:iam::123456789012:role/keys".into()),
            local_identity: None,
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

        let local = Access { local_identity: Some("local:dev".into()), ..access };
        let context = local.context(&request_from(None), "r").expect("local");
        assert_eq!(context.caller, "local:dev");
        // A real identity always wins over the local setting.
        let proven =
            local.context(&request_from(Some("arn:aws:sts::123456789012:assumed-role/other/c")), "r");
        assert_eq!(proven.expect("proven").caller, "arn:aws:sts::123456789012:assumed-role/other/c");
    }
}
