//! `pii-vault-service-local`: the vault service for the local stack only
//! (`scripts/local-service.sh`, testkit's `LocalVaultService`). cargo-lambda's function URLs
//! carry no IAM identity, so this binary gives a request without one the caller
//! `PII_VAULT_LOCAL_IDENTITY` names (required), which holds both roles unless
//! `STAFF_ROLE_ARN` / `KEY_ADMIN_ROLE_ARN` name others. A request that carries an identity
//! keeps it. The deployed `pii-vault-service` never links this file: `make build`,
//! `make package` and `sam build` build only the template's functions, and
//! `scripts/check-bootstrap.py` fails an artifact that holds the variable's name.
#![forbid(unsafe_code)]

use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use pii_vault_service::function;
use pii_vault_service::http::Access;

const VAR: &str = "PII_VAULT_LOCAL_IDENTITY";

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let identity = std::env::var(VAR).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let Some(identity) = identity else {
        return Err(format!("{VAR} is required: the caller of requests without an IAM identity").into());
    };
    let access = Access::from_env();
    let access = Access {
        staff_role: access.staff_role.or_else(|| Some(identity.clone())),
        key_admin_role: access.key_admin_role.or_else(|| Some(identity.clone())),
    };
    eprintln!(
        "{VAR}={identity}: requests without an IAM identity are taken as that caller (local stack only)"
    );
    // One identity for the process's life; the runtime wants a front it can copy.
    let identity: &'static str = Box::leak(identity.into_boxed_str());
    function::run(access, move |request| give_identity(request, identity)).await
}

/// `identity` as the request's IAM caller, unless it has one.
fn give_identity(request: &mut LambdaFunctionUrlRequest, identity: &str) {
    let authorizer = request.request_context.authorizer.get_or_insert_with(Default::default);
    let iam = authorizer.iam.get_or_insert_with(Default::default);
    if iam.user_arn.as_deref().is_none_or(str::is_empty) {
        iam.user_arn = Some(identity.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::lambda_function_urls::{
        LambdaFunctionUrlRequestContextAuthorizerDescription,
        LambdaFunctionUrlRequestContextAuthorizerIamDescription,
    };

    use super::*;

    #[test]
    fn a_request_without_identity_gets_the_local_one_and_a_proven_one_keeps_its_own() {
        let mut request = LambdaFunctionUrlRequest::default();
        give_identity(&mut request, "local:dev");
        let arn = |r: &LambdaFunctionUrlRequest| {
            r.request_context
                .authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|i| i.user_arn.clone())
        };
        assert_eq!(arn(&request).as_deref(), Some("local:dev"));

        let mut iam = LambdaFunctionUrlRequestContextAuthorizerIamDescription::default();
        iam.user_arn = Some("arn:aws:sts::1:assumed-role/r/s".into());
        let mut authorizer = LambdaFunctionUrlRequestContextAuthorizerDescription::default();
        authorizer.iam = Some(iam);
        let mut proven = LambdaFunctionUrlRequest::default();
        proven.request_context.authorizer = Some(authorizer);
        give_identity(&mut proven, "local:dev");
        assert_eq!(arn(&proven).as_deref(), Some("arn:aws:sts::1:assumed-role/r/s"));
    }
}
