//! `pii-vault-service`: the vault service as a Lambda function behind a function URL with
//! IAM auth (see `pii_vault_service`). Every request's caller is the IAM principal the
//! function URL proves; this binary has no other way to name one (the local stack runs
//! `pii-vault-service-local` instead, which `make build` and `sam build` never build).
#![forbid(unsafe_code)]

use pii_vault_service::function;
use pii_vault_service::http::Access;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    function::run(Access::from_env(), |_| {}).await
}
